"""uvicorn's HTTP/1.1 (h11) protocol with deadlines on every request, a floor on the transfer rate,
a cap per client, room made from the slowest connections, and JSON for every error.

uvicorn bounds idle keep-alive connections, but not a client that sends its headers, or a body, a
byte at a time (slowloris): each drip restarts its idle timer, so such a connection is held open for
ever, and a few hundred of them fill the connection limit. This subclass adds, whatever the route
and whether or not the application reads the body:

* deadlines. Headers: armed whenever the connection waits for a new request (on connect, after each
  response), disarmed once the request line and headers are complete; on expiry the client gets
  408 (a kept-alive connection that has sent nothing since its last answer is closed silently).
  Body: armed once the headers are complete and the request has a body, disarmed once the
  whole body has arrived; on expiry the client gets 408 if no answer was started, else the
  connection is closed. A connection whose answer is complete while its body is still coming is
  closed at once: nobody will read that body.
* a minimum transfer rate: from ``transfer_grace`` seconds after a request's first byte, the request
  (headers and body together) must have averaged ``min_rate`` bytes/s since that byte, or the client
  gets 408; a drip is cut off after the grace instead of at the deadlines. Time the server itself
  stopped reading (flow control) does not count.
* a cap per client: a connection that would be its address's ``per_client`` + 1st open one is
  answered 429 with ``Retry-After`` at once; its input is read and dropped for a second, so that the
  answer arrives instead of a reset, then it is closed.
* the connection limit (``limit_concurrency``): a request that finds more connections open than the
  limit first closes the slowest connections still waiting on their clients for headers or body
  (lowest average rate since their wait began, one younger than ``SHED_AFTER_S`` counted as open
  that long, then the oldest; one that has sent nothing only once it is that old) to make room: 503
  + ``Retry-After``, or nothing for one that has sent no byte of a request. Only when none qualifies does the request
  get 503 + ``Retry-After``. So connections that drip, from any number of addresses, reconnecting or
  not, cannot hold the server against clients that send their requests at once.

Errors answered below the application are JSON ``{"status", "error", "message"}`` like the
application's own: malformed requests that h11 rejects (bad Content-Length, oversized header or URL,
garbage request line), the rules above (uvicorn's ``limit_concurrency`` answers plain text) and an
application that ends without answering (500).

What it relies on: uvicorn has no public hook below the application for any of this (its
``timeout_keep_alive`` and ``limit_concurrency`` are the only knobs, and neither sees a request
still arriving), so this subclasses ``uvicorn.protocols.http.h11_impl.H11Protocol``, whose
attributes and methods (``conn``, ``cycle``, ``flow``, ``connections``, ``send_400_response``,
``on_response_complete``, ...) are uvicorn's internals, not its API. pyproject.toml's ``serve`` extra
therefore pins uvicorn to the range tested, and ``tests/test_serve_uvicorn_versions.py`` runs
``tests/test_serve_protocol.py`` against its oldest and newest release; widen the range only after
that test passes on the new release. From h11 it uses public names only.
"""
from __future__ import annotations

import json
from http import HTTPStatus

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def error_payload(status: int, message: str) -> dict:
    """The JSON body of every error litefer serve answers."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return {"status": int(status), "error": phrase, "message": message}


def _error_bytes(status: int, message: str, headers: tuple = ()) -> bytes:
    """A whole HTTP response carrying a JSON error, for answers written below the application."""
    payload = error_payload(status, message)
    body = json.dumps(payload).encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
    head = f"HTTP/1.1 {status} {payload['error']}\r\ncontent-type: application/json\r\nconnection: close\r\n" \
           f"{extra}content-length: {len(body)}\r\n\r\n"
    return head.encode("latin-1") + body


class _RecordingConnection(h11.Connection):
    """An h11 connection that keeps the protocol error it raised, so that the answer can say why."""

    protocol_error: h11.RemoteProtocolError | None = None

    def next_event(self):
        try:
            return super().next_event()
        except h11.RemoteProtocolError as e:
            self.protocol_error = e
            raise


SHED_AFTER_S = 1.0      # a connection that has sent nothing is closed to make room only after this long
LINGER_S = 1.0          # how long a refused connection's input is read and dropped before it is closed
WAITING = {h11.IDLE: "headers", h11.SEND_BODY: "body"}     # what a connection waits for from its client


_WARNED: dict[str, list] = {}      # kind of warning -> [when last logged, occurrences since]


def _warn(logger, kind: str, now: float, message: str) -> None:
    """Log a warning at most once a second per kind, with how many were not logged: a flood of
    refusals would otherwise flood the log."""
    last = _WARNED.setdefault(kind, [float("-inf"), 0])
    last[1] += 1
    if now - last[0] >= 1.0:
        logger.warning("%s%s", message, f" (and {last[1] - 1} more like it in the last second)" if last[1] > 1 else "")
        last[:] = [now, 0]


def _live(connections) -> list:
    """The open connections that count against the limits (not closing, not refused)."""
    return [c for c in connections
            if getattr(c, "_refused", None) is None and c.transport is not None and not c.transport.is_closing()]


class DeadlineH11Protocol(H11Protocol):
    header_timeout: float = 10.0
    body_timeout: float = 15.0
    min_rate: float = 500.0     # bytes/s; 0: no floor
    rate_grace: float = 3.0
    per_client: int = 64        # open connections per client address; 0: no cap
    _deadline = None            # (what: "headers" | "body", asyncio.TimerHandle)
    _rate_timer = None
    _refused = None             # the TimerHandle that closes a refused connection

    def __init__(self, config, server_state, app_state, _loop=None):
        super().__init__(config, server_state, app_state, _loop)
        size = config.h11_max_incomplete_event_size   # None: h11's own default (16 KiB), as uvicorn's
        self.conn = _RecordingConnection(h11.SERVER, **({"max_incomplete_event_size": size} if size else {}))
        self.max_connections, self.limit_concurrency = self.limit_concurrency, None   # enforced by _guarded_app
        self._inner_app, self.app = self.app, self._guarded_app
        self._wait_began, self._first_byte, self._received = self.loop.time(), None, 0

    # --- connection life

    def connection_made(self, transport):  # type: ignore[override]
        super().connection_made(transport)
        host = self.client[0] if self.client else None
        if self.per_client and host is not None:
            mine = sum(1 for c in _live(self.connections) if c.client and c.client[0] == host)
            if mine > self.per_client:
                self._refuse(429, f"too many connections from {host}: at most {self.per_client} may be open at "
                                  "once; retry later")
                return
        self._update_deadline()

    def data_received(self, data: bytes) -> None:
        if self._refused is not None:
            return                          # refused: dropped until the client leaves or the linger ends
        if self._first_byte is None:
            self._first_byte = self.loop.time()
        self._received += len(data)
        super().data_received(data)
        self._update_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self.transport.close()          # answered, body still coming: nobody will read it
        self._update_deadline()

    def connection_lost(self, exc):
        self._set_deadline(None)
        self._stop_clock()
        if self._refused is not None:
            self._refused.cancel()
        super().connection_lost(exc)

    def _refuse(self, status: int, message: str) -> None:
        """Answer at once, before the request is read; read and drop what the client still sends for
        ``LINGER_S`` (closing on unread input would send a reset that can destroy the answer)."""
        self._refused = self.loop.call_later(LINGER_S, self.transport.close)
        _warn(self.logger, "refused", self.loop.time(), f"{message}: answering {status}")
        self.transport.write(_error_bytes(status, message, (("retry-after", "1"),)))
        if self.transport.can_write_eof():
            self.transport.write_eof()

    # --- deadlines and the transfer rate

    def _update_deadline(self) -> None:
        """Arm the deadline for what the connection now waits for (a new request's headers, or the
        current request's body); keep a running one (a drip of bytes does not restart it). The rate
        clock runs from a request's first byte until the request is complete."""
        wanted = None if self.transport.is_closing() else WAITING.get(self.conn.their_state)
        current = self._deadline and self._deadline[0]
        if wanted != current:
            if wanted is None or current is None:         # the request is complete, or a new wait begins
                self._stop_clock(new_wait=wanted is not None)
            self._set_deadline(wanted)
        if wanted and self._first_byte is not None and self._rate_timer is None and self.min_rate:
            self._rate_timer = self.loop.call_at(self._first_byte + self.rate_grace, self._check_rate)

    def _stop_clock(self, new_wait: bool = False) -> None:
        if self._rate_timer is not None:
            self._rate_timer.cancel()
            self._rate_timer = None
        self._first_byte = None
        if new_wait:
            self._wait_began, self._received = self.loop.time(), 0

    def _check_rate(self) -> None:
        """408 if the request has averaged less than ``min_rate`` since its first byte, else check
        again when, without another byte, it would."""
        self._rate_timer = None
        if self._first_byte is None or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:           # the server is not reading: that time is not the client's
            self._first_byte += 0.5
            self._rate_timer = self.loop.call_at(now + 0.5, self._check_rate)
            return
        elapsed = now - self._first_byte
        if self._received < self.min_rate * elapsed:
            self._answer_and_close(408, f"request arriving too slowly: {self._received} bytes in {elapsed:.1f} s, "
                                        f"below the minimum of {self.min_rate:g} bytes/s")
            return
        self._rate_timer = self.loop.call_at(max(now + 0.05, self._first_byte + self._received / self.min_rate),
                                             self._check_rate)

    def _set_deadline(self, what: str | None) -> None:
        if self._deadline is not None:
            self._deadline[1].cancel()
            self._deadline = None
        if what is not None:
            seconds = self.header_timeout if what == "headers" else self.body_timeout
            self._deadline = (what, self.loop.call_later(seconds, self._on_deadline, what))

    def _on_deadline(self, what: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if what == "headers" and self._first_byte is None and self.cycle is not None:
            self._close_silently()          # kept alive after an answer, nothing new sent
        elif what == "headers":
            self._answer_and_close(408, f"request headers not received within {self.header_timeout:g} s")
        else:
            declared = dict(self.headers or []).get(b"content-length", b"?").decode("latin-1")
            self._answer_and_close(408, f"request body (Content-Length {declared}) not received within "
                                        f"{self.body_timeout:g} s")

    def _close_silently(self) -> None:
        """Close a connection that has begun no request, without an answer: on a kept-alive one a 408
        would be read by a client sending its next request at that moment as that request's answer."""
        self._set_deadline(None)
        self._stop_clock()
        self.transport.close()

    # --- making room at the connection limit

    def _make_room(self, count: int, limit: int) -> int:
        """Close up to ``count`` of the slowest other connections waiting on their clients; how many."""
        now = self.loop.time()
        victims = sorted((c for c in _live(self.connections) if c is not self and getattr(c, "_sheddable", None)
                          and c._sheddable(now)), key=lambda c: c._pace(now))[:count]
        for c in victims:
            c._shed(now, limit)
        if victims:
            _warn(self.logger, "room", now, f"connection limit ({limit}) reached: closed the {len(victims)} slowest "
                                            "connection(s) to make room")
        return len(victims)

    def _sheddable(self, now: float) -> bool:
        """Waiting on its client, with no answer under way, and either sending or silent for long enough."""
        cycle = self.cycle
        return (self.conn.their_state in WAITING and (self._received > 0 or now - self._wait_began >= SHED_AFTER_S)
                and (cycle is None or cycle.response_complete or not cycle.response_started))

    def _pace(self, now: float) -> tuple[float, float]:
        """(bytes/s since the connection began waiting for this request, when it began): the slowest,
        then the oldest, first. One younger than ``SHED_AFTER_S`` counts as open that long: it is
        judged by the bytes it has sent, not by a rate over a few milliseconds."""
        return self._received / max(now - self._wait_began, SHED_AFTER_S), self._wait_began

    def _shed(self, now: float, limit: int) -> None:
        if self._received == 0:             # no byte of a request: nothing to answer
            self._close_silently()
            return
        self._answer_and_close(503, f"server at its limit of {limit} connections, and this request the slowest "
                                    f"({self._received} bytes in {now - self._wait_began:.1f} s): closed to make "
                                    "room; retry later", (("retry-after", "1"),))

    # --- errors below the application

    def send_400_response(self, msg: str) -> None:
        err = self.conn.protocol_error
        status = err.error_status_hint if err is not None else 400
        self._answer_and_close(status, f"malformed HTTP request: {err or msg}")

    def _answer_and_close(self, status: int, message: str, headers: tuple = ()) -> None:
        """Answer a JSON error unless an answer was already started, then close the connection."""
        cycle = self.cycle          # on a kept-alive connection: the previous request's, complete
        if cycle is None or not cycle.response_started or cycle.response_complete:
            self.transport.write(_error_bytes(status, message, headers))
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True        # the application's receive() now says the client left
            cycle.message_event.set()
        self._set_deadline(None)
        self._stop_clock()
        self.transport.close()

    def _admit(self, limit: int) -> bool:
        """Whether this request fits under the limit, once the slowest connections made room. Only
        connections count, not running requests as uvicorn's limit does: the requests of closed
        connections end a moment later (counting them refused real clients just after a flood's
        connections were cut off), and the work itself is bounded by the recognizer pool."""
        over = len(_live(self.connections)) - limit
        return over <= 0 or self._make_room(over, limit) >= over

    async def _guarded_app(self, scope, receive, send) -> None:
        """The application behind the connection limit, with a JSON 500 if it ends without answering."""
        if self.max_connections is not None and not self._admit(self.max_connections):
            limit = self.max_connections
            _warn(self.logger, "limit", self.loop.time(), f"connection limit ({limit}) reached: answering 503")
            await _send_json(send, 503, f"server at its limit of {limit} connections; retry later",
                             [(b"retry-after", b"1"), (b"connection", b"close")])
            return
        started = False

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self._inner_app(scope, receive, tracking_send)   # exceptions: FastAPI answers them (JSON 500)
        if not started and not self.cycle.disconnected:
            await _send_json(send, 500, "internal error: the application did not answer; see the server log",
                             [(b"connection", b"close")])


async def _send_json(send, status: int, message: str, headers: list) -> None:
    body = json.dumps(error_payload(status, message)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def protocol_class(header_timeout: float, body_timeout: float, min_rate: float = 500.0, rate_grace: float = 3.0,
                   per_client: int = 64) -> type[DeadlineH11Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)``: deadlines and grace in seconds, the minimum
    transfer rate in bytes/s (0: none), the cap of open connections per client address (0: none)."""
    for name, value, ok in (("header_timeout", header_timeout, header_timeout > 0),
                            ("body_timeout", body_timeout, body_timeout > 0), ("min_rate", min_rate, min_rate >= 0),
                            ("rate_grace", rate_grace, rate_grace > 0), ("per_client", per_client, per_client >= 0)):
        if not ok:
            raise ValueError(f"{name} out of range: {value}")
    return type("LiteferH11Protocol", (DeadlineH11Protocol,),
                {"header_timeout": float(header_timeout), "body_timeout": float(body_timeout),
                 "min_rate": float(min_rate), "rate_grace": float(rate_grace), "per_client": int(per_client)})

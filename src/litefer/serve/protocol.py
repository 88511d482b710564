"""uvicorn's HTTP/1.1 (h11) protocol with deadlines on every request, and JSON for every error.

uvicorn bounds idle keep-alive connections, but not a client that sends its headers, or a body, a
byte at a time (slowloris): each drip restarts its idle timer, so such a connection is held open for
ever, and a few hundred of them fill the connection limit. This subclass gives each request two
deadlines, whatever the route and whether or not the application reads the body:

* headers: armed whenever the connection waits for a new request (on connect, after each response),
  disarmed once the request line and headers are complete; on expiry the client gets 408;
* body: armed once the headers are complete and the request has a body, disarmed once the whole
  body has arrived; on expiry the client gets 408 if no answer was started, else the connection is
  closed. A connection whose answer is complete while its body is still coming is closed at once:
  nobody will read that body.

Errors answered below the application are JSON ``{"status", "error", "message"}`` like the
application's own: malformed requests that h11 rejects (bad Content-Length, oversized header or URL,
garbage request line), the deadlines above, the connection limit (503 + ``Retry-After``; uvicorn's
``limit_concurrency`` answers plain text) and an application that ends without answering (500).
"""
from __future__ import annotations

import json
from http import HTTPStatus

import h11
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from uvicorn.protocols.http.h11_impl import H11Protocol


def error_payload(status: int, message: str) -> dict:
    """The JSON body of every error litefer serve answers."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return {"status": int(status), "error": phrase, "message": message}


def _error_bytes(status: int, message: str) -> bytes:
    """A whole HTTP response carrying a JSON error, for answers written below the application."""
    payload = error_payload(status, message)
    body = json.dumps(payload).encode()
    head = f"HTTP/1.1 {status} {payload['error']}\r\ncontent-type: application/json\r\nconnection: close\r\n" \
           f"content-length: {len(body)}\r\n\r\n"
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


class DeadlineH11Protocol(H11Protocol):
    header_timeout: float = 10.0
    body_timeout: float = 15.0
    _deadline = None           # (what: "headers" | "body", asyncio.TimerHandle)

    def __init__(self, config, server_state, app_state, _loop=None):
        super().__init__(config, server_state, app_state, _loop)
        self.conn = _RecordingConnection(h11.SERVER, config.h11_max_incomplete_event_size
                                         or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE)
        self.max_connections, self.limit_concurrency = self.limit_concurrency, None   # enforced by _guarded_app
        self._inner_app, self.app = self.app, self._guarded_app

    # --- deadlines

    def connection_made(self, transport):  # type: ignore[override]
        super().connection_made(transport)
        self._update_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._update_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self.transport.close()          # answered, body still coming: nobody will read it
        self._update_deadline()

    def connection_lost(self, exc):
        self._set_deadline(None)
        super().connection_lost(exc)

    def _update_deadline(self) -> None:
        """Arm the deadline for what the connection now waits for (a new request's headers, or the
        current request's body); keep a running one (a drip of bytes does not restart it)."""
        state = self.conn.their_state
        wanted = None
        if not self.transport.is_closing():
            wanted = {h11.IDLE: "headers", h11.SEND_BODY: "body"}.get(state)
        if wanted != (self._deadline and self._deadline[0]):
            self._set_deadline(wanted)

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
        if what == "headers":
            self._answer_and_close(408, f"request headers not received within {self.header_timeout:g} s")
        else:
            declared = dict(self.headers or []).get(b"content-length", b"?").decode("latin-1")
            self._answer_and_close(408, f"request body (Content-Length {declared}) not received within "
                                        f"{self.body_timeout:g} s")

    # --- errors below the application

    def send_400_response(self, msg: str) -> None:
        err = self.conn.protocol_error
        status = err.error_status_hint if err is not None else 400
        self._answer_and_close(status, f"malformed HTTP request: {err or msg}")

    def _answer_and_close(self, status: int, message: str) -> None:
        """Answer a JSON error unless an answer was already started, then close the connection."""
        cycle = self.cycle          # on a kept-alive connection: the previous request's, complete
        if cycle is None or not cycle.response_started or cycle.response_complete:
            self.transport.write(_error_bytes(status, message))
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True        # the application's receive() now says the client left
            cycle.message_event.set()
        self._set_deadline(None)
        self.transport.close()

    async def _guarded_app(self, scope, receive, send) -> None:
        """The application behind the connection limit, with a JSON 500 if it ends without answering."""
        limit = self.max_connections
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) > limit):
            self.logger.warning("connection limit (%d) reached: answering 503", limit)
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


def protocol_class(header_timeout: float, body_timeout: float) -> type[DeadlineH11Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with the given deadlines in seconds."""
    for name, value in (("header_timeout", header_timeout), ("body_timeout", body_timeout)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0 seconds, got {value}")
    return type("LiteferH11Protocol", (DeadlineH11Protocol,),
                {"header_timeout": float(header_timeout), "body_timeout": float(body_timeout)})

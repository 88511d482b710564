"""uvicorn's HTTP/1.1 (h11) protocol with a deadline on the request line and headers.

uvicorn bounds idle keep-alive connections but not a client that opens a connection and then sends
its headers a byte at a time (slowloris): such a connection would be held open for ever. This
subclass arms a timer whenever the connection waits for a new request (on connect, and after each
response) and disarms it once the headers are complete; when it fires, the client gets a JSON 408
and the connection is closed. Slow *bodies* are bounded by the application (``upload_timeout``).
"""
from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderDeadlineH11Protocol(H11Protocol):
    header_timeout: float = 10.0
    _header_timer = None

    def connection_made(self, transport):  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:      # request line and headers complete
            self._disarm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_header_timer()

    def connection_lost(self, exc):
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._on_header_timeout)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        body = json.dumps({"status": 408, "error": "Request Timeout",
                           "message": f"request headers not received within {self.header_timeout:g} s"}).encode()
        head = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\n\r\n")
        self.transport.write(head + body)
        self.transport.close()


def protocol_class(header_timeout: float) -> type[HeaderDeadlineH11Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with the given header deadline in seconds."""
    if header_timeout <= 0:
        raise ValueError(f"header_timeout must be > 0 seconds, got {header_timeout}")
    return type("LiteferH11Protocol", (HeaderDeadlineH11Protocol,), {"header_timeout": float(header_timeout)})

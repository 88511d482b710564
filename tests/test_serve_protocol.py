"""litefer serve below the application: deadlines on every request and JSON for every error.

One server of its own (2 s header and body deadlines, at most 16 connections), talked to over raw
sockets, since these clients are the ones an HTTP library would refuse to be.
"""
import json
import socket
import threading
import time

import pytest

from loadtest import exchange, read_answer
from serve_support import serve

LIMIT = 16          # --max-connections
DEADLINE = 2.0      # --header-timeout and --upload-timeout


@pytest.fixture(scope="module")
def small_server(serve_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("protocol") / "server.log"
    with serve(serve_model[1], log, "--workers", "1", "--queue", "2", "--max-connections", str(LIMIT),
               "--header-timeout", str(DEADLINE), "--upload-timeout", str(DEADLINE)) as (url, _):
        yield url, int(url.rsplit(":", 1)[1])


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def assert_json_error(status, headers, body, expected: int, pattern: str = ""):
    assert status == expected, (status, headers, body[:200])
    assert headers.get("content-type") == "application/json", headers
    payload = json.loads(body)
    assert payload["status"] == expected and payload["error"] and pattern in payload["message"], payload


def get(port: int, path: str) -> tuple[int | None, dict, bytes]:
    with connect(port) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        status, headers, body, _ = read_answer(s, 10)
    return status, headers, body


def test_slow_body_flood_on_routes_that_do_not_read_bodies_locks_nobody_out(small_server):
    """Three times the connection limit of clients declare a 1 MB body on routes that never read one
    and drip it a byte every 0.2 s: each gets its answer and is disconnected at once, and a real
    client is served while they drip."""
    url, port = small_server
    routes = ["POST /healthz", "GET /v1/model", "POST /nowhere"]
    socks, stop = [], threading.Event()
    for i in range(3 * LIMIT):
        s = connect(port)
        s.sendall(f"{routes[i % 3]} HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\nx".encode())
        socks.append(s)

    def drip():
        while not stop.wait(0.2):
            for s in socks:
                try:
                    s.send(b"x")
                except OSError:
                    pass
    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        time.sleep(0.5)
        status, _, body = get(port, "/healthz")            # well inside the 2 s body deadline
        assert status == 200 and json.loads(body)["status"] == "ok", body
        outcomes = [read_answer(s, 3) for s in socks]
    finally:
        stop.set()
        dripper.join()
        for s in socks:
            s.close()
    assert all(closed for *_, closed in outcomes), "a dripping connection was left open"
    assert {o[0] for o in outcomes} <= {200, 404, 405, 503}, [o[0] for o in outcomes]   # 503: over the limit at once
    assert all(o[1].get("content-type") == "application/json" for o in outcomes)


def test_slow_body_on_a_route_that_reads_it_gets_a_json_408(small_server):
    _, port = small_server
    t0 = time.monotonic()
    with connect(port) as s:
        s.sendall(b"POST /v1/recognize HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\n")
        for _ in range(int(DEADLINE / 0.25) + 8):           # drip past the deadline
            try:
                s.send(b"\xff")
            except OSError:
                break
            time.sleep(0.25)
            s.settimeout(0.001)
            try:
                if s.recv(1, socket.MSG_PEEK):
                    break
            except socket.timeout:
                pass
        status, headers, body, closed = read_answer(s, 5)
    assert_json_error(status, headers, body, 408, "Content-Length 5000")
    assert closed and DEADLINE - 0.1 < time.monotonic() - t0 < DEADLINE + 2.5


@pytest.mark.parametrize("request_bytes, expected, pattern", [
    (b"POST /v1/recognize HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n", 400, "Content-Length"),
    (b"POST /v1/recognize HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400, "Content-Length"),
    (b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n", 431, "too long"),
    (b"GET /" + b"a" * 1_000_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 431, "too long"),
    (b"\x16\x03\x01garbage that is not HTTP\r\n\r\n", 400, "malformed"),
], ids=["content-length-abc", "content-length-negative", "1MB-header", "1MB-url", "garbage-request-line"])
def test_malformed_requests_get_json_errors(small_server, request_bytes, expected, pattern):
    status, headers, body, closed = exchange(small_server[0], request_bytes, 5)
    assert_json_error(status, headers, body, expected, pattern)
    assert closed


def test_slow_headers_get_a_json_408(small_server):
    _, port = small_server
    with connect(port) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost")
        status, headers, body, closed = read_answer(s, DEADLINE + 3)
    assert_json_error(status, headers, body, 408, "headers not received")
    assert closed


@pytest.mark.parametrize("second, expected, pattern", [
    (b"\x16\x03 garbage\r\n\r\n", 400, "malformed"), (b"GET /hea", 408, "headers not received")])
def test_errors_on_a_kept_alive_connection_are_answered_too(small_server, second, expected, pattern):
    """After a first request on the connection, a bad or slow second one still gets its JSON answer."""
    with connect(small_server[1]) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, body, closed = read_answer(s, 1.0)
        assert status == 200 and not closed
        s.sendall(second)
        assert_json_error(*read_answer(s, DEADLINE + 3)[:3], expected, pattern)


def test_connection_limit_answers_json_503_with_retry_after(small_server):
    _, port = small_server
    idle = [connect(port) for _ in range(LIMIT)]       # open, counted, silent (inside the header deadline)
    try:
        time.sleep(0.3)
        status, headers, body = get(port, "/healthz")
    finally:
        for s in idle:
            s.close()
    assert_json_error(status, headers, body, 503, f"limit of {LIMIT} connections")
    assert headers.get("retry-after") == "1"
    time.sleep(0.3)
    assert get(port, "/healthz")[0] == 200          # the server comes back once they are gone

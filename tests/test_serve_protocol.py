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


def drip_until_answered(s: socket.socket, data: bytes, every: float) -> None:
    """Send ``data`` a byte at a time, one every ``every`` seconds, until the server answers (or
    closes): the answer is left unread for the caller."""
    for i in range(len(data)):
        try:
            s.send(data[i:i + 1])
        except OSError:
            return
        s.settimeout(every)
        try:
            if s.recv(1, socket.MSG_PEEK):
                return
        except socket.timeout:
            pass


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
        drip_until_answered(s, b"\xff" * (int(DEADLINE / 0.25) + 8), 0.25)     # drip past the deadline
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


# ----------------------------------------------------------------------------- slow clients at the limits
# A second server: 12 connections at most, 4 per client address, a floor of 1000 bytes/s after a
# 2.5 s grace, 10 s deadlines (so that the rules above, not the deadlines, are what is seen). Each
# 127.x.y.z is a client of its own: Linux routes all of 127/8 to the loopback interface.

GUARD_LIMIT, PER_CLIENT, MIN_RATE, GRACE, GUARD_DEADLINE = 12, 4, 1000, 2.5, 10.0


@pytest.fixture(scope="module")
def guarded_server(serve_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("guarded") / "server.log"
    with serve(serve_model[1], log, "--workers", "1", "--queue", "4", "--max-connections", str(GUARD_LIMIT),
               "--max-connections-per-client", str(PER_CLIENT), "--min-transfer-rate", str(MIN_RATE),
               "--transfer-grace", str(GRACE), "--header-timeout", str(GUARD_DEADLINE),
               "--upload-timeout", str(GUARD_DEADLINE)) as (url, _):
        yield url, int(url.rsplit(":", 1)[1]), log


def connect_from(source: str, port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def small_jpeg() -> bytes:
    import cv2

    from serve_support import astronaut_rgb, encode

    return encode(cv2.resize(astronaut_rgb(), (160, 160)), "JPEG", quality=90)     # 12 kB


def recognize(port: int, body: bytes, source: str = "127.0.0.1") -> tuple[int | None, dict, bytes]:
    with connect_from(source, port) as s:
        s.sendall(b"POST /v1/recognize HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        return read_answer(s, 10)[:3]


def test_slow_uploads_into_recognize_from_many_addresses_do_not_lock_out_real_clients(guarded_server):
    """Twice the connection limit of clients, each from its own address, arriving 20 ms apart,
    declare 1 MB to /v1/recognize (a route that reads the body) and drip it a byte every 0.2 s.
    Before, the first of them held the limit until the 10 s deadline and a real client got 503; now
    its request closes the slowest dripper (503 + Retry-After to it, before the 2.5 s rate floor
    applies) and is served."""
    from loadtest import slow_body_flood

    url, port, log = guarded_server
    sources = [f"127.2.0.{i}" for i in range(1, 2 * GUARD_LIMIT + 1)]
    flood = {}
    dripper = threading.Thread(target=lambda: flood.update(slow_body_flood(
        url, len(sources), seconds=2.3, path="/v1/recognize", interval=0.2, sources=sources, stagger=0.02)))
    dripper.start()
    try:
        time.sleep(1.5)
        answers = [recognize(port, small_jpeg()) for _ in range(3)]
    finally:
        dripper.join()
    assert [a[0] for a in answers] == [200] * 3, [(a[0], a[2][:120]) for a in answers]
    assert flood["connect_errors"] == 0 and flood["answers"].get("503", 0) >= GUARD_LIMIT, flood
    assert "slowest connection(s) to make room" in log.read_text()


def test_one_address_is_capped_while_another_is_served(guarded_server):
    _, port, _ = guarded_server
    held = [connect_from("127.3.0.1", port) for _ in range(PER_CLIENT)]
    try:
        time.sleep(0.2)
        with connect_from("127.3.0.1", port) as s:                      # one more from the same address
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            status, headers, body, closed = read_answer(s, 5)
        assert_json_error(status, headers, body, 429, f"at most {PER_CLIENT}")
        assert headers.get("retry-after") == "1" and closed
        with connect_from("127.3.0.2", port) as s:                      # another address meanwhile
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert read_answer(s, 5)[0] == 200
    finally:
        held.pop().close()
    try:
        time.sleep(0.2)
        assert recognize(port, small_jpeg(), "127.3.0.1")[0] == 200       # room again for that address
    finally:
        for s in held:
            s.close()
    status, card = get_json_limits(port)
    assert status == 200 and card["max_connections_per_client"] == PER_CLIENT and card["max_connections"] == GUARD_LIMIT
    assert card["min_transfer_rate_bytes_per_s"] == MIN_RATE and card["transfer_grace_s"] == GRACE


def get_json_limits(port: int) -> tuple[int | None, dict]:
    status, _, body = get(port, "/v1/model")
    return status, json.loads(body)["limits"]


@pytest.mark.parametrize("head, drip, pattern", [
    (b"POST /v1/recognize HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\n", b"\xff" * 40,
     "below the minimum of 1000 bytes/s"),
    (b"GET /healthz HTTP/1.1\r\nHo", b"st: t\r\nX-Slow: " + b"a" * 40, "below the minimum of 1000 bytes/s")],
    ids=["body", "headers"])
def test_a_drip_below_the_rate_floor_is_cut_off_after_the_grace_not_at_the_deadline(guarded_server, head, drip,
                                                                                   pattern):
    port = guarded_server[1]
    t0 = time.monotonic()
    with connect_from("127.4.0.1", port) as s:
        s.sendall(head)
        drip_until_answered(s, drip, 0.25)              # 4 bytes/s
        status, headers, body, closed = read_answer(s, 5)
    assert_json_error(status, headers, body, 408, pattern)
    assert closed and GRACE - 0.1 < time.monotonic() - t0 < GRACE + 2.0 < GUARD_DEADLINE


def test_a_slow_but_steady_upload_above_the_floor_is_served(guarded_server):
    """12 kB at about 3 kB/s (three times the floor), 4 s: past the grace, inside the deadline."""
    port = guarded_server[1]
    body = small_jpeg()
    t0 = time.monotonic()
    with connect_from("127.5.0.1", port) as s:
        s.sendall(b"POST /v1/recognize HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        for i in range(0, len(body), 300):
            s.sendall(body[i:i + 300])
            time.sleep(0.1)
        status, _, answer, _ = read_answer(s, 10)
    assert time.monotonic() - t0 > GRACE + 1
    assert status == 200 and json.loads(answer)["width"] == 160, answer[:200]


def test_an_idle_kept_alive_connection_is_closed_without_an_unasked_answer(small_server):
    """After its answer, a kept-alive connection that starts no new request is closed at the header
    deadline with nothing written: an unsolicited 408 would be taken for the next request's answer."""
    _, port = small_server
    with connect(port) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(4096)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(next(v for k, v in (h.split(b": ", 1) for h in head.split(b"\r\n")[1:])
                          if k.lower() == b"content-length"))
        while len(body) < length:
            body += s.recv(4096)
        assert head.startswith(b"HTTP/1.1 200") and len(body) == length
        s.settimeout(DEADLINE + 4)
        t0 = time.monotonic()
        late = s.recv(4096)
        assert late == b"", late[:200]
        assert time.monotonic() - t0 < DEADLINE + 3

"""Loopback load and fault clients for ``litefer serve``, used by ``benchmarks/serve_load.py``,
``benchmarks/robustness.py`` and the tests (``tests/conftest.py`` puts this folder on the path);
not part of the installed package.

* :func:`run_load`: ``clients`` threads, each with one keep-alive connection, each sending
  ``requests`` uploads (or GETs) one after another; latency of every request and the status counts.
* :data:`FAULTS`: misbehaving clients, each on its own raw socket: a truncated JPEG, a text file, a
  body larger than the limit (declared, and chunked without a length), an image whose header
  claims 30,000 x 30,000 pixels, a body sent a byte at a time (slowloris), headers sent a byte at a
  time, and a client that vanishes mid-upload. Each expects a 4xx, or for the slow ones a 4xx or a
  timeout, or for the vanishing one nothing at all; the server must go on serving the others.
* :func:`load_with_faults`: the load and all faults at the same time.

Only the standard library is used on the client side.
"""
from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np


def _addr(url: str) -> tuple[str, int]:
    u = urlsplit(url)
    if u.scheme != "http" or not u.hostname:
        raise ValueError(f"expected an http://host:port URL, got {url!r}")
    return u.hostname, u.port or 80


def get_json(url: str, path: str, timeout: float = 10.0) -> tuple[int, dict]:
    host, port = _addr(url)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


def wait_ready(url: str, timeout: float = 60.0, proc=None) -> dict:
    """Poll ``/healthz`` until it answers 200; raises RuntimeError (with the reason) otherwise."""
    t0, last = time.monotonic(), None
    while time.monotonic() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before it was ready")
        try:
            status, body = get_json(url, "/healthz", timeout=2)
            if status == 200:
                return body
            last = f"HTTP {status}"
        except OSError as e:
            last = str(e)
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready within {timeout:g} s ({last})")


# ----------------------------------------------------------------------------- load

@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)   # successful (2xx) requests
    statuses: Counter = field(default_factory=Counter)         # HTTP status or error name -> count
    faces: Counter = field(default_factory=Counter)            # faces per 2xx answer -> count
    wall_s: float = 0.0
    clients: int = 0
    requests: int = 0

    def summary(self) -> dict:
        lat = np.array(self.latencies_ms, dtype=np.float64)
        n = int(sum(self.statuses.values()))
        pct = (lambda q: round(float(np.percentile(lat, q)), 1)) if len(lat) else (lambda q: None)
        return {"clients": self.clients, "requests": n, "ok": len(self.latencies_ms),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items(), key=lambda kv: str(kv[0]))},
                "server_errors": sum(v for k, v in self.statuses.items() if isinstance(k, int) and k >= 500),
                "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
                "mean_ms": round(float(lat.mean()), 1) if len(lat) else None,
                "max_ms": round(float(lat.max()), 1) if len(lat) else None,
                "wall_s": round(self.wall_s, 2), "throughput_rps": round(len(lat) / self.wall_s, 2) if self.wall_s else None,
                "faces_per_answer": {str(k): v for k, v in sorted(self.faces.items())}}


def run_load(url: str, body: bytes | None, clients: int, requests: int, content_type: str = "image/jpeg",
             timeout: float = 60.0, duration_s: float | None = None, pause_s: float = 0.0,
             path: str = "/v1/recognize") -> LoadResult:
    """``clients`` concurrent keep-alive clients, ``requests`` POST ``path`` each (a GET where ``body``
    is None), or with ``duration_s`` as many as each sends in that time; ``pause_s`` between a
    client's requests."""
    if clients < 1 or requests < 1:
        raise ValueError(f"clients and requests must be >= 1, got {clients}, {requests}")
    host, port = _addr(url)
    result = LoadResult(clients=clients, requests=requests)
    lock = threading.Lock()
    start = threading.Barrier(clients)
    method, headers = ("GET", {}) if body is None else ("POST", {"Content-Type": content_type})

    def more(sent: int, t_start: float) -> bool:
        return time.perf_counter() - t_start < duration_s if duration_s is not None else sent < requests

    def client():
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        start.wait()
        t_start, sent = time.perf_counter(), 0
        while more(sent, t_start):
            if sent and pause_s:
                time.sleep(pause_s)
            sent += 1
            t0 = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                r = conn.getresponse()
                payload = r.read()
                ms = 1000 * (time.perf_counter() - t0)
                status = r.status
                n_faces = len(json.loads(payload).get("faces") or ()) if status == 200 else None
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
            except (OSError, http.client.HTTPException, ValueError) as e:
                status, ms, n_faces = type(e).__name__, None, None
                conn.close()
            with lock:
                result.statuses[status] += 1
                if status == 200:
                    result.latencies_ms.append(ms)
                    result.faces[n_faces] += 1
        conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, name=f"load-{i}") for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.wall_s = time.perf_counter() - t0
    return result


# ----------------------------------------------------------------------------- faults

@dataclass
class FaultOutcome:
    name: str
    expect: str          # what counts as handled
    outcome: str         # "HTTP 413", "timeout", "closed", "reset", "no response (client left)"
    status: int | None
    seconds: float
    ok: bool
    message: str = ""
    key: str = ""        # its name in FAULTS


def _read_response(sock: socket.socket, deadline: float) -> tuple[int | None, str, str]:
    """(status, outcome, message) of whatever the server answers on ``sock`` before ``deadline``."""
    data = b""
    try:
        while time.monotonic() < deadline:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, rest = data.partition(b"\r\n\r\n")
            if sep:
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), None)
                if length is not None and len(rest) >= length:
                    break
    except socket.timeout:
        if not data:
            return None, "timeout", ""
    except ConnectionResetError:
        if not data:
            return None, "reset", ""
    if not data:
        return None, "closed", ""
    try:
        status = int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None, "garbled", data[:80].decode("latin-1")
    body = data.partition(b"\r\n\r\n")[2]
    try:
        message = json.loads(body).get("message", "")
    except ValueError:
        message = body[:120].decode("latin-1")
    return status, f"HTTP {status}", message


def read_answer(s: socket.socket, within: float) -> tuple[int | None, dict, bytes, bool]:
    """(status, headers, body, closed) of what the server sends within ``within`` seconds; closed
    says whether the server also closed the connection by then."""
    data, closed, end = b"", False, time.monotonic() + within
    while time.monotonic() < end:
        s.settimeout(max(0.01, end - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head:
        return None, {}, b"", closed
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body, closed


def exchange(url: str, data: bytes, within: float = 10.0) -> tuple[int | None, dict, bytes, bool]:
    """Send raw ``data`` on a new connection; :func:`read_answer` of what comes back."""
    with _connect(url, within) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass                       # the server answered and closed before taking it all
        return read_answer(s, within)


def _connect(url: str, timeout: float, source: str | None = None) -> socket.socket:
    """A connection to ``url``'s server, from the local address ``source`` when given."""
    return socket.create_connection(_addr(url), timeout=timeout, source_address=(source, 0) if source else None)


def _request_head(length: int | None, content_type: str = "image/jpeg", chunked: bool = False) -> bytes:
    lines = ["POST /v1/recognize HTTP/1.1", "Host: loadtest", f"Content-Type: {content_type}"]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _finish(name: str, expect: str, t0: float, status, outcome, message, accept_timeout: bool) -> FaultOutcome:
    ok = (status is not None and 400 <= status < 500) or (accept_timeout and status is None
                                                          and outcome in ("timeout", "closed", "reset"))
    return FaultOutcome(name, expect, outcome, status, round(time.monotonic() - t0, 2), ok, message)


def _send_whole(url: str, name: str, body: bytes, content_type: str, timeout: float) -> FaultOutcome:
    t0 = time.monotonic()
    with _connect(url, timeout) as s:
        s.sendall(_request_head(len(body), content_type) + body)
        status, outcome, message = _read_response(s, t0 + timeout)
    return _finish(name, "4xx", t0, status, outcome, message, accept_timeout=False)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature + IHDR claiming ``width`` x ``height`` grey pixels, with one tiny IDAT: the
    header parses, the pixels do not exist (a decompression-bomb probe that costs nothing to send)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def big_png(width: int = 7280, height: int = 5450) -> bytes:
    """A flat grey PNG of ``width`` x ``height`` pixels: about 126 KB to send, 119 MB decoded."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 90, 90)).save(buf, format="PNG")
    return buf.getvalue()


def large_image_phase(url: str, count: int, concurrent: int = 2, idle_s: float = 2.0) -> dict:
    """``count`` 39.7-MP PNGs, ``concurrent`` at a time; the server's RSS before and once idle after."""
    png = big_png()
    before = get_json(url, "/healthz")[1].get("rss_mib")
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrent) as ex:
        runs = list(ex.map(lambda _: run_load(url, png, 1, 1, content_type="image/png", timeout=120), range(count)))
    wall = time.perf_counter() - t0
    time.sleep(idle_s)
    after = get_json(url, "/healthz")[1].get("rss_mib")
    statuses = Counter()
    for r in runs:
        statuses.update(r.statuses)
    return {"images": count, "megapixels": 39.7, "png_bytes": len(png), "concurrent": concurrent,
            "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)}, "wall_s": round(wall, 1),
            "rss_before_mib": before, "rss_after_idle_mib": after}


def slow_body_flood(url: str, connections: int, seconds: float, path: str = "/healthz", interval: float = 1.0,
                    sources: list[str] | None = None, reconnect: bool = False, stagger: float = 0.0) -> dict:
    """``connections`` clients that each send ``POST path`` declaring a 1 MB body, then drip it a byte
    every ``interval`` s for ``seconds``; counts those the server answered and closed, and when.

    ``sources``: client addresses to bind in turn (on Linux every 127.0.0.x reaches a loopback
    server, each a client of its own); ``reconnect``: at every drip, open a new connection for each
    one the server closed, as an attacker who wants to keep ``connections`` open would; ``stagger``:
    seconds between the first connections (arrivals spread out, as a real flood's are)."""
    flood = _Drippers(url, path, sources or [None])
    t0 = time.monotonic()
    for i in range(connections):
        if i and stagger:
            time.sleep(stagger)
        flood.connect()
    next_drip = t0 + interval
    while (flood.open or reconnect) and time.monotonic() - t0 < seconds:
        flood.poll(t0, max(0.0, min(0.05, next_drip - time.monotonic())))
        if time.monotonic() >= next_drip:
            next_drip += interval
            flood.drip()
            while reconnect and len(flood.open) < connections and time.monotonic() - t0 < seconds:
                flood.connect()
    still_open = len(flood.open)
    flood.close()
    closed_at = flood.closed_at
    return {"connections": connections, "path": path, "sources": len(sources or [None]),
            "closed_by_server": len(closed_at), "last_closed_s": round(max(closed_at), 2) if closed_at else None,
            "still_open": still_open, "watched_s": seconds, "opened": flood.opened, "connect_errors": flood.failed,
            "answers": {str(k): v for k, v in sorted(flood.answers.items())}}


class _Drippers:
    """The flood's open connections: opened from the given source addresses in turn, dripped into,
    and watched for the server's answers and closes."""

    def __init__(self, url: str, path: str, sources: list):
        self.url, self.sources = url, sources
        self.head = f"POST {path} HTTP/1.1\r\nHost: flood\r\nContent-Type: image/jpeg\r\n" \
                    "Content-Length: 1000000\r\n\r\nx".encode()
        self.open, self.closed_at, self.answers = set(), [], Counter()
        self.opened = self.failed = 0

    def connect(self) -> None:
        source = self.sources[self.opened % len(self.sources)]
        self.opened += 1
        try:
            s = _connect(self.url, 10, source)
            s.sendall(self.head)
        except OSError:
            self.failed += 1
            return
        self.open.add(s)

    def poll(self, t0: float, wait: float) -> None:
        """Read what the server sent; a connection it closed is counted and dropped."""
        import select

        for s in select.select(list(self.open), [], [], wait)[0]:
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if data.startswith(b"HTTP/1."):
                self.answers[int(data.split(b" ", 2)[1])] += 1
            if not data:
                self.open.discard(s)
                s.close()
                self.closed_at.append(time.monotonic() - t0)

    def drip(self) -> None:
        for s in list(self.open):
            try:
                s.send(b"x")
            except OSError:
                pass

    def close(self) -> None:
        for s in self.open:
            s.close()
        self.open.clear()


def fault_truncated(url, jpeg: bytes, timeout: float = 30.0, **_):
    return _send_whole(url, "truncated JPEG (first half of the file)", jpeg[: len(jpeg) // 2], "image/jpeg", timeout)


def fault_non_image(url, timeout: float = 30.0, **_):
    return _send_whole(url, "not an image (text)", b"this is not an image\n" * 50, "image/jpeg", timeout)


def fault_huge_dimensions(url, timeout: float = 30.0, **_):
    return _send_whole(url, "PNG header claiming 30000 x 30000 pixels", png_header_only(30000, 30000), "image/png", timeout)


def fault_oversized(url, max_upload_bytes: int, timeout: float = 30.0, **_):
    """Declares a body one byte over the limit; the server should answer 413 before reading it."""
    t0 = time.monotonic()
    with _connect(url, timeout) as s:
        s.sendall(_request_head(max_upload_bytes + 1))
        status, outcome, message = _read_response(s, t0 + timeout)
    return _finish(f"oversized, declared ({max_upload_bytes + 1} bytes)", "4xx", t0, status, outcome, message, False)


def _send_until_answered(url: str, first: bytes, pieces, give_up_s: float, wait_s: float, timeout: float):
    """Send ``first``, then ``pieces`` one by one, waiting ``wait_s`` after each for the server to
    answer or close; stop at that, when ``pieces`` run out or after ``give_up_s``.
    Returns (start time, bytes of pieces sent, status, outcome, message)."""
    t0, sent = time.monotonic(), 0
    with _connect(url, timeout) as s:
        try:
            s.sendall(first)
            for piece in pieces:
                if time.monotonic() - t0 > give_up_s:
                    break
                s.sendall(piece)
                sent += len(piece)
                s.settimeout(wait_s)
                try:
                    s.recv(1, socket.MSG_PEEK)          # the server answered (or closed): stop sending
                except socket.timeout:
                    continue
                break
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, outcome, message = _read_response(s, time.monotonic() + 5)
    return t0, sent, status, outcome, message


def fault_oversized_chunked(url, max_upload_bytes: int, timeout: float = 30.0, **_):
    """Streams a chunked body without a length until the server answers (it should, with 413)."""
    block = b"\xff" * 65536
    frames = (b"%x\r\n" % len(block) + block + b"\r\n" for _ in range(4 * max_upload_bytes // len(block) + 1))
    t0, sent, status, outcome, message = _send_until_answered(url, _request_head(None, chunked=True), frames,
                                                              timeout, 0.01, timeout)
    return _finish(f"oversized, chunked without a length ({sent} bytes sent)", "4xx", t0, status, outcome, message,
                   False)


def _trickle(url: str, name: str, first: bytes, drip: bytes, give_up_s: float, interval: float, timeout: float):
    """Send ``first``, then ``drip`` one byte every ``interval`` s: the server should cut it off (4xx)."""
    t0, _, status, outcome, message = _send_until_answered(url, first, (drip[i:i + 1] for i in range(len(drip))),
                                                           give_up_s, interval, timeout)
    return _finish(name, "4xx or timeout", t0, status, outcome, message, True)


def fault_slow_body(url, upload_timeout: float, timeout: float = 60.0, interval: float = 0.5, **_):
    """Declares 100 kB, then sends one byte every ``interval`` s (slowloris on the body)."""
    return _trickle(url, "slow body: 1 byte per %.1f s (slowloris)" % interval, _request_head(100_000),
                    bytes(100_000), upload_timeout + 10, interval, timeout)


def fault_slow_headers(url, header_timeout: float, timeout: float = 60.0, interval: float = 0.5, **_):
    """Sends the request line and headers one byte every ``interval`` s (classic slowloris)."""
    return _trickle(url, "slow headers: 1 byte per %.1f s (slowloris)" % interval, b"", _request_head(10),
                    header_timeout + 10, interval, timeout)


def fault_vanish(url, timeout: float = 10.0, **_):
    """Declares 100 kB, sends 1 kB and closes the connection: nobody to answer; the server must carry on."""
    t0 = time.monotonic()
    with _connect(url, timeout) as s:
        s.sendall(_request_head(100_000) + b"\x00" * 1000)
    return FaultOutcome("client vanishes mid-upload", "server unaffected", "no response (client left)", None,
                        round(time.monotonic() - t0, 2), True)


FAULTS = {"truncated": fault_truncated, "non_image": fault_non_image, "huge_dimensions": fault_huge_dimensions,
          "oversized": fault_oversized, "oversized_chunked": fault_oversized_chunked, "slow_body": fault_slow_body,
          "slow_headers": fault_slow_headers, "vanish": fault_vanish}


def run_faults(url: str, jpeg: bytes, limits: dict, names=None) -> list[FaultOutcome]:
    """Run the named faults (all by default) at the same time, each on its own connection."""
    names = list(names or FAULTS)
    unknown = set(names) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {sorted(FAULTS)}")
    kwargs = {"jpeg": jpeg, "max_upload_bytes": int(limits["max_upload_bytes"]),
              "upload_timeout": float(limits["upload_timeout_s"]), "header_timeout": float(limits["header_timeout_s"])}
    with ThreadPoolExecutor(len(names)) as ex:
        futures = {n: ex.submit(FAULTS[n], url, **kwargs) for n in names}
        out = []
        for n, f in futures.items():
            try:
                o = f.result()
            except OSError as e:     # e.g. refused connection: the fault could not even be delivered
                o = FaultOutcome(n, "4xx", f"client error {type(e).__name__}: {e}", None, 0.0, False)
            o.key = n
            out.append(o)
        return out


def load_with_faults(url: str, body: bytes, clients: int, requests: int, limits: dict,
                     fault_names=None, timeout: float = 60.0) -> tuple[LoadResult, list[FaultOutcome]]:
    """The load and the faults at once: the faults start once the load is under way."""
    with ThreadPoolExecutor(1) as ex:
        load = ex.submit(run_load, url, body, clients, requests, "image/jpeg", timeout)
        time.sleep(0.2)
        faults = run_faults(url, body, limits, fault_names)
        return load.result(), faults


# ----------------------------------------------------------------------------- report

def markdown_table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    """``rows`` (dicts) as a results_page table: ``cols`` is (key, column title) pairs."""
    from results_page import table

    return "\n".join(table([title for _, title in cols], [["" if r.get(k) is None else r[k] for k, _ in cols]
                                                          for r in rows]))


LOAD_COLS = [("phase", "phase"), ("clients", "clients"), ("requests", "requests"), ("ok", "200"),
             ("server_errors", "5xx"), ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"), ("p99_ms", "p99 ms"),
             ("max_ms", "max ms"), ("throughput_rps", "req/s"), ("wall_s", "wall s")]
FAULT_COLS = [("name", "fault"), ("expect", "expected"), ("outcome", "outcome"), ("seconds", "s"),
              ("ok", "handled"), ("message", "server's message")]

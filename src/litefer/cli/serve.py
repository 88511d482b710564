"""``litefer serve``: the HTTP API and the live web page.

    litefer serve                                   # packaged model, http://127.0.0.1:8000/
    litefer serve --weights runs/my_run/best.pt --port 8080 --workers 2
    litefer serve --host 0.0.0.0                    # reachable from other machines (webcam needs https there)

Open the printed address in a browser for the page; the API is described at ``/docs``.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from . import options


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..serve.engine import ServeConfig

    d = ServeConfig()
    options.add_weights(p)
    options.add_backend(p, d.backend, d.backend)
    p.add_argument("--browser-model", default=None, metavar="ONNX",
                   help="ONNX file the page runs on-device (default: the served model, exported when it is a .pt)")
    options.add_detector(p, d.detector, d.min_face, note=" on the server; the page's on-device mode runs the same (a YuNet "
                         "server serves its model file at /v1/detector.onnx)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: %(default)s)")
    _add_capacity_arguments(p, d)
    _add_limit_arguments(p, d)
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument("--no-access-log", action="store_true", help="do not log one line per request")


def _add_capacity_arguments(p: argparse.ArgumentParser, d) -> None:
    p.add_argument("--workers", type=int, default=d.workers,
                   help="recognizer threads; requests beyond them queue (default: cores, at most 4: %(default)s)")
    options.add_threads(p, "intra-op threads per worker", d.threads)
    p.add_argument("--queue", type=int, default=d.queue,
                   help="requests allowed to wait for a worker; more are refused with 503 (default: %(default)s)")
    p.add_argument("--max-connections", type=int, default=None,
                   metavar="N", help="open connections served at once, N >= 1 (there is always a limit); beyond them a "
                        "request first closes the slowest connections still sending, else gets 503 (default: 4 x "
                        "(workers + queue), at least 256)")
    p.add_argument("--max-connections-per-client", type=int, default=d.max_connections_per_client, metavar="N",
                   help="open connections per client address; more are answered 429 at once (0: no cap, for use behind "
                        "a reverse proxy, whose address all clients share; default: %(default)s)")


def _add_limit_arguments(p: argparse.ArgumentParser, d) -> None:
    from ..serve.engine import MiB

    p.add_argument("--max-upload-mb", type=float, default=d.max_upload_bytes / MiB,
                   help="largest upload in MiB (default: %(default)s)")
    p.add_argument("--max-megapixels", type=float, default=d.max_pixels / 1e6,
                   help="largest decoded image area (default: %(default)s)")
    p.add_argument("--max-side", type=int, default=d.max_side, help="largest image side in pixels (default: %(default)s)")
    p.add_argument("--request-timeout", type=float, default=d.request_timeout,
                   help="seconds from admission to answer, queue wait included (default: %(default)s)")
    p.add_argument("--upload-timeout", type=float, default=d.upload_timeout,
                   help="seconds to receive a request body (default: %(default)s)")
    p.add_argument("--header-timeout", type=float, default=d.header_timeout,
                   help="seconds to receive request headers (default: %(default)s)")
    p.add_argument("--min-transfer-rate", type=float, default=d.min_transfer_rate, metavar="BYTES_PER_S",
                   help="bytes/s a request (headers and body) must average from --transfer-grace on, else 408 "
                        "(0: off; default: %(default)g)")
    p.add_argument("--transfer-grace", type=float, default=d.transfer_grace, metavar="S",
                   help="seconds from a request's first byte before --min-transfer-rate applies (default: %(default)g)")


FLAG_OF = {"max_upload_bytes": "max_upload_mb", "max_pixels": "max_megapixels"}    # ServeConfig field -> args name


def config_from_args(args: argparse.Namespace):
    """The :class:`~litefer.serve.engine.ServeConfig` the flags describe (it checks the values; a bad
    one is an error naming its flag)."""
    from ..serve.engine import MiB, ServeConfig, SettingError

    try:
        return ServeConfig(weights=args.weights, backend=args.backend, browser_model=args.browser_model,
                           detector=args.detector, yunet_model=args.yunet_model, min_face=args.min_face,
                           workers=args.workers, threads=args.threads, queue=args.queue,
                           max_upload_bytes=int(args.max_upload_mb * MiB), max_pixels=int(args.max_megapixels * 1e6),
                           max_side=args.max_side, request_timeout=args.request_timeout,
                           upload_timeout=args.upload_timeout, header_timeout=args.header_timeout,
                           max_connections=args.max_connections,
                           max_connections_per_client=args.max_connections_per_client,
                           min_transfer_rate=args.min_transfer_rate, transfer_grace=args.transfer_grace)
    except SettingError as e:
        name = FLAG_OF.get(e.name, e.name)
        raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name, e.value)}: must be {e.rule}") from None


def check_listen(host: str, port: int) -> None:
    """Bind ``host:port`` once and let go: a bad port, an unresolvable host or a port in use is then a
    one-line error naming the option (exit 2), not uvicorn's log and exit code after the model loaded."""
    if not 0 <= port <= 65535:
        raise ValueError(f"--port {port}: must be between 0 and 65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise ValueError(f"--host {host}: cannot resolve it ({e.strerror})") from None
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)     # as uvicorn does
        try:
            s.bind(address)
        except OSError as e:
            raise ValueError(f"--host {host} --port {port}: cannot listen there ({e.strerror})") from None


def main(args: argparse.Namespace) -> int:
    import cv2
    import uvicorn

    from ..serve.app import create_app
    from ..serve.engine import prepare_model
    from ..serve.protocol import protocol_class
    from ..utils import setup_logging

    setup_logging(getattr(logging, args.log_level.upper()))
    cfg = config_from_args(args)
    check_listen(args.host, args.port)
    model = prepare_model(cfg)
    app = create_app(cfg, model)
    # OpenCV's own thread pool would multiply with the workers: share the cores between them
    cv2.setNumThreads(max(1, (os.cpu_count() or 1) // cfg.workers))
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"litefer serve: model {model.name} ({model.backend}, {cfg.workers} worker(s) x "
          f"{cfg.threads} thread(s), queue {cfg.queue}); page http://{host}:{args.port}/  API docs "
          f"http://{host}:{args.port}/docs", file=sys.stderr, flush=True)
    http = protocol_class(cfg.header_timeout, cfg.upload_timeout, cfg.min_transfer_rate, cfg.transfer_grace,
                          cfg.max_connections_per_client)
    uvicorn.run(app, host=args.host, port=args.port, http=http, log_level=args.log_level,
                access_log=not args.no_access_log, timeout_keep_alive=5, limit_concurrency=cfg.connection_limit,
                timeout_graceful_shutdown=5)
    return 0

"""``litefer serve``: expression recognition over HTTP, and a web page that runs it live.

* ``engine``: upload decoding with limits and a bounded pool of recognizers (one per worker thread),
  so that concurrent requests queue instead of oversubscribing the CPU;
* ``app``: the FastAPI application (``POST /v1/recognize``, ``GET /healthz``, ``GET /v1/model``, the
  ONNX model and the face detector (the YuNet model file, or the Haar cascades) for the page's on-device
  mode, OpenAPI docs at ``/docs``);
* ``protocol``: uvicorn's HTTP/1.1 protocol with deadlines and a minimum transfer rate on request
  headers and bodies, a cap of connections per client address and the slowest connections closed
  to make room at the connection limit (slow clients), and JSON for the errors answered below the
  application;
* ``static/``: the page (``index.html``, ``app.js``, ``pipeline.js``); ``static/vendor/`` is filled
  from npm by ``make web`` (onnxruntime-web, opencv.js) and is not committed.
"""
from __future__ import annotations

from .engine import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def create_app(config: ServeConfig):
    """The FastAPI application for ``config`` (imports FastAPI on first use)."""
    from .app import create_app as _create

    return _create(config)

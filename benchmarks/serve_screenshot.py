"""The page's published screenshot: ``litefer serve`` with the shipped model, the astronaut photo
(NASA's public-domain portrait of Eileen Collins, packaged with litefer, a real face) analysed on-device in headless
Chromium, as a user who picks an image would see it.

    .venv/bin/python benchmarks/serve_screenshot.py --out results/serve_screenshot.png

Needs Chromium (``apt-get install chromium`` or ``--chromium PATH``), Playwright and the page's npm
files (``make web``). Prints the label and scores the page showed and those of the Python API.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from serve_load import start_server

from litefer.utils import atomic_write_bytes

FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def page_screenshot(url: str, photo: Path, chromium: str, mode: str, prior: str) -> tuple[bytes, dict]:
    """Open the page, pick ``photo`` in ``mode`` with ``prior``; returns (PNG bytes, the face shown)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            page.goto(f"{url}/?mode={mode}")
            page.wait_for_selector("body[data-ready='1']", timeout=180_000)
            page.select_option("#prior", prior)
            before = page.evaluate(f"window.litefer.state.frames.{mode}")
            page.set_input_files("#file", str(photo))
            page.wait_for_function(f"window.litefer.state.frames.{mode} > {before}", timeout=180_000)
            faces = page.evaluate("window.litefer.state.lastFaces.map(f => ({box: f.box, label: f.label, "
                                  "score: f.score, scores: f.scores}))")
            error = page.evaluate("window.litefer.state.error")
            if error:
                raise SystemExit(f"serve_screenshot: the page reported an error: {error}")
            return page.screenshot(), (faces[0] if faces else {})
        finally:
            browser.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="default", help="what `litefer serve` runs (default: the shipped model)")
    ap.add_argument("--mode", choices=("device", "server"), default="device", help="where the page runs the model")
    ap.add_argument("--prior", choices=("dataset", "balanced"), default="dataset", help="the page's class prior")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--out", default="results/serve_screenshot.png")
    args = ap.parse_args(argv)
    if not Path(args.chromium).is_file():
        raise SystemExit(f"serve_screenshot: Chromium not found at {args.chromium} (apt-get install chromium)")
    from litefer import Recognizer
    from litefer.inference.samples import sample_photo

    photo = sample_photo()
    with tempfile.TemporaryDirectory(prefix="litefer-shot-") as tmp:
        url, proc, _ = start_server(args.weights, 1, Path(tmp) / "server.log", [])
        try:
            png, face = page_screenshot(url, photo, args.chromium, args.mode, args.prior)
        finally:
            proc.terminate()
            proc.wait(15)
    if not face:
        raise SystemExit("serve_screenshot: the page found no face in the photo")
    atomic_write_bytes(args.out, png)
    want = Recognizer(weights=args.weights, backend="onnxruntime", prior=args.prior).recognize(photo)[0]
    print(f"{args.out}: page ({args.mode}, prior={args.prior}) {face['label']} {100 * face['score']:.1f} %; "
          f"Python API {want.label} {100 * want.score:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())

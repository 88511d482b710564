"""``litefer fetch``: download a third-party file or published weights, on request only
(the library is :mod:`litefer.fetch`)."""
from __future__ import annotations

import argparse

from .options import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..fetch import KNOWN

    p.add_argument("source", nargs="?", help=f"a known name ({', '.join(sorted(KNOWN))}) or an http(s)/file URL")
    p.add_argument("--url", default=None, help="fetch a known name from this address instead (mirror or file://)")
    p.add_argument("--sha256", default=None, help="expected SHA-256 of the file; a mismatch is an error")
    p.add_argument("--out", default=None, help="where to write it (default: <cache>/models/<file name>)")
    p.add_argument("--force", action="store_true", help="download again even if the file is cached")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="give up when the server does not answer within S seconds (default: %(default)s)")
    p.add_argument("--list", action="store_true", help="list the known sources and whether each is cached")


def main(args: argparse.Namespace) -> int:
    from ..fetch import KNOWN, cached_path, fetch
    from ..utils import sha256_file

    if args.list or not args.source:
        for name, src in sorted(KNOWN.items()):
            have = cached_path(name)
            print(f"{name:8s} {'cached at ' + str(have) if have else 'not fetched'}\n         {src.about}\n"
                  f"         from {src.url}")
        return 0
    if not args.timeout > 0:
        raise UsageError(f"--timeout must be > 0 seconds, got {args.timeout}")
    path = fetch(args.source, url=args.url, sha256=args.sha256, out=args.out, force=args.force, timeout=args.timeout)
    print(f"{path}  sha256 {sha256_file(path)}")
    return 0

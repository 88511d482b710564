"""Batch recognition on a Ray cluster: the same rows as ``litefer predict --csv``, from one machine to many.

    ds = litefer.distributed.recognize(["s3://bucket/photos/"], address="auto")   # a ray.data.Dataset
    litefer.distributed.write_parquet(["photos/", "talk.mp4"], "out/", address="local")

The driver only lists the inputs (files, folders, globs, ``@list`` files, ``s3://``-style URIs) and
splits videos into frame ranges; an actor pool of :class:`~litefer.inference.recognizer.Recognizer`
(one model per actor, a fraction of a CPU or GPU each) reads, decodes and recognises them. Ray is
imported on first use only: ``import litefer.distributed`` works without it (``pip install 'litefer[ray]'``).
"""
from .run import recognize, write_parquet
from .parquet import read_skipped

__all__ = ["recognize", "write_parquet", "read_skipped"]

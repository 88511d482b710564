"""The sample photo shipped in the package (``litefer/samples/astronaut.jpg``, public domain; its
provenance is in ``samples/README.md``), so that demos, tests and export checks need no download and
no scikit-image. Torch-free."""
from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_NAME = "astronaut.jpg"


def sample_photo() -> Path:
    """Path of the sample photo: NASA's portrait of Eileen Collins, 512 x 512, one face."""
    path = Path(__file__).resolve().parents[1] / "samples" / SAMPLE_NAME
    if not path.is_file():
        from .inputs import InputError
        raise InputError(f"{path}: the sample photo is missing from this installation of litefer")
    return path


def sample_bgr() -> np.ndarray:
    """The sample photo decoded as the recognizer decodes files: BGR uint8, 512 x 512 x 3."""
    from .inputs import read_image
    return read_image(sample_photo())


def sample_rgb() -> np.ndarray:
    """The sample photo as RGB uint8 (PIL's and matplotlib's channel order)."""
    return np.ascontiguousarray(sample_bgr()[..., ::-1])

"""One Recognizer shared by several threads gives the serial results (issue 20, item 1)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
from face_fixtures import astronaut_bgr, two_face_composite, yunet_path

import litefer


def _variants() -> list[np.ndarray]:
    """12 real images: the photo flipped, rotated and scaled, and two-face composites."""
    bgr, comp = astronaut_bgr(), two_face_composite()
    out = [bgr, bgr[:, ::-1], cv2.rotate(bgr, cv2.ROTATE_90_CLOCKWISE), cv2.rotate(bgr, cv2.ROTATE_180),
           cv2.resize(bgr, (384, 384), interpolation=cv2.INTER_AREA), cv2.resize(bgr, (700, 700)),
           comp, comp[:, ::-1], cv2.resize(comp, (675, 384), interpolation=cv2.INTER_AREA),
           np.vstack([comp, comp]), cv2.GaussianBlur(bgr, (5, 5), 0), np.full((300, 400, 3), 128, np.uint8)]
    return [np.ascontiguousarray(im) for im in out]


def _summary(faces) -> list[tuple]:
    return [(f.box, f.label, round(f.score, 4)) for f in faces]


def _shared_equals_serial(rec, images, rounds: int = 3) -> None:
    serial = [_summary(rec.recognize(im)) for im in images]
    assert sum(map(len, serial)) >= 10            # the images do have faces to mix up
    jobs = [i for _ in range(rounds) for i in range(len(images))]
    with ThreadPoolExecutor(4) as pool:
        shared = list(pool.map(lambda i: (i, _summary(rec.recognize(images[i]))), jobs))
    wrong = [i for i, got in shared if got != serial[i]]
    assert not wrong, f"images {sorted(set(wrong))} differ from the serial results when threads share one recognizer"


def test_one_haar_recognizer_shared_by_four_threads():
    _shared_equals_serial(litefer.Recognizer(), _variants())


def test_one_yunet_recognizer_shared_by_four_threads():
    rec = litefer.Recognizer(detector=str(yunet_path()))
    _shared_equals_serial(rec, _variants())


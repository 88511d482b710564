"""Where the network looked, per face: the record a recognised face carries, torch-free.

The map is computed by the network's own graph (:class:`litefer.models.explain.ExplainedNet` in
torch, the ``cam`` output of an ONNX file written by ``litefer export --explain``): every class's
Grad-CAM on the last feature map, 4 x 4 at 112 px. This module keeps the label's map
(:class:`Explanation`), averages it with the mirrored pass's as flip TTA averages the logits, and
places the crop-aligned map on the photo by the inverse of the crop's warp.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

CAM_OUTPUT = "cam"                      # the second output of an ONNX model that can explain
METHOD = "grad-cam, in-graph, last feature map"


class ExplainError(ValueError):
    """The model cannot explain: no pooled two-layer classifier, a TorchScript file, or an ONNX
    file without a ``cam`` output."""


EXPORT_HINT = "`litefer export --weights W --explain`"     # the fix each 'cannot explain' message names


@dataclass(eq=False)
class Explanation:
    """The map of one face's predicted label: ``cam`` (h, w) raw and non-negative, ``map`` the same
    scaled to [0, 1] and resized to the face crop's side, ``transform`` the crop's 2 x 3 warp from
    photo to crop pixels (OpenCV's convention), which :meth:`on_photo` inverts."""

    label: str
    cam: np.ndarray = field(repr=False)
    map: np.ndarray = field(repr=False)
    transform: np.ndarray | None = field(default=None, repr=False)
    method: str = METHOD

    @classmethod
    def of(cls, cam: np.ndarray, label: str, side: int, transform: np.ndarray | None = None) -> "Explanation":
        """From the label's raw map: ``cam / cam.max()`` (zeros when the max is 0), bilinear to ``side``."""
        cam = np.asarray(cam, np.float32)
        top = float(cam.max()) if cam.size else 0.0
        unit = cam / top if top > 0 else np.zeros_like(cam)
        return cls(label, cam, cv2.resize(unit, (side, side), interpolation=cv2.INTER_LINEAR), transform)

    @property
    def resolution(self) -> tuple[int, int]:
        """(h, w) of the feature map the explanation really has; ``map`` only interpolates it."""
        return int(self.cam.shape[0]), int(self.cam.shape[1])

    def to_dict(self) -> dict:
        return {"label": self.label, "method": self.method, "resolution": list(self.resolution),
                "cam": [[round(float(v), 6) for v in row] for row in self.cam]}

    def on_photo(self, width: int, height: int) -> tuple[tuple[int, int, int, int], np.ndarray]:
        """``(rect, values)``: the photo rectangle ``(x, y, w, h)`` the warped crop covers (clipped
        to the ``width`` x ``height`` image) and the map on its pixels, 0 outside the crop."""
        if self.transform is None:
            raise ValueError("this explanation has no crop transform (it was not made by a Recognizer)")
        M = np.asarray(self.transform, np.float64)
        side = self.map.shape[0]
        inv = cv2.invertAffineTransform(M)
        corners = np.array([[-0.5, -0.5], [side - 0.5, -0.5], [-0.5, side - 0.5], [side - 0.5, side - 0.5]])
        pts = corners @ inv[:, :2].T + inv[:, 2]
        x0, y0 = np.maximum(np.floor(pts.min(0) + 0.5).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(pts.max(0) + 0.5).astype(int), [width, height])
        w, h = max(int(x1 - x0), 0), max(int(y1 - y0), 0)
        if not (w and h):
            return (int(x0), int(y0), 0, 0), np.zeros((0, 0), np.float32)
        # photo pixel (x0 + u, y0 + v) -> crop pixel A (u, v) + t + A (x0, y0)
        shifted = np.hstack([M[:, :2], (M[:, 2] + M[:, :2] @ np.array([x0, y0], np.float64))[:, None]])
        values = cv2.warpAffine(self.map, shifted, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        return (int(x0), int(y0), w, h), values


def mirror_average(plain: tuple[np.ndarray, np.ndarray], mirrored: tuple[np.ndarray, np.ndarray]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Flip TTA of ``(logits, cam)``: the mirrored pass's map is mirrored back, then both are averaged."""
    return (plain[0] + mirrored[0]) / 2, (plain[1] + mirrored[1][..., ::-1]) / 2

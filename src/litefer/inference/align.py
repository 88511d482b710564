"""Face crops framed like the training data (FER2013), with rotation by the eye line.

FER2013's 48 x 48 faces were cut out by an OpenCV-style face detector, roughly upright, and stored
as grayscale. ``benchmarks/framing.py`` measures that framing on the training images themselves:

* the frontal-face Haar cascade run on (upscaled, padded) FER2013 images returns a box that is the
  frame itself: median box (0.5, 0.25, 47, 47) in 48-pixel units, i.e. the frame is the Haar box
  enlarged 48/47 about its centre;
* YuNet's five landmarks sit at the positions of ``FER2013_TEMPLATE`` (medians over 2,869 training
  faces, mirrored to be left-right symmetric, in a 48-pixel frame whose pixel i spans [i, i+1));
* the eye line is level on average (median 0.9 degrees, spread 7-8 degrees): FER2013 faces were
  not rotated, they are upright faces as the detector found them.

So a face found by YuNet is mapped onto the landmark template by a least-squares similarity
transform of all five landmarks; a face found by the Haar cascade is framed by its (enlarged) box.
``benchmarks/landmark_framing.py`` (``results/landmark_framing.md``) measured the alternatives on
JAFFE and Yale: YuNet's box framed like a Haar box, fewer landmarks (eyes + nose, eyes + mouth,
eyes), always levelling, a second YuNet pass on the levelled face; none beat the five-point fit
(JAFFE 48.8 % against 46.0-48.4 %, Yale equal), so it stays. Where the eyes are
found and the eye line tilts by more than 10 degrees (beyond FER2013's own spread and the training
rotations), the face is rotated about the frame centre so that the eye line is level; smaller
tilts are left as FER2013 left them
(levelling every face lowers the match to FER2013's framing, see ``results/framing.md``). Large faces are warped to an
intermediate size and area-averaged down, so the crop is not aliased. Colour is then dropped
(BT.601 luma, as OpenCV and PIL compute it) for grayscale-trained weights. The crop is what the
model's own preprocessing (resize, channel replication, normalisation) receives.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..card import FER2013_SIDE, Card
from .detect import Detection

FER_SIZE = FER2013_SIDE
# Subject's right eye, left eye, nose tip, right and left mouth corner; 48-px frame, continuous coords.
FER2013_TEMPLATE = np.array([[14.9, 18.8], [33.1, 18.8], [24.0, 28.8], [16.6, 36.4], [31.4, 36.4]], np.float32)
# Frame side / Haar box side (the box is centred on the frame).
HAAR_FRAME_SCALE = 48.0 / 47.0
# Tilts the model saw in training (FER2013's eye lines spread about 8 degrees around level, and
# training rotates faces by up to 10) are left as they are; larger ones are levelled.
LEVEL_ABOVE_DEGREES = 10.0
# The landmarks a YuNet face is fitted to (indices into FER2013_TEMPLATE): all five.
LANDMARK_POINTS = (0, 1, 2, 3, 4)

# Quality thresholds: about the 1st / 99th percentiles of FER2013 training faces (48 px crops).
DARK_MEAN, BRIGHT_MEAN = 50.0, 205.0
LOW_CONTRAST_STD = 25.0
BLURRY_LAPLACIAN_VAR = 400.0
CLIPPED_FRACTION = 0.05
# Pose and visibility flags from the five landmarks (``landmark_cues``), set where none of the 377 real
# frontal faces of JAFFE and Yale is flagged (their largest yaw 0.12, smallest width 0.84, largest
# misfit 0.05); what they catch on composited hard cases is in results/hard_photos.md.
TURNED_YAW, TURNED_WIDTH = 0.18, 0.80
OCCLUDED_MISFIT = 0.07
# A face with over this share of its crop beyond the image's edges is cut, not just near an edge.
PARTIAL_FRACTION = 0.2


def landmark_cues(det: Detection, shape: tuple[int, int]) -> dict | None:
    """What the five landmarks say about the face's pose and visibility (None without landmarks):

    * ``yaw``: the nose tip's distance from the line through the eyes' and the mouth corners' midpoints,
      over the eye distance (0 on a frontal face; the nose moves off that line as the head turns away);
    * ``width``: the eye distance over the distance from the eyes' to the mouth's midpoint (1.03 on
      FER2013's template; a face turned away looks narrower);
    * ``misfit``: the landmarks' RMS distance from the template once fitted to it by an affine map (which
      absorbs a turned face's narrowing), over the eye distance: landmarks guessed on a covered face
      are out of place;
    * ``off_image``: whether a landmark lies outside the image (``shape``: its height and width).
    """
    if det.landmarks is None or len(det.landmarks) != 5:
        return None
    lm = np.asarray(det.landmarks, np.float64)
    re, le, nose, rm, lmth = lm
    eyes, mouth = (re + le) / 2, (rm + lmth) / 2
    iod = max(float(np.linalg.norm(le - re)), 1e-6)
    axis = mouth - eyes
    length = max(float(np.linalg.norm(axis)), 1e-6)
    to_nose = nose - eyes
    off = abs(float(axis[0] * to_nose[1] - axis[1] * to_nose[0])) / length
    # the template mapped onto the landmarks by least squares: residuals in image px
    T = np.hstack([FER2013_TEMPLATE.astype(np.float64), np.ones((5, 1))])
    fitted = T @ np.linalg.lstsq(T, lm, rcond=None)[0]
    misfit = float(np.sqrt(np.mean(np.sum((fitted - lm) ** 2, 1)))) / iod
    h, w = shape
    off_image = bool(np.any((lm < -0.5) | (lm > [w - 0.5, h - 0.5])))
    return {"yaw": off / iod, "width": iod / length, "misfit": misfit, "off_image": off_image}


@dataclass(frozen=True)
class CropSpec:
    """The crop a model expects: side in pixels, grayscale or RGB, framing rule, eye-line rotation."""

    size: int = FER_SIZE
    grayscale: bool = True
    framing: str = "fer2013"
    rotate: bool = True
    level_above: float = LEVEL_ABOVE_DEGREES

    def to_dict(self) -> dict:
        return {"size": self.size, "grayscale": self.grayscale, "framing": self.framing, "rotate": self.rotate,
                "level_above": self.level_above}

    @classmethod
    def from_card(cls, card: Card) -> "CropSpec":
        """The crop a model card asks for; fields the card leaves out take the defaults above."""
        c = card.crop
        d = cls()
        return cls(int(c.get("size", d.size)), bool(c.get("grayscale", d.grayscale)), str(c.get("framing", d.framing)),
                   bool(c.get("rotate", d.rotate)), float(c.get("level_above", d.level_above)))


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src points to dst; 2 x 3."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    # in complex form dst = a * src + t with a = sum(conj(s) d) / sum(|s|^2)
    zs, zd = s[:, 0] + 1j * s[:, 1], d[:, 0] + 1j * d[:, 1]
    a = np.vdot(zs, zd) / max(np.vdot(zs, zs).real, 1e-12)
    A = np.array([[a.real, -a.imag], [a.imag, a.real]])
    t = mu_d - A @ mu_s
    return np.hstack([A, t[:, None]])


def frame_transform(det: Detection, size: int = FER_SIZE, rotate: bool = True,
                    level_above: float = LEVEL_ABOVE_DEGREES,
                    points: tuple[int, ...] = LANDMARK_POINTS) -> tuple[np.ndarray, bool, float]:
    """Forward 2 x 3 map from image to crop pixels (OpenCV pixel-centre convention).

    The face is rotated to a level eye line when ``rotate`` and its tilt exceeds ``level_above``
    degrees. ``points`` are the landmarks (indices into ``FER2013_TEMPLATE``) the similarity is
    fitted to. Returns (matrix, whether landmarks or eyes were found, rotation applied in degrees).
    """
    if det.landmarks is not None and len(det.landmarks) == 5:
        idx = list(points)
        src = np.asarray(det.landmarks, np.float64)[idx] + 0.5             # to continuous coordinates
        template = FER2013_TEMPLATE.astype(np.float64)[idx] * (size / FER_SIZE)
        M = _similarity(src, template)
        angle = float(np.degrees(np.arctan2(M[1, 0], M[0, 0])))
        if not rotate or abs(angle) <= level_above:
            scale = float(np.hypot(M[0, 0], M[1, 0]))
            centre = src.mean(0)
            target = template.mean(0)
            M = np.array([[scale, 0, target[0] - scale * centre[0]], [0, scale, target[1] - scale * centre[1]]])
            angle = 0.0
        aligned = True
    else:
        x, y, w, h = det.box
        side = max(w, h) * HAAR_FRAME_SCALE
        cx, cy = x + w / 2.0, y + h / 2.0
        theta, aligned = 0.0, False
        if det.eyes is not None:
            (rx, ry), (lx, ly) = np.asarray(det.eyes, np.float64)
            theta, aligned = float(np.arctan2(ly - ry, lx - rx)), True
            if not rotate or abs(np.degrees(theta)) <= level_above:
                theta = 0.0
        k = size / side
        c, s = np.cos(-theta) * k, np.sin(-theta) * k
        A = np.array([[c, -s], [s, c]])
        t = np.array([size / 2.0, size / 2.0]) - A @ np.array([cx, cy])
        M = np.hstack([A, t[:, None]])
        angle = float(np.degrees(-theta))
    # continuous -> OpenCV pixel centres: dst_cv = A src_cv + t + (A - I) @ [0.5, 0.5]
    A = M[:, :2]
    M = np.hstack([A, (M[:, 2] + (A - np.eye(2)) @ np.array([0.5, 0.5]))[:, None]])
    return M, aligned, angle


def warp_crop(bgr: np.ndarray, M: np.ndarray, size: int = FER_SIZE, grayscale: bool = True,
              box=None) -> tuple[np.ndarray, float]:
    """The S x S crop that the forward map ``M`` (image to crop pixels, see :func:`frame_transform`)
    cuts out of a BGR image: uint8 (S, S, 1) grey or (S, S, 3) RGB, and the share of it that lies
    outside the image (filled by edge replication). ``box`` only names the face in the error raised
    when the crop misses the image altogether."""
    A, t = M[:, :2], M[:, 2]
    scale = float(np.sqrt(abs(np.linalg.det(A))))                          # crop px per image px
    inv = cv2.invertAffineTransform(M)
    corners = np.array([[-1, -1], [size, -1], [-1, size], [size, size]], np.float64)
    src_corners = corners @ inv[:, :2].T + inv[:, 2]
    h, w = bgr.shape[:2]
    x0, y0 = np.floor(src_corners.min(0)).astype(int) - 2
    x1, y1 = np.ceil(src_corners.max(0)).astype(int) + 3
    x0c, y0c, x1c, y1c = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1c <= x0c or y1c <= y0c:
        raise ValueError(f"face box {box} lies outside the {w}x{h} image")
    roi = bgr[y0c:y1c, x0c:x1c]
    roi = cv2.cvtColor(roi, cv2.COLOR_BGR2GRAY) if grayscale else cv2.cvtColor(roi, cv2.COLOR_BGR2RGB)
    t = t + A @ np.array([x0c, y0c], np.float64)                            # ROI offset
    # shrink in two steps when the face is much larger than the crop: warp, then area-average
    factor = int(min(8, np.floor(1.0 / scale))) if scale < 0.5 else 1
    big = size * factor
    Mf = np.hstack([A * factor, (t * factor + (factor - 1) / 2.0)[:, None]])
    crop = cv2.warpAffine(roi, Mf, (big, big), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if factor > 1:
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    if crop.ndim == 2:
        crop = crop[..., None]
    # share of the crop that maps outside the image
    g = (np.arange(16) + 0.5) * size / 16 - 0.5
    gx, gy = np.meshgrid(g, g)
    pts = np.stack([gx.ravel(), gy.ravel()], 1) @ inv[:, :2].T + inv[:, 2]
    outside = float(np.mean((pts[:, 0] < -0.5) | (pts[:, 1] < -0.5) | (pts[:, 0] > w - 0.5) | (pts[:, 1] > h - 0.5)))
    return crop, outside


def crop_face(bgr: np.ndarray, det: Detection, spec: CropSpec = CropSpec()) -> tuple[np.ndarray, dict]:
    """The face as the model's training data framed it: uint8 (S, S, 1) grey or (S, S, 3) RGB, plus quality.

    Quality: ``face_px`` (face side in image pixels), ``aligned`` (eyes or landmarks found), ``angle``
    (degrees of rotation applied; 0 for tilts within ``spec.level_above``), and flags ``small`` (face smaller than the crop, so upsampled), ``clipped``
    (over 5 % of the crop lies outside the image, filled by edge replication), ``dark``, ``bright``,
    ``low_contrast`` and ``blurry`` (outside the range of 98 % of FER2013 training faces); from the
    landmarks, when the detector gives them (YuNet; False for Haar): ``turned`` (the face looks turned
    away: its nose is off the line from the eyes' to the mouth's midpoint by over 0.18 eye distances, or
    its eye distance is under 0.8 of the eyes-to-mouth distance), ``occluded`` (the landmarks are out of
    place for a face: their RMS distance from the template fitted to them by an affine map exceeds 0.07
    eye distances, as where a covered part's landmarks were guessed); and ``partial`` (the face is cut
    by the image's edge: over 20 % of the crop, or a landmark, lies outside the image). None of these
    three is raised on the 377 frontal faces of JAFFE and Yale (``results/hard_photos.md``).
    """
    if spec.framing != "fer2013":
        raise ValueError(f"unknown framing {spec.framing!r}; only 'fer2013' is implemented")
    M, aligned, angle = frame_transform(det, spec.size, spec.rotate, spec.level_above)
    crop, outside = warp_crop(bgr, M, spec.size, spec.grayscale, det.box)
    size, (h, w) = spec.size, bgr.shape[:2]
    grey = crop[..., 0] if crop.shape[2] == 1 else cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    g48 = grey if size == FER_SIZE else cv2.resize(grey, (FER_SIZE, FER_SIZE), interpolation=cv2.INTER_AREA)
    g48 = g48.astype(np.float32)
    mean, std = float(g48.mean()), float(g48.std())
    lap = float(cv2.Laplacian(g48, cv2.CV_32F).var())
    face_px = float(min(det.box[2], det.box[3]))
    cues = landmark_cues(det, (h, w))
    quality = {"face_px": int(round(face_px)), "aligned": aligned, "angle": round(angle, 1),
               "small": face_px < size, "clipped": outside > CLIPPED_FRACTION,
               "dark": mean < DARK_MEAN, "bright": mean > BRIGHT_MEAN,
               "low_contrast": std < LOW_CONTRAST_STD, "blurry": lap < BLURRY_LAPLACIAN_VAR,
               "turned": cues is not None and (cues["yaw"] > TURNED_YAW or cues["width"] < TURNED_WIDTH),
               "occluded": cues is not None and cues["misfit"] > OCCLUDED_MISFIT,
               "partial": outside > PARTIAL_FRACTION or (cues is not None and cues["off_image"])}
    return crop, quality


QUALITY_FLAGS = ("small", "clipped", "dark", "bright", "low_contrast", "blurry", "turned", "occluded", "partial")


def quality_issues(quality: dict) -> list[str]:
    """Names of the raised quality flags, in a fixed order."""
    return [k for k in QUALITY_FLAGS if quality.get(k)]

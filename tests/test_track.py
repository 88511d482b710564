"""FaceTracker: detection every k-th frame on a downscaled frame, template tracking in between, and
re-detection when a face is lost; its options on recognize_video and `litefer predict`."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from face_fixtures import astronaut_bgr, checkpoint, rec_torch, video_file  # noqa: F401

from litefer.inference.detect import Detection, FaceDetector, HaarDetector
from litefer.inference.track import FaceTracker

W, H, SIDE = 320, 240, 80


def background(seed: int = 0) -> np.ndarray:
    """A textured static background (smoothed noise), so a wrong match is not a flat patch."""
    noise = np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (9, 9), 3)


def face_patch() -> np.ndarray:
    return cv2.resize(astronaut_bgr()[56:176, 164:284], (SIDE, SIDE), interpolation=cv2.INTER_AREA)


def frame_with_face(x: int | None, y: int = 60, bg: np.ndarray | None = None) -> np.ndarray:
    frame = (background() if bg is None else bg).copy()
    if x is not None:
        frame[y:y + SIDE, x:x + SIDE] = face_patch()
    return frame


class ScriptedDetector(FaceDetector):
    """Returns the true box of the current frame (set by the test) and records each call's scale."""

    def __init__(self):
        super().__init__(min_size=20)
        self.truth: tuple | None = None
        self.calls: list[float] = []

    def detect(self, bgr, scale=1.0):
        self.calls.append(scale)
        if self.truth is None:
            return []
        eyes = np.float32([[self.truth[0] + 25, self.truth[1] + 30], [self.truth[0] + 55, self.truth[1] + 30]])
        return [Detection(tuple(map(float, self.truth)), 9.0, None, eyes)]


def run(tracker, det, xs, y: int = 60):
    """Feed frames with the face's left edge at each x (None: no face); boxes per frame."""
    out = []
    for x in xs:
        det.truth = None if x is None else (x, y, SIDE, SIDE)
        out.append(tracker.detect(frame_with_face(x, y)))
    return out


def test_a_moving_face_is_followed_between_detections():
    det = ScriptedDetector()
    tracker = FaceTracker(det, detect_every=5, detect_scale=0.5)
    xs = [20 + 6 * i for i in range(12)]
    boxes = run(tracker, det, xs)
    assert len(det.calls) == 3 and set(det.calls) == {0.5}            # frames 0, 5 and 10 only
    assert tracker.detections == 3 and tracker.frames == 12
    for x, found in zip(xs, boxes):
        assert len(found) == 1
        bx, by, bw, bh = found[0].box
        assert abs(bx - x) <= 2 and abs(by - 60) <= 2 and (bw, bh) == (SIDE, SIDE)
        assert np.allclose(found[0].eyes[0], [bx + 25, by + 30])     # eyes move with the box


def test_a_lost_face_triggers_detection_at_once():
    det = ScriptedDetector()
    tracker = FaceTracker(det, detect_every=10, detect_scale=0.5)
    boxes = run(tracker, det, [40, 44, None, None, 60, 64])
    # frame 0: detect; 1: tracked; 2: face gone -> match lost -> detect (nothing);
    # 3: no track -> detect (nothing); 4: detect (found); 5: tracked
    assert len(det.calls) == 4
    assert [len(b) for b in boxes] == [1, 1, 0, 0, 1, 1]
    assert abs(boxes[5][0].box[0] - 64) <= 2


def test_a_jump_beyond_the_search_window_is_a_lost_track():
    det = ScriptedDetector()
    tracker = FaceTracker(det, detect_every=30, detect_scale=1.0)
    boxes = run(tracker, det, [10, 12, 220])
    assert len(det.calls) == 2                                        # frame 0 and the jump
    assert abs(boxes[2][0].box[0] - 220) <= 1


def test_every_frame_detection_when_k_is_1():
    det = ScriptedDetector()
    run(FaceTracker(det, detect_every=1, detect_scale=1.0), det, [10, 12, 14])
    assert det.calls == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("kwargs, match", [({"detect_every": 0}, "detect_every"), ({"detect_scale": 0}, "detect_scale"),
                                           ({"detect_scale": 1.5}, "detect_scale")])
def test_bad_tracker_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FaceTracker(ScriptedDetector(), **kwargs)


def test_detector_scale_argument():
    haar = HaarDetector()
    img = np.ascontiguousarray(astronaut_bgr())
    full, half = haar.detect(img), haar.detect(img, scale=0.5)
    assert len(full) == len(half) == 1
    assert np.allclose(full[0].box, half[0].box, atol=0.12 * full[0].box[2])    # same face, input pixels
    with pytest.raises(ValueError, match="scale"):
        haar.detect(img, scale=0)


def test_recognize_video_with_tracking_agrees_with_every_frame(rec_torch, video_file):
    every = list(rec_torch.recognize_video(video_file))
    tracked = list(rec_torch.recognize_video(video_file, detect_every=4, detect_scale=0.5))
    assert [r.frame for r in tracked] == [r.frame for r in every]
    for a, b in zip(every, tracked):
        assert len(a.faces) == len(b.faces) == 1
        assert abs(a.faces[0].box[0] - b.faces[0].box[0]) <= 0.15 * a.faces[0].box[2]
    with pytest.raises(ValueError, match="detect_every"):
        rec_torch.recognize_video(video_file, detect_every=0)


def test_predict_cli_tracking_options(checkpoint, video_file, capsys):
    from litefer.cli import main as cli

    code = cli(["predict", str(video_file), "--weights", str(checkpoint), "--detect-every", "3",
                "--detect-scale", "0.5", "--json", "--no-progress"])
    assert code == 0
    assert cli(["predict", str(video_file), "--weights", str(checkpoint), "--detect-scale", "0"]) == 2
    assert "--detect-scale must be in (0, 1]" in capsys.readouterr().err

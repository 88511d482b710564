"""Hard photos (issue 25) on real faces: small faces in a large photo, faces turned in the image plane,
many faces in one photo, side lighting and glasses (Yale), and the quality flags of turned, covered and
cut faces. The composites come from ``benchmarks/hard_photos.py``, whose report has the full figures;
these tests use small subsets of JAFFE and Yale (``../shared/data``) and skip without them."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from face_fixtures import yunet_path

import hard_photos as hp
from litefer.inference.align import QUALITY_FLAGS, crop_face, quality_issues
from litefer.inference.detect import Detection, HaarDetector, YuNetDetector, turn_matrix, turned_back

NEW_FLAGS = ("turned", "occluded", "partial")


def need(path):
    if not path.is_dir():
        pytest.skip(f"{path} not found (../shared/data is absent on this machine)")


@pytest.fixture(scope="module")
def yunet():
    return YuNetDetector(yunet_path())


@pytest.fixture(scope="module")
def jaffe(yunet):
    """Two photos of each of the 10 JAFFE women, with their truth (YuNet on the upright photo)."""
    need(hp.JAFFE)
    return hp.distinct(hp.jaffe_faces(yunet, every=3), 20)


@pytest.fixture(scope="module")
def yale(yunet):
    need(hp.YALE)
    return [(p.name, b, hp.truth_of(yunet, b)) for p in hp.yale_paths() for b in [hp.read_bgr(p)]]


def once_each(found, truths):
    per, others = hp.count_matches(found, truths)
    return per, others


# ----------------------------------------------------------------------------- 1. small faces, large photo

def test_yunet_finds_every_small_distinct_face_in_a_12_mp_photo(yunet, jaffe):
    """12 different faces of 40-100 px in 4032 x 3024: the 1280-px copy shows them at 13-32 px, the
    tiles find each one once, and nothing else."""
    faces = [(b, t) for _, b, t in jaffe[:12]]
    photo, truths = hp.paste_faces(faces, np.linspace(40, 100, 12).round(), (3024, 4032), cols=4, seed=1)
    per, others = once_each(yunet.detect(photo), truths)
    assert per == [1] * 12 and others == 0, (per, others)


# ----------------------------------------------------------------------------- 2. turned in-plane

def test_turned_copies_map_boxes_and_landmarks_back_exactly():
    points = np.float32([[100, 80], [140, 82], [120, 105], [104, 125], [136, 126]])
    h, w = 240, 320
    for angle in (30.0, -30.0, 45.0):
        M, size = turn_matrix(h, w, angle)
        assert size[0] >= w and size[1] >= h
        on_copy = points @ M[:, :2].T + M[:, 2]
        back = turned_back(Detection((90, 60, 60, 80), 0.9, on_copy, on_copy[:2]), M)
        assert np.allclose(back.landmarks, points, atol=1e-3) and np.allclose(back.eyes, points[:2], atol=1e-3)
        # the box: around the copy's box's inscribed ellipse, centred where its centre maps
        x, y, bw, bh = back.box
        c = cv2.invertAffineTransform(M) @ np.array([120, 100, 1.0])
        assert np.allclose([x + bw / 2, y + bh / 2], c, atol=1e-3)
        assert 60 <= bw <= 80 and 60 <= bh <= 80


@pytest.mark.parametrize("angle", [45, -45, 30])
def test_yunet_finds_faces_turned_up_to_45_degrees_and_the_crop_levels_them(yunet, jaffe, angle):
    errors, level = [], 0
    for _, bgr, truth in jaffe[:6]:
        photo, t = hp.turned_photo(bgr, truth, angle)
        mine = [d for d in yunet.detect(photo) if hp.is_face(d.box, t.box)]
        assert len(mine) == 1
        d = mine[0]
        errors.append(np.linalg.norm(d.landmarks - t.landmarks, axis=1).mean() /
                      np.linalg.norm(t.landmarks[0] - t.landmarks[1]))
        level += abs(hp.crop_tilt(d, t)) < 10
        x, y, w, h = d.box
        assert np.all((t.landmarks >= [x - 0.05 * w, y]) & (t.landmarks <= [x + 1.05 * w, y + h]))
    assert np.median(errors) < 0.12 and level >= 4, (errors, level)     # before issue 25: 0.2-0.3, 0-1 of 6 at 45


def test_turned_landmarks_are_placed_again_on_an_upright_copy(yunet, jaffe):
    """At 45 degrees YuNet's own landmarks are off by about a quarter of the eye distance; placed again
    on an upright copy of the face, within a tenth."""
    plain = YuNetDetector(yunet_path(), turned="none")
    plain.level_landmarks = False
    before, after = [], []
    for _, bgr, truth in jaffe[:6]:
        photo, t = hp.turned_photo(bgr, truth, -45)
        iod = np.linalg.norm(t.landmarks[0] - t.landmarks[1])
        for det, errs in ((plain, before), (yunet, after)):
            d = [d for d in det.detect(photo) if hp.is_face(d.box, t.box)][0]
            errs.append(np.linalg.norm(d.landmarks - t.landmarks, axis=1).mean() / iod)
    assert np.median(after) < 0.1 < np.median(before), (before, after)


def test_haar_finds_a_turned_face_with_turned_copies_only_when_nothing_upright(jaffe, monkeypatch):
    _, bgr, truth = jaffe[0]
    photo, t = hp.turned_photo(bgr, truth, -30)
    assert HaarDetector().detect(photo) == []                      # the cascade sees upright faces only
    found = HaarDetector(turned="empty").detect(photo)
    assert len(found) == 1 and hp.is_face(found[0].box, t.box)
    assert abs(hp.crop_tilt(found[0], t)) < 10                      # its eyes, mapped back, level the crop
    # a photo whose upright search finds a face searches no turned copy
    det = HaarDetector(turned="empty")
    monkeypatch.setattr(det, "_search_turned", lambda *a: pytest.fail("turned copies searched"))
    assert len(det.detect(bgr)) == 1
    assert YuNetDetector(yunet_path()).turned == "none" == HaarDetector().turned    # opt-in: costs faceless photos
    with pytest.raises(ValueError, match="turned must be one of"):
        HaarDetector(turned="sometimes")


# ----------------------------------------------------------------------------- 3. many faces

def test_twenty_distinct_faces_in_one_photo_are_each_found_once(yunet, jaffe, yale):
    picked = [(b, t) for _, b, t in jaffe[:10]] + \
             [(b, t) for _, b, t in hp.distinct([f for f in yale if f[0].endswith(".normal")], 10)]
    sizes = np.random.default_rng(0).permutation(np.linspace(48, 160, 20).round())
    photo, truths = hp.paste_faces(picked, sizes, (1200, 1800), cols=5, seed=0)
    per, others = once_each(yunet.detect(photo), truths)
    assert per == [1] * 20 and others == 0, (per, others)


# ----------------------------------------------------------------------------- 4. Yale light and glasses

def test_side_lit_and_glasses_faces_are_found_once_with_usable_crops(yunet, yale):
    hard = [(name, bgr) for name, bgr, _ in yale if name.endswith((".leftlight", ".rightlight", ".glasses"))][::3]
    assert len(hard) >= 12
    for name, bgr in hard:
        found = yunet.detect(bgr)
        assert len(found) == 1, name
        crop, q = crop_face(bgr, found[0])
        assert q["aligned"] and not any(q[f] for f in NEW_FLAGS), (name, quality_issues(q))
        assert crop.shape == (48, 48, 1) and crop.std() > 20


# ----------------------------------------------------------------------------- 5. flags

def flags_of(det, photos):
    out = []
    for photo in photos:
        found = det.detect(photo)
        out.append(set(quality_issues(crop_face(photo, found[0])[1])) if found else None)
    return out


def test_frontal_faces_raise_none_of_the_pose_flags(yunet, jaffe, yale):
    photos = [b for _, b, _ in jaffe] + [b for _, b, _ in yale[::8]]
    assert all(f is not None and not f & set(NEW_FLAGS) for f in flags_of(yunet, photos))


def test_covered_squeezed_and_cut_faces_are_flagged(yunet, jaffe):
    faces = jaffe[:6]
    cases = {"covered": ([hp.covered(b, t, "right") for _, b, t in faces], {"turned", "occluded"}),
             "squeezed": ([hp.squeezed(b, t, 0.6) for _, b, t in faces], {"turned"}),
             "cut": ([hp.cut(b, t, 0.4, "left") for _, b, t in faces], {"partial"})}
    for name, (photos, expected) in cases.items():
        flagged = [f is not None and bool(f & expected) for f in flags_of(yunet, photos)]
        assert sum(flagged) >= 5, (name, flagged)


def test_the_new_flags_reach_issues_json_and_csv():
    from litefer.inference.recognizer import FaceResult, csv_text

    assert set(NEW_FLAGS) <= set(QUALITY_FLAGS)
    q = {"face_px": 90, "aligned": True, "angle": 0.0, **{f: False for f in QUALITY_FLAGS}, "turned": True,
         "partial": True}
    face = FaceResult((1, 2, 90, 90), "neutral", 0.9, {"neutral": 0.9}, 0.9, q)
    assert face.issues == ["turned", "partial"] and face.to_dict()["issues"] == ["turned", "partial"]
    assert "turned;partial" in csv_text([face])

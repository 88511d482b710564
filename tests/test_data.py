"""Loaders on generated fixtures in the official formats, bad input, and batched augmentation."""

import numpy as np
import pytest
import torch

from fixtures import write_ferplus, write_image_folder, write_rafdb
from litefer.data import (FERPLUS_CLASSES, RAFDB_CLASSES, AugmentConfig, BatchSampler, DataError, Preprocess,
                          augment, build_datasets, load_split, preprocess, stratified_split)
from litefer.data.ferplus import load_ferplus, majority_labels


@pytest.mark.parametrize("gz", [False, True])
def test_ferplus_majority_counts_and_cache(tmp_path, gz):
    expected = write_ferplus(tmp_path / "fer", gz=gz)
    for split, usage in (("train", "Training"), ("val", "PublicTest"), ("test", "PrivateTest")):
        ds = load_ferplus(tmp_path / "fer", split)
        assert len(ds) == expected[usage]
        assert ds.images.shape[1:] == (48, 48, 1) and ds.class_names == FERPLUS_CLASSES
        assert ds.info["skipped_rows"] > 0
    cached = list((tmp_path / "cache").glob("ferplus-*.npz"))
    assert len(cached) == 1
    again = load_ferplus(tmp_path / "fer", "train")          # served from the cache, same content
    assert torch.equal(again.images, load_ferplus(tmp_path / "fer", "train").images)


def test_ferplus_labels_follow_row_order(tmp_path):
    write_ferplus(tmp_path / "fer")
    ds = load_ferplus(tmp_path / "fer", "train")
    # fixture images carry a bright bar whose row encodes the FERPlus label
    rows = ds.images[..., 0].float().mean(2).argmax(1)
    assert torch.equal(((rows * 8) // 48), ds.labels)


def test_majority_rule_matches_definition():
    votes = np.array([
        [8, 1, 0, 0, 0, 0, 0, 0, 1, 0],     # one-vote noise removed -> neutral
        [5, 5, 0, 0, 0, 0, 0, 0, 0, 0],     # tie -> dropped
        [0, 0, 0, 0, 0, 0, 0, 0, 6, 4],     # unknown leads -> dropped
        [0, 0, 3, 0, 0, 0, 0, 2, 0, 0],     # 3 of 5 > half -> surprise
        [0, 0, 0, 0, 0, 0, 0, 4, 0, 6],     # NF leads -> dropped
    ])
    assert majority_labels(votes).tolist() == [0, -1, -1, 2, -1]


def test_ferplus_soft_modes(tmp_path):
    write_ferplus(tmp_path / "fer")
    ds = load_ferplus(tmp_path / "fer", "train", "crossentropy")
    assert ds.soft_targets is not None and ds.soft_targets.shape == (len(ds), 8)
    assert torch.allclose(ds.soft_targets.sum(1), torch.ones(len(ds)))
    assert len(ds) >= len(load_ferplus(tmp_path / "fer", "train"))   # ties are kept as distributions
    with pytest.raises(ValueError, match="label mode"):
        load_ferplus(tmp_path / "fer", "train", "bogus")


def test_ferplus_missing_split_is_reported_not_fatal(tmp_path, caplog):
    write_ferplus(tmp_path / "fer", {"Training": 20, "PublicTest": 10})
    data = build_datasets({"dataset": "ferplus", "root": str(tmp_path / "fer"), "label_mode": "majority"})
    assert data["test"] is None and len(data["train"]) > 0
    assert "PrivateTest" in caplog.text


def test_ferplus_bad_files(tmp_path):
    with pytest.raises(DataError, match="missing fer2013.csv"):
        load_ferplus(tmp_path, "train")
    write_ferplus(tmp_path / "a")
    text = (tmp_path / "a" / "fer2013.csv").read_text().splitlines()
    # wrong columns
    (tmp_path / "a" / "fer2013.csv").write_text("label,pixels,Usage\n" + "\n".join(text[1:]) + "\n")
    with pytest.raises(DataError, match=r"fer2013.csv: expected columns"):
        load_ferplus(tmp_path / "a", "train")
    # malformed pixel row on line 4
    bad = list(text)
    bad[3] = "0,1 2 3,Training"
    (tmp_path / "a" / "fer2013.csv").write_text("\n".join(bad) + "\n")
    with pytest.raises(DataError, match=r"fer2013.csv, line 4: expected 2304 pixel values"):
        load_ferplus(tmp_path / "a", "train")
    # one value out of range on line 5: named, with where it is (the count was reported before)
    bad = list(text)
    fields = text[4].split(",")
    px = fields[1].split()
    px[9] = "300"
    bad[4] = ",".join([fields[0], " ".join(px), *fields[2:]])
    (tmp_path / "a" / "fer2013.csv").write_text("\n".join(bad) + "\n")
    with pytest.raises(DataError, match=r"line 5: pixel values must be in 0..255, found 300 \(pixel 10 of 2304"):
        load_ferplus(tmp_path / "a", "train")
    bad[3] = text[3].replace(" ", " x", 1)
    (tmp_path / "a" / "fer2013.csv").write_text("\n".join(bad) + "\n")
    with pytest.raises(DataError, match=r"line 4: pixels are not integers"):
        load_ferplus(tmp_path / "a", "train")
    # the vote file one row short -> rows cannot be joined
    (tmp_path / "a" / "fer2013.csv").write_text("\n".join(text) + "\n")
    votes = (tmp_path / "a" / "fer2013new.csv").read_text().splitlines()
    (tmp_path / "a" / "fer2013new.csv").write_text("\n".join(votes[:-1]) + "\n")
    with pytest.raises(DataError, match="row order"):
        load_ferplus(tmp_path / "a", "train")


@pytest.mark.parametrize("damage, file, reason", [
    (lambda b: b[: len(b) // 2], "fer2013.csv.gz", r"truncated or corrupt after line \d+ \(EOFError"),
    (lambda b: b"not gzip at all" + b, "fer2013.csv.gz", "truncated or corrupt after line 1 \\(BadGzipFile"),
    (lambda b: b.replace(b"Training", b"Tr\xffining", 1), "fer2013new.csv", "UnicodeDecodeError"),
], ids=["cut gzip", "not gzip", "not UTF-8"])
def test_ferplus_damaged_files_are_named(tmp_path, damage, file, reason):
    """A truncated fer2013.csv.gz raised a bare EOFError (exit 1, no file named)."""
    write_ferplus(tmp_path, {"Training": 40, "PublicTest": 8}, gz=True)
    path = tmp_path / file
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=f"^{path}: .*{reason}"):
        load_ferplus(tmp_path, "train", use_cache=False)


def test_rafdb_layout_split_and_corrupt_image(tmp_path, caplog):
    root = write_rafdb(tmp_path / "raf", corrupt="train_00003_aligned.jpg")
    cfg = {"dataset": "rafdb", "root": str(root), "image_size": 64, "val_fraction": 0.2, "split_seed": 1}
    train, val, test = (load_split(cfg, s) for s in ("train", "val", "test"))
    assert train.class_names == RAFDB_CLASSES
    assert len(test) == 14 and test.images.shape[1:] == (64, 64, 3)
    assert len(train) + len(val) == 42 - 1          # the corrupt file is skipped and reported
    assert "skipped unreadable image" in caplog.text and "train_00003_aligned.jpg" in caplog.text
    assert val.class_counts() == [1] * 7 or min(val.class_counts()) >= 1    # stratified
    # the carve-out is seeded: same seed, same validation images
    assert torch.equal(load_split(cfg, "val").labels, val.labels)


def test_rafdb_bad_label_file(tmp_path):
    root = write_rafdb(tmp_path / "raf", 1, 1)
    label_file = root / "EmoLabel" / "list_patition_label.txt"
    lines = label_file.read_text().splitlines()
    lines[2] = "train_00003.jpg 9"
    label_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"list_patition_label.txt, line 3: label 9 out of range"):
        load_split({"dataset": "rafdb", "root": str(root), "image_size": 32, "val_fraction": 0.1,
                    "split_seed": 0}, "train")
    with pytest.raises(DataError, match="missing label file"):
        load_split({"dataset": "rafdb", "root": str(tmp_path), "image_size": 32, "val_fraction": 0.1,
                    "split_seed": 0}, "train")


def test_image_folder_maps_synonyms_to_ferplus(tmp_path):
    root = write_image_folder(tmp_path / "imgs")
    ds = load_split({"dataset": "folder", "root": str(root), "image_size": 48, "val_fraction": 0.2,
                     "split_seed": 0}, "train", channels=1)
    assert ds.class_names == FERPLUS_CLASSES
    assert set(ds.labels.tolist()) == {FERPLUS_CLASSES.index(c) for c in ("happiness", "sadness", "neutral")}
    (root / "empty").mkdir()
    with pytest.raises(DataError, match="empty contains no images"):
        load_split({"dataset": "folder", "root": str(root), "image_size": 48, "val_fraction": 0.2,
                    "split_seed": 0}, "train")


def test_stratified_split_is_disjoint_and_covers():
    labels = torch.tensor([0] * 10 + [1] * 20 + [2] * 3)
    keep, held = stratified_split(labels, 0.2, seed=3)
    assert set(keep).isdisjoint(held) and len(keep) + len(held) == len(labels)
    assert np.bincount(labels.numpy()[held]).tolist() == [2, 4, 1]


def test_batch_sampler_shards_and_is_reproducible():
    a = BatchSampler(10, 3, seed=1, rank=0, world_size=2)
    b = BatchSampler(10, 3, seed=1, rank=1, world_size=2)
    ia, ib = torch.cat(list(a)), torch.cat(list(b))
    assert set(ia.tolist()).isdisjoint(ib.tolist()) and len(ia) == len(ib) == 5
    a.set_epoch(1)
    first = torch.cat(list(a))
    a.set_epoch(1)
    assert torch.equal(first, torch.cat(list(a)))


def test_augment_shapes_and_identity_equals_preprocess():
    imgs = torch.randint(0, 256, (4, 48, 48, 1), dtype=torch.uint8)
    pp = Preprocess(input_size=64, in_chans=3)
    x = augment(imgs, pp, AugmentConfig(), generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 3, 64, 64) and torch.isfinite(x).all()
    off = AugmentConfig(flip=0, translate=0, rotate=0, contrast=0, noise_std=0)
    # with every augmentation off the warp is the plain resize used at inference
    assert torch.allclose(augment(imgs, pp, off), preprocess(imgs, pp), atol=1e-4)
    flipped = AugmentConfig(flip=1.0, translate=0, rotate=0, contrast=0, noise_std=0)
    assert torch.allclose(augment(imgs, pp, flipped), preprocess(imgs, pp).flip(3), atol=1e-4)

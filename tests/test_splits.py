"""Our own split: deterministic, size-stratified, near-duplicates on one side."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from polypseg.data.duplicates import groups, same_frame_pairs
from polypseg.data.manifest import DataValidationError, read_split, scan_samples, size_bins
from polypseg.data.splits import carve_validation, crossing_pairs, make_split, write_split

from conftest import OUR_SPLIT, copy_samples, real_names

pytestmark = pytest.mark.data  # reads images from ../shared/data


@pytest.fixture(scope="module")
def forty(tmp_path_factory):
    root = copy_samples(real_names("train", 40), tmp_path_factory.mktemp("forty"))
    return root, scan_samples(root)


def test_split_is_deterministic_and_sized(forty):
    root, samples = forty
    a, b = make_split(samples, root, seed=7), make_split(samples, root, seed=7)
    pd.testing.assert_frame_equal(a, b)
    counts = a.split.value_counts()
    assert counts["train"] == 28 and counts["val"] + counts["test"] == 12
    assert not make_split(samples, root, seed=8).equals(a)


def test_split_is_stratified_by_polyp_size(forty):
    root, samples = forty
    split = make_split(samples, root, seed=1).merge(samples, on="name")
    bins = size_bins(split.mask_fraction)
    for part in ("train", "val", "test"):
        assert set(bins[(split.split == part).to_numpy()]) == {0, 1, 2}


def recropped_copy(root, image, name="zz_dup"):
    """The same frame cut 5 % smaller on each side, scaled by 0.9, re-encoded (Kvasir's cjyz…)."""
    buffer = io.BytesIO()
    for sub, path in (("images", image), ("masks", root / "masks" / image.name)):
        frame = Image.open(path)
        w, h = frame.size
        cut = frame.crop((w // 20, h // 20, w - w // 20, h - h // 20))
        cut = cut.resize((int(cut.width * 0.9), int(cut.height * 0.9)))
        buffer = io.BytesIO()
        cut.convert("RGB").save(buffer, format="JPEG", quality=90)
        (root / sub / f"{name}.jpg").write_bytes(buffer.getvalue())


def test_same_frame_copies_stay_together(tmp_path):
    copy_samples(real_names("train", 40), tmp_path)
    image = sorted((tmp_path / "images").glob("*.jpg"))[1]  # [0] is a low-texture frame
    recropped_copy(tmp_path, image)
    paths = sorted((tmp_path / "images").glob("*.jpg"))
    found = same_frame_pairs(paths)
    named = {(paths[i].stem, paths[j].stem) for i, j, _ in found}
    assert named == {(image.stem, "zz_dup")}  # the copy, and no unrelated pair
    assert len(set(groups(len(paths), found))) == len(paths) - 1
    samples = scan_samples(tmp_path)
    for seed in range(5):
        split = make_split(samples, tmp_path, seed=seed)
        assert split.set_index("name").split[image.stem] == split.set_index("name").split["zz_dup"]
        assert crossing_pairs(split, [(image.stem, "zz_dup")]) == []


def test_crossing_pairs_are_reported():
    split = pd.DataFrame({"name": ["a", "b", "c"], "split": ["train", "test", "train"]})
    assert crossing_pairs(split, [("a", "b"), ("a", "c"), ("x", "a")]) == [("a", "b")]


def test_committed_split_covers_kvasir_once():
    split = read_split(OUR_SPLIT)
    assert len(split) == 1000 and split.name.is_unique
    assert split.split.value_counts().to_dict() == {"train": 700, "val": 150, "test": 150}


def test_published_splits_read_and_carve_validation(tiny_root):
    split = read_split(OUR_SPLIT.parent / "kvasir_pranet_900_100.csv")
    assert split.split.value_counts().to_dict() == {"train": 900, "test": 100}
    samples = pd.DataFrame(
        {"name": split.name, "mask_fraction": np.linspace(0.01, 0.8, len(split))}
    )
    carved = carve_validation(split, samples, 0.1, seed=0)
    assert carved.split.value_counts().to_dict() == {"train": 810, "test": 100, "val": 90}
    assert (carved[split.split == "test"].split == "test").all()


def test_write_split_refuses_bad_table(tmp_path):
    good = pd.DataFrame({"name": ["a", "b"], "split": ["train", "test"]})
    path = write_split(good, tmp_path / "s.csv")
    with pytest.raises(DataValidationError):
        write_split(pd.DataFrame({"name": ["a"], "split": ["dev"]}), path)
    assert read_split(path).equals(read_split(path)) and len(read_split(path)) == 2

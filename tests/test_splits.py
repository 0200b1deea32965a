"""Our own split: deterministic, size-stratified, near-duplicates on one side."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from polypseg.data.io import read_rgb
from polypseg.data.manifest import DataValidationError, read_split, scan_samples, size_bins
from polypseg.data.splits import carve_validation, dhash, make_split, write_split

from conftest import OUR_SPLIT, copy_samples, real_names


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


def test_near_duplicates_stay_together(tmp_path):
    copy_samples(real_names("train", 40), tmp_path)
    image = sorted((tmp_path / "images").glob("*.jpg"))[0]
    # a near-duplicate: the same frame re-encoded at another size and quality
    buffer = io.BytesIO()
    Image.open(image).resize((300, 260)).save(buffer, format="JPEG", quality=70)
    (tmp_path / "images" / "zz_dup.jpg").write_bytes(buffer.getvalue())
    Image.open(tmp_path / "masks" / image.name).resize((300, 260)).save(
        tmp_path / "masks" / "zz_dup.jpg"
    )
    assert (
        dhash(read_rgb(image)) ^ dhash(read_rgb(tmp_path / "images" / "zz_dup.jpg"))
    ).bit_count() <= 2
    samples = scan_samples(tmp_path)
    for seed in range(5):
        split = make_split(samples, tmp_path, seed=seed).set_index("name").split
        assert split[image.stem] == split["zz_dup"]


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

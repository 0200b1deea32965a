"""Every manifest rule, on corrupted copies of real Kvasir-SEG samples."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from polypseg.data.manifest import (
    DataValidationError,
    build_manifest,
    read_manifest,
    read_split,
    scan_samples,
    write_manifest,
)


def first(root, sub="images"):
    return sorted((root / sub).glob("*.jpg"))[0]


def problems_of(call) -> str:
    with pytest.raises(DataValidationError) as info:
        call()
    return str(info.value)


def test_real_samples_give_a_valid_manifest(tiny_root):
    manifest = build_manifest(tiny_root, tiny_root / "split.csv")
    assert len(manifest) == 12
    assert manifest.split.value_counts().to_dict() == {"train": 6, "val": 3, "test": 3}
    assert manifest.mask_fraction.between(0.004, 0.82).all()  # Kvasir-SEG: 0.5%..81% polyp area
    assert (manifest.width >= 332).all() and manifest.sha256.str.len().eq(64).all()


def test_image_without_mask(fresh_copy):
    mask = first(fresh_copy, "masks")
    mask.unlink()
    message = problems_of(lambda: scan_samples(fresh_copy))
    assert f"{fresh_copy / 'images' / mask.name}: image has no mask" in message


def test_mask_without_image(fresh_copy):
    image = first(fresh_copy)
    image.unlink()
    assert f"{fresh_copy / 'masks' / image.name}: mask has no image" in problems_of(
        lambda: scan_samples(fresh_copy)
    )


def test_truncated_image(fresh_copy):
    image = first(fresh_copy)
    image.write_bytes(image.read_bytes()[:5000])
    message = problems_of(lambda: scan_samples(fresh_copy))
    assert str(image) in message and "unreadable or truncated" in message


def test_not_an_image(fresh_copy):
    image = first(fresh_copy)
    image.write_text("this is not a JPEG")
    assert f"{image}: unreadable or truncated image" in problems_of(
        lambda: scan_samples(fresh_copy)
    )


def test_size_mismatch(fresh_copy):
    mask = first(fresh_copy, "masks")
    with Image.open(mask) as m:
        m.resize((m.width // 2, m.height // 2)).save(mask)
    message = problems_of(lambda: scan_samples(fresh_copy))
    assert str(mask) in message and "differs from image size" in message


def test_mask_not_binary(fresh_copy):
    mask = first(fresh_copy, "masks")
    with Image.open(mask) as m:
        gray = np.asarray(m.convert("L"))
    noisy = np.clip(gray.astype(int) // 2 + 64, 0, 255).astype(np.uint8)  # mid-gray everywhere
    Image.fromarray(noisy).save(mask)
    message = problems_of(lambda: scan_samples(fresh_copy))
    assert str(mask) in message and "not binary after thresholding" in message


def test_jpeg_noise_is_not_an_error(fresh_copy):
    """Real masks are noisy JPEGs; re-encoding one at low quality must still validate."""
    mask = first(fresh_copy, "masks")
    with Image.open(mask) as m:
        m.convert("RGB").save(mask, quality=60)
    assert len(scan_samples(fresh_copy)) == 12


def test_duplicate_content(fresh_copy):
    a, b = sorted((fresh_copy / "images").glob("*.jpg"))[:2]
    shutil.copy(a, b)
    shutil.copy(fresh_copy / "masks" / a.name, fresh_copy / "masks" / b.name)
    message = problems_of(lambda: scan_samples(fresh_copy))
    assert "duplicate content" in message and a.name in message and b.name in message


def test_sample_in_two_splits(fresh_copy):
    split = pd.read_csv(fresh_copy / "split.csv")
    split = pd.concat([split, split.iloc[[0]].assign(split="test")])
    split.to_csv(fresh_copy / "split.csv", index=False)
    message = problems_of(lambda: read_split(fresh_copy / "split.csv"))
    assert f"sample '{split.name.iloc[0]}' is listed 2 times" in message and "split.csv" in message


def test_unknown_split_name(fresh_copy):
    split = pd.read_csv(fresh_copy / "split.csv")
    split.loc[0, "split"] = "training"
    split.to_csv(fresh_copy / "split.csv", index=False)
    message = problems_of(lambda: read_split(fresh_copy / "split.csv"))
    assert "column 'split'" in message and "training" in message and "split.csv" in message


def test_split_names_a_missing_sample(fresh_copy):
    split = pd.read_csv(fresh_copy / "split.csv")
    pd.concat([split, pd.DataFrame({"name": ["ghost"], "split": ["train"]})]).to_csv(
        fresh_copy / "split.csv", index=False
    )
    assert "sample 'ghost' is not in the data folder" in problems_of(
        lambda: build_manifest(fresh_copy, fresh_copy / "split.csv")
    )


def test_all_problems_reported_at_once(fresh_copy):
    first(fresh_copy, "masks").unlink()
    image = sorted((fresh_copy / "images").glob("*.jpg"))[-1]
    image.write_bytes(image.read_bytes()[:3000])
    with pytest.raises(DataValidationError) as info:
        scan_samples(fresh_copy)
    assert len(info.value.problems) == 2


def test_manifest_write_is_atomic_and_round_trips(tiny_root, tmp_path):
    manifest = build_manifest(tiny_root, tiny_root / "split.csv")
    path = write_manifest(manifest, tmp_path / "manifest.csv", tiny_root)
    pd.testing.assert_frame_equal(
        read_manifest(path)[["name", "split"]], manifest[["name", "split"]]
    )
    broken = manifest.assign(split="holdout")
    with pytest.raises(DataValidationError):
        write_manifest(broken, path, tiny_root)
    assert read_manifest(path).split.isin(["train", "val", "test"]).all()  # good file untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

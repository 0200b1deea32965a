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

pytestmark = pytest.mark.data  # reads images from ../shared/data


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


# --- the corruptions that used to pass (exit 0) --------------------------------------------------


def test_sixteen_bit_image_is_scaled_not_clipped(fresh_copy):
    from polypseg.runtime.io import read_rgb

    image = first(fresh_copy)
    gray = np.asarray(Image.open(image).convert("L"))
    target = image.with_suffix(".png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(target)
    image.unlink()
    assert Image.open(target).mode.startswith("I")
    decoded = read_rgb(target)
    assert decoded.dtype == np.uint8 and np.array_equal(decoded[..., 0], gray)
    assert (decoded == 255).mean() < 0.05  # clipping made 92 % of pixels white
    assert len(scan_samples(fresh_copy)) == 12


def test_zero_one_masks_are_recognised(fresh_copy):
    mask = first(fresh_copy, "masks")
    binary = (np.asarray(Image.open(mask).convert("L")) > 127).astype(np.uint8)
    Image.fromarray(binary).save(mask.with_suffix(".png"))  # a 0/1 label image, lossless
    mask.unlink()
    row = scan_samples(fresh_copy).set_index("name").loc[mask.stem]
    assert row.mask_fraction == pytest.approx(binary.mean(), abs=1e-6)


@pytest.mark.parametrize(("value", "words"), [(0, "mask is empty"), (255, "covers 100.0%")])
def test_empty_and_full_masks_are_refused(fresh_copy, value, words):
    mask = first(fresh_copy, "masks")
    size = Image.open(mask).size
    Image.new("L", size, value).save(mask.with_suffix(".png"))
    mask.unlink()
    message = problems_of(lambda: scan_samples(fresh_copy))
    assert str(mask.with_suffix(".png")) in message and words in message


def test_empty_masks_pass_where_a_source_declares_them(fresh_copy):
    mask = first(fresh_copy, "masks")
    Image.new("L", Image.open(mask).size, 0).save(mask.with_suffix(".png"))
    mask.unlink()
    frame = scan_samples(fresh_copy, allow_empty_masks=True)
    assert frame.set_index("name").loc[mask.stem].mask_fraction == 0


def test_exif_rotated_image_is_aligned_with_its_mask(fresh_copy):
    from polypseg.runtime.io import read_mask, read_rgb

    image = first(fresh_copy)
    upright = np.asarray(Image.open(image).convert("RGB"))
    side = min(upright.shape[:2])
    square, mask_path = upright[:side, :side], fresh_copy / "masks" / image.name
    image.unlink()
    image = image.with_suffix(".png")  # lossless, so pixels compare exactly
    mask = np.asarray(Image.open(mask_path).convert("L"))[:side, :side]
    Image.fromarray(mask).save(mask_path.with_suffix(".png"))
    mask_path.unlink()
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90° clockwise: stored pixels are rotated back
    Image.fromarray(np.ascontiguousarray(np.rot90(square))).save(image, exif=exif)
    assert np.array_equal(read_rgb(image), square)  # same pixels as displayed
    assert read_mask(mask_path.with_suffix(".png")).shape == square.shape[:2]
    assert len(scan_samples(fresh_copy)) == 12


def test_same_name_under_two_extensions_is_refused(fresh_copy):
    image = first(fresh_copy)
    Image.open(image).save(image.with_suffix(".png"))
    message = problems_of(lambda: scan_samples(fresh_copy))
    assert str(image.with_suffix(".png")) in message and "one would hide the other" in message


def test_header_only_split_refused_and_good_manifest_kept(fresh_copy, tmp_path):
    from polypseg.data.commands import prepare

    out = tmp_path / "manifest.csv"
    prepare(data_root=str(fresh_copy), split_file=str(fresh_copy / "split.csv"), output=str(out))
    good = out.read_bytes()
    empty = tmp_path / "empty.csv"
    empty.write_text("name,split\n")
    message = problems_of(lambda: prepare(str(fresh_copy), str(empty), str(out)))
    assert f"{empty}: split file lists no samples" in message
    assert out.read_bytes() == good


def test_zero_byte_split_names_the_file(tmp_path):
    empty = tmp_path / "zero.csv"
    empty.write_bytes(b"")
    assert f"{empty}: not a readable name,split CSV" in problems_of(lambda: read_split(empty))


def test_training_reads_the_prepared_manifest_and_refuses_a_stale_one(
    fresh_copy, tmp_path, monkeypatch
):
    import os

    import polypseg.data.manifest as manifest_module
    from polypseg.data.commands import prepare
    from polypseg.data.datamodule import KvasirSegDataModule

    out = tmp_path / "manifest.csv"
    split = fresh_copy / "split.csv"
    prepare(data_root=str(fresh_copy), split_file=str(split), output=str(out))

    def no_rescan(*args, **kwargs):
        raise AssertionError("the prepared manifest was not used: everything was decoded again")

    monkeypatch.setattr(manifest_module, "scan_samples", no_rescan)
    dm = KvasirSegDataModule(
        str(fresh_copy), str(split), image_size=64, cache_dir=None, manifest_file=str(out)
    )
    assert {k: int(v) for k, v in dm.build_manifest().split.value_counts().items()} == {
        "train": 6,
        "val": 3,
        "test": 3,
    }
    image = first(fresh_copy)
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    message = problems_of(dm.build_manifest)
    assert f"{out}: written for other data" in message and "polypseg data prepare" in message

"""Resized-sample cache, augmentation and the DataModule on real images."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch
from PIL import Image

from polypseg.data.augment import compose, default_train_transforms
from polypseg.data.datamodule import KvasirSegDataModule
from polypseg.data.dataset import load_resized
from polypseg.data.manifest import build_manifest

pytestmark = pytest.mark.data  # reads images from ../shared/data


def test_cache_is_built_once_and_reused(tiny_root, tmp_path):
    manifest = build_manifest(tiny_root, tiny_root / "split.csv")
    first = load_resized(manifest, tiny_root, 64, tmp_path)
    assert first.images.shape == (12, 64, 64, 3) and first.images.dtype == np.uint8
    assert set(np.unique(first.masks)) <= {0, 1} and first.masks.mean() > 0.01
    folders = list(tmp_path.iterdir())
    again = load_resized(manifest, tiny_root, 64, tmp_path)
    assert isinstance(again.images, np.memmap) and list(tmp_path.iterdir()) == folders
    np.testing.assert_array_equal(np.asarray(again.images), first.images)


def test_cache_invalidated_by_size_and_source(fresh_copy, tmp_path):
    cache = tmp_path / "cache"
    manifest = build_manifest(fresh_copy, fresh_copy / "split.csv")
    load_resized(manifest, fresh_copy, 64, cache)
    load_resized(manifest, fresh_copy, 32, cache)
    assert len(list(cache.iterdir())) == 2
    mask = sorted((fresh_copy / "masks").glob("*.jpg"))[0]
    edited = np.asarray(Image.open(mask).convert("L")).copy()
    edited[:20, :20] = 255  # a changed source file, same size
    Image.fromarray(edited).save(mask)
    changed = build_manifest(fresh_copy, fresh_copy / "split.csv")
    load_resized(changed, fresh_copy, 64, cache)
    assert len(list(cache.iterdir())) == 3


def test_augmentation_keeps_image_and_mask_aligned(tiny_root, tmp_path):
    manifest = build_manifest(tiny_root, tiny_root / "split.csv")
    samples = load_resized(manifest, tiny_root, 64, tmp_path)
    flip = compose([A.HorizontalFlip(p=1.0)])
    out = flip(image=np.asarray(samples.images[0]), mask=np.asarray(samples.masks[0]))
    np.testing.assert_array_equal(out["mask"], np.asarray(samples.masks[0])[:, ::-1])
    pipeline = compose(default_train_transforms())
    for _ in range(5):
        out = pipeline(image=np.asarray(samples.images[0]), mask=np.asarray(samples.masks[0]))
        assert out["image"].shape == (64, 64, 3) and set(np.unique(out["mask"])) <= {0, 1}


def test_datamodule_batches(tiny_root, tmp_path):
    dm = KvasirSegDataModule(
        str(tiny_root),
        str(tiny_root / "split.csv"),
        image_size=64,
        batch_size=4,
        eval_batch_size=3,
        cache_dir=str(tmp_path),
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["image"].dtype == torch.float32
    assert batch["image"].min() >= 0.0 and batch["image"].max() <= 1.0
    assert batch["mask"].shape == (4, 1, 64, 64) and set(batch["mask"].unique().tolist()) <= {
        0.0,
        1.0,
    }
    test = next(iter(dm.test_dataloader()))
    frame = dm.frame("test")
    for i, original in zip(test["index"].tolist(), test["original_mask"], strict=True):
        assert original.shape == (frame.height.iloc[i], frame.width.iloc[i])


def test_datamodule_reads_env_root_and_carves_val(tiny_root, tmp_path, monkeypatch):
    split = tmp_path / "no_val.csv"
    text = (tiny_root / "split.csv").read_text().replace(",val", ",train")
    split.write_text(text)
    monkeypatch.setenv("POLYPSEG_DATA_ROOT", str(tiny_root))
    dm = KvasirSegDataModule(split_file=str(split), image_size=32, val_fraction=0.3, cache_dir=None)
    dm.setup("fit")
    assert dm.root == tiny_root
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 6, "val": 3, "test": 3}


def test_multiscale_training_resizes_train_batches_only(tiny_root, tmp_path):
    import lightning as L

    from polypseg.models.module import PolypSegModule
    from polypseg.models.networks import SegmentationNetwork

    class Shapes(L.Callback):
        def __init__(self):
            self.train, self.val = [], []

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.train.append((batch["image"].shape[-1], batch["mask"].shape[-1]))
            assert set(batch["mask"].unique().tolist()) <= {0.0, 1.0}

        def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
            self.val.append(batch["image"].shape[-1])

    dm = KvasirSegDataModule(
        str(tiny_root),
        str(tiny_root / "split.csv"),
        image_size=64,
        batch_size=2,
        train_scales=[0.5, 1.0, 1.5],
        cache_dir=str(tmp_path),
    )
    L.seed_everything(0)
    network = SegmentationNetwork(decoder_channels=(16, 8, 8, 8, 8))
    module = PolypSegModule(network=network, image_size=64, channels_last=False)
    shapes = Shapes()
    trainer = L.Trainer(
        max_epochs=3,
        callbacks=[shapes],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, dm)
    assert len(shapes.train) == 9 and all(i == m for i, m in shapes.train)
    assert len({i for i, _ in shapes.train}) >= 2 and {i for i, _ in shapes.train} <= {32, 64, 96}
    assert set(shapes.val) == {64}
    with pytest.raises(ValueError, match="train_scales"):
        KvasirSegDataModule(str(tiny_root), train_scales=[1.0, 0.0])

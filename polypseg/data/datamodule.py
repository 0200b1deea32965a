"""LightningDataModule over Kvasir-SEG (or any images/ + masks/ folder) and a ``name,split`` CSV."""

from __future__ import annotations

import logging
from pathlib import Path

import albumentations as A
import lightning as L
import pandas as pd
import torch
from torch.utils.data import DataLoader

from polypseg.data.augment import compose, default_train_transforms
from polypseg.data.dataset import SegmentationDataset, collate, load_resized
from polypseg.data.manifest import SPLITS
from polypseg.data.multiscale import rescale_batch
from polypseg.data.roots import DEFAULT_SPLIT, resolve_data_dir, resolve_data_root
from polypseg.data.sampling import SeededShuffle, step_choice
from polypseg.data.sources import Source, folder_manifest, merged_manifest, sample_weights

log = logging.getLogger(__name__)


class KvasirSegDataModule(L.LightningDataModule):
    """Kvasir-SEG splits (or several datasets, ``sources``) as resized, augmented batches.

    Args:
        data_root: folder with ``images/`` and ``masks/``; default ``$POLYPSEG_DATA_ROOT`` or
            ``data/kvasir-seg``.
        split_file: ``name,split`` CSV (``train``/``val``/``test``); ``None`` makes every sample a
            test sample, which is how a foreign folder is evaluated.
        image_size: square side the network sees.
        val_fraction: part of ``train`` carved out as ``val`` when the split file has no ``val``
            (published 900/100 and 880/120 splits); ``0`` trains on all of train and skips
            validation (the final fit, as the papers train).
        train_transforms: albumentations transforms for training; ``None`` = the defaults of
            :func:`polypseg.data.augment.default_train_transforms`, ``[]`` = none.
        train_scales: multi-scale training: each training batch is resized by one of these
            factors (side rounded to a multiple of 32), e.g. ``[0.75, 1.0, 1.25]`` as in PraNet;
            ``[1.0]`` = off. Validation and test always run at ``image_size``.
        limit_per_split: keep only the first N samples (by name) of each split, for smoke runs.
        predict_split: split served by ``predict_dataloader``.
        cache_dir: where resized samples are cached; ``None`` disables the cache.
        manifest_file: the manifest ``polypseg data prepare`` wrote for this data root and split
            file: training reads it instead of validating every file again (refused, with the
            command to re-run, if the files or split changed since). ``None``: run the same
            gate (:func:`~polypseg.data.manifest.build_manifest`) in memory.
        seed: seed of the val part carved out of train (published splits without val).
        sources: several datasets instead of ``data_root`` + ``split_file``
            (:class:`~polypseg.data.sources.Source`: root, split file, mask rule, sequences,
            sampling weight); val is carved per source, and val/test metrics are logged per
            source (``val/dice/<source>``) besides the pooled ones.
        data_dir: folder the sources' relative roots are under; default ``$POLYPSEG_DATA_DIR``,
            else the folder holding ``$POLYPSEG_DATA_ROOT``, else ``data``.

    Example:
        >>> dm = KvasirSegDataModule(
        ...     sources=[Source("kvasir", "kvasir-seg", "data/splits/kvasir_pranet_900_100.csv"),
        ...              Source("clinicdb", "cvc-clinicdb", "data/splits/clinicdb_pranet_550_62.csv")],
        ...     data_dir="../shared/data")
        >>> dm.sources[1].name
        'clinicdb'
    """

    def __init__(
        self,
        data_root: str | None = None,
        split_file: str | None = DEFAULT_SPLIT,
        image_size: int = 256,
        batch_size: int = 8,
        eval_batch_size: int = 16,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        train_transforms: list[A.BasicTransform] | None = None,
        train_scales: tuple[float, ...] = (1.0,),
        limit_per_split: int | None = None,
        predict_split: str = "test",
        cache_dir: str | None = ".cache/polypseg",
        seed: int = 42,
        manifest_file: str | None = None,
        sources: list[Source] | None = None,
        data_dir: str | None = None,
    ):
        super().__init__()
        for option, value, low in (
            ("image_size", image_size, 32),
            ("batch_size", batch_size, 1),
            ("eval_batch_size", eval_batch_size, 1),
            ("num_workers", num_workers, 0),
        ):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"data.{option} must be an integer >= {low}, got {value!r}")
        if image_size % 32:
            raise ValueError(
                f"data.image_size must be a multiple of 32 (the encoder's stride), got {image_size}"
            )
        if not 0 <= val_fraction < 1:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        if sources and manifest_file:
            raise ValueError(
                "data.manifest_file describes one data root; with data.sources leave it unset"
            )
        self.save_hyperparameters(ignore=["train_transforms"])
        self.sources = [s if isinstance(s, Source) else Source(**s) for s in sources or []]
        self.data_dir = resolve_data_dir(data_dir)
        self.root = Path(".") if self.sources else resolve_data_root(data_root)
        self.split_file, self.image_size = split_file, image_size
        self.batch_size, self.eval_batch_size, self.num_workers = (
            batch_size,
            eval_batch_size,
            num_workers,
        )
        self.val_fraction, self.limit_per_split, self.seed = val_fraction, limit_per_split, seed
        self.predict_split, self.cache_dir = predict_split, cache_dir
        self.manifest_file = manifest_file
        self.train_transforms = (
            default_train_transforms() if train_transforms is None else train_transforms
        )
        if not train_scales or any(s <= 0 for s in train_scales):
            raise ValueError(f"data.train_scales must be positive factors, got {train_scales}")
        self.train_scales = tuple(float(s) for s in train_scales)
        self.train_seed = seed
        self.manifest: pd.DataFrame | None = None
        self.datasets: dict[str, SegmentationDataset] = {}

    def build_manifest(self) -> pd.DataFrame:
        if self.sources:
            manifest = merged_manifest(self.sources, self.data_dir, self.val_fraction, self.seed)
            return self._limit(manifest)
        manifest = folder_manifest(
            self.root, self.split_file, self.val_fraction, self.seed, self.manifest_file
        )
        return self._limit(manifest)

    def _limit(self, manifest: pd.DataFrame) -> pd.DataFrame:
        if self.limit_per_split:
            keys = ["source", "split"] if "source" in manifest else ["split"]
            manifest = manifest.sort_values("name").groupby(keys).head(self.limit_per_split)
        return manifest.reset_index(drop=True)

    def setup(self, stage: str | None = None) -> None:
        if self.manifest is not None:
            return
        self.manifest = self.build_manifest()
        samples = load_resized(self.manifest, self.root, self.image_size, self.cache_dir)
        for split in SPLITS:
            frame = self.manifest[self.manifest.split == split]
            self.datasets[split] = SegmentationDataset(
                frame,
                samples,
                self.root,
                transform=compose(self.train_transforms) if split == "train" else None,
                original_masks=split == "test" or split == self.predict_split,
            )
        where = [s.name for s in self.sources] or self.root
        log.info("data %s: %s", where, {k: len(v) for k, v in self.datasets.items()})

    def _loader(self, split: str, train: bool = False) -> DataLoader:
        dataset = self.datasets[split]
        if len(dataset) == 0:
            where = "data.sources" if self.sources else self.split_file
            raise ValueError(f"{where}: split '{split}' has no samples")
        if train:  # the run's seed (seed_everything) fixes order and augmentation per epoch
            self.train_seed = torch.initial_seed()
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=SeededShuffle(
                len(dataset), self.train_seed, sample_weights(dataset.frame, self.sources)
            )
            if train
            else None,
            drop_last=train and len(dataset) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate,
        )

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Multi-scale training: one scale per training batch (Lightning's batch-level hook)."""
        trainer = self.trainer
        if len(self.train_scales) > 1 and trainer is not None and trainer.training:
            choice = step_choice(len(self.train_scales), self.train_seed, trainer.global_step)
            scale = self.train_scales[choice]
            batch["image"], batch["mask"] = rescale_batch(batch["image"], batch["mask"], scale)
        return batch

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader | list:
        """No val split (``val_fraction: 0`` on a split without one, the final fit on all of
        train): Lightning skips validation and the last epoch's weights are the model."""
        if (
            (self.split_file is not None or self.sources)
            and len(self.datasets["val"]) == 0
            and self.val_fraction <= 0
        ):
            log.warning("%s: no val split and val_fraction 0: validation skipped", self.split_file)
            return []
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_split)

    @property
    def check_split(self) -> str:
        """Split that export checks (parity, int8 Dice drop) run on: val, or train for a final
        fit without val."""
        return "val" if len(self.datasets["val"]) else "train"

    def frame(self, split: str) -> pd.DataFrame:
        """Manifest rows of ``split`` in dataloader order (``batch['index']`` indexes it)."""
        return self.datasets[split].frame

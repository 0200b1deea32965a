"""Dataset over a manifest, backed by a cache of samples resized once.

Decoding ~1000 full-size JPEGs every epoch dominates a 2-core CPU; the cache decodes and resizes
each pair once (``processing.resize_image``/``resize_mask``) into two ``.npy`` files that are
memory-mapped. Its key hashes the content hashes of every image and mask plus the size, so a
changed source or size builds a new cache and never reuses a stale one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from polypseg.runtime.io import atomic_path, read_mask, read_rgb
from polypseg.runtime.processing import binarize_mask, resize_image, resize_mask, to_network_input

log = logging.getLogger(__name__)
CACHE_VERSION = 2  # 2: EXIF orientation applied, 16-bit scaled, 0/1 masks


@dataclass
class ResizedSamples:
    names: list[str]
    images: np.ndarray  # (N, S, S, 3) uint8
    masks: np.ndarray  # (N, S, S) uint8 in {0, 1}


def cache_key(manifest: pd.DataFrame, size: int) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION}:{size}".encode())
    for row in manifest.sort_values("name").itertuples():
        digest.update(f"{row.name}:{row.sha256}:{row.mask_sha256}".encode())
    return digest.hexdigest()[:16]


def load_resized(
    manifest: pd.DataFrame, root: str | Path, size: int, cache_dir: str | Path | None
) -> ResizedSamples:
    """Resized copies of every manifest sample, from the cache when it is current."""
    frame = manifest.sort_values("name").reset_index(drop=True)
    folder = Path(cache_dir) / f"{size}px-{cache_key(frame, size)}" if cache_dir else None
    if folder and (folder / "names.json").is_file():
        return ResizedSamples(
            json.loads((folder / "names.json").read_text()),
            np.load(folder / "images.npy", mmap_mode="r"),
            np.load(folder / "masks.npy", mmap_mode="r"),
        )
    root = Path(root)
    log.info("resizing %d samples to %dpx (cached in %s)", len(frame), size, folder)
    images = np.stack([resize_image(read_rgb(root / p), size) for p in frame.image])
    masks = np.stack([resize_mask(read_mask(root / p), size) for p in frame["mask"]])
    samples = ResizedSamples(list(frame.name), images, masks)
    if folder:
        folder.mkdir(parents=True, exist_ok=True)
        for name, array in (("images.npy", images), ("masks.npy", masks)):
            with atomic_path(folder / name) as tmp, open(tmp, "wb") as fh:
                np.save(fh, array)
        with atomic_path(folder / "names.json") as tmp:  # written last: marks the cache complete
            tmp.write_text(json.dumps(samples.names))
    return samples


class SegmentationDataset(Dataset):
    """Items: ``image`` float (3,S,S) in [0,1], ``mask`` float (1,S,S), ``index`` into ``frame``.

    With ``original_masks`` the item also carries the full-resolution {0,1} mask, for scoring at
    the original resolution (the PraNet protocol).
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        samples: ResizedSamples,
        root: str | Path,
        transform: A.Compose | None = None,
        original_masks: bool = False,
    ):
        self.frame = frame.reset_index(drop=True)
        position = {n: i for i, n in enumerate(samples.names)}
        self.rows = [position[n] for n in self.frame.name]
        self.samples, self.root, self.transform = samples, Path(root), transform
        self.original_masks = original_masks

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """``key``: an index, or ``(index, seed)`` from :class:`~polypseg.data.sampling.SeededShuffle`,
        whose seed fixes this sample's augmentation."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        row = self.rows[index]
        image, mask = np.array(self.samples.images[row]), np.array(self.samples.masks[row])
        if self.transform is not None:
            if seed is not None:
                self.transform.set_random_seed(seed)
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        item = {
            "image": torch.from_numpy(to_network_input(image)[0]),
            "mask": torch.from_numpy(np.ascontiguousarray(mask[None])).float(),
            "index": index,
        }
        if self.original_masks:
            item["original_mask"] = torch.from_numpy(
                binarize_mask(read_mask(self.root / self.frame["mask"].iloc[index]))
            )
        return item


def collate(items: list[dict]) -> dict:
    """Stack fixed-size tensors; keep variable-size original masks as a list."""
    batch = {
        "image": torch.stack([i["image"] for i in items]),
        "mask": torch.stack([i["mask"] for i in items]),
        "index": torch.tensor([i["index"] for i in items]),
    }
    if "original_mask" in items[0]:
        batch["original_mask"] = [i["original_mask"] for i in items]
    return batch

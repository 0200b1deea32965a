"""Deterministic, size-stratified train/val/test splits that keep near-duplicate images together."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from polypseg.data.io import atomic_path, read_rgb
from polypseg.data.manifest import SplitSchema, size_bins, validate

DUPLICATE_HAMMING = 2
"""dHash bits (of 64) under which two images count as near-duplicates (Kvasir-SEG has 3 pairs)."""


def dhash(image: np.ndarray, bits: int = 8) -> int:
    """Difference hash: robust to resizing and JPEG re-encoding, cheap to compare."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (bits + 1, bits), interpolation=cv2.INTER_AREA)
    diff = (small[:, 1:] > small[:, :-1]).flatten()
    return int(sum(1 << i for i, v in enumerate(diff) if v))


def near_duplicate_groups(hashes: list[int], max_distance: int = DUPLICATE_HAMMING) -> np.ndarray:
    """Group id per item; items within ``max_distance`` bits share a group (union-find)."""
    parent = list(range(len(hashes)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(hashes)):
        for j in range(i + 1, len(hashes)):
            if (hashes[i] ^ hashes[j]).bit_count() <= max_distance:
                parent[find(j)] = find(i)
    return np.array([find(i) for i in range(len(hashes))])


def make_split(
    manifest: pd.DataFrame,
    root: str | Path,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 42,
) -> pd.DataFrame:
    """``name,split`` table: stratified by polyp size, near-duplicates on one side, seeded."""
    if not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    root = Path(root)
    frame = manifest.sort_values("name").reset_index(drop=True)
    groups = near_duplicate_groups([dhash(read_rgb(root / p)) for p in frame.image])
    frame = frame.assign(group=groups, size_bin=size_bins(frame.mask_fraction))
    heads = frame.drop_duplicates("group")
    train_f, val_f, test_f = fractions
    train_g, rest_g = train_test_split(
        heads.group, train_size=train_f, stratify=heads.size_bin, random_state=seed
    )
    rest = heads[heads.group.isin(rest_g)]
    val_g, test_g = train_test_split(
        rest.group, train_size=val_f / (val_f + test_f), stratify=rest.size_bin, random_state=seed
    )
    split_of = {
        **dict.fromkeys(train_g, "train"),
        **dict.fromkeys(val_g, "val"),
        **dict.fromkeys(test_g, "test"),
    }
    out = pd.DataFrame({"name": frame.name, "split": frame.group.map(split_of)})
    return validate(out, SplitSchema, "generated split")


def write_split(split: pd.DataFrame, path: str | Path) -> Path:
    validate(split, SplitSchema, str(path))
    with atomic_path(path) as tmp:
        split[["name", "split"]].to_csv(tmp, index=False)
    return Path(path)


def carve_validation(
    split: pd.DataFrame, manifest: pd.DataFrame, fraction: float, seed: int
) -> pd.DataFrame:
    """For published splits without ``val``: move a size-stratified part of train to val.
    A split with no train part (e.g. a test-only list for ``polypseg evaluate``) is left as is."""
    if (split.split == "val").any() or fraction <= 0 or not (split.split == "train").any():
        return split
    train = manifest[manifest.name.isin(split.name[split.split == "train"])]
    _, val_names = train_test_split(
        train.name, test_size=fraction, stratify=size_bins(train.mask_fraction), random_state=seed
    )
    return split.assign(split=np.where(split.name.isin(set(val_names)), "val", split.split))

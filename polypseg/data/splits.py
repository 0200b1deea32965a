"""Deterministic, size-stratified train/val/test splits that keep same-frame copies together
(:mod:`polypseg.data.duplicates`), and the check that a given split does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from polypseg.data.duplicates import groups, same_frame_pairs
from polypseg.data.io import atomic_path
from polypseg.data.manifest import SplitSchema, size_bins, validate


def make_split(
    manifest: pd.DataFrame,
    root: str | Path,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 42,
) -> pd.DataFrame:
    """``name,split`` table: stratified by polyp size, same-frame copies on one side, seeded."""
    if not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    root = Path(root)
    frame = manifest.sort_values("name").reset_index(drop=True)
    pairs = same_frame_pairs([root / p for p in frame.image])
    frame = frame.assign(group=groups(len(frame), pairs), size_bin=size_bins(frame.mask_fraction))
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


def crossing_pairs(split: pd.DataFrame, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The same-frame pairs a ``name,split`` table puts on two sides (names missing are ignored)."""
    side = split.set_index("name").split
    return [(a, b) for a, b in pairs if a in side and b in side and side[a] != side[b]]

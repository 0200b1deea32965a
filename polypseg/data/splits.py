"""Deterministic, size-stratified train/val/test splits that keep same-frame copies together
(:mod:`polypseg.data.duplicates`), and the check that a given split does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from polypseg.data.duplicates import groups, same_frame_pairs
from polypseg.data.manifest import SplitSchema, size_bins, validate
from polypseg.runtime.io import atomic_path


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
    from sklearn.model_selection import train_test_split  # here: scoring never needs sklearn/scipy

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
    split: pd.DataFrame,
    manifest: pd.DataFrame,
    fraction: float,
    seed: int,
    groups: pd.Series | None = None,
) -> pd.DataFrame:
    """For published splits without ``val``: move a size-stratified part of train to val.
    A split with no train part (e.g. a test-only list for ``polypseg evaluate``) is left as is.

    Args:
        groups: name → group (e.g. the video sequence of each frame): val then takes
            ``fraction`` of the groups, whole, so no sequence has frames on both sides.
    """
    if (split.split == "val").any() or fraction <= 0 or not (split.split == "train").any():
        return split
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    train = manifest[manifest.name.isin(split.name[split.split == "train"])]
    if groups is not None:
        labels = train.name.map(groups).fillna(train.name)  # an ungrouped frame is its own group
        splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        _, val_rows = next(splitter.split(train, groups=labels))
        val_names = train.name.iloc[val_rows]
        return split.assign(split=np.where(split.name.isin(set(val_names)), "val", split.split))
    _, val_names = train_test_split(
        train.name, test_size=fraction, stratify=size_bins(train.mask_fraction), random_state=seed
    )
    return split.assign(split=np.where(split.name.isin(set(val_names)), "val", split.split))


def crossing_pairs(split: pd.DataFrame, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The same-frame pairs a ``name,split`` table puts on two sides (names missing are ignored)."""
    side = split.set_index("name").split
    return [(a, b) for a, b in pairs if a in side and b in side and side[a] != side[b]]


def group_split(
    groups: pd.Series, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 42
) -> pd.DataFrame:
    """``name,split`` table that keeps every group (video sequence) whole: ``fractions`` of the
    groups go to train/val/test, seeded. ``groups``: name → group label."""
    if not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    labels = np.array(sorted(set(groups)))
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = round(fractions[2] * len(labels))
    n_val = round(fractions[1] * len(labels))
    split_of = {
        **dict.fromkeys(labels[order[:n_test]], "test"),
        **dict.fromkeys(labels[order[n_test : n_test + n_val]], "val"),
        **dict.fromkeys(labels[order[n_test + n_val :]], "train"),
    }
    out = pd.DataFrame({"name": groups.index, "split": groups.map(split_of).to_numpy()})
    return validate(out, SplitSchema, "generated split")

"""Several datasets as one training set: each a :class:`Source` with its own folder, split file
and rules, merged into one manifest with a ``source`` column (how the polyp papers train on
Kvasir-SEG 900 + CVC-ClinicDB 550 and test on every dataset separately)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from polypseg.data.manifest import ManifestSchema, build_manifest, read_prepared, validate
from polypseg.data.sequences import read_groups
from polypseg.data.splits import carve_validation

NAME_RULE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass
class Source:
    """One dataset in a multi-source DataModule (``data.sources`` in YAML).

    Args:
        name: short key (``kvasir``): prefixes sample names (``kvasir/cju0…``) and names the
            per-source val metrics (``val/dice/kvasir``).
        data_root: folder with ``images/`` and ``masks/``; a relative path is taken under the
            DataModule's ``data_dir``.
        split_file: ``name,split`` CSV; ``None`` puts every sample in ``train``.
        allow_empty_masks: the source declares polyp-free frames (empty masks are refused
            elsewhere).
        sequences_file: ``name,sequence`` CSV (frames of one video share a sequence): val is
            then carved from train by whole sequences, so no video has frames on both sides.
        weight: share of each training epoch drawn from this source, relative to the other
            sources' weights; ``None`` everywhere = every sample once per epoch.

    Example:
        >>> Source("clinicdb", "cvc-clinicdb", "data/splits/clinicdb_pranet_550_62.csv").name
        'clinicdb'
    """

    name: str
    data_root: str
    split_file: str | None = None
    allow_empty_masks: bool = False
    sequences_file: str | None = None
    weight: float | None = None

    def __post_init__(self):
        if not NAME_RULE.match(self.name):
            raise ValueError(
                f"data.sources: name {self.name!r} must be lower-case letters, digits, '-' or '_' "
                "(it becomes part of metric names)"
            )
        if self.weight is not None and self.weight <= 0:
            raise ValueError(f"data.sources[{self.name}].weight must be > 0, got {self.weight}")


def folder_manifest(
    root: Path,
    split_file: str | None,
    val_fraction: float,
    seed: int,
    manifest_file: str | None = None,
) -> pd.DataFrame:
    """One dataset folder's validated manifest (from ``manifest_file`` when prepared), with val
    carved out of train as training carves it; the single-source DataModule and ``evaluate`` use it."""
    if manifest_file:
        manifest = read_prepared(manifest_file, root, split_file)
    else:
        manifest = build_manifest(root, split_file)
    if split_file is not None:
        carved = carve_validation(manifest[["name", "split"]], manifest, val_fraction, seed)
        manifest = manifest.assign(split=carved.split.to_numpy())
    return manifest


def source_manifest(source: Source, data_dir: Path, val_fraction: float, seed: int) -> pd.DataFrame:
    """The validated manifest of one source, val carved out of its train part, with sample
    names prefixed by the source and paths made relative to the working directory."""
    root = data_dir / source.data_root
    manifest = build_manifest(root, source.split_file, source.allow_empty_masks)
    if source.split_file is None:
        manifest = manifest.assign(split="train")
    groups = read_groups(source.sequences_file) if source.sequences_file else None
    carved = carve_validation(manifest[["name", "split"]], manifest, val_fraction, seed, groups)
    return manifest.assign(
        split=carved.split.to_numpy(),
        name=source.name + "/" + manifest.name,
        image=[(root / p).as_posix() for p in manifest.image],
        mask=[(root / p).as_posix() for p in manifest["mask"]],
        source=source.name,
    )


def merged_manifest(
    sources: list[Source], data_dir: Path, val_fraction: float, seed: int
) -> pd.DataFrame:
    """One manifest over every source (Pandera-validated, ``source`` column)."""
    names = [s.name for s in sources]
    if not sources or len(set(names)) != len(names):
        raise ValueError(f"data.sources: need at least one source, each name once; got {names}")
    parts = [source_manifest(s, data_dir, val_fraction, seed) for s in sources]
    return validate(pd.concat(parts, ignore_index=True), ManifestSchema, "data.sources")


def sample_weights(manifest: pd.DataFrame, sources: list[Source]) -> list[float] | None:
    """Per-sample draw weights giving each source its ``weight`` share of an epoch, or ``None``."""
    if all(s.weight is None for s in sources):
        return None
    share = {s.name: 1.0 if s.weight is None else s.weight for s in sources}
    counts = manifest.source.value_counts()
    return [share[s] / counts[s] for s in manifest.source]

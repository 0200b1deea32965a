"""``polypseg data …``: acquire, validate and split the dataset."""

from __future__ import annotations

from pathlib import Path

from polypseg.data import acquire
from polypseg.data.datamodule import DEFAULT_SPLIT, resolve_data_root
from polypseg.data.manifest import build_manifest, scan_samples, write_manifest
from polypseg.data.splits import make_split, write_split


def download(
    root: str | None = None, url: str = acquire.OFFICIAL_URL, sha256: str | None = None
) -> str:
    """Download the official Kvasir-SEG archive into ROOT (default $POLYPSEG_DATA_ROOT or data/kvasir-seg)."""
    return str(acquire.download(resolve_data_root(root), url, sha256))


def import_dataset(source: str, root: str | None = None, verify_checksums: bool = True) -> str:
    """Import a Kvasir-SEG folder or zip (checksums verified) into ROOT."""
    return str(acquire.import_dataset(source, resolve_data_root(root), verify_checksums))


def prepare(
    root: str | None = None, split_file: str | None = DEFAULT_SPLIT, out: str = "data/manifest.csv"
) -> str:
    """Build and validate the manifest of ROOT with SPLIT_FILE; write it atomically to OUT."""
    data_root = resolve_data_root(root)
    manifest = build_manifest(data_root, split_file)
    write_manifest(manifest, out, data_root)
    counts = manifest.split.value_counts().to_dict()
    print(f"{len(manifest)} samples valid: {counts}; manifest {Path(out).resolve()}")
    return out


def split(
    root: str | None = None,
    out: str = DEFAULT_SPLIT,
    seed: int = 42,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> str:
    """Make a seeded, size-stratified train/val/test split of ROOT (near-duplicates kept together)."""
    data_root = resolve_data_root(root)
    table = make_split(scan_samples(data_root), data_root, fractions, seed)
    write_split(table, out)
    print(f"wrote {out}: {table.split.value_counts().to_dict()}")
    return out

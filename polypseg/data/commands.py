"""``polypseg data …``: acquire, validate and split the dataset."""

from __future__ import annotations

from pathlib import Path

from polypseg.data import acquire
from polypseg.data.duplicates import same_frame_pairs
from polypseg.data.manifest import build_manifest, read_split, scan_samples, write_manifest
from polypseg.data.roots import DEFAULT_SPLIT, resolve_data_root
from polypseg.data.sequences import read_groups, recover_sequences
from polypseg.data.splits import crossing_pairs, group_split, make_split, write_split
from polypseg.runtime.io import atomic_path, list_images


def download(
    data_root: str | None = None, url: str = acquire.OFFICIAL_URL, sha256: str | None = None
) -> str:
    """Download the official Kvasir-SEG archive into DATA_ROOT (default $POLYPSEG_DATA_ROOT or data/kvasir-seg)."""
    return str(acquire.download(resolve_data_root(data_root), url, sha256))


def import_dataset(source: str, data_root: str | None = None, verify_checksums: bool = True) -> str:
    """Import a Kvasir-SEG folder or zip (checksums verified) into DATA_ROOT."""
    return str(acquire.import_dataset(source, resolve_data_root(data_root), verify_checksums))


def prepare(
    data_root: str | None = None,
    split_file: str | None = DEFAULT_SPLIT,
    output: str = "data/manifest.csv",
) -> str:
    """Build and validate the manifest of DATA_ROOT with SPLIT_FILE; write it atomically to OUTPUT."""
    data_root = resolve_data_root(data_root)
    manifest = build_manifest(data_root, split_file)
    write_manifest(manifest, output, data_root, split_file)
    counts = manifest.split.value_counts().to_dict()
    print(f"{len(manifest)} samples valid: {counts}; manifest {Path(output).resolve()}")
    return output


def split(
    data_root: str | None = None,
    output: str = "data/splits/kvasir_seg_70_15_15.csv",
    seed: int = 42,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    sequences_file: str | None = None,
) -> str:
    """Make a seeded, size-stratified train/val/test split of DATA_ROOT (near-duplicates kept together);
    with SEQUENCES_FILE (``name,sequence``), FRACTIONS of the video sequences, each kept whole."""
    data_root = resolve_data_root(data_root)
    if sequences_file:
        table = group_split(read_groups(sequences_file), fractions, seed)
    else:
        table = make_split(scan_samples(data_root), data_root, fractions, seed)
    write_split(table, output)
    print(f"wrote {output}: {table.split.value_counts().to_dict()}")
    return output


def audit(
    data_root: str | None = None,
    split_file: str | None = DEFAULT_SPLIT,
    output: str = "data/same_frames.csv",
) -> dict:
    """Find same-frame copies in DATA_ROOT (re-cropped and re-sized ones too) and write them to OUTPUT
    (``a,b,inliers``); warn about every pair SPLIT_FILE puts on two sides (published splits do)."""
    data_root = resolve_data_root(data_root)
    images = list_images(data_root / "images")
    names = sorted(images)
    pairs = [(names[i], names[j], n) for i, j, n in same_frame_pairs([images[k] for k in names])]
    with atomic_path(output) as tmp:
        tmp.write_text("a,b,inliers\n" + "".join(f"{a},{b},{n}\n" for a, b, n in pairs))
    crossing = (
        crossing_pairs(read_split(split_file), [(a, b) for a, b, _ in pairs]) if split_file else []
    )
    print(f"{len(pairs)} same-frame pair(s) among {len(names)} images; written to {output}")
    for a, b in crossing:
        print(
            f"WARNING {split_file}: '{a}' and '{b}' show the same frame on two sides of the split"
        )
    return {"pairs": len(pairs), "crossing": [list(p) for p in crossing], "output": output}


def sequences(
    data_root: str | None = None, count: int = 31, output: str = "data/sequences.csv"
) -> str:
    """Recover the video sequence of every frame of DATA_ROOT, whose frames are numbered in recording
    order (CVC-ClinicDB: 31 videos), and write ``name,sequence`` to OUTPUT."""
    images = list_images(resolve_data_root(data_root) / "images")
    names = sorted(images, key=lambda n: (len(n), n))  # 2 before 10
    labels = recover_sequences([images[n] for n in names], count)
    with atomic_path(output) as tmp:
        tmp.write_text(
            "name,sequence\n" + "".join(f"{n},{s}\n" for n, s in zip(names, labels, strict=True))
        )
    print(f"{len(names)} frames in {count} sequences; written to {output}")
    return output

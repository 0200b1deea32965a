"""The manifest: one validated row per sample, the only way data enters training and evaluation.

Checks that need pixels (pairing, decoding, sizes, binary masks) run while the manifest is built;
table rules (types, ranges, uniqueness, split names) are a Pandera schema. Every problem is
collected and reported at once, naming the file and the rule broken.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from polypseg.runtime.io import (
    ImageReadError,
    atomic_path,
    list_images,
    read_mask,
    read_rgb,
    sha256_file,
)
from polypseg.runtime.processing import MASK_THRESHOLD_U8

SPLITS = ("train", "val", "test")
MAX_AMBIGUOUS_MASK_FRACTION = 0.01
"""A real (JPEG) mask has almost no mid-gray pixels; more than 1% in [64, 191] is not a mask."""


class DataValidationError(ValueError):
    """Raised with every problem found, one per line, each naming its file and rule."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = "\n".join(f"  - {p}" for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{len(problems)} data problem(s):\n{shown}{more}")


class SampleSchema(pa.DataFrameModel):
    """Facts of one image/mask pair, paths relative to the data root."""

    name: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    image: Series[str]
    mask: Series[str]
    width: Series[int] = pa.Field(gt=0)
    height: Series[int] = pa.Field(gt=0)
    mask_fraction: Series[float] = pa.Field(ge=0.0, le=1.0)
    sha256: Series[str] = pa.Field(unique=True, str_matches=r"^[0-9a-f]{64}$")
    mask_sha256: Series[str] = pa.Field(str_matches=r"^[0-9a-f]{64}$")

    class Config:
        strict = True
        coerce = True


class SplitSchema(pa.DataFrameModel):
    """A split CSV: each sample named once, in one of the known splits."""

    name: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    split: Series[str] = pa.Field(isin=list(SPLITS))

    class Config:
        strict = "filter"
        coerce = True


class ManifestSchema(SampleSchema):
    split: Series[str] = pa.Field(isin=list(SPLITS))
    source: Optional[Series[str]]  # noqa: UP045 (pandera reads Optional as "column may be absent")


def _schema_problems(exc: pa.errors.SchemaErrors, source: str) -> list[str]:
    problems = []
    for row in exc.failure_cases.itertuples():
        where = f"column '{row.column}'" if row.column is not None else "table"
        value = "" if pd.isna(row.failure_case) else f" (value {row.failure_case!r})"
        problems.append(f"{source}: {where} breaks rule {row.check}{value}")
    return problems


def validate(frame: pd.DataFrame, schema: type[pa.DataFrameModel], source: str) -> pd.DataFrame:
    """Validate ``frame`` against ``schema``; on failure raise DataValidationError naming ``source``."""
    try:
        return schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        raise DataValidationError(_schema_problems(exc, source)) from None


MAX_MASK_FRACTION = 0.99
"""A mask covering the whole frame is an inverted or blank-white mask, not a polyp."""


def _mask_facts(mask_path: Path) -> tuple[tuple[int, int], float, float]:
    mask = read_mask(mask_path)
    ambiguous = float(((mask >= 64) & (mask <= 191)).mean())
    return mask.shape, float((mask > MASK_THRESHOLD_U8).mean()), ambiguous


def _mask_problem(mask_path: Path, fraction: float, ambiguous: float, allow_empty: bool) -> str:
    """Why a mask cannot be a polyp ground truth ("" when it can)."""
    if ambiguous > MAX_AMBIGUOUS_MASK_FRACTION:
        return (
            f"{mask_path}: mask is not binary after thresholding at {MASK_THRESHOLD_U8}: "
            f"{ambiguous:.1%} of pixels are mid-gray (64..191), at most "
            f"{MAX_AMBIGUOUS_MASK_FRACTION:.0%} allowed"
        )
    if fraction == 0 and not allow_empty:
        return (
            f"{mask_path}: mask is empty (no pixel > {MASK_THRESHOLD_U8}); every image of this "
            "dataset shows a polyp: fix the mask, or declare polyp-free frames (allow_empty_masks)"
        )
    if fraction > MAX_MASK_FRACTION:
        return (
            f"{mask_path}: mask covers {fraction:.1%} of the image (at most "
            f"{MAX_MASK_FRACTION:.0%}): an inverted or blank mask; polyps are white (255) on black"
        )
    return ""


def scan_samples(
    root: str | Path,
    images_dir: str = "images",
    masks_dir: str = "masks",
    allow_empty_masks: bool = False,
) -> pd.DataFrame:
    """Read every image/mask pair under ``root`` and return validated per-sample facts.

    Args:
        root: folder holding ``images_dir`` and ``masks_dir``.
        allow_empty_masks: accept masks without a polyp pixel (a source of polyp-free frames).

    Raises:
        DataValidationError: every problem found, each naming its file and rule.
    """
    root = Path(root)
    problems: list[str] = []
    folders = {"images": root / images_dir, "masks": root / masks_dir}
    for kind, folder in folders.items():
        if not folder.is_dir():
            problems.append(f"{folder}: {kind} folder does not exist")
    if problems:
        raise DataValidationError(problems)
    listed = {}
    for kind, folder in folders.items():
        try:
            listed[kind] = list_images(folder)
        except ImageReadError as exc:
            problems += str(exc).splitlines()
    if problems:
        raise DataValidationError(sorted(problems))
    images, masks = listed["images"], listed["masks"]
    problems += [
        f"{images[n]}: image has no mask in {folders['masks']}"
        for n in images.keys() - masks.keys()
    ]
    problems += [
        f"{masks[n]}: mask has no image in {folders['images']}"
        for n in masks.keys() - images.keys()
    ]
    rows = []
    for name in sorted(images.keys() & masks.keys()):
        image_path, mask_path = images[name], masks[name]
        try:
            image_hw = read_rgb(image_path).shape[:2]  # full decode catches truncation
            mask_hw, fraction, ambiguous = _mask_facts(mask_path)
        except ImageReadError as exc:
            problems.append(str(exc))
            continue
        if image_hw != mask_hw:
            problems.append(
                f"{mask_path}: mask size {mask_hw[1]}x{mask_hw[0]} differs from image size "
                f"{image_hw[1]}x{image_hw[0]}"
            )
            continue
        problem = _mask_problem(mask_path, fraction, ambiguous, allow_empty_masks)
        if problem:
            problems.append(problem)
            continue
        rows.append(
            {
                "name": name,
                "image": image_path.relative_to(root).as_posix(),
                "mask": mask_path.relative_to(root).as_posix(),
                "width": image_hw[1],
                "height": image_hw[0],
                "mask_fraction": fraction,
                "sha256": sha256_file(image_path),
                "mask_sha256": sha256_file(mask_path),
            }
        )
    frame = pd.DataFrame(rows, columns=list(SampleSchema.to_schema().columns))
    duplicated = frame[frame.duplicated("sha256", keep=False)]
    for _, group in duplicated.groupby("sha256"):
        problems.append(
            f"{root / group.image.iloc[0]}: duplicate content of {', '.join(group.image.iloc[1:])}"
        )
    if problems:
        raise DataValidationError(sorted(problems))
    return validate(frame.astype({"width": int, "height": int}), SampleSchema, str(root))


def read_split(path: str | Path) -> pd.DataFrame:
    """Read and validate a ``name,split`` CSV."""
    path = Path(path)
    if not path.is_file():
        raise DataValidationError([f"{path}: split file does not exist"])
    try:
        frame = pd.read_csv(path, dtype=str)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataValidationError(
            [
                f"{path}: not a readable name,split CSV ({exc}); write a header line and one row per sample"
            ]
        ) from None
    missing = {"name", "split"} - set(frame.columns)
    if missing:
        raise DataValidationError([f"{path}: missing column(s) {sorted(missing)}; need name,split"])
    if frame.empty:
        raise DataValidationError(
            [
                f"{path}: split file lists no samples (header only); add one name,split row per sample"
            ]
        )
    twice = frame[frame.duplicated("name", keep=False)]
    if len(twice):
        return _raise_twice(path, twice)
    return validate(frame, SplitSchema, str(path))


def _raise_twice(path: Path, twice: pd.DataFrame):
    problems = [
        f"{path}: sample '{name}' is listed {len(g)} times (splits {', '.join(g.split)}); a sample belongs to one split"
        for name, g in twice.groupby("name")
    ]
    raise DataValidationError(problems)


def attach_split(samples: pd.DataFrame, split: pd.DataFrame, split_source: str) -> pd.DataFrame:
    """Join facts and split; every split name must exist, samples missing from the split are dropped."""
    unknown = sorted(set(split.name) - set(samples.name))
    if unknown:
        raise DataValidationError(
            [f"{split_source}: sample '{n}' is not in the data folder" for n in unknown]
        )
    manifest = samples.merge(split[["name", "split"]], on="name", how="inner")
    return validate(manifest, ManifestSchema, split_source)


def build_manifest(
    root: str | Path, split_file: str | Path | None, allow_empty_masks: bool = False
) -> pd.DataFrame:
    """Facts + split. Without a split file every sample is a test sample (evaluating a folder)."""
    samples = scan_samples(root, allow_empty_masks=allow_empty_masks)
    if split_file is None:
        return validate(samples.assign(split="test"), ManifestSchema, str(root))
    return attach_split(samples, read_split(split_file), str(split_file))


def fingerprint(root: str | Path, split_file: str | Path | None) -> str:
    """Cheap identity of the data a manifest was built from: every image/mask file's name, size
    and modification time, and the split file's bytes (no decoding)."""
    digest = hashlib.sha256()
    for sub in ("images", "masks"):
        folder = Path(root) / sub
        for p in sorted(folder.iterdir()) if folder.is_dir() else []:
            if p.is_file():
                stat = p.stat()
                digest.update(f"{sub}/{p.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    if split_file is not None:
        digest.update(Path(split_file).read_bytes())
    return digest.hexdigest()[:16]


def read_prepared(
    path: str | Path, root: str | Path, split_file: str | Path | None
) -> pd.DataFrame:
    """The manifest ``polypseg data prepare`` wrote, if it still describes ``root`` and
    ``split_file`` (the gate ran then; this only re-validates the table, nothing is decoded)."""
    path = Path(path)
    sidecar = path.with_suffix(".json")
    if not path.is_file() or not sidecar.is_file():
        raise DataValidationError(
            [f"{path}: no prepared manifest; run `polypseg data prepare --output {path}` first"]
        )
    recorded = json.loads(sidecar.read_text()).get("fingerprint")
    if recorded != fingerprint(root, split_file):
        raise DataValidationError(
            [
                f"{path}: written for other data than {root} with {split_file} (files or split "
                f"changed since); re-run `polypseg data prepare --data_root {root} --split_file "
                f"{split_file} --output {path}`"
            ]
        )
    return read_manifest(path)


def write_manifest(
    manifest: pd.DataFrame,
    path: str | Path,
    root: str | Path,
    split_file: str | Path | None = None,
) -> Path:
    """Write CSV atomically, plus a small JSON sidecar with the data root, counts and the data's
    :func:`fingerprint` (what lets training trust it without decoding everything again)."""
    validate(manifest, ManifestSchema, str(path))
    if manifest.empty:
        raise DataValidationError([f"{path}: refusing to write a manifest without samples"])
    path = Path(path)
    with atomic_path(path) as tmp:
        manifest.to_csv(tmp, index=False, float_format="%.6f")
    info = {
        "root": str(Path(root).resolve()),
        "split_file": None if split_file is None else str(split_file),
        "fingerprint": fingerprint(root, split_file),
        "counts": manifest.split.value_counts().to_dict(),
    }
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")
    return path


def read_manifest(path: str | Path) -> pd.DataFrame:
    return validate(pd.read_csv(path, dtype={"name": str, "split": str}), ManifestSchema, str(path))


def size_bins(fractions: pd.Series | np.ndarray, bins: int = 3) -> np.ndarray:
    """Polyp-size class (0 = small … bins-1 = large) by quantiles of the mask area fraction."""
    return pd.qcut(np.asarray(fractions), q=bins, labels=False, duplicates="drop").astype(int)

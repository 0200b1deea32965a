"""Evaluation report: metrics.json (means, std, 95% bootstrap CI), per-image CSV and plots."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from polypseg.runtime.io import atomic_path, read_mask, read_rgb
from polypseg.runtime.metrics import ALL_METRICS
from polypseg.runtime.overlays import triptych
from polypseg.runtime.processing import Processing, binarize_mask, postprocess

# manifest columns that lead every per-image report row (polypseg test and polypseg evaluate)
MANIFEST_COLUMNS = ["name", "image", "mask", "width", "height", "mask_fraction"]


def resamples(size: int, draws: int = 2000, seed: int = 0) -> np.ndarray:
    """``draws`` bootstrap resamples of ``size`` items, as rows of indices (seeded, reproducible)."""
    return np.random.default_rng(seed).integers(0, size, (draws, size))


def summarize(values: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Mean, std, median and a 95% percentile-bootstrap interval of the mean (images resampled).

    Example:
        >>> summarize([0.8, 0.9, 1.0])["mean"]
        0.9
    """
    values = np.asarray(values, dtype=float)
    out = {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "median": float(np.median(values)),
        "min": float(values.min()),
    }
    means = values[resamples(len(values), seed=seed)].mean(axis=1)
    out["ci95"] = [float(np.percentile(means, q)) for q in (2.5, 97.5)]
    return out


def summary_table(per_image: pd.DataFrame) -> dict[str, dict[str, float]]:
    columns = [
        c
        for c in per_image.columns
        if c.split("_")[0] in ALL_METRICS and per_image[c].dtype.kind == "f"
    ]
    return {c: summarize(per_image[c].to_numpy()) for c in columns}


def _plots(per_image: pd.DataFrame, out: Path) -> list[Path]:
    paths = []
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(per_image.dice, bins=np.linspace(0, 1, 21), color="#3a7", edgecolor="white")
    ax.set(
        xlabel="Dice (per image, original resolution)",
        ylabel="images",
        title=f"mDice {per_image.dice.mean():.3f}",
    )
    fig.tight_layout()
    fig.savefig(out / "dice_histogram.png", dpi=120)
    paths.append(out / "dice_histogram.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.scatter(per_image.mask_fraction * 100, per_image.dice, s=12, alpha=0.7)
    ax.set(
        xscale="log", xlabel="polyp area (% of image)", ylabel="Dice", title="Dice vs polyp size"
    )
    fig.tight_layout()
    fig.savefig(out / "dice_vs_size.png", dpi=120)
    paths.append(out / "dice_vs_size.png")
    plt.close(fig)
    return paths


def gallery(
    triples: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], path: Path, height: int = 200
) -> Path:
    """One PNG, a row per ``(image, truth, prediction)``: image | truth (green) | prediction (magenta)."""
    rows = []
    for image, truth, pred in triples:
        strip = triptych(image, truth, pred)
        width = max(1, round(strip.shape[1] * height / strip.shape[0]))
        rows.append(np.asarray(Image.fromarray(strip).resize((width, height))))
    width = max(r.shape[1] for r in rows)
    canvas = np.full((len(rows) * (height + 4), width, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        canvas[i * (height + 4) : i * (height + 4) + height, : r.shape[1]] = r
    with atomic_path(path) as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG")
    return path


def worst_gallery(
    per_image: pd.DataFrame,
    probabilities: dict[str, np.ndarray],
    root: Path,
    processing: Processing,
    path: Path,
    k: int = 8,
    height: int = 200,
) -> Path:
    """The ``k`` lowest-Dice images of a report, drawn with :func:`gallery`."""

    def triples():
        for row in per_image.nsmallest(k, "dice").itertuples():
            image = read_rgb(root / row.image)
            truth = binarize_mask(read_mask(root / row.mask))
            pred = postprocess(probabilities[row.name], image.shape[0], image.shape[1], processing)
            yield image, truth, pred

    return gallery(triples(), path, height)


def write_report(
    per_image: pd.DataFrame,
    out_dir: str | Path,
    context: dict,
    probabilities: dict[str, np.ndarray] | None = None,
    root: Path | None = None,
    processing: Processing | None = None,
    worst_k: int = 8,
) -> list[Path]:
    """Write every report file into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"images": len(per_image), **context, "metrics": summary_table(per_image)}
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(
            json.dumps(
                metrics,
                indent=2,
                default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o),
            )
            + "\n"
        )
    with atomic_path(out / "per_image.csv") as tmp:
        per_image.to_csv(tmp, index=False, float_format="%.5f")
    paths = [out / "metrics.json", out / "per_image.csv", *_plots(per_image, out)]
    if probabilities and root is not None:
        paths.append(
            worst_gallery(
                per_image,
                probabilities,
                root,
                processing or Processing(),
                out / "worst_cases.png",
                worst_k,
            )
        )
    return paths

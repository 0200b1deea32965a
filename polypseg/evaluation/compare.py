"""Paired comparison of two reports on the same images: is model B better than model A, or is the
difference inside the noise of 100 test images? Two unpaired intervals overlap far more often than
the paired difference straddles zero, so compare per image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from polypseg.evaluation.report import summarize


def read_per_image(report: str | Path, metric: str) -> pd.Series:
    """``metric`` per image name from a report folder (or its ``per_image.csv``)."""
    path = Path(report)
    path = path / "per_image.csv" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no per-image report (written by polypseg test/evaluate)")
    table = pd.read_csv(path)
    for column in ("name", metric):
        if column not in table.columns:
            raise ValueError(f"{path}: no '{column}' column (has {list(table.columns)})")
    if table["name"].duplicated().any():
        raise ValueError(f"{path}: image names repeat; is it one report?")
    return table.set_index("name")[metric]


def compare(a: str, b: str, metric: str = "dice", tie: float = 1e-4) -> dict:
    """Paired difference b - a per image: mean, 95 % bootstrap interval, images won and lost.

    ``a``/``b``: report folders (or ``per_image.csv``) of ``polypseg test``/``evaluate`` on the same
    images; differences within ``tie`` count as ties."""
    first, second = read_per_image(a, metric), read_per_image(b, metric)
    if set(first.index) != set(second.index):
        only_a = sorted(set(first.index) - set(second.index))[:5]
        only_b = sorted(set(second.index) - set(first.index))[:5]
        raise ValueError(
            f"{a} and {b} cover different images (only in the first: {only_a}, only in the "
            f"second: {only_b}); a paired comparison needs the same split"
        )
    before = first.reindex(second.index).to_numpy(dtype=float)
    after = second.to_numpy(dtype=float)
    finite = np.isfinite(before) & np.isfinite(after)  # hd95 is NaN where a mask is empty
    diff = after[finite] - before[finite]
    summary = summarize(diff)
    result = {
        "metric": metric,
        "images": int(finite.sum()),
        "a": float(before[finite].mean()),
        "b": float(after[finite].mean()),
        "difference": summary["mean"],
        "ci95": summary["ci95"],
        "b_better": int((diff > tie).sum()),
        "b_worse": int((diff < -tie).sum()),
        "ties": int((np.abs(diff) <= tie).sum()),
    }
    low, high = result["ci95"]
    print(
        f"{metric}: {result['a']:.4f} -> {result['b']:.4f}, paired difference "
        f"{result['difference']:+.4f} [{low:+.4f}, {high:+.4f}] over {result['images']} images "
        f"({result['b_better']} better, {result['b_worse']} worse, {result['ties']} tied)"
    )
    return result

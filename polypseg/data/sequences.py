"""Video sequences of a dataset of consecutive frames (CVC-ClinicDB: 612 frames, 31 videos).

Frames numbered in recording order are split into ``count`` contiguous runs whose colour content
varies least inside each run: every frame becomes a colour descriptor (square root of a coarse
HSV histogram, plus a 16x12 thumbnail for layout), and an exact dynamic programme picks the
``count - 1`` cut points that minimise the summed within-run variance (optimal K-segmentation).
A cut between two views of one polyp costs little only when the views look alike, so the runs
follow the videos; on CVC-ClinicDB the 31 runs are 5 to 25 frames long and every cut checked by
eye starts a new polyp (``docs/data_card.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from polypseg.runtime.io import read_rgb


def frame_descriptor(path: str | Path) -> np.ndarray:
    """Colour content of one frame: sqrt HSV histogram (8x8x8) and a small thumbnail."""
    rgb = read_rgb(path)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, [8, 8, 8], [0, 180, 0, 256, 0, 256]).ravel()
    hist = np.sqrt(hist / max(hist.sum(), 1.0))
    thumb = cv2.resize(rgb, (16, 12), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    thumb *= 0.1 * np.sqrt(hist.size / thumb.size) / 255.0  # layout weighs a tenth of colour
    return np.concatenate([hist, thumb])


def segment(features: np.ndarray, count: int) -> list[int]:
    """Start index of each of ``count`` contiguous runs of ``features`` (N, D) that minimise the
    summed squared distance of every row to its run's mean.

    Example:
        >>> x = np.array([[0.0], [0.1], [5.0], [5.1], [9.0]])
        >>> segment(x, 3)
        [0, 2, 4]
    """
    n = len(features)
    if not 1 <= count <= n:
        raise ValueError(f"cannot cut {n} frames into {count} sequences")
    total = np.vstack([np.zeros(features.shape[1]), np.cumsum(features, 0)])
    squares = np.concatenate([[0.0], np.cumsum((features**2).sum(1))])
    starts = np.arange(n)
    cost = np.full((count + 1, n + 1), np.inf)
    back = np.zeros((count + 1, n + 1), int)
    cost[0, 0] = 0.0
    for k in range(1, count + 1):
        for end in range(k, n + 1):
            a = starts[:end]
            sums = total[end] - total[a]
            within = squares[end] - squares[a] - (sums * sums).sum(1) / (end - a)
            options = cost[k - 1, :end] + within
            back[k, end] = int(np.argmin(options))
            cost[k, end] = options[back[k, end]]
    cuts, end = [], n
    for k in range(count, 0, -1):
        end = back[k, end]
        cuts.append(end)
    return sorted(int(c) for c in cuts)


def recover_sequences(images: Sequence[str | Path], count: int) -> list[int]:
    """Sequence number (1…count) of each frame; ``images`` in recording order."""
    starts = segment(np.stack([frame_descriptor(p) for p in images]), count)
    return list(np.searchsorted(starts, np.arange(len(images)), side="right"))


def read_groups(path: str | Path) -> pd.Series:
    """``name,sequence`` CSV as a Series name → group label."""
    table = pd.read_csv(path, dtype=str)
    if {"name", "sequence"} - set(table.columns):
        raise ValueError(f"{path}: need columns name,sequence (one row per frame)")
    return table.set_index("name").sequence

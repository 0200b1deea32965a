"""Pictures a person reads faster than numbers: image | truth | prediction overlays."""

from __future__ import annotations

import numpy as np

TRUTH_RGB = np.array([0, 255, 0], dtype=np.float32)
PRED_RGB = np.array([255, 0, 255], dtype=np.float32)


def overlay(
    image: np.ndarray, mask: np.ndarray, color: np.ndarray, alpha: float = 0.45
) -> np.ndarray:
    """Tint ``mask`` pixels of an RGB uint8 image."""
    out = image.astype(np.float32).copy()
    sel = mask.astype(bool)
    out[sel] = (1 - alpha) * out[sel] + alpha * color
    return out.astype(np.uint8)


def triptych(image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """One row: the image, the ground truth (green) and the prediction (magenta)."""
    gap = np.full((image.shape[0], 4, 3), 255, dtype=np.uint8)
    return np.concatenate(
        [image, gap, overlay(image, truth, TRUTH_RGB), gap, overlay(image, pred, PRED_RGB)], axis=1
    )


def grid(rows: list[np.ndarray]) -> np.ndarray:
    gap = np.full((4, rows[0].shape[1], 3), 255, dtype=np.uint8)
    out = []
    for row in rows:
        out += [row, gap]
    return np.concatenate(out[:-1], axis=0)

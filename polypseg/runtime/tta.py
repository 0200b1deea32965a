"""Test-time augmentation: which views of an image are averaged, named once for every path.

``flips`` (4 views: identity, horizontal, vertical, both) is ttach's ``flip_transform``; ``d4``
(8 views: the four 90° rotations, each also mirrored) is ttach's ``d4_transform`` — the square's
whole symmetry group, in distribution for models trained with ``RandomRotate90``. The Lightning
module averages with ttach; the ONNX predictor with the numpy views below, in logit space like
ttach's ``merge_mode="mean"`` on logits, so ``polypseg test`` and ``polypseg evaluate`` agree.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from polypseg.runtime.processing import sigmoid

TTA = bool | Literal["flips", "d4"]
"""What ``tta`` options accept: ``false`` (one pass), ``true`` (= ``flips``), ``flips`` or ``d4``."""

MODES = ("flips", "d4")


def tta_mode(tta: TTA | None) -> str | None:
    """``None`` for a single pass, else the mode's name; rejects anything else by name."""
    if tta is None or tta is False:
        return None
    if tta is True:
        return "flips"
    if tta in MODES:
        return str(tta)
    raise ValueError(f"tta: expected true, false or one of {MODES}, got {tta!r}")


TTACH = {"flips": "flip_transform", "d4": "d4_transform"}
"""The same views as ttach aliases, for the Lightning module (this module stays torch-free)."""

# (quarter turns, mirror first): a view is x -> rot90(mirror(x), k) on the last two axes
VIEWS = {
    "flips": ((0, False), (0, True), (2, True), (2, False)),  # rot180 . mirror = vertical flip
    "d4": tuple((k, mirror) for mirror in (False, True) for k in range(4)),
}


def forward_view(x: np.ndarray, k: int, mirror: bool) -> np.ndarray:
    x = np.flip(x, -1) if mirror else x
    return np.rot90(x, k, axes=(-2, -1))


def inverse_view(y: np.ndarray, k: int, mirror: bool) -> np.ndarray:
    y = np.rot90(y, -k, axes=(-2, -1))
    return np.flip(y, -1) if mirror else y


def average_views(run, batch: np.ndarray, mode: str) -> np.ndarray:
    """Probabilities of ``run`` ((N,3,S,S) -> (N,S,S)) averaged over the views of ``mode`` in
    logit space; the views go through the network as one batch (len(views) x the compute)."""
    views = VIEWS[mode]
    n = len(batch)
    stacked = np.concatenate([forward_view(batch, k, mirror) for k, mirror in views])
    prob = np.clip(run(np.ascontiguousarray(stacked)), 1e-7, 1 - 1e-7)
    logits = np.log(prob) - np.log1p(-prob)
    back = [
        inverse_view(logits[i * n : (i + 1) * n], k, mirror) for i, (k, mirror) in enumerate(views)
    ]
    return sigmoid(np.mean(back, axis=0))

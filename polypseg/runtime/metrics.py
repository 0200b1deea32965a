"""Per-image segmentation metrics, computed the way the polyp literature reports them.

Every score is per image and then averaged over images ("mDice", "mIoU"), as PraNet and its
successors do. The overlap scores are confusion-count formulas written with array operators only,
so one definition serves numpy arrays (``polypseg evaluate``, torch-free) and torch tensors on any
device (training's val step). Tests hold them equal to torchmetrics (overlap) and MONAI (HD95).
This module fixes the conventions for empty masks, which libraries leave undefined:

* prediction and target both empty: every overlap score is 1 (nothing to find, nothing found),
  HD95 is 0;
* exactly one of them empty: overlap scores follow from the counts (0 for Dice/IoU/recall),
  HD95 is the image diagonal (the largest possible distance) so it never becomes NaN/inf.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

OVERLAP_METRICS = ("dice", "iou", "precision", "recall", "specificity")
ALL_METRICS = (*OVERLAP_METRICS, "hd95")


def _flat(mask: Any) -> Any:
    """(N, H*W) booleans from masks (H,W), (N,H,W) or (N,1,H,W); numpy or torch alike."""
    if mask.ndim == 2:
        mask = mask[None]
    return mask.reshape(mask.shape[0], -1) > 0


def _ratio(num: Any, den: Any) -> Any:
    return num / (den + (den == 0))  # 0 where the denominator is 0 (torchmetrics' zero_division)


def overlap_scores(pred: Any, target: Any, names: tuple[str, ...] = OVERLAP_METRICS) -> dict:
    """Dice, IoU, precision, recall, specificity (or the subset ``names``) per image.

    Args:
        pred: binary masks (N,H,W), (N,1,H,W) or (H,W); numpy array or torch tensor.
        target: the ground truth, same shape and kind.
        names: which scores to return.

    Returns:
        name -> float scores of shape (N,), of the inputs' kind (and device).

    Example:
        >>> import numpy as np
        >>> pred = np.zeros((4, 4), bool); pred[:2] = True
        >>> truth = np.zeros((4, 4), bool); truth[:1] = True
        >>> float(overlap_scores(pred, truth)["dice"][0])  # 2*4 / (8 + 4)
        0.6666666666666666
    """
    pred, target = _flat(pred), _flat(target)
    tp, fp = (pred & target).sum(1), (pred & ~target).sum(1)
    fn, tn = (~pred & target).sum(1), (~pred & ~target).sum(1)
    formulas = {
        "dice": lambda: _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": lambda: _ratio(tp, tp + fp + fn),
        "precision": lambda: _ratio(tp, tp + fp),
        "recall": lambda: _ratio(tp, tp + fn),
        "specificity": lambda: _ratio(tn, tn + fp),
    }
    both_empty = (tp + fp + fn) == 0
    out = {}
    for name in names:
        score = formulas[name]()
        out[name] = score + both_empty * (1 - score)  # 1 where there is nothing to find
    return out


def _edges(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels: the mask minus its erosion by the 4-neighbour cross, outside = background
    (MONAI's ``get_mask_edges``)."""
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    eroded = cv2.erode(mask, cross, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return (mask > 0) & (eroded == 0)


def _distances_to(edges: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance of every pixel to the nearest pixel of ``edges``."""
    return cv2.distanceTransform((~edges).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def hd95(pred: np.ndarray, target: np.ndarray) -> float:
    """95th-percentile symmetric Hausdorff distance in pixels between two (H,W) binary masks:
    the larger of the two directed 95th percentiles of boundary-to-boundary distances."""
    pred, target = (np.asarray(m) > 0 for m in (pred, target))
    if not pred.any() and not target.any():
        return 0.0
    if not pred.any() or not target.any():
        return math.hypot(*pred.shape)
    edges_pred, edges_target = _edges(pred.astype(np.uint8)), _edges(target.astype(np.uint8))
    forward = _distances_to(edges_target)[edges_pred]
    backward = _distances_to(edges_pred)[edges_target]
    return float(max(np.percentile(forward, 95), np.percentile(backward, 95)))


def image_scores(pred: np.ndarray, target: np.ndarray, boundary: bool = True) -> dict[str, float]:
    """All metrics for one image (H,W) as plain floats.

    Example:
        >>> import numpy as np
        >>> mask = np.zeros((8, 8), np.uint8); mask[2:6, 2:6] = 1
        >>> image_scores(mask, mask)["dice"], image_scores(mask, mask)["hd95"]
        (1.0, 0.0)
    """
    pred, target = np.asarray(pred), np.asarray(target)
    scores = {k: float(v[0]) for k, v in overlap_scores(pred, target).items()}
    if boundary:
        scores["hd95"] = hd95(pred, target)
    return scores

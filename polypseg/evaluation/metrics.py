"""Per-image segmentation metrics, computed the way the polyp literature reports them.

Every score is per image and then averaged over images ("mDice", "mIoU"), as PraNet and its
successors do. Implementations are torchmetrics' (Dice, IoU, precision, recall, specificity) and
MONAI's (95th-percentile Hausdorff distance); this module only fixes the conventions for empty
masks, which libraries leave undefined:

* prediction and target both empty: every overlap score is 1 (nothing to find, nothing found),
  HD95 is 0;
* exactly one of them empty: overlap scores follow from the counts (0 for Dice/IoU/recall),
  HD95 is the image diagonal (the largest possible distance) so it never becomes NaN/inf.
"""

from __future__ import annotations

import math
import warnings

import torch
from torchmetrics.functional.classification import (
    binary_precision,
    binary_recall,
    binary_specificity,
)
from torchmetrics.functional.segmentation import dice_score, mean_iou

OVERLAP_METRICS = ("dice", "iou", "precision", "recall", "specificity")
ALL_METRICS = (*OVERLAP_METRICS, "hd95")


def _as_batch(mask: torch.Tensor) -> torch.Tensor:
    mask = torch.as_tensor(mask)
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim == 4:
        mask = mask[:, 0]
    return (mask > 0).long()


def overlap_scores(
    pred: torch.Tensor, target: torch.Tensor, names: tuple[str, ...] = OVERLAP_METRICS
) -> dict[str, torch.Tensor]:
    """Dice, IoU, precision, recall, specificity (or the subset ``names``) per image for binary
    masks (N,H,W) or (H,W)."""
    pred, target = _as_batch(pred), _as_batch(target)
    one_hot = {"num_classes": 1, "input_format": "one-hot"}
    functions = {
        "dice": lambda: dice_score(
            pred[:, None],
            target[:, None],
            average="none",
            aggregation_level="samplewise",
            **one_hot,
        )[:, 0],
        "iou": lambda: mean_iou(pred[:, None], target[:, None], per_class=True, **one_hot)[:, 0],
        "precision": lambda: binary_precision(pred, target, multidim_average="samplewise"),
        "recall": lambda: binary_recall(pred, target, multidim_average="samplewise"),
        "specificity": lambda: binary_specificity(pred, target, multidim_average="samplewise"),
    }
    both_empty = (pred.flatten(1).sum(1) == 0) & (target.flatten(1).sum(1) == 0)
    return {k: torch.where(both_empty, 1.0, functions[k]().float()) for k in names}


def hd95(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """95th-percentile symmetric Hausdorff distance in pixels, per image."""
    pred, target = _as_batch(pred), _as_batch(target)
    diagonal = math.hypot(*pred.shape[-2:])
    from monai.metrics import (
        compute_hausdorff_distance,  # imported here: monai adds ~4 s to start-up
    )

    with warnings.catch_warnings():  # MONAI warns on empty masks, which are handled below
        warnings.simplefilter("ignore")
        distance = compute_hausdorff_distance(
            pred[:, None], target[:, None], include_background=True, percentile=95
        )[:, 0]
    p_empty, t_empty = pred.flatten(1).sum(1) == 0, target.flatten(1).sum(1) == 0
    distance = torch.where(p_empty & t_empty, torch.zeros_like(distance), distance)
    return torch.where(p_empty ^ t_empty, torch.full_like(distance, diagonal), distance).float()


def image_scores(
    pred: torch.Tensor, target: torch.Tensor, boundary: bool = True
) -> dict[str, float]:
    """All metrics for one image (H,W) as plain floats."""
    scores = {k: float(v[0]) for k, v in overlap_scores(pred, target).items()}
    if boundary:
        scores["hd95"] = float(hd95(pred, target)[0])
    return scores

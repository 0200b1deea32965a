"""Losses for binary segmentation on logits; any ``nn.Module`` with ``(logits, target)`` works.

They subclass torch's ``_Loss`` like smp's and MONAI's losses, so wrappers typed for those accept
them in YAML, e.g. ``monai.losses.DeepSupervisionLoss`` around ``StructureLoss`` for a network with
``deep_supervision`` (see ``configs/deep_supervision.yaml``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss, FocalLoss, TverskyLoss
from torch import nn
from torch.nn.modules.loss import _Loss

__all__ = ["DiceBCELoss", "DiceLoss", "FocalDiceLoss", "FocalLoss", "StructureLoss", "TverskyLoss"]


def soft_dice_per_image(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0):
    """``1 - soft Dice`` of each image (N,): every image counts once, as in the mDice metric,
    where smp's batch Dice lets large polyps outweigh small ones."""
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1).to(prob.dtype)
    inter = (prob * target).sum(1)
    return 1 - (2 * inter + smooth) / (prob.sum(1) + target.sum(1) + smooth)


class DiceBCELoss(_Loss):
    """``bce_weight * BCE + dice_weight * soft Dice``: BCE for pixel calibration, Dice for overlap.

    ``per_image=True`` averages the Dice of each image (what mDice scores) instead of one Dice over
    the whole batch (smp's ``DiceLoss``).
    """

    def __init__(
        self,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        smooth: float = 1.0,
        per_image: bool = False,
    ):
        super().__init__()
        self.bce, self.dice = (
            nn.BCEWithLogitsLoss(),
            DiceLoss("binary", from_logits=True, smooth=smooth),
        )
        self.bce_weight, self.dice_weight = bce_weight, dice_weight
        self.smooth, self.per_image = smooth, per_image

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.per_image:
            dice = soft_dice_per_image(logits, target, self.smooth).mean()
        else:
            dice = self.dice(logits, target)
        return self.bce_weight * self.bce(logits, target) + self.dice_weight * dice


class FocalDiceLoss(_Loss):
    """Focal loss (hard pixels) plus soft Dice."""

    def __init__(self, gamma: float = 2.0, alpha: float | None = None, dice_weight: float = 1.0):
        super().__init__()
        self.focal = FocalLoss("binary", gamma=gamma, alpha=alpha)
        self.dice, self.dice_weight = DiceLoss("binary", from_logits=True), dice_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.focal(logits, target) + self.dice_weight * self.dice(logits, target)


class StructureLoss(_Loss):
    """PraNet's structure loss (Fan et al., MICCAI 2020; also Polyp-PVT): weighted BCE + weighted
    IoU per image, pixels near the mask boundary weighted up to ``1 + boundary_weight``.

    The weight is how far a pixel's ``kernel_size`` neighbourhood mean differs from its own label,
    so edges and small polyps count more than the easy background and polyp interiors.
    """

    def __init__(self, kernel_size: int = 31, boundary_weight: float = 5.0):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"StructureLoss kernel_size must be odd, got {kernel_size}")
        self.kernel_size, self.boundary_weight = kernel_size, boundary_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(logits.dtype)
        k, pad = self.kernel_size, self.kernel_size // 2
        # the k x k zero-padded box mean as two 1-D passes: exact, and far cheaper on CPU
        local = F.avg_pool2d(target, (k, 1), stride=1, padding=(pad, 0))
        local = F.avg_pool2d(local, (1, k), stride=1, padding=(0, pad))
        weight = 1 + self.boundary_weight * (local - target).abs()
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        wbce = (weight * bce).sum((2, 3)) / weight.sum((2, 3))
        prob = torch.sigmoid(logits)
        inter = (prob * target * weight).sum((2, 3))
        union = ((prob + target) * weight).sum((2, 3))
        wiou = 1 - (inter + 1) / (union - inter + 1)
        return (wbce + wiou).mean()

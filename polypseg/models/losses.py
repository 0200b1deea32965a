"""Losses for binary segmentation on logits; any ``nn.Module`` with ``(logits, target)`` works."""

from __future__ import annotations

import torch
from segmentation_models_pytorch.losses import DiceLoss, FocalLoss, TverskyLoss
from torch import nn

__all__ = ["DiceBCELoss", "DiceLoss", "FocalDiceLoss", "FocalLoss", "TverskyLoss"]


class DiceBCELoss(nn.Module):
    """``bce_weight * BCE + dice_weight * soft Dice``: BCE for pixel calibration, Dice for overlap."""

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0):
        super().__init__()
        self.bce, self.dice = (
            nn.BCEWithLogitsLoss(),
            DiceLoss("binary", from_logits=True, smooth=smooth),
        )
        self.bce_weight, self.dice_weight = bce_weight, dice_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.bce_weight * self.bce(logits, target) + self.dice_weight * self.dice(
            logits, target
        )


class FocalDiceLoss(nn.Module):
    """Focal loss (hard pixels) plus soft Dice."""

    def __init__(self, gamma: float = 2.0, alpha: float | None = None, dice_weight: float = 1.0):
        super().__init__()
        self.focal = FocalLoss("binary", gamma=gamma, alpha=alpha)
        self.dice, self.dice_weight = DiceLoss("binary", from_logits=True), dice_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.focal(logits, target) + self.dice_weight * self.dice(logits, target)

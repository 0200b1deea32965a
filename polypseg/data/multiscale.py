"""Multi-scale training (PraNet, Polyp-PVT): every training batch is resized by one scale drawn
per batch, so the network sees polyps at more sizes than the fixed input side gives it.

Kept free of albumentations: plain torch on a batch, cheap on the accelerator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def scaled_side(side: int, scale: float, multiple: int = 32) -> int:
    """``side * scale`` rounded to a multiple of the encoder's total stride (32)."""
    return max(multiple, round(side * scale / multiple) * multiple)


def rescale_batch(
    image: torch.Tensor, mask: torch.Tensor, scale: float, multiple: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images bilinearly, {0,1} masks bilinearly then re-binarised at 0.5 (N,C,S,S each)."""
    side = scaled_side(image.shape[-1], scale, multiple)
    if side == image.shape[-1]:
        return image, mask
    image = F.interpolate(image, size=(side, side), mode="bilinear", align_corners=False)
    resized = F.interpolate(mask.float(), size=(side, side), mode="bilinear", align_corners=False)
    return image, (resized > 0.5).to(mask.dtype)

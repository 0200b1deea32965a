"""Knowledge distillation: a trained polypseg model's probability maps as extra, soft targets.

A small or fast network (the 192 px file, say) learns the stronger model's maps besides the masks
(Hinton et al., 2015): the maps carry what that model learned about boundaries and doubtful pixels,
which a binary mask cannot. The teacher is a checkpoint, read weights-only, frozen, and never part
of the student's state: the student's checkpoints and exports hold the student alone.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from polypseg.data.multiscale import scaled_side

__all__ = ["Teacher", "distillation_loss"]


class Teacher:
    """A frozen segmentation model that gives polyp probabilities for a training batch.

    Args:
        module: a :class:`~polypseg.models.module.PolypSegModule` (its own normalisation and
            input size are used); :meth:`from_checkpoint` loads one from a file.

    Example:
        >>> teacher = Teacher.from_checkpoint("models/polypseg.ckpt")  # a 256 px model
        >>> teacher.probabilities(torch.rand(2, 3, 192, 192), student_size=192).shape
        torch.Size([2, 1, 192, 192])
    """

    def __init__(self, module: nn.Module):
        self.module = module.eval().requires_grad_(False)
        self.module.tta = False  # one view: TTA would multiply the cost of every training step

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> Teacher:
        """The teacher in a polypseg checkpoint (refused if it is missing or carries code)."""
        from polypseg.models.checkpoints import load_module

        return cls(load_module(path))

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, student_size: int) -> torch.Tensor:
        """The teacher's polyp probabilities (N,1,H,W) for images in [0, 1] (N,3,H,W).

        The batch is scaled by the teacher's ``image_size`` over ``student_size`` (to a multiple of
        32) before the teacher sees it, so a 256 px teacher sees a 192 px student's multi-scale
        batches at the scales it was trained at; its map is resized back to the batch's size.
        """
        module = self.module.to(images.device)
        height, width = images.shape[-2:]
        scale = module.image_size / student_size
        size = [scaled_side(side, scale) for side in (height, width)]
        if size != [height, width]:
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        logits = module(images)
        if list(logits.shape[-2:]) != [height, width]:
            logits = F.interpolate(logits, (height, width), mode="bilinear", align_corners=False)
        return torch.sigmoid(logits)


def distillation_loss(logits: torch.Tensor, teacher_probability: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the student's logits against the teacher's probabilities: zero
    gradient exactly where the student already predicts what the teacher does."""
    return F.binary_cross_entropy_with_logits(logits, teacher_probability.to(logits.dtype))

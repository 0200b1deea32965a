"""Losses on real masks: what each rewards, and that gradients reach the logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polypseg.models.losses import DiceBCELoss, StructureLoss, soft_dice_per_image
from polypseg.runtime.io import read_gray
from polypseg.runtime.processing import resize_mask
from tests.conftest import KVASIR, real_names

pytestmark = pytest.mark.data  # reads images from ../shared/data


@pytest.fixture(scope="module")
def real_masks() -> torch.Tensor:
    """Four real Kvasir-SEG masks at 96 px, (4,1,96,96) in {0, 1}."""
    masks = [
        resize_mask(read_gray(KVASIR / "masks" / f"{name}.jpg"), 96)
        for name in real_names("train", 4)
    ]
    return torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))


def logits_for(prob_mask: torch.Tensor, confidence: float = 8.0) -> torch.Tensor:
    return (prob_mask * 2 - 1) * confidence


@pytest.mark.parametrize("loss", [StructureLoss(), DiceBCELoss(), DiceBCELoss(per_image=True)])
def test_loss_prefers_the_true_mask_and_has_gradients(loss, real_masks):
    perfect = loss(logits_for(real_masks), real_masks)
    shifted = loss(logits_for(real_masks.roll(12, dims=-1)), real_masks)
    empty = loss(logits_for(torch.zeros_like(real_masks)), real_masks)
    assert perfect < 0.05 < shifted < empty
    logits = torch.zeros_like(real_masks, requires_grad=True)
    loss(logits, real_masks).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_structure_loss_weights_the_boundary(real_masks):
    """The same number of wrong pixels costs more on the polyp edge than deep in the background."""
    mask = real_masks[:1]
    edge = mask - torch.nn.functional.max_pool2d(-mask, 3, 1, 1).neg()  # inner boundary ring
    far = torch.zeros_like(mask)
    far_idx = torch.nonzero(
        (torch.nn.functional.max_pool2d(mask, 41, 1, 20) == 0).flatten()
    ).flatten()
    count = int(edge.sum())
    assert 0 < count <= len(far_idx)
    far.view(-1)[far_idx[:count]] = 1
    wrong_edge = logits_for((mask - edge).clamp(0, 1))  # edge pixels predicted background
    wrong_far = logits_for((mask + far).clamp(0, 1))  # far pixels predicted polyp
    loss = StructureLoss()
    assert loss(wrong_edge, mask) > loss(wrong_far, mask)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        StructureLoss(kernel_size=30)


def test_per_image_dice_counts_a_missed_small_polyp(real_masks):
    """smp's batch Dice barely sees a missed small polyp next to a large one; per-image Dice does."""
    masks = real_masks[:2].clone()
    masks[1] = 0
    masks[1, 0, 40:46, 40:46] = 1  # a 36-pixel polyp
    prediction = masks.clone()
    prediction[1] = 0  # missed entirely
    logits = logits_for(prediction)
    per_image = soft_dice_per_image(logits, masks)
    assert per_image[0] < 0.01 and per_image[1] > 0.9
    batch = DiceBCELoss(bce_weight=0)(logits, masks)
    image = DiceBCELoss(bce_weight=0, per_image=True)(logits, masks)
    assert image > 0.45 > 0.1 > batch

"""Choose the mask threshold on the validation split (never on test) and store it in a checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from polypseg.data.io import atomic_path
from polypseg.evaluation.metrics import overlap_scores


def val_probabilities(module, datamodule, batch: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities and masks (N,S,S) of the validation split at network resolution."""
    probs, masks = [], []
    with torch.no_grad():
        for b in datamodule.val_dataloader():
            probs.append(torch.sigmoid(module.predict_logits(b["image"]))[:, 0])
            masks.append(b["mask"][:, 0])
    return torch.cat(probs), torch.cat(masks)


def sweep(prob: torch.Tensor, mask: torch.Tensor, thresholds: list[float]) -> dict[float, float]:
    """Mean per-image Dice for each threshold."""
    return {t: float(overlap_scores(prob > t, mask)["dice"].mean()) for t in thresholds}


def tune_threshold(
    ckpt: str,
    out: str | None = None,
    data_root: str | None = None,
    thresholds: list[float] | None = None,
) -> dict:
    """Sweep thresholds on val, write a checkpoint carrying the best one (default ``*-tuned.ckpt``)."""
    from polypseg.inference.onnx import datamodule_from_checkpoint, load_module

    thresholds = thresholds or [round(t, 2) for t in np.arange(0.2, 0.81, 0.05)]
    module = load_module(ckpt)
    datamodule = datamodule_from_checkpoint(ckpt, data_root)
    scores = sweep(*val_probabilities(module, datamodule), thresholds)
    best = max(scores, key=scores.get)
    out_path = Path(out or Path(ckpt).with_name(Path(ckpt).stem + "-tuned.ckpt"))
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    checkpoint["state_dict"]["threshold"] = torch.tensor(float(best))
    checkpoint["hyper_parameters"]["threshold"] = float(best)
    with atomic_path(out_path) as tmp:
        torch.save(checkpoint, tmp)
    result = {
        "threshold": best,
        "val_dice": scores[best],
        "val_dice_at_0.5": scores.get(0.5),
        "sweep": scores,
        "checkpoint": str(out_path),
    }
    print(
        f"best threshold {best} (val mDice {scores[best]:.4f}; at 0.5: {scores.get(0.5)}) -> {out_path}"
    )
    return result

"""Choose the mask threshold and post-processing on the validation split (never on test) and store
them in a checkpoint, so test, export and serving use them."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from polypseg.models.checkpoints import (
    MODULE_KEY,
    at_image_size,
    load_checkpoint,
    load_datamodule,
    load_module,
    save_checkpoint,
    settings,
    with_settings,
)
from polypseg.runtime.metrics import overlap_scores
from polypseg.runtime.processing import clean_mask


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


CLEANUPS = [(m, f) for m in (0.0, 0.001, 0.005, 0.01) for f in (False, True)]
MIN_GAIN = 0.001
"""Post-processing is switched on only if it improves val mDice by more than this."""


def sweep_cleanup(prob: torch.Tensor, mask: torch.Tensor, threshold: float) -> dict[str, float]:
    """Mean per-image val Dice for each (min_component, fill_holes) combination."""
    binary = (prob > threshold).numpy().astype(np.uint8)
    scores = {}
    for min_component, fill in CLEANUPS:
        cleaned = torch.from_numpy(np.stack([clean_mask(b, min_component, fill) for b in binary]))
        scores[f"{min_component}:{fill}"] = float(overlap_scores(cleaned, mask)["dice"].mean())
    return scores


def read_settings(path: str) -> dict:
    """The inference settings a tuned checkpoint (``hyper_parameters``) or an exported model
    (``processing`` metadata) carries; the exported model is often all that is kept of a run."""
    if Path(path).suffix == ".onnx":
        from polypseg.runtime.predictor import OnnxPredictor

        metadata = OnnxPredictor(path, threads=1).metadata["processing"]
        return settings(metadata, f"{path}: its processing metadata")
    return settings(load_checkpoint(path)[MODULE_KEY], f"{path}: hyper_parameters")


def carry_settings(ckpt: str, out: Path, settings_from: str) -> dict:
    """Give ``ckpt`` the val-chosen settings of ``settings_from`` (a tuned checkpoint or an exported
    model): a final fit on all of train has no val to tune on, so it inherits what val chose for
    the same recipe."""
    values = read_settings(settings_from)
    save_checkpoint(with_settings(load_checkpoint(ckpt), values), out)
    print(f"{settings_from} -> {values}; wrote {out}")
    return {**values, "settings_from": settings_from, "checkpoint": str(out)}


def tune_threshold(
    ckpt_path: str,
    output: str | None = None,
    data_root: str | None = None,
    thresholds: list[float] | None = None,
    settings_from: str | None = None,
    image_size: int | None = None,
) -> dict:
    """Sweep thresholds, then mask clean-up, on val; write a checkpoint carrying the best
    (default ``*-tuned.ckpt``). Clean-up stays off unless it gains more than 0.001 val mDice.
    ``settings_from``: copy threshold and clean-up from that tuned checkpoint or exported ``.onnx``
    instead of sweeping (for a final fit with ``val_fraction: 0``, which has no val).
    ``image_size``: run the weights at another input side (a multiple of 32; a faster file from
    the same weights): the settings are tuned at that size and the written checkpoint runs at it."""
    ckpt, out = ckpt_path, output
    out_path = Path(out or Path(ckpt).with_name(Path(ckpt).stem + "-tuned.ckpt"))
    if image_size is not None:
        with tempfile.TemporaryDirectory() as tmp:
            resized = save_checkpoint(
                at_image_size(load_checkpoint(ckpt), image_size), Path(tmp) / Path(ckpt).name
            )
            result = tune_threshold(
                str(resized), str(out_path), data_root, thresholds, settings_from
            )
        return {**result, "image_size": image_size}
    if settings_from is not None:
        return carry_settings(ckpt, out_path, settings_from)
    thresholds = thresholds or [round(t, 2) for t in np.arange(0.2, 0.81, 0.05)]
    module = load_module(ckpt)
    datamodule = load_datamodule(ckpt, data_root)
    if len(datamodule.datasets["val"]) == 0:
        raise ValueError(
            f"{ckpt}: its data has no val split (a final fit, val_fraction 0) to tune on; "
            "carry the choices of a run with val: --settings_from <that run's tuned.ckpt>"
        )
    prob, mask = val_probabilities(module, datamodule)
    scores = sweep(prob, mask, thresholds)
    best = max(scores, key=scores.get)
    cleanup = sweep_cleanup(prob, mask, best)
    choice = max(cleanup, key=cleanup.get)
    if cleanup[choice] - cleanup["0.0:False"] <= MIN_GAIN:
        choice = "0.0:False"
    min_component, fill_holes = float(choice.split(":")[0]), choice.endswith("True")
    values = {"threshold": float(best), "min_component": min_component, "fill_holes": fill_holes}
    save_checkpoint(with_settings(load_checkpoint(ckpt), values), out_path)
    result = {
        **values,
        "val_dice": cleanup[choice],
        "val_dice_at_0.5": scores.get(0.5),
        "threshold_sweep": scores,
        "cleanup_sweep": cleanup,
        "checkpoint": str(out_path),
    }
    print(
        f"threshold {best}: val mDice {scores[best]:.4f} (at 0.5: {scores.get(0.5, float('nan')):.4f}); "
        f"clean-up min_component:fill_holes {cleanup} -> {choice}; wrote {out_path}"
    )
    return result

"""Does the exported file compute what the checkpoint computes? Parity of probabilities and masks,
and the val Dice any probability function (PyTorch module or ONNX session) reaches."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from polypseg.runtime.metrics import overlap_scores
from polypseg.runtime.predictor import OnnxPredictor
from polypseg.runtime.processing import to_network_input


@dataclass
class ParityReport:
    """How closely the ONNX file reproduces PyTorch: max |Δp| and the mean Dice of the two masks."""

    max_abs_diff: float
    mask_dice: float
    images: int

    def to_dict(self) -> dict:
        return {
            "max_abs_diff": self.max_abs_diff,
            "mask_dice": self.mask_dice,
            "images": self.images,
        }


def parity(module, onnx_path: Path, images: Sequence[np.ndarray]) -> ParityReport:
    """onnxruntime vs PyTorch on resized RGB uint8 images: max |Δp| and Dice of the two masks."""
    batch = to_network_input(list(images))
    reference = torch_probabilities(module)(batch)
    got = OnnxPredictor(onnx_path).run(batch)
    threshold = float(module.threshold)
    agreement = overlap_scores(got > threshold, reference > threshold, ("dice",))["dice"]
    return ParityReport(float(np.abs(got - reference).max()), float(agreement.mean()), len(images))


def mean_dice(
    probabilities: Callable[[np.ndarray], np.ndarray],
    samples: Sequence[tuple[np.ndarray, np.ndarray]],
    threshold: float,
    batch: int = 16,
) -> float:
    """Mean per-image Dice at network resolution over (resized image, {0,1} mask) pairs, for any
    ``(N,3,S,S) -> (N,S,S)`` probability function (ONNX session or PyTorch module)."""
    scores = []
    for start in range(0, len(samples), batch):
        chunk = samples[start : start + batch]
        prob = probabilities(to_network_input([im for im, _ in chunk]))
        truth = np.stack([m for _, m in chunk])
        scores += list(overlap_scores(prob > threshold, truth, ("dice",))["dice"])
    return float(np.mean(scores))


def torch_probabilities(module) -> Callable[[np.ndarray], np.ndarray]:
    net = module.inference_network()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(batch))[:, 0].numpy()

    return run


def resized_pairs(
    datamodule, split: str, limit: int | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    dataset = datamodule.datasets[split]
    rows = dataset.rows[:limit] if limit else dataset.rows
    return [
        (np.asarray(dataset.samples.images[r]), np.asarray(dataset.samples.masks[r])) for r in rows
    ]

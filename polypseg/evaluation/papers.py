"""The polyp papers' metrics, computed the way their tables are (PraNet's ``eval/main.m``, used by
PraNet, HarDNet-MSEG and Polyp-PVT), with the field's library (pysodmetrics).

The papers score a *map*, not a mask: the network's output resized to the mask's size (bilinear
on logits, then sigmoid), min-max normalised per image and stored as an 8-bit PNG. ``meanDic`` is
Dice at each of 256 thresholds (``map >= t``, ``t = 1, 254/255, …, 0``), averaged over images per
threshold, then over thresholds; ``maxDic`` the best threshold's mean. This reads lower than Dice
of one tuned binary mask (polypseg's ``dice``), which is what a deployed model scores; tables name
which one a number is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

PAPER_METRICS = ("meanDic", "meanIoU", "maxDic", "wFm", "Sm", "meanEm", "maxEm", "MAE")
"""Column order of the papers' tables; wFm is the weighted F-measure with β = 1 (main.m's)."""


def paper_map(probability: np.ndarray, height: int, width: int) -> np.ndarray:
    """A network-resolution probability map as the papers' test scripts save it: logits resized
    bilinearly to ``height`` x ``width``, sigmoid, min-max normalised, 8-bit.

    Example:
        >>> paper_map(np.array([[0.1, 0.9]], np.float32), 1, 4).tolist()
        [[0, 48, 207, 255]]
    """
    p = np.clip(probability.astype(np.float64), 1e-7, 1 - 1e-7)
    logits = cv2.resize(np.log(p / (1 - p)), (width, height), interpolation=cv2.INTER_LINEAR)
    prob = 1 / (1 + np.exp(-logits))
    low, high = prob.min(), prob.max()
    prob = (prob - low) / (high - low + 1e-8)
    return np.round(prob * 255).astype(np.uint8)


@dataclass
class PaperScores:
    """Accumulates one dataset's maps (uint8) and masks (bool); per-image values for intervals.

    Example:
        >>> scores = PaperScores()
        >>> per_image = scores.add(np.array([[0, 255]], np.uint8), np.array([[False, True]]))
        >>> round(scores.results()["meanDic"], 3)  # a perfect map: the 256 thresholds' mean
        0.999
    """

    dice_curves: list[np.ndarray] = field(default_factory=list)
    iou_curves: list[np.ndarray] = field(default_factory=list)
    em_curves: list[np.ndarray] = field(default_factory=list)
    per_image: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        import py_sod_metrics as sod  # imported here: the torch-free runtime never needs it

        self._sod = sod
        self._dice = sod.DICEHandler(with_dynamic=True, with_adaptive=False)
        self._iou = sod.IOUHandler(with_dynamic=True, with_adaptive=False)
        self._overlap = sod.FmeasureV2(metric_handlers={"dice": self._dice, "iou": self._iou})

    def add(self, paper_map_u8: np.ndarray, truth: np.ndarray) -> dict:
        """Score one map against its mask; returns that image's values."""
        sod = self._sod
        gt = truth.astype(bool).astype(np.uint8) * 255
        self._overlap.step(paper_map_u8, gt)
        dice = np.asarray(self._dice.dynamic_results[-1], dtype=np.float64).reshape(-1)
        iou = np.asarray(self._iou.dynamic_results[-1], dtype=np.float64).reshape(-1)
        s, e, w, m = sod.Smeasure(), sod.Emeasure(), sod.WeightedFmeasure(), sod.MAE()
        for metric in (s, e, w, m):
            metric.step(paper_map_u8, gt)
        em = np.asarray(e.get_results()["em"]["curve"], dtype=np.float64).reshape(-1)
        values = {
            "meanDic": float(dice.mean()),
            "meanIoU": float(iou.mean()),
            "wFm": float(w.get_results()["wfm"]),
            "Sm": float(s.get_results()["sm"]),
            "meanEm": float(em.mean()),
            "MAE": float(m.get_results()["mae"]),
        }
        self.dice_curves.append(dice)
        self.iou_curves.append(iou)
        self.em_curves.append(em)
        self.per_image.append(values)
        return values

    def results(self, rows: np.ndarray | None = None) -> dict[str, float]:
        """Dataset values (``rows``: a bootstrap resample of image indices)."""
        rows = np.arange(len(self.per_image)) if rows is None else rows
        dice = np.stack(self.dice_curves)[rows].mean(0)
        em = np.stack(self.em_curves)[rows].mean(0)
        mean = {k: float(np.mean([self.per_image[i][k] for i in rows])) for k in self.per_image[0]}
        return {
            "meanDic": float(dice.mean()),
            "meanIoU": float(np.stack(self.iou_curves)[rows].mean(0).mean()),
            "maxDic": float(dice.max()),
            "wFm": mean["wFm"],
            "Sm": mean["Sm"],
            "meanEm": float(em.mean()),
            "maxEm": float(em.max()),
            "MAE": mean["MAE"],
        }

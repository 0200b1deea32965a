"""Per-image metrics against hand-computed values, including every empty-mask case."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polypseg.evaluation.report import summarize
from polypseg.runtime.metrics import hd95, image_scores, overlap_scores


def masks(*pairs):
    pred = torch.zeros(len(pairs), 10, 10)
    target = torch.zeros(len(pairs), 10, 10)
    for i, (p, t) in enumerate(pairs):
        if p is not None:
            pred[i][p] = 1
        if t is not None:
            target[i][t] = 1
    return pred, target


TOP, BOTTOM, TOP2 = (
    (slice(0, 5), slice(None)),
    (slice(5, 10), slice(None)),
    (slice(0, 2), slice(None)),
)


@pytest.mark.parametrize(
    ("pair", "expected"),
    [
        (
            (TOP, TOP),
            {"dice": 1, "iou": 1, "precision": 1, "recall": 1, "specificity": 1},
        ),  # perfect
        (
            (TOP, BOTTOM),
            {"dice": 0, "iou": 0, "precision": 0, "recall": 0, "specificity": 0},
        ),  # disjoint
        (
            (None, TOP),
            {"dice": 0, "iou": 0, "precision": 0, "recall": 0, "specificity": 1},
        ),  # empty prediction
        (
            (TOP, None),
            {"dice": 0, "iou": 0, "precision": 0, "recall": 0, "specificity": 0.5},
        ),  # empty target
        (
            (None, None),
            {"dice": 1, "iou": 1, "precision": 1, "recall": 1, "specificity": 1},
        ),  # both empty
        # prediction 50 px, truth 20 px inside it: TP 20, FP 30, FN 0, TN 50
        (
            (TOP, TOP2),
            {
                "dice": 40 / 70,
                "iou": 20 / 50,
                "precision": 20 / 50,
                "recall": 1,
                "specificity": 50 / 80,
            },
        ),
    ],
)
def test_overlap_scores(pair, expected):
    scores = overlap_scores(*masks(pair))
    for name, value in expected.items():
        assert scores[name][0].item() == pytest.approx(value, abs=1e-6), name


def test_batch_scores_are_per_image():
    scores = overlap_scores(*masks((TOP, TOP), (TOP, BOTTOM)))
    assert scores["dice"].tolist() == [1.0, 0.0]


def test_hd95_edge_cases():
    pred, target = masks((TOP, TOP), (TOP, BOTTOM), (None, TOP), (None, None), (TOP, TOP2))
    distances = [hd95(p.numpy(), t.numpy()) for p, t in zip(pred, target, strict=True)]
    assert distances[0] == 0.0
    assert distances[1] == pytest.approx(
        5.0
    )  # boundary rows 4 and 5 .. 9 vs 0: 95th pct of edge distances
    assert distances[2] == pytest.approx(math.hypot(10, 10))  # one side empty: the image diagonal
    assert distances[3] == 0.0
    assert distances[4] == pytest.approx(
        3.0
    )  # rows 2..4 of the prediction lie 1..3 px from the truth


def test_image_scores_plain_floats():
    pred, target = masks((TOP, TOP2))
    scores = image_scores(pred[0], target[0])
    assert set(scores) == {"dice", "iou", "precision", "recall", "specificity", "hd95"}
    assert all(isinstance(v, float) for v in scores.values())


def test_bootstrap_interval_brackets_the_mean():
    values = np.random.default_rng(0).uniform(0.6, 1.0, 200)
    summary = summarize(values)
    assert summary["ci95"][0] < summary["mean"] < summary["ci95"][1]
    assert summary["ci95"][1] - summary["ci95"][0] < 0.05


def test_clean_mask_removes_small_components_and_fills_holes():
    from polypseg.runtime.processing import clean_mask

    mask = np.zeros((100, 100), np.uint8)
    mask[10:60, 10:60] = 1
    mask[30:35, 30:35] = 0  # a hole
    mask[90:92, 90:92] = 1  # a 4-pixel speck = 0.04 % of the image
    assert clean_mask(mask).sum() == mask.sum()  # off by default
    cleaned = clean_mask(mask, min_component=0.001, fill_holes=True)
    assert cleaned[90:92, 90:92].sum() == 0 and cleaned[30:35, 30:35].all()
    assert cleaned.sum() == 50 * 50


def ellipse_masks(seed: int, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs of random, non-empty blob masks of random sizes."""
    import cv2

    rng = np.random.default_rng(seed)
    pairs = []
    while len(pairs) < count:
        h, w = (int(v) for v in rng.integers(16, 96, 2))
        masks_ = []
        for _ in range(2):
            m = np.zeros((h, w), np.uint8)
            for _ in range(int(rng.integers(1, 3))):
                centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
                axes = (int(rng.integers(1, w // 2)), int(rng.integers(1, h // 2)))
                cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
            masks_.append(m)
        if all(m.any() for m in masks_):
            pairs.append(tuple(masks_))
    return pairs


def test_metrics_equal_the_libraries_they_stand_for():
    """One numpy/torch definition, held to torchmetrics (overlap) and MONAI (HD95)."""
    import warnings

    from monai.metrics import compute_hausdorff_distance
    from torchmetrics.functional.classification import binary_precision, binary_specificity
    from torchmetrics.functional.segmentation import dice_score, mean_iou

    for pred, target in ellipse_masks(0, 40):
        p, t = (
            torch.from_numpy(pred)[None, None].long(),
            torch.from_numpy(target)[None, None].long(),
        )
        ours = image_scores(pred, target)
        one_hot = {"num_classes": 1, "input_format": "one-hot"}
        reference = {
            "dice": dice_score(p, t, average="none", aggregation_level="samplewise", **one_hot),
            "iou": mean_iou(p, t, per_class=True, **one_hot),
            "precision": binary_precision(p[:, 0], t[:, 0], multidim_average="samplewise"),
            "specificity": binary_specificity(p[:, 0], t[:, 0], multidim_average="samplewise"),
        }
        for name, value in reference.items():
            assert ours[name] == pytest.approx(float(value.flatten()[0]), abs=1e-6), name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            monai = compute_hausdorff_distance(p, t, include_background=True, percentile=95)
        assert ours["hd95"] == pytest.approx(float(monai[0, 0]), abs=1e-3)
        on_torch = overlap_scores(torch.from_numpy(pred)[None], torch.from_numpy(target)[None])
        assert float(on_torch["dice"][0]) == pytest.approx(ours["dice"], abs=1e-6)

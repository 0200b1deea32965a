"""Per-image metrics against hand-computed values, including every empty-mask case."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polypseg.evaluation.metrics import hd95, image_scores, overlap_scores
from polypseg.evaluation.report import summarize


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
    distances = hd95(pred, target).tolist()
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
    from polypseg.inference.processing import clean_mask

    mask = np.zeros((100, 100), np.uint8)
    mask[10:60, 10:60] = 1
    mask[30:35, 30:35] = 0  # a hole
    mask[90:92, 90:92] = 1  # a 4-pixel speck = 0.04 % of the image
    assert clean_mask(mask).sum() == mask.sum()  # off by default
    cleaned = clean_mask(mask, min_component=0.001, fill_holes=True)
    assert cleaned[90:92, 90:92].sum() == 0 and cleaned[30:35, 30:35].all()
    assert cleaned.sum() == 50 * 50

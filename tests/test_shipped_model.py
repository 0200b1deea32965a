"""The ONNX model committed in models/ works on a fresh clone: metadata, and real accuracy on test images."""

from __future__ import annotations

import numpy as np

from polypseg.data.io import read_gray, read_rgb
from polypseg.inference.predictor import OnnxPredictor
from polypseg.inference.processing import binarize_mask

from conftest import KVASIR, PRANET_SPLIT, REPO, real_names

SHIPPED = REPO / "models" / "polypseg.onnx"


def test_shipped_model_metadata():
    assert SHIPPED.stat().st_size < 25_000_000
    meta = OnnxPredictor(SHIPPED).metadata
    assert meta["processing"]["size"] == 256 and 0.2 <= meta["processing"]["threshold"] <= 0.8
    assert meta["val_metrics"]["val/dice"] > 0.85 and meta["parity"]["max_abs_diff"] < 1e-3


def test_shipped_model_segments_held_out_test_images():
    predictor = OnnxPredictor(SHIPPED)
    scores = []
    for name in real_names("test", 12, PRANET_SPLIT):
        truth = binarize_mask(read_gray(KVASIR / "masks" / f"{name}.jpg")).astype(bool)
        mask = predictor.predict(read_rgb(KVASIR / "images" / f"{name}.jpg")).mask.astype(bool)
        scores.append(2 * (mask & truth).sum() / (mask.sum() + truth.sum()))
    assert np.mean(scores) > 0.75, scores

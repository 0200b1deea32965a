"""The one inference path: an onnxruntime session plus the shared pre/post-processing.

Used by batch prediction of a folder, the LitServe API and the Gradio demo. Session options for a
small CPU: intra-op threads = physical cores (2 here), one inter-op thread, sequential execution and
all graph optimisations; more threads than cores only adds contention.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from polypseg.runtime.model_files import locate_onnx
from polypseg.runtime.processing import (
    Processing,
    postprocess,
    preprocess,
    resize_probabilities,
)
from polypseg.runtime.tta import TTA, average_views, tta_mode

METADATA_KEY = "polypseg"


@dataclass
class Prediction:
    probability: np.ndarray  # (H, W) float32 at the original resolution
    mask: np.ndarray  # (H, W) uint8 {0, 1}
    threshold: float


def session_options(threads: int | None = None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or min(os.cpu_count() or 1, 4)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def read_metadata(session: ort.InferenceSession) -> dict:
    raw = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in raw:
        raise ValueError(
            f"ONNX model has no '{METADATA_KEY}' metadata; export it with `polypseg export`"
        )
    return json.loads(raw[METADATA_KEY])


class OnnxPredictor:
    """Probabilities and masks at the original image resolution from an exported polypseg model.

    ``tta`` averages views of every image (``true``/``"flips"``: the four flips, 4x compute;
    ``"d4"``: the eight rotations and mirrors, 8x; off by default because the served model has a
    latency budget).

    Args:
        path: an ONNX file written by ``polypseg export`` (size, normalisation and threshold are
            read from its metadata), or ``models:/<name>@<alias>`` in an MLflow registry.
        threads: onnxruntime intra-op threads (default: all cores).
        tta: test-time augmentation views (``False``, ``True``/``"flips"``, ``"d4"``).

    Example:
        >>> from polypseg.runtime.io import read_rgb
        >>> predictor = OnnxPredictor("models/polypseg.onnx")
        >>> image = read_rgb("polypseg/serving/examples/cju2y40d8ulqo0993q0adtgtb.jpg")
        >>> prediction = predictor.predict(image)
        >>> prediction.mask.shape == image.shape[:2], prediction.mask.dtype
        (True, dtype('uint8'))
    """

    def __init__(self, path: str | Path, threads: int | None = None, tta: TTA = False):
        self.path = locate_onnx(path)
        self.tta = tta_mode(tta)
        self.session = ort.InferenceSession(
            str(self.path), session_options(threads), providers=["CPUExecutionProvider"]
        )
        self.metadata = read_metadata(self.session)
        self.processing = Processing.from_dict(self.metadata["processing"])
        self.input_name = self.session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N,3,S,S) float32 in [0,1] -> (N,S,S) probabilities (one plain pass)."""
        return self.session.run(None, {self.input_name: batch})[0][:, 0]

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Like ``run``, averaged over the TTA views the predictor was built with."""
        return average_views(self.run, batch, self.tta) if self.tta else self.run(batch)

    def predict_many(
        self, images: list[np.ndarray], thresholds: list[float | None] | None = None
    ) -> list[Prediction]:
        """RGB uint8 images of any sizes, one network batch -> predictions at their original sizes."""
        thresholds = thresholds or [None] * len(images)
        batch = np.concatenate([preprocess(image, self.processing) for image in images])
        predictions = []
        for prob, image, threshold in zip(
            self.probabilities(batch), images, thresholds, strict=True
        ):
            threshold = self.processing.threshold if threshold is None else threshold
            h, w = image.shape[:2]
            predictions.append(
                Prediction(
                    resize_probabilities(prob, h, w),
                    postprocess(prob, h, w, self.processing, threshold),
                    threshold,
                )
            )
        return predictions

    def predict(self, image: np.ndarray, threshold: float | None = None) -> Prediction:
        """RGB uint8 image (H,W,3) of any size -> probability map and {0,1} mask at (H,W);
        ``threshold`` overrides the file's val-tuned one."""
        return self.predict_many([image], [threshold])[0]

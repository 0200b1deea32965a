"""Export a trained module to one self-contained ONNX file with metadata, written only if it
matches PyTorch (:mod:`polypseg.export.parity`); smaller versions in :mod:`polypseg.export.quantize`.

The exported graph is ``InferenceNetwork``: RGB in [0, 1], shape (N, 3, S, S) with a dynamic
batch axis -> polyp probability (N, 1, S, S). Normalisation and sigmoid are inside the graph; the
metadata key ``polypseg`` holds JSON with everything else inference needs (``processing``: size,
mean/std, threshold, class names) and provenance (version, git SHA, config digest, metrics).

The TorchScript-based exporter (``dynamo=False``) is used on purpose: it writes one file without
an external-data sidecar, needs no onnxscript, and handles timm's TF "same" padding.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch

from polypseg.export.graph import freeze_spatial_shapes
from polypseg.export.parity import ParityReport, parity
from polypseg.runtime.io import atomic_path
from polypseg.runtime.predictor import METADATA_KEY
from polypseg.runtime.provenance import provenance

log = logging.getLogger(__name__)
OPSET = 17
INPUT_NAME, OUTPUT_NAME = "image", "probability"


class ExportError(RuntimeError):
    """The exported model disagrees with PyTorch or loses too much accuracy; nothing was written."""


def build_metadata(module, extra: dict | None = None) -> dict:
    hparams = {k: v for k, v in module.hparams.items() if not k.startswith("_")}
    return {
        "processing": module.processing.to_dict(),
        "input": {
            "name": INPUT_NAME,
            "layout": "NCHW",
            "dtype": "float32",
            "range": [0, 1],
            "color": "RGB",
            "normalization": "inside the graph",
        },
        "output": {"name": OUTPUT_NAME, "meaning": "polyp probability per pixel"},
        **provenance(hparams),
        "opset": OPSET,
        **(extra or {}),
    }


def write_metadata(path: Path, metadata: dict) -> None:
    model = onnx.load(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata, default=str)
    model.producer_name, model.doc_string = (
        "polypseg",
        "Polyp segmentation. Research use only, NOT FOR CLINICAL USE.",
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def export_graph(net: torch.nn.Module, path: Path, size: int, freeze: bool = True) -> None:
    """The bare graph (no metadata): dynamic batch, fixed ``size``; with ``freeze``, sizes that
    are constants for that image size are made constants (:func:`freeze_spatial_shapes`)."""
    torch.onnx.export(
        net,
        (torch.rand(1, 3, size, size),),
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
    )
    if freeze:
        onnx.save(freeze_spatial_shapes(onnx.load(str(path))), str(path))


def export_onnx(
    module,
    out: str | Path,
    parity_images: Sequence[np.ndarray],
    tolerance: float = 1e-3,
    extra_metadata: dict | None = None,
) -> ParityReport:
    """Write ``out`` only if ONNX matches PyTorch within ``tolerance`` on ``parity_images``."""
    out = Path(out)
    module = module.cpu().eval()
    net = module.inference_network()
    with atomic_path(out) as tmp:
        export_graph(net, tmp, module.image_size)
        metadata = build_metadata(module, extra_metadata)
        write_metadata(tmp, metadata)
        report = parity(module, tmp, parity_images)
        if report.max_abs_diff > tolerance:
            raise ExportError(
                f"{out}: ONNX/PyTorch probabilities differ by {report.max_abs_diff:.2e} > tolerance {tolerance:.0e}; not written"
            )
        metadata["parity"] = report.to_dict()
        write_metadata(tmp, metadata)
    log.info("exported %s (%.1f MB): parity %s", out, os.path.getsize(out) / 1e6, report)
    return report

"""Export a trained module to one self-contained ONNX file with metadata, check parity, quantize
to int8 or store the weights as float16.

The exported graph is ``InferenceNetwork``: RGB in [0, 1], shape (N, 3, S, S) with a dynamic
batch axis -> polyp probability (N, 1, S, S). Normalisation and sigmoid are inside the graph; the
metadata key ``polypseg`` holds JSON with everything else inference needs (``processing``: size,
mean/std, threshold, class names) and provenance (version, git SHA, config digest, metrics).

The TorchScript-based exporter (``dynamo=False``) is used on purpose: it writes one file without
an external-data sidecar, needs no onnxscript, and handles timm's TF "same" padding.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

import polypseg
from polypseg.data.io import atomic_path
from polypseg.inference.graph import (
    freeze_spatial_shapes,
    size_arithmetic_nodes,
    store_weights_fp16,
)
from polypseg.inference.predictor import METADATA_KEY, OnnxPredictor
from polypseg.inference.processing import to_network_input

log = logging.getLogger(__name__)
OPSET = 17
INPUT_NAME, OUTPUT_NAME = "image", "probability"


class ExportError(RuntimeError):
    """The exported model disagrees with PyTorch or loses too much accuracy; nothing was written."""


@dataclass
class ParityReport:
    max_abs_diff: float
    mask_dice: float
    images: int

    def to_dict(self) -> dict:
        return {
            "max_abs_diff": self.max_abs_diff,
            "mask_dice": self.mask_dice,
            "images": self.images,
        }


def config_digest(config: dict | str | None) -> str | None:
    if config is None:
        return None
    text = config if isinstance(config, str) else json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_metadata(module, extra: dict | None = None) -> dict:
    from polypseg.callbacks.report import git_sha

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
        "polypseg_version": polypseg.__version__,
        "git_sha": git_sha(),
        "config_digest": config_digest(hparams),
        "opset": OPSET,
        **(extra or {}),
    }


def _set_metadata(path: Path, metadata: dict) -> None:
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


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    inter, total = np.logical_and(a, b).sum(), a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * inter / total)


def parity(module, onnx_path: Path, images: Sequence[np.ndarray]) -> ParityReport:
    """onnxruntime vs PyTorch on resized RGB uint8 images: max |Δp| and Dice of the two masks."""
    batch = to_network_input(list(images))
    reference = torch_probabilities(module)(batch)
    got = OnnxPredictor(onnx_path).run(batch)
    threshold = float(module.threshold)
    return ParityReport(
        float(np.abs(got - reference).max()),
        _dice(got > threshold, reference > threshold),
        len(images),
    )


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
        _set_metadata(tmp, metadata)
        report = parity(module, tmp, parity_images)
        if report.max_abs_diff > tolerance:
            raise ExportError(
                f"{out}: ONNX/PyTorch probabilities differ by {report.max_abs_diff:.2e} > tolerance {tolerance:.0e}; not written"
            )
        metadata["parity"] = report.to_dict()
        _set_metadata(tmp, metadata)
    log.info("exported %s (%.1f MB): parity %s", out, os.path.getsize(out) / 1e6, report)
    return report


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
        scores += [
            _dice(p > threshold, m.astype(bool)) for p, (_, m) in zip(prob, chunk, strict=True)
        ]
    return float(np.mean(scores))


def torch_probabilities(module) -> Callable[[np.ndarray], np.ndarray]:
    net = module.inference_network()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(batch))[:, 0].numpy()

    return run


def quantize_int8(
    fp32_path: str | Path,
    out: str | Path,
    calibration: Sequence[np.ndarray],
    validation: Sequence[tuple[np.ndarray, np.ndarray]],
    max_dice_drop: float = 0.005,
    calibration_method: str = "minmax",
    keep_ends: bool = False,
) -> dict:
    """Static QDQ int8 quantization calibrated on training images; refused past ``max_dice_drop``.

    ``calibration_method`` is ORT's ``minmax``, ``percentile`` or ``entropy``; ``keep_ends`` leaves
    the first and last convolution in fp32 (the layers most sensitive to input/output range).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{INPUT_NAME: to_network_input(im)} for im in calibration])

        def get_next(self):
            return next(self.batches, None)

    out = Path(out)
    fp32 = OnnxPredictor(fp32_path)
    with tempfile.TemporaryDirectory() as work, atomic_path(out) as tmp:
        pre = Path(work) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        graph = onnx.load(str(pre)).graph
        convs = [n.name for n in graph.node if n.op_type == "Conv"]
        exclude = size_arithmetic_nodes(graph) + ([convs[0], convs[-1]] if keep_ends else [])
        methods = {m.name.lower(): m for m in CalibrationMethod}
        if calibration_method not in methods:
            raise ExportError(
                f"calibration_method '{calibration_method}': use one of {sorted(methods)}"
            )
        quantize_static(
            str(pre),
            str(tmp),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            # uint8 weights, not int8: on x86 CPUs without VNNI (AVX2 only, e.g. this AMD EPYC) ORT's
            # u8s8 convolution saturates its int16 sums and the shipped U-Net lost 0.02 Dice; u8u8
            # does not saturate, so the int8 file scores the same on every CPU (docs/results.md). The
            # price: u8u8 has no VNNI kernel, 4.8x slower than u8s8 on VNNI CPUs (docs/benchmarks.md)
            weight_type=QuantType.QUInt8,
            calibrate_method=methods[calibration_method],
            nodes_to_exclude=exclude,
        )
        quantization = {
            "type": "int8 static QDQ, uint8 activations and weights",
            "calibration_method": calibration_method,
            "fp32_layers": "first and last Conv" if keep_ends else "none",
        }
        return _keep_if_close(fp32, tmp, out, validation, max_dice_drop, "int8", quantization)


def _keep_if_close(
    fp32: OnnxPredictor,
    tmp: Path,
    out: Path,
    validation: Sequence[tuple[np.ndarray, np.ndarray]],
    max_dice_drop: float,
    label: str,
    quantization: dict,
) -> dict:
    """Give the reduced model ``tmp`` the fp32 model's metadata plus ``quantization`` and the
    measured drop; refuse it (``out`` is then not written) past ``max_dice_drop``."""
    metadata = dict(fp32.metadata)
    _set_metadata(tmp, metadata)
    reduced = OnnxPredictor(tmp)
    result = {
        "fp32_val_dice": mean_dice(fp32.run, validation, fp32.processing.threshold),
        f"{label}_val_dice": mean_dice(reduced.run, validation, reduced.processing.threshold),
    }
    result["dice_drop"] = result["fp32_val_dice"] - result[f"{label}_val_dice"]
    if result["dice_drop"] > max_dice_drop:
        raise ExportError(
            f"{out}: {label} loses {result['dice_drop']:.4f} val Dice > allowed {max_dice_drop}; not written"
        )
    _set_metadata(tmp, {**metadata, "quantization": {**quantization, **result}})
    return result


def store_fp16(
    fp32_path: str | Path,
    out: str | Path,
    validation: Sequence[tuple[np.ndarray, np.ndarray]],
    max_dice_drop: float = 0.005,
) -> dict:
    """``fp32_path`` with its weights stored as float16 (:func:`store_weights_fp16`): half the
    file, float32 speed and arithmetic on every CPU; refused past ``max_dice_drop``."""
    out = Path(out)
    fp32 = OnnxPredictor(fp32_path)
    with atomic_path(out) as tmp:
        onnx.save(store_weights_fp16(onnx.load(str(fp32_path))), str(tmp))
        quantization = {"type": "float16 weights, float32 arithmetic (casts folded at load)"}
        return _keep_if_close(fp32, tmp, out, validation, max_dice_drop, "fp16", quantization)


def load_module(checkpoint: str | Path):
    """A PolypSegModule from a checkpoint written by ``polypseg fit`` (network config included)."""
    from polypseg.models.checkpoints import load_checkpoint
    from polypseg.models.module import PolypSegModule

    load_checkpoint(checkpoint)  # refuses a missing or code-carrying file with a clear message
    return PolypSegModule.load_from_checkpoint(checkpoint, map_location="cpu").eval()


def datamodule_from_checkpoint(
    checkpoint: str | Path, data_root: str | None = None, split_file: str | None = None
):
    """The checkpoint's own data configuration (resized-sample cache included), optionally re-rooted."""
    from polypseg.data.datamodule import KvasirSegDataModule
    from polypseg.models.checkpoints import load_checkpoint

    hparams = dict(load_checkpoint(checkpoint).get("datamodule_hyper_parameters", {}))
    hparams = {k: v for k, v in hparams.items() if not k.startswith("_")}
    if data_root:
        hparams["data_root"] = data_root
    if split_file:
        hparams["split_file"] = split_file
    hparams["limit_per_split"] = None
    hparams["manifest_file"] = None  # re-validate in memory: the prepared file may be elsewhere
    datamodule = KvasirSegDataModule(**hparams)
    datamodule.setup("validate")
    return datamodule


def resized_pairs(
    datamodule, split: str, limit: int | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    dataset = datamodule.datasets[split]
    rows = dataset.rows[:limit] if limit else dataset.rows
    return [
        (np.asarray(dataset.samples.images[r]), np.asarray(dataset.samples.masks[r])) for r in rows
    ]


def export_checkpoint(
    ckpt_path: str,
    output: str = "models/polypseg.onnx",
    data_root: str | None = None,
    int8: bool = False,
    fp16: bool = False,
    max_dice_drop: float = 0.005,
    parity_images: int = 16,
    tolerance: float = 1e-3,
    calibration_images: int = 64,
    calibration_method: str = "minmax",
    keep_ends: bool = False,
) -> dict:
    """Export ``ckpt_path`` to ``output`` (+ ``*.int8.onnx`` with ``int8``, ``*.fp16.onnx`` with ``fp16``:
    float16 weights, float32 arithmetic); parity-checked on real val images.

    ``calibration_method`` and ``keep_ends`` tune the int8 quantization (see :func:`quantize_int8`).
    A final fit without val is checked on training images (past the calibration ones when there are
    enough), and its metadata says so (``train/dice``).
    """
    ckpt, out = ckpt_path, output
    module = load_module(ckpt)
    datamodule = datamodule_from_checkpoint(ckpt, data_root)
    split = datamodule.check_split
    if split == "val":
        val = resized_pairs(datamodule, "val")
    else:
        train = resized_pairs(datamodule, "train", calibration_images + 100)
        val = train[calibration_images:] or train
    extra = {
        "checkpoint": str(ckpt),
        "val_metrics": {
            f"{split}/dice": mean_dice(torch_probabilities(module), val, float(module.threshold))
        },
    }
    report = export_onnx(module, out, [im for im, _ in val[:parity_images]], tolerance, extra)
    result = {"onnx": str(out), "parity": report.to_dict(), **extra}
    print(
        f"wrote {out}: parity max|Δp| {report.max_abs_diff:.2e}, mask Dice {report.mask_dice:.4f}"
    )
    if int8:
        calibration = [im for im, _ in resized_pairs(datamodule, "train", calibration_images)]
        int8_out = Path(out).with_suffix(".int8.onnx")
        result["int8"] = {
            "onnx": str(int8_out),
            **quantize_int8(
                out, int8_out, calibration, val, max_dice_drop, calibration_method, keep_ends
            ),
        }
        print(f"wrote {int8_out}: val Dice drop {result['int8']['dice_drop']:+.4f}")
    if fp16:
        fp16_out = Path(out).with_suffix(".fp16.onnx")
        result["fp16"] = {"onnx": str(fp16_out), **store_fp16(out, fp16_out, val, max_dice_drop)}
        print(f"wrote {fp16_out}: val Dice drop {result['fp16']['dice_drop']:+.4f}")
    return result

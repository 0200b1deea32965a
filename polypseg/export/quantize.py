"""Smaller files from an exported fp32 model: static int8 (onnxruntime.quantization, calibrated on
training images) or float16 weights; each refused, and not written, past an allowed val Dice drop."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from polypseg.export.graph import size_arithmetic_nodes, store_weights_fp16
from polypseg.export.onnx import INPUT_NAME, ExportError, write_metadata
from polypseg.export.parity import mean_dice
from polypseg.runtime.io import atomic_path
from polypseg.runtime.predictor import OnnxPredictor
from polypseg.runtime.processing import to_network_input


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
            # uint8 weights, not int8: on x86 CPUs without VNNI (AVX2 only) ORT's u8s8 convolution
            # saturates its int16 sums (-0.02 Dice); u8u8 does not, so the int8 file scores the same
            # on every CPU, at 4.8x the u8s8 latency on VNNI CPUs (docs/benchmarks.md)
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
    write_metadata(tmp, metadata)
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
    write_metadata(tmp, {**metadata, "quantization": {**quantization, **result}})
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

"""``polypseg export``: checkpoint -> one ONNX file with metadata, parity-checked on real val
images, optionally with its int8 and float16-weight versions beside it."""

from __future__ import annotations

from pathlib import Path

from polypseg.export.onnx import export_onnx
from polypseg.export.parity import mean_dice, resized_pairs, torch_probabilities
from polypseg.export.quantize import quantize_int8, store_fp16
from polypseg.export.registry import register_onnx
from polypseg.models.checkpoints import load_checkpoint, load_datamodule, load_module


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
    register_as: str | None = None,
    alias: str | None = None,
) -> dict:
    """Export ``ckpt_path`` to ``output`` (+ ``*.int8.onnx`` with ``int8``, ``*.fp16.onnx`` with ``fp16``:
    float16 weights, float32 arithmetic); parity-checked on real val images.

    ``calibration_method`` and ``keep_ends`` tune the int8 quantization (see :func:`quantize_int8`).
    A final fit without val is checked on training images (past the calibration ones when there are
    enough), and its metadata says so (``train/dice``). ``register_as`` also logs the fp32 file as
    a version of that registered model in the MLflow registry at ``MLFLOW_TRACKING_URI``, linked to
    the checkpoint's training run, with ``alias`` (e.g. ``champion``) pointing at it.
    """
    ckpt, out = ckpt_path, output
    module = load_module(ckpt)
    datamodule = load_datamodule(ckpt, data_root)
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
    if register_as:
        run_id = load_checkpoint(ckpt).get("mlflow_run_id")
        result["registered"] = register_onnx(out, register_as, alias, run_id, extra["val_metrics"])
    return result

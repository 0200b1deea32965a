"""``polypseg evaluate``: score an exported ONNX model (fp32 or int8) on a split, as ``polypseg test``
scores a checkpoint.

Same protocol and report: every image goes through the one inference path (``OnnxPredictor``:
resize, network, probabilities resized back to the original size, threshold from the model's
metadata), per-image metrics at the original resolution, means with 95 % bootstrap intervals,
``metrics.json``/``per_image.csv``/plots/worst cases. This is how a quantized or re-exported model
is held to the numbers its checkpoint reached.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from polypseg.data.roots import DEFAULT_SPLIT, resolve_data_root
from polypseg.data.sources import folder_manifest
from polypseg.evaluation.report import MANIFEST_COLUMNS, summarize, write_report
from polypseg.runtime.io import read_mask, read_rgb
from polypseg.runtime.metrics import image_scores
from polypseg.runtime.predictor import OnnxPredictor
from polypseg.runtime.processing import binarize_mask, postprocess, preprocess
from polypseg.runtime.tta import TTA


def evaluate(
    onnx: str,
    split_file: str = DEFAULT_SPLIT,
    data_root: str | None = None,
    split: str = "test",
    output: str = "reports/evaluate",
    val_fraction: float = 0.1,
    seed: int = 42,
    threads: int | None = None,
    tta: TTA = False,
) -> dict:
    """Write the report of the ONNX file ``onnx`` on ``split`` of ``split_file`` into ``output``; returns the
    metric summary. ``val_fraction``/``seed`` carve ``val`` as training did (for split files
    without one); ``tta`` averages views (``true``/``flips``: four flips, ``d4``: eight rotations and
    mirrors), as ``polypseg test --model.tta``."""
    predictor = OnnxPredictor(onnx, threads, tta)
    processing = predictor.processing
    root = resolve_data_root(data_root)
    carve = val_fraction if split == "val" else 0.0  # the other splits are the same either way
    manifest = folder_manifest(root, split_file, carve, seed)
    frame = manifest[manifest.split == split]
    if frame.empty:
        raise ValueError(f"{split_file}: split '{split}' has no samples")
    records, probabilities = [], {}
    for row in frame.itertuples(index=False):
        image = read_rgb(root / row.image)
        truth = binarize_mask(read_mask(root / row.mask))
        probability = predictor.probabilities(preprocess(image, processing))[0]
        mask = postprocess(probability, *truth.shape, processing)
        scores = image_scores(mask, truth)
        records.append({"predicted_fraction": float(mask.mean()), **scores})
        probabilities[row.name] = probability
    per_image = frame[MANIFEST_COLUMNS].reset_index(drop=True).join(pd.DataFrame(records))
    context = {
        "model": str(onnx),
        "split_file": split_file,
        "split": split,
        "data_root": str(root),
        "processing": processing.to_dict(),
        "quantization": predictor.metadata.get("quantization"),
        "tta": predictor.tta or False,
        "resolution": "original (probabilities resized back, then thresholded)",
    }
    write_report(per_image, output, context, probabilities, root, processing)
    summary = {name: summarize(per_image[name].to_numpy()) for name in ("dice", "iou")}
    dice = summary["dice"]
    print(
        f"{split} mDice {dice['mean']:.4f} [{dice['ci95'][0]:.3f}, {dice['ci95'][1]:.3f}] "
        f"mIoU {summary['iou']['mean']:.4f} on {len(per_image)} images; "
        f"report: {Path(output).resolve()}"
    )
    return summary

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
import torch

from polypseg.data.io import read_mask, read_rgb
from polypseg.evaluation.metrics import image_scores
from polypseg.evaluation.report import MANIFEST_COLUMNS, summarize, write_report
from polypseg.inference.predictor import OnnxPredictor
from polypseg.inference.processing import binarize_mask, postprocess, preprocess
from polypseg.inference.tta import TTA


def evaluate(
    model: str,
    split_file: str = "data/splits/kvasir_pranet_900_100.csv",
    data_root: str | None = None,
    split: str = "test",
    output: str = "reports/evaluate",
    val_fraction: float = 0.1,
    seed: int = 42,
    threads: int | None = None,
    tta: TTA = False,
) -> dict:
    """Write the report of ``model`` on ``split`` of ``split_file`` into ``output``; returns the
    metric summary. ``val_fraction``/``seed`` carve ``val`` as training did (for split files
    without one); ``tta`` averages views (``true``/``flips``: four flips, ``d4``: eight rotations and
    mirrors), as ``polypseg test --model.tta``."""
    from polypseg.data.datamodule import KvasirSegDataModule

    predictor = OnnxPredictor(model, threads, tta)
    processing = predictor.processing
    datamodule = KvasirSegDataModule(
        data_root, split_file, processing.size, val_fraction=val_fraction, seed=seed, cache_dir=None
    )
    manifest = datamodule.build_manifest()
    frame = manifest[manifest.split == split]
    if frame.empty:
        raise ValueError(f"{split_file}: split '{split}' has no samples")
    records, probabilities = [], {}
    for row in frame.itertuples(index=False):
        image = read_rgb(datamodule.root / row.image)
        truth = binarize_mask(read_mask(datamodule.root / row.mask))
        probability = predictor.probabilities(preprocess(image, processing))[0]
        mask = postprocess(probability, *truth.shape, processing)
        scores = image_scores(torch.from_numpy(mask), torch.from_numpy(truth))
        records.append({"predicted_fraction": float(mask.mean()), **scores})
        probabilities[row.name] = probability
    per_image = frame[MANIFEST_COLUMNS].reset_index(drop=True).join(pd.DataFrame(records))
    context = {
        "model": str(model),
        "split_file": split_file,
        "split": split,
        "data_root": str(datamodule.root),
        "processing": processing.to_dict(),
        "quantization": predictor.metadata.get("quantization"),
        "tta": predictor.tta or False,
        "resolution": "original (probabilities resized back, then thresholded)",
    }
    write_report(per_image, output, context, probabilities, datamodule.root, processing)
    summary = {name: summarize(per_image[name].to_numpy()) for name in ("dice", "iou")}
    dice = summary["dice"]
    print(
        f"{split} mDice {dice['mean']:.4f} [{dice['ci95'][0]:.3f}, {dice['ci95'][1]:.3f}] "
        f"mIoU {summary['iou']['mean']:.4f} on {len(per_image)} images; "
        f"report: {Path(output).resolve()}"
    )
    return summary

"""Val only: can an image-level rule tell the polyp-free val halves from the polyp val frames?

For each frame of configs/benchmark/protocol_val.yaml (polyp frames, and the polyp-free halves of
the same frames): the model's highest probability and its largest connected component at the
stored threshold (a fraction of the image). Prints, for each candidate rule, how many polyp-free
halves keep a predicted polyp and how many polyp frames lose theirs; writes the rows as JSON.
docs/decisions/2026-12-06-presence-rule.md reads the trade-offs off it.

    POLYPSEG_DATA_DIR=../shared/data python benchmarks/presence_val.py models/polypseg.onnx \
        benchmarks/results/presence_val.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from polypseg.data.roots import resolve_data_dir
from polypseg.evaluation.benchmark import polyp_free_views, read_test_sets, samples
from polypseg.runtime.io import read_mask, read_rgb
from polypseg.runtime.predictor import OnnxPredictor
from polypseg.runtime.processing import binarize_mask, preprocess, resize_probabilities

VAL = Path(__file__).resolve().parents[1] / "configs/benchmark/protocol_val.yaml"


def evidence(predictor: OnnxPredictor, image: np.ndarray) -> dict:
    """Highest probability and largest component (fraction of the image) of one image."""
    h, w = image.shape[:2]
    processing = predictor.processing
    prob = resize_probabilities(predictor.probabilities(preprocess(image, processing))[0], h, w)
    mask = (prob > processing.threshold).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    largest = stats[1:, cv2.CC_STAT_AREA].max() / mask.size if count > 1 else 0.0
    return {"max_prob": float(prob.max()), "largest": float(largest)}


def collect(model: str, data_dir: Path) -> list[dict]:
    predictor = OnnxPredictor(model, threads=1)
    rows = []
    for test_set in read_test_sets(VAL):
        for name, image_path, mask_path in samples(test_set, data_dir):
            image = read_rgb(image_path)
            if not test_set.polyp_free_views:
                rows.append(
                    {"set": test_set.key, "name": name, "polyp": True, **evidence(predictor, image)}
                )
                continue
            truth = binarize_mask(read_mask(mask_path)).astype(bool)
            for side, view in polyp_free_views(image, truth).items():
                row = {"set": test_set.key, "name": name, "view": side, "polyp": False}
                rows.append({**row, **evidence(predictor, view)})
    return rows


def trade_offs(rows: list[dict]) -> list[str]:
    """Polyp-free halves flagged and polyp frames emptied, per rule (a polyp is kept if its largest
    component reaches ``min_component`` and the image's highest probability ``min_prob``)."""
    polyps = [r for r in rows if r["polyp"]]
    free = [r for r in rows if not r["polyp"]]
    lines = ["| min_component | min_prob | polyp-free halves flagged | polyp frames emptied |"]
    lines.append("|---|---|---|---|")
    for min_component in (0.001, 0.01, 0.02, 0.03, 0.05):
        for min_prob in (0.0, 0.95, 0.98, 0.99, 0.995):
            kept = [
                r["largest"] > 0 and r["largest"] >= min_component and r["max_prob"] >= min_prob
                for r in polyps + free
            ]
            lost = len(polyps) - sum(kept[: len(polyps)])
            flagged = sum(kept[len(polyps) :])
            lines.append(
                f"| {min_component} | {min_prob} | {flagged} of {len(free)} | {lost} of {len(polyps)} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="exported .onnx model")
    parser.add_argument("out", help="JSON rows to write")
    parser.add_argument(
        "--data_dir", default=None, help="folder of the datasets ($POLYPSEG_DATA_DIR)"
    )
    args = parser.parse_args()
    rows = collect(args.model, resolve_data_dir(args.data_dir))
    Path(args.out).write_text(json.dumps(rows))
    print("\n".join(trade_offs(rows)))


if __name__ == "__main__":
    main()

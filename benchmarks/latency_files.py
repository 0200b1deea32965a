"""Batch-1 latency of exported ONNX files side by side, in the same machine state.

This machine's speed drifts by a third within a day, so comparing rows from different runs of
``latency.py`` can mislead. Here every file gets its own session with polypseg's options and the
files take turns in blocks (``--rounds`` x ``--block`` timed calls each, 3 warm-up calls per block:
a block must not start while another session's threads still spin); median, p10 and p90 in ms.

    python benchmarks/latency_files.py models/polypseg.onnx other.onnx --out benchmarks/results/x.json

``--tta none flips d4`` times the whole ``OnnxPredictor(..., tta=mode).predict`` of one 620 x 530
image instead (pre-processing, the views as one batch, post-processing at the original size), for
each file and each mode in the same blocks; ``--tta`` alone means ``flips``.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import numpy as np

from polypseg.runtime.predictor import OnnxPredictor

from common import git_sha, machine


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="+")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tta", nargs="*", choices=["none", "flips", "d4"], default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    modes = None if args.tta is None else (args.tta or ["flips"])
    runs = [(f, mode) for f in args.files for mode in (modes or [None])]
    predictors = [
        OnnxPredictor(f, threads=args.threads, tta=False if mode in (None, "none") else mode)
        for f, mode in runs
    ]
    image = np.random.default_rng(0).integers(0, 256, (530, 620, 3), dtype=np.uint8)
    samples: list[list[float]] = [[] for _ in predictors]
    for _ in range(args.rounds):
        for predictor, times in zip(predictors, samples, strict=True):
            size = predictor.processing.size
            x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
            call = partial(predictor.predict, image) if modes else partial(predictor.run, x)
            for _ in range(3):
                call()
            for _ in range(args.block):
                start = time.perf_counter()
                call()
                times.append((time.perf_counter() - start) * 1000)
    rows = []
    for (path, mode), predictor, times in zip(runs, predictors, samples, strict=True):
        p10, p50, p90 = np.percentile(times, [10, 50, 90])
        rows.append(
            {
                "file": path,
                "tta": mode,
                "size": predictor.processing.size,
                "MB": Path(path).stat().st_size / 1e6,
                # int8 or float16 weights; a file without it computes and stores float32
                "format": predictor.metadata.get("quantization", {}).get("type", "float32"),
                "median_ms": float(p50),
                "p10_ms": float(p10),
                "p90_ms": float(p90),
            }
        )
    print(f"Machine: {machine()}; commit {git_sha()}; {args.rounds} x {args.block} runs each\n")
    print("| file | TTA | px | MB | median ms | p10 | p90 |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['file']} | {r['tta'] or '-'} | {r['size']} | {r['MB']:.1f} | **{r['median_ms']:.1f}** "
            f"| {r['p10_ms']:.1f} | {r['p90_ms']:.1f} |"
        )
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {"machine": machine(), "git": git_sha(), "args": vars(args), "rows": rows}, indent=2
            )
        )


if __name__ == "__main__":
    main()

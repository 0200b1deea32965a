"""Markdown table of a sweep's results (one row per run; the latest run of a name wins).

python benchmarks/sweep/table.py benchmarks/results/sweep_gpu.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def first_085(run: dict) -> str:
    hit = run.get("first_val_085")
    return f"{hit['step']} ({hit['epoch']:.1f})" if hit else "-"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", type=Path)
    args = parser.parse_args()
    runs = {}
    for line in args.results.read_text().splitlines():
        run = json.loads(line)
        runs[run["name"]] = run
    print(
        "| run | split | encoder | decoder | px | epochs (done) | aug | loss | lr | seed "
        "| best val mDice (epoch) | test mDice | test mDice, flip TTA | steps to val 0.85 (epoch) |"
    )
    print("|---" * 14 + "|")
    for run in runs.values():
        if "error" in run:
            print(f"| {run['name']} | error: {run['error']} |")
            continue
        done = f"{run['epochs']} ({run['epochs_done']}{', cut' if run['truncated'] else ''})"
        print(
            f"| {run['name']} | {run['split']} | {run['encoder']} | {run['decoder']} | {run['size']} "
            f"| {done} | {run['aug']} | {run['loss']} | {run['lr']:g} | {run['seed']} "
            f"| {run['best_val']:.4f} ({run['best_epoch']:.0f}) | {run['test_dice']:.4f} "
            f"| {run['test_dice_tta']:.4f} | {first_085(run)} |"
        )
    seeds = [r for r in runs.values() if r["name"].startswith("p-l0n-256-e30-s")]
    if seeds:
        for key in ("best_val", "test_dice", "test_dice_tta"):
            values = np.array([r[key] for r in seeds])
            print(
                f"\n{key} over seeds {[r['seed'] for r in seeds]}: mean {values.mean():.4f}, "
                f"sd {values.std(ddof=1):.4f}, range {values.min():.4f}-{values.max():.4f}"
            )


if __name__ == "__main__":
    main()

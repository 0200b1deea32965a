"""Markdown table of a sweep's results (one row per run; the latest run of a name wins).

python benchmarks/sweep/table.py benchmarks/results/sweep_gpu.jsonl

EMA runs also validated and tested their raw (non-averaged) weights: "raw" columns, same run.
Runs named ``<recipe>-s<seed>`` are summarised per recipe (mean, sd over seeds).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np


def first_085(run: dict) -> str:
    hit = run.get("first_val_085")
    return f"{hit['step']} ({hit['epoch']:.1f})" if hit else "-"


def raw(run: dict) -> str:
    if "test_dice_raw" not in run:
        return "-"
    return f"{run['best_val_raw']:.4f} / {run['test_dice_raw']:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", type=Path)
    args = parser.parse_args()
    runs = {}
    for line in args.results.read_text().splitlines():
        run = json.loads(line)
        runs[run["name"]] = run
    print(
        "| run | split | encoder | decoder | px | epochs (done) | aug | multi-scale | loss | EMA "
        "| lr | seed | best val mDice (epoch) | test mDice | test mDice, flip TTA "
        "| raw weights: val / test | steps to val 0.85 (epoch) |"
    )
    print("|---" * 17 + "|")
    for run in runs.values():
        if "error" in run:
            print(f"| {run['name']} | error: {run['error']} |")
            continue
        done = f"{run['epochs']} ({run['epochs_done']}{', cut' if run['truncated'] else ''})"
        print(
            f"| {run['name']} | {run['split']} | {run['encoder']} | {run['decoder']} | {run['size']} "
            f"| {done} | {run['aug']} | {'yes' if run.get('multiscale') else 'no'} "
            f"| {run['loss']} | {run.get('ema') or '-'} | {run['lr']:g} | {run['seed']} "
            f"| {run['best_val']:.4f} ({run['best_epoch']:.0f}) | {run['test_dice']:.4f} "
            f"| {run['test_dice_tta']:.4f} | {raw(run)} | {first_085(run)} |"
        )
    recipes = defaultdict(list)
    for run in runs.values():
        match = re.fullmatch(r"(.+)-s\d+", run["name"])
        if match and "error" not in run:
            recipes[match.group(1)].append(run)
    for recipe, seeds in recipes.items():
        if len(seeds) < 2:
            continue
        for key in ("best_val", "test_dice", "test_dice_tta", "test_dice_raw"):
            if not all(key in r for r in seeds):
                continue
            values = np.array([r[key] for r in seeds])
            print(
                f"\n{recipe} {key} over seeds {[r['seed'] for r in seeds]}: mean "
                f"{values.mean():.4f}, sd {values.std(ddof=1):.4f}, "
                f"range {values.min():.4f}-{values.max():.4f}"
            )


if __name__ == "__main__":
    main()

"""Log a sweep's results into MLflow (one run per recipe, val curve as metric history), so the
GPU sweep sits next to the CPU trainings in the same tracking store.

    python benchmarks/sweep/to_mlflow.py benchmarks/results/sweep_gpu.jsonl --experiment polypseg-sweep
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import mlflow

SCALARS = (
    "best_val",
    "test_dice",
    "test_iou",
    "test_dice_tta",
    "best_val_raw",  # EMA runs: the raw weights of the same run
    "test_dice_raw",
    "train_s",
    "wall_s",
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", type=Path)
    parser.add_argument("--experiment", default="polypseg-sweep")
    args = parser.parse_args()
    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    mlflow.set_experiment(args.experiment)
    runs = {}
    for line in args.results.read_text().splitlines():
        run = json.loads(line)
        runs[run["name"]] = run  # the latest run of a name wins
    for name, run in runs.items():
        if "error" in run:
            continue
        with mlflow.start_run(run_name=name):
            mlflow.log_params(
                {
                    k: v
                    for k, v in run.items()
                    if not isinstance(v, list | dict) and k not in SCALARS
                }
            )
            mlflow.log_metrics({k: float(run[k]) for k in SCALARS if k in run})
            for point in run["curve"]:
                mlflow.log_metric("val/dice", point["val"], step=point["step"])
                if "val_raw" in point:
                    mlflow.log_metric("val/dice_raw", point["val_raw"], step=point["step"])
    print(f"logged {len(runs)} runs to experiment '{args.experiment}'")


if __name__ == "__main__":
    main()

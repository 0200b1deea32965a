"""Plot val mDice against wall-clock time for MLflow runs (docs/training_curve.png).

python benchmarks/training_curve.py --runs unet-lite0-e16 --out docs/training_curve.png
"""

from __future__ import annotations

import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mlflow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", nargs="+", required=True, help="MLflow run names")
    parser.add_argument("--experiment", default="polypseg")
    parser.add_argument("--out", default="docs/training_curve.png")
    args = parser.parse_args()
    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    client = mlflow.MlflowClient()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in args.runs:
        run = mlflow.search_runs(
            experiment_names=[args.experiment],
            filter_string=f"tags.mlflow.runName = '{name}'",
            output_format="list",
        )[0]
        history = sorted(
            client.get_metric_history(run.info.run_id, "val/dice"), key=lambda m: m.timestamp
        )
        start = run.info.start_time
        minutes = [(m.timestamp - start) / 60000 for m in history]
        values = [m.value for m in history]
        ax.plot(minutes, values, marker="o", label=name)
        for target in (0.85, 0.88):
            reached = next((t for t, v in zip(minutes, values, strict=True) if v >= target), None)
            print(
                f"{name}: val mDice >= {target} after {reached:.1f} min"
                if reached
                else f"{name}: never {target}"
            )
    ax.axhline(0.85, color="grey", lw=0.8, ls="--")
    ax.set(
        xlabel="wall-clock minutes since start (2 CPU cores)",
        ylabel="val mDice (network resolution)",
        title="Training curve",
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

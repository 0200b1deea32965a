"""Scale-out costs on this machine, through the project's own commands.

1. Training throughput of ``polypseg fit`` (the default recipe, 256 px batches of 8) in one process
   against 2-process DDP on the CPU (gloo; Lightning gives each process half the cores).
2. The overhead of an Optuna trial: ``polypseg tune --n_trials 1`` against a plain ``polypseg fit``
   of the same short config, wall time of the whole command.

    POLYPSEG_DATA_ROOT=../shared/data/kvasir-seg python benchmarks/scale_out.py --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

from common import data_root, git_sha, machine

REPO = Path(__file__).resolve().parents[1]
POLYPSEG = [str(Path(sys.executable).parent / "polypseg")]


class StepTimer(L.Callback):
    """Images and seconds of the training steps after two warm-up steps; with ``output``, written
    as one JSON file per rank (``<output>.rank<N>.json``)."""

    def __init__(self, output: str | None = None, warmup: int = 2):
        self.output, self.warmup = output, warmup
        self.start, self.end, self.images = None, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.start, self.images = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.start is not None:
            self.images += len(batch["image"])
            self.end = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        if self.output is None:
            return
        seconds = self.end - self.start
        record = {"rank": trainer.global_rank, "images": self.images, "seconds": seconds}
        Path(f"{self.output}.rank{trainer.global_rank}.json").write_text(json.dumps(record))


def _run(args: list[str], workdir: Path) -> float:
    """Wall seconds of one polypseg command run in ``workdir`` (which links the repo's data/)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "benchmarks"), str(REPO)]),
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlflow.db",
        "ORT_DISABLE_TELEMETRY": "1",
        "POLYPSEG_DATA_ROOT": str(data_root()),
    }
    start = time.perf_counter()
    subprocess.run([*POLYPSEG, *args], cwd=workdir, env=env, check=True)
    return time.perf_counter() - start


def short_fit(workdir: Path, steps: int) -> list[str]:
    """The default recipe cut to one epoch of ``steps`` training and 4 val batches, as configs
    (``polypseg tune`` takes its fit settings as configs only)."""
    short = workdir / f"short-{steps}.yaml"
    trainer = {"max_epochs": 1, "limit_train_batches": steps, "limit_val_batches": 4}
    short.write_text(json.dumps({"trainer": trainer}))  # JSON is YAML
    return ["--config", str(REPO / "configs" / "unet.yaml"), "--config", str(short)]


def throughput(workdir: Path, steps: int, devices: int) -> dict:
    out = workdir / f"timer-{devices}"
    timer = {"class_path": "scale_out.StepTimer", "init_args": {"output": str(out)}}
    extra = [f"--trainer.callbacks+={json.dumps(timer)}", "--trainer.accelerator=cpu"]
    if devices > 1:
        extra += [f"--trainer.devices={devices}", "--trainer.strategy=ddp"]
    _run(["fit", *short_fit(workdir, steps + 2), *extra], workdir)
    ranks = [json.loads(p.read_text()) for p in sorted(workdir.glob(f"timer-{devices}.rank*.json"))]
    images = sum(r["images"] for r in ranks)
    seconds = max(r["seconds"] for r in ranks)
    return {
        "processes": devices,
        "images": images,
        "seconds": seconds,
        "images_per_s": images / seconds,
        "images_per_s_per_core": images / seconds / os.cpu_count(),
    }


def optuna_overhead(workdir: Path, steps: int, repeats: int) -> dict:
    fit, tune = [], []
    space = str(REPO / "configs" / "sweeps" / "lr_wd.yaml")
    for i in range(repeats):  # interleaved, so drift in the machine's speed hits both alike
        fit.append(_run(["fit", *short_fit(workdir, steps)], workdir))
        study = ["--storage", f"sqlite:///{workdir}/optuna.db", "--study_name", f"overhead-{i}"]
        trial = ["--space", space, "--n_trials", "1", "--output", str(workdir / f"tune-{i}")]
        tune.append(_run(["tune", *short_fit(workdir, steps), *trial, *study], workdir))
    return {
        "fit_s": fit,
        "tune_s": tune,
        "fit_median_s": statistics.median(fit),
        "tune_median_s": statistics.median(tune),
        "overhead_s": statistics.median(t - f for t, f in zip(tune, fit, strict=True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per process")
    parser.add_argument("--repeats", type=int, default=2, help="fit/tune pairs for the overhead")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "scale_out.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="polypseg-scale-") as tmp:
        workdir = Path(tmp)
        (workdir / "data").symlink_to(REPO / "data")
        result = {
            "machine": machine(),
            "commit": git_sha(),
            "steps": args.steps,
            "single": throughput(workdir, args.steps, 1),
            "ddp": throughput(workdir, args.steps, 2),
            "optuna": optuna_overhead(workdir, args.steps, args.repeats),
        }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

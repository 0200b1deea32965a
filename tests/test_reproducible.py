"""Same seed, same run; a run SIGKILLed mid-epoch and resumed with `--ckpt_path last` ends with the
same weights and one MLflow history. Real `polypseg fit` processes on real images, with
augmentation and multi-scale training on."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import mlflow
import pytest
import torch

from conftest import REPO

SMOKE = str(REPO / "configs" / "smoke.yaml")
POLYPSEG = str(REPO / ".venv" / "bin" / "polypseg")
pytestmark = [pytest.mark.data, pytest.mark.slow]


def fit(work: Path, tiny_root: Path, *extra: str) -> subprocess.CompletedProcess:
    work.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "POLYPSEG_DATA_ROOT": str(tiny_root),
        "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db",
        "PYTHONPATH": str(REPO / "tests"),
    }
    args = [
        POLYPSEG,
        "fit",
        "--config",
        SMOKE,
        f"--data.split_file={tiny_root / 'split.csv'}",
        "--data.image_size=96",
        "--data.train_scales=[0.75,1.0,1.25]",
        "--trainer.max_epochs=4",
        "--trainer.limit_train_batches=null",
        *extra,
    ]
    return subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=600)


def weights(work: Path) -> dict[str, torch.Tensor]:
    return torch.load(work / "checkpoints" / "smoke" / "last.ckpt", weights_only=True)["state_dict"]


def val_history(work: Path) -> tuple[list, list]:
    mlflow.set_tracking_uri(f"sqlite:///{work}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["polypseg-smoke"], output_format="list")
    history = mlflow.MlflowClient().get_metric_history(runs[0].info.run_id, "val/dice")
    return runs, sorted((m.step, m.value) for m in history)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_root) -> Path:
    work = tmp_path_factory.mktemp("run-a")
    result = fit(work, tiny_root)
    assert result.returncode == 0, result.stderr[-3000:]
    return work


def test_same_seed_gives_the_same_run(uninterrupted, tmp_path, tiny_root):
    result = fit(tmp_path / "b", tiny_root)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = weights(uninterrupted), weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert val_history(uninterrupted)[1] == val_history(tmp_path / "b")[1]


def test_kill_and_resume_matches_the_uninterrupted_run(uninterrupted, tmp_path, tiny_root):
    work = tmp_path / "killed"
    kill = json.dumps({"class_path": "kill_switch.KillAtStep", "init_args": {"step": 5}})
    killed = fit(work, tiny_root, f"--trainer.callbacks+={kill}")
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILLed in the third epoch
    assert torch.load(work / "checkpoints" / "smoke" / "last.ckpt", weights_only=True)["epoch"] == 1
    orphan = work / "checkpoints" / "smoke" / ".last.ckpt.k1ll3d.tmp"  # a write cut short
    orphan.write_bytes(b"\0" * 4096)
    resumed = fit(work, tiny_root, "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = weights(uninterrupted), weights(work)
    assert all(torch.equal(a[k], b[k]) for k in a), (
        "resumed weights differ from the uninterrupted run"
    )
    runs, history = val_history(work)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # one history for one model
    assert [v for _, v in history][-1] == val_history(uninterrupted)[1][-1][1]
    assert not orphan.exists()

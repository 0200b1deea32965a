"""`dvc repro` runs prepare -> train -> evaluate -> export end to end on the smoke config; `make repro`
with $POLYPSEG_DATA_ROOT runs it again on that root as a DVC experiment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.data  # reads images from ../shared/data

BIN = REPO / ".venv" / "bin"


def test_dvc_repro_smoke(tmp_path, tiny_root):
    work = tmp_path / "repo"
    work.mkdir()
    for item in ("dvc.yaml", "Makefile", "configs", "polypseg", "data/splits"):
        source = REPO / item
        target = work / item
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    params = {
        "data_root": str(tiny_root),
        "split_file": str(tiny_root / "split.csv"),
        "config": "configs/smoke.yaml",
        "checkpoint_dir": "checkpoints/smoke",
    }
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    (work / ".venv").symlink_to(REPO / ".venv")  # make's $(BIN); `-o .venv/.synced` skips set-up
    (work / ".gitignore").write_text("/.venv\n/mlflow.db\n")
    env = {
        **{k: v for k, v in os.environ.items() if k != "POLYPSEG_DATA_ROOT"},
        **{
            f"GIT_{who}_{what}": "ci"
            for who in ("AUTHOR", "COMMITTER")
            for what in ("NAME", "EMAIL")
        },
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db",
    }

    def run(*args):
        return subprocess.run(
            args, cwd=work, env=env, capture_output=True, text=True, check=True, timeout=900
        ).stdout

    run("git", "init", "-q")
    run(str(BIN / "dvc"), "init", "-q")
    run(str(BIN / "dvc"), "config", "core.analytics", "false")
    run(str(BIN / "dvc"), "repro")
    assert (work / "exported" / "model.onnx").stat().st_size > 100_000
    metrics = json.loads((work / "reports" / "dvc" / "metrics.json").read_text())
    assert metrics["images"] == 3
    shown = run(str(BIN / "dvc"), "metrics", "show")
    assert "metrics.dice.mean" in shown or "dice" in shown
    again = run(str(BIN / "dvc"), "repro")
    assert "didn't change" in again or "up to date" in again.lower()

    # make repro with $POLYPSEG_DATA_ROOT: the same pipeline on that root, recorded as an experiment
    run("git", "add", "-A")
    run("git", "commit", "-qm", "baseline")
    other = tmp_path / "another-root"
    other.symlink_to(tiny_root)
    env["POLYPSEG_DATA_ROOT"] = str(other)
    run("make", "-o", ".venv/.synced", "repro")
    assert yaml.safe_load((work / "params.yaml").read_text())["data_root"] == str(other)
    (experiment,) = [
        exp
        for baseline in json.loads(run(str(BIN / "dvc"), "exp", "show", "--json"))
        for exp in (baseline.get("experiments") or [])
    ]
    (revision,) = experiment["revs"]
    assert revision["data"]["params"]["params.yaml"]["data"]["data_root"] == str(other)
    assert (work / "exported" / "model.onnx").stat().st_size > 100_000

"""The serving side stands on a runtime without the training stack: importing the API, the demo,
`infer` and the CLI entry must not pull torch, lightning, scipy, scikit-learn, pandas or mlflow
(the serving image has none of them), and `polypseg evaluate --onnx x.onnx` scores real images
without torch, lightning, scipy or scikit-learn. A fresh interpreter with those imports blocked
proves it; `lint-imports` (the layers contract in pyproject.toml) keeps every arrow pointing down."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO

TRAINING = ("torch", "lightning", "pytorch_lightning", "torchvision", "scipy", "sklearn")
SERVING_BLOCKED = (*TRAINING, "pandas", "mlflow", "albumentations", "segmentation_models_pytorch")

BLOCKER = """
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError("blocked in the torch-free runtime: " + name)

sys.meta_path.insert(0, Block())
"""


def run_blocked(blocked: tuple[str, ...], code: str) -> subprocess.CompletedProcess:
    program = BLOCKER.format(blocked=blocked) + code
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=300, cwd=REPO
    )


def test_serving_imports_without_the_training_stack():
    result = run_blocked(
        SERVING_BLOCKED,
        "import polypseg.cli, polypseg.runtime.infer, polypseg.serving.api, polypseg.serving.demo\n"
        "from polypseg.cli import main\n"
        "main(['serve', '--help'])\n",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--onnx" in result.stdout


@pytest.mark.data
def test_evaluate_scores_an_onnx_model_without_torch_or_scipy(tiny_root, tmp_path):
    """The whole `evaluate` command (manifest, inference, metrics with HD95, bootstrap intervals,
    report) on real images, with the training stack blocked."""
    output = tmp_path / "report"
    result = run_blocked(
        TRAINING,
        "from polypseg.cli import main\n"
        f"main(['evaluate', '--onnx', 'models/polypseg.onnx', '--data_root', '{tiny_root}',"
        f" '--split_file', '{tiny_root / 'split.csv'}', '--output', '{output}'])\n",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["images"] == 3
    dice = metrics["metrics"]["dice"]
    assert 0.5 < dice["mean"] <= 1 and dice["ci95"][0] <= dice["mean"] <= dice["ci95"][1]
    assert "hd95" in metrics["metrics"]


def test_layers_contract_holds():
    lint_imports = REPO / ".venv" / "bin" / "lint-imports"
    command = [str(lint_imports)] if lint_imports.exists() else ["lint-imports"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Contracts: 1 kept, 0 broken" in result.stdout

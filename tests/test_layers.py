"""The serving side stands on a runtime without the training stack: importing the API, the demo,
`infer` and the CLI entry must not pull torch, lightning, scipy, scikit-learn, pandas or mlflow
(the serving image has none of them). A fresh interpreter with those imports blocked proves it."""

from __future__ import annotations

import subprocess
import sys

BLOCKED = ("torch", "lightning", "pytorch_lightning", "torchvision", "scipy", "sklearn", "pandas")
BLOCKED += ("mlflow", "albumentations", "segmentation_models_pytorch")

PROGRAM = f"""
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError("blocked in the serving runtime: " + name)

sys.meta_path.insert(0, Block())
import polypseg.cli, polypseg.inference.infer, polypseg.serving.api, polypseg.serving.demo
from polypseg.cli import main
main(["serve", "--help"])
"""


def test_serving_imports_without_the_training_stack():
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--model" in result.stdout

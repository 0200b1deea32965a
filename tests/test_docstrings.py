"""The examples in the docstrings of the public API run and show what they say (doctest), from the
repository root, with the shipped model and the bundled example images."""

from __future__ import annotations

import doctest
import importlib

import pytest

from conftest import REPO

MODULES = (
    "polypseg.runtime.io",
    "polypseg.runtime.metrics",
    "polypseg.runtime.predictor",
    "polypseg.runtime.model_files",
    "polypseg.evaluation.report",
    "polypseg.evaluation.papers",
    "polypseg.evaluation.benchmark",
    "polypseg.models.checkpoints",
    "polypseg.models.networks",
    "polypseg.models.module",
    "polypseg.models.distillation",
    "polypseg.data.augment",
    "polypseg.data.sources",
    "polypseg.data.sampling",
    "polypseg.data.sequences",
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, monkeypatch):
    monkeypatch.chdir(REPO)
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name}: no example in its docstrings"
    assert result.failed == 0, f"{name}: {result.failed} docstring example(s) failed"

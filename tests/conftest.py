"""Shared fixtures: real Kvasir-SEG samples from ../shared/data (never copied into the repo)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
KVASIR = Path(
    os.environ.get("POLYPSEG_DATA_ROOT") or REPO.parent / "shared" / "data" / "kvasir-seg"
)
OUR_SPLIT = REPO / "data" / "splits" / "kvasir_seg_70_15_15.csv"
PRANET_SPLIT = REPO / "data" / "splits" / "kvasir_pranet_900_100.csv"  # the shipped model's

os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("POLYPSEG_DEBUG", "1")  # in-process tests see the exceptions themselves


HAS_DATA = (KVASIR / "images").is_dir()


def pytest_configure(config):
    if not HAS_DATA and os.environ.get("POLYPSEG_REQUIRE_DATA") == "1":
        raise pytest.UsageError(f"Kvasir-SEG not found at {KVASIR}; set POLYPSEG_DATA_ROOT")


def pytest_collection_modifyitems(config, items):
    """Without the datasets, tests marked ``data`` skip and the unit tests still run (CI sets
    POLYPSEG_REQUIRE_DATA=1, so there a missing dataset is an error, not a skip)."""
    if HAS_DATA:
        return
    skip = pytest.mark.skip(reason=f"needs the datasets: Kvasir-SEG not found at {KVASIR}")
    for item in items:
        if "data" in item.keywords:
            item.add_marker(skip)


def real_names(split: str, count: int, split_file: Path = OUR_SPLIT) -> list[str]:
    table = pd.read_csv(split_file)
    return sorted(table[table.split == split].name)[:count]


def kvasir_frame(name: str, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A Kvasir-SEG frame and its {0,1} mask, resized as training and serving resize them."""
    from polypseg.runtime.io import read_gray, read_rgb
    from polypseg.runtime.processing import resize_image, resize_mask

    image = resize_image(read_rgb(KVASIR / "images" / f"{name}.jpg"), size)
    return image, resize_mask(read_gray(KVASIR / "masks" / f"{name}.jpg"), size)


def copy_samples(names: list[str], root: Path) -> Path:
    """A small real dataset in Kvasir-SEG layout under ``root``."""
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copy(KVASIR / sub / f"{name}.jpg", root / sub / f"{name}.jpg")
    return root


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """12 real samples (6 train, 3 val, 3 test) plus their split CSV at ``root/split.csv``."""
    root = tmp_path_factory.mktemp("kvasir-tiny")
    plan = {
        "train": real_names("train", 6),
        "val": real_names("val", 3),
        "test": real_names("test", 3),
    }
    copy_samples([n for names in plan.values() for n in names], root)
    pd.DataFrame(
        [(n, s) for s, names in plan.items() for n in names], columns=["name", "split"]
    ).to_csv(root / "split.csv", index=False)
    return root


@pytest.fixture
def fresh_copy(tmp_path, tiny_root) -> Path:
    """A private, writable copy of the tiny dataset, for tests that corrupt it."""
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    return root


@pytest.fixture(scope="session")
def tiny_module():
    """An untrained small U-Net (offline ImageNet encoder, 64 px): real graph, fast."""
    import torch

    from polypseg.models.module import PolypSegModule
    from polypseg.models.networks import SegmentationNetwork

    torch.manual_seed(0)
    network = SegmentationNetwork(decoder_channels=(32, 16, 8, 8, 8))
    return PolypSegModule(network=network, image_size=64, channels_last=False).eval()


@pytest.fixture(scope="session")
def resized_real_images(tiny_root):
    from polypseg.runtime.io import read_gray, read_rgb
    from polypseg.runtime.processing import resize_image, resize_mask

    paths = sorted((tiny_root / "images").glob("*.jpg"))
    return [
        (resize_image(read_rgb(p), 64), resize_mask(read_gray(tiny_root / "masks" / p.name), 64))
        for p in paths
    ]


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny_module, resized_real_images) -> Path:
    from polypseg.export.onnx import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(tiny_module, path, [im for im, _ in resized_real_images[:4]])
    return path

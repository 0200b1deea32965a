"""The papers' metrics (PraNet's eval/main.m) and `polypseg benchmark`, on real maps and masks:
PraNet's own published maps must score what the papers' code gives them, and pysodmetrics must
agree with an independent port of main.m written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from polypseg.cli import main
from polypseg.evaluation.papers import PaperScores, paper_map

from conftest import KVASIR, REPO

pytestmark = pytest.mark.data  # reads images from ../shared/data

DATA = KVASIR.parent
REFERENCE = REPO.parent / "shared" / "reference" / "pranet-maps"
CLINICDB_TEST = REPO / "data" / "splits" / "clinicdb_pranet_550_62.csv"
needs_reference = pytest.mark.skipif(
    not REFERENCE.is_dir() or not (DATA / "cvc-clinicdb").is_dir(),
    reason="PraNet's reference maps / CVC-ClinicDB are not at ../shared",
)


def main_m_dice(the_map: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Dice at main.m's 256 thresholds, from its definition (mapminmax, ``1:-1/255:0``,
    ``Label3(sMap >= threshold)``, ``Fmeasure_calu``'s Dice = 0 when nothing overlaps)."""
    pred = the_map.astype(np.float64) / 255
    if pred.max() != pred.min():
        pred = (pred - pred.min()) / (pred.max() - pred.min())
    gt = truth.astype(bool)
    curve = []
    for t in np.arange(255, -1, -1) / 255:
        binary = pred >= t
        both = np.logical_and(binary, gt).sum()
        curve.append(0.0 if both == 0 else 2 * both / (gt.sum() + binary.sum()))
    return np.array(curve)


def test_port_and_library_match_a_hand_computed_map():
    the_map, truth = np.array([[0, 128, 255]], np.uint8), np.array([[False, True, True]])
    # t > 128/255 (127 thresholds): {255} -> 2/3; 0 < t <= 128/255 (128): {128, 255} -> 1;
    # t = 0: everything -> 4/5
    expected = (127 * 2 / 3 + 128 * 1 + 0.8) / 256
    assert main_m_dice(the_map, truth).mean() == pytest.approx(expected, abs=1e-12)
    scores = PaperScores()
    scores.add(the_map, truth)
    assert scores.results()["meanDic"] == pytest.approx(expected, abs=1e-12)
    assert scores.results()["maxDic"] == pytest.approx(1.0)


def test_paper_map_is_resized_logits_minmax_8bit():
    prob = np.array([[0.2, 0.6], [0.9, 0.99]], np.float32)
    the_map = paper_map(prob, 20, 30)
    assert the_map.dtype == np.uint8 and the_map.shape == (20, 30)
    assert the_map.min() == 0 and the_map.max() == 255


@needs_reference
def test_library_equals_the_port_on_real_maps():
    names = sorted(p.stem for p in (REFERENCE / "cvc-clinicdb").glob("*.png"))[:8]
    scores = PaperScores()
    for name in names:
        the_map = np.asarray(Image.open(REFERENCE / "cvc-clinicdb" / f"{name}.png").convert("L"))
        truth = np.asarray(Image.open(DATA / "cvc-clinicdb" / "masks" / f"{name}.png").convert("L"))
        values = scores.add(the_map, truth > 128)
        assert values["meanDic"] == pytest.approx(
            main_m_dice(the_map, truth > 128).mean(), abs=1e-9
        )


def clinicdb_only(tmp_path: Path, split_file: Path = CLINICDB_TEST) -> Path:
    config = tmp_path / "clinicdb.yaml"
    entry = {"key": "cvc-clinicdb", "name": "CVC-ClinicDB", "root": "cvc-clinicdb"}
    config.write_text(yaml.safe_dump({"test_sets": [{**entry, "split_file": str(split_file)}]}))
    return config


@needs_reference
def test_benchmark_of_pranets_maps_gives_the_papers_numbers(tmp_path):
    """README of the reference maps: main.m gives meanDic 0.899, meanIoU 0.849, maxDic 0.909,
    S-alpha 0.936, wF 0.896, max E-phi 0.979, MAE 0.009 on the ClinicDB test set."""
    summary = main_and_read(
        tmp_path,
        "--maps",
        str(REFERENCE),
        "--config",
        str(clinicdb_only(tmp_path)),
        "--mlflow_log",
        "true",
    )
    r = summary["test_sets"]["cvc-clinicdb"]
    assert r["images"] == 62
    published = {"meanDic": 0.899, "meanIoU": 0.849, "maxDic": 0.909, "Sm": 0.936}
    published |= {"wFm": 0.896, "maxEm": 0.979, "MAE": 0.009}
    for metric, value in published.items():
        assert r[metric]["value"] == pytest.approx(value, abs=0.0011), metric
    low, high = r["meanDic"]["ci95"]
    assert low < r["meanDic"]["value"] < high
    assert "| CVC-ClinicDB | 62 | 0.899 [" in (tmp_path / "out" / "results.md").read_text()
    again = main_and_read(
        tmp_path,
        "--maps",
        str(REFERENCE),
        "--config",
        str(clinicdb_only(tmp_path)),
        f"--against={tmp_path / 'out'}",
        out_name="again",
    )
    paired = again["test_sets"]["cvc-clinicdb"]["paired_vs_against"]
    assert paired["difference"] == 0 and paired["images"] == 62


def main_and_read(tmp_path: Path, *args: str, out_name: str = "out") -> dict:
    import os

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path}/mlflow.db"
    out = tmp_path / out_name
    main(["benchmark", f"--data_dir={DATA}", f"--output={out}", *args])
    return json.loads((out / "results.json").read_text())


@pytest.mark.skipif(not (DATA / "endotect-2020").is_dir(), reason="EndoTect not at ../shared")
def test_benchmark_of_the_shipped_model_writes_maps_table_and_negatives(tmp_path):
    names = pd.read_csv(CLINICDB_TEST).query("split == 'test'").name.head(4)
    split = tmp_path / "four.csv"
    pd.DataFrame({"name": names, "split": "test"}).to_csv(split, index=False)
    config = yaml.safe_load(clinicdb_only(tmp_path, split).read_text())
    config["test_sets"] += [
        {"key": "neg", "name": "polyp-free", "root": "endotect-2020/negatives", "negatives": True},
        {**config["test_sets"][0], "key": "halves", "name": "halves", "polyp_free_views": True},
    ]
    eight = tmp_path / "eight.csv"  # the first four test frames' polyps leave no half free
    pd.read_csv(CLINICDB_TEST).query("split == 'test'").head(8).to_csv(eight, index=False)
    config["test_sets"][-1]["split_file"] = str(eight)
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(config))
    summary = main_and_read(
        tmp_path, f"--onnx={REPO / 'models' / 'polypseg-192.fp16.onnx'}", f"--config={path}"
    )
    clinic, negatives = summary["test_sets"]["cvc-clinicdb"], summary["test_sets"]["neg"]
    maps = sorted((tmp_path / "out" / "cvc-clinicdb" / "maps").glob("*.png"))
    assert [p.stem for p in maps] == sorted(str(n) for n in names)
    port = []
    for p in maps:
        truth = np.asarray(Image.open(DATA / "cvc-clinicdb" / "masks" / p.name).convert("L")) > 128
        port.append(main_m_dice(np.asarray(Image.open(p)), truth))
    assert clinic["meanDic"]["value"] == pytest.approx(np.stack(port).mean(0).mean(), abs=0.002)
    assert 0.0 <= clinic["dice"]["value"] <= 1.0  # ours, thresholded, reported beside
    # per frame: Dice is the harmonic mean of precision and recall; the worst frames drawn
    rows = pd.read_csv(tmp_path / "out" / "cvc-clinicdb" / "per_image.csv")
    p, r = rows.precision, rows.recall
    assert np.allclose(rows.dice, np.where(p + r > 0, 2 * p * r / (p + r + 1e-12), 0), atol=1e-4)
    worst = Image.open(tmp_path / "out" / "cvc-clinicdb" / "worst_cases.png")
    assert worst.height == 4 * 204  # the four frames, one row each
    flagged = Image.open(tmp_path / "out" / "neg" / "worst_cases.png")  # largest false areas
    assert flagged.height == min(8, negatives["frames_with_polyp"]) * 204
    assert negatives["images"] == 20 and 0 <= negatives["frames_with_polyp"] <= 20
    table = (tmp_path / "out" / "results.md").read_text()
    assert "frames with a predicted polyp" in table and "views with a predicted polyp" in table
    # the polyp-free halves of the four frames: each one scored, none touching its frame's polyp
    halves = pd.read_csv(tmp_path / "out" / "halves" / "per_image.csv")
    assert summary["test_sets"]["halves"]["images"] == len(halves) > 0
    assert set(halves.view) <= {"left", "right", "top", "bottom"}
    for name, view in zip(halves.name, halves.view, strict=True):
        truth = np.asarray(Image.open(DATA / "cvc-clinicdb" / "masks" / f"{name}.png").convert("L"))
        h, w = truth.shape
        part = {
            "left": truth[:, : w // 2],
            "right": truth[:, w - w // 2 :],
            "top": truth[: h // 2],
            "bottom": truth[h - h // 2 :],
        }[view]
        assert not (part > 127).any(), (name, view)


@pytest.mark.skipif(not (DATA / "endotect-2020").is_dir(), reason="EndoTect not at ../shared")
def test_benchmark_of_the_shipped_default_reproduces_the_model_card(tmp_path):
    """`polypseg benchmark` with the shipped default gives the model card's per-dataset table and
    its polyp-free count, and the default's row of docs/results.md, to the printed digit."""
    card = (REPO / "docs" / "model_card.md").read_text()
    results_row = next(
        line
        for line in (REPO / "docs" / "results.md").read_text().splitlines()
        if line.startswith("| **`models/polypseg.onnx`**")
    )
    summary = main_and_read(
        tmp_path,
        f"--onnx={REPO / 'models' / 'polypseg.onnx'}",
        f"--config={REPO / 'configs' / 'benchmark' / 'pranet.yaml'}",
    )["test_sets"]
    labels = {
        "kvasir": "Kvasir-SEG, PraNet test (100)",
        "cvc-clinicdb": "CVC-ClinicDB, PraNet test (62",
        "endotect": "EndoTect 2020 (200",
    }
    for key, label in labels.items():
        row = next(line for line in card.splitlines() if line.startswith(f"| {label}"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        scored, (low, high) = summary[key], summary[key]["meanDic"]["ci95"]
        printed = f"{scored['meanDic']['value']:.3f} [{low:.3f}, {high:.3f}]"  # seeded bootstrap
        assert printed == cells[1], (key, printed, cells[1])
        assert f"{scored['dice']['value']:.3f}" == cells[-1], (key, cells[-1])
        assert cells[1] in results_row, (key, cells[1])
    flagged = summary["endotect-negatives"]["frames_with_polyp"]
    assert f"a polyp is predicted in **{flagged} of 20**" in card
    assert results_row.endswith(f"| {flagged} of 20 |")

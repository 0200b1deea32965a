"""Several datasets in one DataModule (the papers' Kvasir + ClinicDB protocol), ClinicDB's video
sequences, and splits that keep a video on one side."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from polypseg.cli import main
from polypseg.data.datamodule import KvasirSegDataModule
from polypseg.data.sampling import SeededShuffle
from polypseg.data.sequences import read_groups, recover_sequences, segment
from polypseg.data.sources import Source, sample_weights
from polypseg.data.splits import carve_validation, group_split

from conftest import KVASIR, REPO

pytestmark = pytest.mark.data  # reads images from ../shared/data

CLINICDB = KVASIR.parent / "cvc-clinicdb"
SPLITS = REPO / "data" / "splits"
SMOKE = str(REPO / "configs" / "smoke.yaml")


def test_segment_finds_the_cuts_between_runs():
    rng = np.random.default_rng(0)
    means = np.repeat([[0.0, 1.0], [3.0, 0.0], [1.0, 4.0]], [5, 3, 6], axis=0)
    starts = segment(means + rng.normal(0, 0.1, means.shape), 3)
    assert starts == [0, 5, 8]
    with pytest.raises(ValueError, match="cannot cut 14 frames into 20"):
        segment(means, 20)


def test_recover_sequences_on_real_frames_of_two_videos(tmp_path):
    """ClinicDB frames 1-5 (video 1) and 26-30 (video 2, another polyp) in recording order."""
    paths = [CLINICDB / "images" / f"{n}.png" for n in [1, 2, 3, 4, 5, 26, 27, 28, 29, 30]]
    assert recover_sequences(paths, 2) == [1] * 5 + [2] * 5


def test_committed_clinicdb_sequences_and_sequence_disjoint_split():
    groups = read_groups(SPLITS / "clinicdb_sequences.csv")
    assert len(groups) == 612 and groups.nunique() == 31
    numbers = groups.astype(int).to_numpy()
    assert (np.diff(numbers) >= 0).all()  # contiguous runs of frame numbers
    split = pd.read_csv(SPLITS / "clinicdb_sequences_70_15_15.csv", dtype=str).set_index("name")
    sides = split.split.groupby(groups).nunique()
    assert (sides == 1).all(), "a sequence has frames on two sides"
    assert set(split.split) == {"train", "val", "test"}
    again = group_split(groups, (0.7, 0.15, 0.15), seed=42).set_index("name").split
    assert again.equals(split.split)


def test_val_carved_by_whole_sequences():
    frame = pd.DataFrame(
        {"name": [str(i) for i in range(40)], "split": ["train"] * 40, "mask_fraction": 0.1}
    )
    groups = pd.Series([str(i // 5) for i in range(40)], index=frame.name)
    carved = carve_validation(frame[["name", "split"]], frame, 0.25, seed=0, groups=groups)
    val_groups = set(groups[carved.name[carved.split == "val"]])
    train_groups = set(groups[carved.name[carved.split == "train"]])
    assert len(val_groups) == 2 and not val_groups & train_groups


def test_weighted_sampling_gives_each_source_its_share():
    weights = [1.0 / 10] * 10 + [3.0 / 90] * 90  # source A (10 samples): 1 part, B: 3 parts
    sampler = SeededShuffle(100, seed=7, weights=weights)
    drawn = np.array([i for epoch in range(20) for i, _ in (sampler.set_epoch(epoch), sampler)[1]])
    assert abs((drawn < 10).mean() - 0.25) < 0.03
    sampler.set_epoch(3)
    assert list(sampler) == list(sampler)


def test_source_rules_are_checked_when_configured():
    with pytest.raises(ValueError, match="lower-case letters"):
        Source("Kvasir SEG", "kvasir-seg")
    with pytest.raises(ValueError, match="weight must be > 0"):
        Source("kvasir", "kvasir-seg", weight=0)
    with pytest.raises(ValueError, match="each name once"):
        KvasirSegDataModule(sources=[Source("a", "x"), Source("a", "y")]).build_manifest()


def _sources_of(data_config: str) -> list[Source]:
    """The sources a ``configs/data/`` file lists."""
    config = yaml.safe_load((REPO / "configs" / "data" / data_config).read_text())
    return [Source(**s) for s in config["data"]["sources"]]


def _manifest_of(data_config: str) -> pd.DataFrame:
    """The manifest a ``configs/data/`` file builds on the real datasets."""
    sources = _sources_of(data_config)
    for source in sources:
        source.split_file = str(REPO / source.split_file)
        source.sequences_file = source.sequences_file and str(REPO / source.sequences_file)
    return KvasirSegDataModule(sources=sources, data_dir=str(KVASIR.parent)).build_manifest()


@pytest.fixture(scope="module")
def protocol_manifest() -> pd.DataFrame:
    return _manifest_of("pranet_protocol.yaml")


def test_protocol_config_builds_the_papers_training_set(protocol_manifest):
    """Kvasir 900 (90 val carved) + ClinicDB 550 (val = whole sequences), both test parts."""
    manifest = protocol_manifest
    counts = manifest.groupby(["source", "split"]).size().to_dict()
    assert counts[("kvasir", "test")] == 100 and counts[("clinicdb", "test")] == 62
    assert counts[("kvasir", "train")] + counts[("kvasir", "val")] == 900
    assert counts[("kvasir", "val")] == 90
    clinic = manifest[manifest.source == "clinicdb"]
    groups = read_groups(SPLITS / "clinicdb_sequences.csv")
    sequence = clinic.name.str.removeprefix("clinicdb/").map(groups)
    val, train = set(sequence[clinic.split == "val"]), set(sequence[clinic.split == "train"])
    assert val and not val & train
    assert manifest.name.str.startswith(("kvasir/", "clinicdb/")).all()


def _two_source_dir(tmp_path: Path, tiny_root: Path) -> tuple[Path, Path]:
    """data dir with a tiny Kvasir copy and 10 ClinicDB frames of two videos, and a sources
    YAML pointing at them."""
    data_dir = tmp_path / "datasets"
    shutil.copytree(tiny_root, data_dir / "kvasir")
    clinic = data_dir / "clinic"
    names = [1, 2, 3, 4, 5, 26, 27, 28, 29, 30]
    for sub in ("images", "masks"):
        (clinic / sub).mkdir(parents=True)
        for n in names:
            shutil.copy(CLINICDB / sub / f"{n}.png", clinic / sub / f"{n}.png")
    splits = ["train"] * 4 + ["test"] + ["train"] * 4 + ["test"]
    pd.DataFrame({"name": names, "split": splits}).to_csv(clinic / "split.csv", index=False)
    pd.DataFrame({"name": names, "sequence": [1] * 5 + [2] * 5}).to_csv(
        clinic / "sequences.csv", index=False
    )
    config = tmp_path / "sources.yaml"
    sources = [
        {"name": "kvasir", "data_root": "kvasir", "split_file": str(tiny_root / "split.csv")},
        {
            "name": "clinicdb",
            "data_root": "clinic",
            "split_file": str(clinic / "split.csv"),
            "sequences_file": str(clinic / "sequences.csv"),
            "weight": 1.0,
        },
    ]
    config.write_text(yaml.safe_dump({"data": {"split_file": None, "sources": sources}}))
    return data_dir, config


def test_fit_and_test_on_two_real_sources_log_per_source_metrics(tmp_path, tiny_root, monkeypatch):
    data_dir, sources = _two_source_dir(tmp_path, tiny_root)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("POLYPSEG_DATA_DIR", str(data_dir))
    common = ["--config", SMOKE, "--config", str(sources), "--data.limit_per_split", "8"]
    # explicit: MLFlowLogger's default URI is the environment's when lightning was first imported
    tracking = f"--trainer.logger.init_args.tracking_uri=sqlite:///{tmp_path}/mlflow.db"
    main(
        [
            "fit",
            *common,
            tracking,
            "--data.val_fraction",
            "0.5",
            "--trainer.limit_val_batches",
            "1.0",
        ]
    )
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    run = mlflow.search_runs(experiment_names=["polypseg-smoke"], output_format="list")[0]
    assert {"val/dice", "val/dice/kvasir", "val/dice/clinicdb", "val/iou/clinicdb"} <= set(
        run.data.metrics
    )
    ckpt = tmp_path / "checkpoints" / "smoke" / "last.ckpt"
    main(["test", *common, "--ckpt_path", str(ckpt), "--trainer.logger", "false"])
    (report,) = (tmp_path / "reports" / "smoke").glob("*/per_image.csv")
    per_image = pd.read_csv(report)
    assert per_image.groupby("source").size().to_dict() == {"clinicdb": 2, "kvasir": 3}
    assert per_image.name.str.startswith(("kvasir/", "clinicdb/")).all()
    assert np.isfinite(per_image.dice).all()
    # predictions land in one folder per source
    main(
        [
            "predict",
            *common,
            f"--ckpt_path={ckpt}",
            "--trainer.logger=false",
            "--trainer.callbacks+=polypseg.callbacks.MaskWriter",
            "--trainer.callbacks.output_dir=predictions",
        ]
    )
    written = sorted(
        p.relative_to(tmp_path / "predictions") for p in (tmp_path / "predictions").rglob("*.png")
    )
    assert {p.parts[0] for p in written} == {"kvasir", "clinicdb"}
    assert Image.open(tmp_path / "predictions" / written[0]).mode == "L"


def test_committed_protocol_val_is_what_the_datamodule_carves(protocol_manifest):
    """configs/benchmark/protocol_val.yaml scores exactly the val the protocol trains against."""
    manifest = protocol_manifest
    for name in ("kvasir", "clinicdb"):
        committed = pd.read_csv(SPLITS / "protocol" / f"{name}.csv", dtype=str)
        carved = manifest[manifest.source == name]
        assert set(committed.name[committed.split == "val"]) == set(
            carved.name[carved.split == "val"].str.removeprefix(f"{name}/")
        )


def test_sequence_disjoint_protocol_and_its_benchmark_sets(protocol_manifest):
    """configs/data/protocol_sequences.yaml: the same Kvasir part as the papers' protocol, ClinicDB
    by whole videos; the two benchmark configs score exactly its val and test parts."""
    manifest = _manifest_of("protocol_sequences.yaml")
    counts = manifest.groupby(["source", "split"]).size().to_dict()
    assert [counts["clinicdb", part] for part in ("train", "val", "test")] == [427, 105, 80]
    kvasir = manifest[manifest.source == "kvasir"]
    assert kvasir.equals(protocol_manifest[protocol_manifest.source == "kvasir"])
    clinic = manifest[manifest.source == "clinicdb"]
    sequence = clinic.name.str.removeprefix("clinicdb/").map(
        read_groups(SPLITS / "clinicdb_sequences.csv")
    )
    assert (
        sequence.groupby(sequence).transform(lambda s: clinic.split[s.index].nunique()) == 1
    ).all()
    for config, part in (("sequences_val.yaml", "val"), ("sequences.yaml", "test")):
        test_sets = yaml.safe_load((REPO / "configs" / "benchmark" / config).read_text())[
            "test_sets"
        ]
        (entry,) = [t for t in test_sets if t["root"] == "cvc-clinicdb"]
        listed = pd.read_csv(REPO / entry["split_file"], dtype=str)
        scored = set(listed.name[listed.split == entry.get("split", "test")])
        assert scored == set(clinic.name[clinic.split == part].str.removeprefix("clinicdb/"))


def test_balanced_protocol_draws_each_source_for_half_an_epoch(protocol_manifest):
    """configs/data/pranet_protocol_balanced.yaml: the protocol's manifest, each source half of the
    draws of a training epoch (ClinicDB's 483 frames weigh as much as Kvasir's 810)."""
    sources = _sources_of("pranet_protocol_balanced.yaml")
    assert _manifest_of("pranet_protocol_balanced.yaml").equals(protocol_manifest)
    train = protocol_manifest[protocol_manifest.split == "train"].reset_index(drop=True)
    sampler = SeededShuffle(len(train), seed=0, weights=sample_weights(train, sources))
    drawn = train.source.iloc[[i for i, _ in sampler]].value_counts(normalize=True)
    assert drawn["clinicdb"] == pytest.approx(0.5, abs=0.03)
    assert train.source.value_counts(normalize=True)["clinicdb"] < 0.38  # once each: 483 of 1293

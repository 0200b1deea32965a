"""`polypseg tune`: an Optuna study of real `polypseg fit` trials, shared by two worker processes
through one sqlite study, and a best config that re-trains to its score."""

from __future__ import annotations

import os
import subprocess

import mlflow
import optuna
import pytest
import yaml

from polypseg.cli import main
from polypseg.sweeps.study import read_space

from conftest import REPO

pytestmark = [pytest.mark.data, pytest.mark.slow]
SMOKE = str(REPO / "configs" / "smoke.yaml")
BIN = REPO / ".venv" / "bin"


def test_space_errors_name_the_key_and_rule(tmp_path):
    bad = tmp_path / "space.yaml"
    bad.write_text("model.optimizer.init_args.lr: {type: float, low: 0.001}\n")
    with pytest.raises(ValueError, match=r"'model.optimizer.init_args.lr' \(float\) needs high"):
        read_space(bad)
    bad.write_text("data.image_size: {type: number}\n")
    with pytest.raises(ValueError, match="needs type: one of float, int, categorical"):
        read_space(bad)


def test_two_workers_share_one_study_and_the_best_config_retrains(tmp_path, tiny_root, monkeypatch):
    (tmp_path / "short.yaml").write_text(
        yaml.safe_dump(
            {
                "trainer": {"max_epochs": 2, "limit_train_batches": 2},
                "model": {
                    "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.002}}
                },
                "data": {"split_file": str(tiny_root / "split.csv")},
            }
        )
    )
    (tmp_path / "space.yaml").write_text(
        "model.optimizer.init_args.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
    )
    env = {
        **os.environ,
        "POLYPSEG_DATA_ROOT": str(tiny_root),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
    }
    command = [str(BIN / "polypseg"), "tune", "--config", SMOKE, "--config", "short.yaml"]
    command += ["--space", "space.yaml", "--n_trials", "2", "--prune", "false"]
    command += ["--storage", f"sqlite:///{tmp_path}/study.db", "--study_name", "two-workers"]
    # a team's stores exist before its workers start (the schemas are not created twice at once)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    mlflow.MlflowClient().search_experiments()
    optuna.create_study(
        storage=f"sqlite:///{tmp_path}/study.db", study_name="two-workers", direction="maximize"
    )
    workers = [
        subprocess.Popen([*command, "--output", f"w{i}"], cwd=tmp_path, env=env) for i in (1, 2)
    ]
    assert [w.wait(timeout=600) for w in workers] == [0, 0]
    study = optuna.load_study(study_name="two-workers", storage=f"sqlite:///{tmp_path}/study.db")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both workers contributed
    runs = mlflow.search_runs(experiment_names=["polypseg-tune"], output_format="list")
    parents = [r for r in runs if r.data.tags.get("role") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(children) == 4 and {r.data.tags["mlflow.parentRunId"] for r in children} <= {
        p.info.run_id for p in parents
    }
    # the best trial's values, as a config, re-train to the best trial's score
    best = study.best_trial
    # the worker that finished last saw every trial
    best_yaml = max(tmp_path.glob("w*/best.yaml"), key=lambda p: p.stat().st_mtime)
    assert (
        yaml.safe_load(best_yaml.read_text())["model"]["optimizer"]["init_args"]["lr"]
        == (best.params["model.optimizer.init_args.lr"])
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("POLYPSEG_DATA_ROOT", str(tiny_root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/retrain.db")
    retrain = f"--trainer.logger.init_args.tracking_uri=sqlite:///{tmp_path}/retrain.db"
    main(["fit", "--config", SMOKE, "--config", "short.yaml", "--config", str(best_yaml), retrain])
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/retrain.db")
    (run,) = mlflow.search_runs(experiment_names=["polypseg-smoke"], output_format="list")
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "val/dice")
    assert max(m.value for m in history) == pytest.approx(best.value, abs=1e-4)


def test_a_trial_below_the_median_is_pruned_and_stops_early(tmp_path, tiny_root, monkeypatch):
    """Five finished trials that scored a perfect val Dice every epoch: a real trial falls below
    their median at its second validation, the Lightning pruning callback stops its fit there and
    the study records it as pruned (its MLflow run kept, its epochs cut short)."""
    (tmp_path / "long.yaml").write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "max_epochs": 5,
                    "limit_train_batches": 1,
                    # the logger's default URI was read from the environment at its first import
                    "logger": {
                        "class_path": "lightning.pytorch.loggers.MLFlowLogger",
                        "init_args": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"},
                    },
                },
                "model": {
                    "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.002}}
                },
                "data": {"split_file": str(tiny_root / "split.csv")},
            }
        )
    )
    (tmp_path / "space.yaml").write_text(
        "model.optimizer.init_args.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
    )
    storage = f"sqlite:///{tmp_path}/study.db"
    study = optuna.create_study(storage=storage, study_name="prune", direction="maximize")
    lr = optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    for _ in range(5):  # MedianPruner's startup trials
        study.add_trial(
            optuna.trial.create_trial(
                params={"model.optimizer.init_args.lr": 1e-3},
                distributions={"model.optimizer.init_args.lr": lr},
                value=1.0,
                intermediate_values={epoch: 1.0 for epoch in range(5)},
            )
        )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("POLYPSEG_DATA_ROOT", str(tiny_root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_tracking_uri(
        f"sqlite:///{tmp_path}/mlflow.db"
    )  # earlier tests set another in-process
    study_args = ["--storage", storage, "--study_name", "prune", "--n_trials", "1"]
    main(["tune", "--config", SMOKE, "--config", "long.yaml", "--space", "space.yaml", *study_args])
    trial = optuna.load_study(study_name="prune", storage=storage).trials[-1]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert sorted(trial.intermediate_values) == [
        0,
        1,
    ]  # stopped at the first epoch it may be pruned
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = [
        r
        for r in mlflow.search_runs(experiment_names=["polypseg-tune"], output_format="list")
        if r.data.tags.get("optuna_trial") == str(trial.number)
    ]
    assert len(mlflow.MlflowClient().get_metric_history(run.info.run_id, "val/dice")) == 2

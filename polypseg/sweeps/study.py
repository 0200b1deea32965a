"""``polypseg tune``: an Optuna study whose trials are real ``polypseg fit`` runs.

Each trial samples the search space (any LightningCLI key, e.g. ``model.optimizer.init_args.lr``),
runs ``fit`` in-process with Optuna's Lightning pruning callback watching the monitored metric, and
logs an MLflow run tagged as a child of the study's parent run. The study lives in an RDB: the
default ``sqlite:///optuna.db`` lets several processes on one machine share it; a PostgreSQL or
MySQL URL lets workers on many machines share one study (start ``polypseg tune`` on each).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import yaml

KINDS = ("float", "int", "categorical")


def read_space(path: str | Path) -> dict[str, dict]:
    """A search space YAML: ``key: {type: float|int|categorical, low, high, log, choices}``.

    Example:
        ``model.optimizer.init_args.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}``
    """
    space = yaml.safe_load(Path(path).read_text()) or {}
    for key, spec in space.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind not in KINDS:
            raise ValueError(f"{path}: '{key}' needs type: one of {', '.join(KINDS)}")
        need = ("choices",) if kind == "categorical" else ("low", "high")
        missing = [k for k in need if k not in spec]
        if missing:
            raise ValueError(f"{path}: '{key}' ({kind}) needs {', '.join(missing)}")
    if not space:
        raise ValueError(f"{path}: empty search space; see configs/sweeps/lr_wd.yaml")
    return space


def suggest(trial, space: dict[str, dict]) -> dict:
    """One value per key from ``trial``."""
    values = {}
    for key, spec in space.items():
        if spec["type"] == "categorical":
            values[key] = trial.suggest_categorical(key, spec["choices"])
        elif spec["type"] == "int":
            values[key] = trial.suggest_int(
                key, spec["low"], spec["high"], log=spec.get("log", False)
            )
        else:
            values[key] = trial.suggest_float(
                key, spec["low"], spec["high"], log=spec.get("log", False)
            )
    return values


def _parent_run(study_name: str, experiment: str) -> str:
    """The MLflow run every trial of this study nests under (one per study, shared by workers)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        try:
            experiment_id = client.create_experiment(experiment)
        except MlflowException:  # another worker created it first
            experiment_id = client.get_experiment_by_name(experiment).experiment_id
    else:
        experiment_id = found.experiment_id
    runs = client.search_runs(
        [experiment_id], f"tags.optuna_study = '{study_name}' and tags.role = 'parent'"
    )
    if runs:
        return runs[0].info.run_id
    run = client.create_run(experiment_id, run_name=f"study {study_name}")
    client.set_tag(run.info.run_id, "optuna_study", study_name)
    client.set_tag(run.info.run_id, "role", "parent")
    return run.info.run_id


def tune(
    fit_config: list[str],
    space: str,
    n_trials: int = 10,
    storage: str = "sqlite:///optuna.db",
    study_name: str = "polypseg",
    monitor: str = "val/dice",
    direction: str = "maximize",
    prune: bool = True,
    experiment_name: str = "polypseg-tune",
    output: str = "tune",
) -> dict:
    """Run ``n_trials`` trials of ``polypseg fit --config CONFIG…`` on one Optuna study.

    Args:
        fit_config: the fit configs, in order (``polypseg tune --config A --config B`` passes
            them here, as ``polypseg fit --config A --config B`` would read them).
        space: search-space YAML (``configs/sweeps/*.yaml``).
        n_trials: trials this worker runs (other workers on the same study add theirs).
        storage: Optuna RDB URL; share it between workers to scale out.
        study_name: the study to create or join.
        monitor: metric each trial reports (best epoch of the run); pruning watches it per epoch.
        prune: stop unpromising trials early (median pruner, Optuna's Lightning callback).
        experiment_name: MLflow experiment of the parent run and the trials.
        output: folder of ``best.yaml`` (the best trial's values, a config for ``polypseg fit``).

    Example:
        ``polypseg tune --config configs/unet.yaml --space configs/sweeps/lr_wd.yaml --n_trials 20``
    """
    import optuna
    from optuna_integration import PyTorchLightningPruningCallback

    from polypseg.cli import lightning_main

    search = read_space(space)
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction=direction,
        load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(n_warmup_steps=1)
        if prune
        else optuna.pruners.NopPruner(),
    )
    parent = _parent_run(study_name, experiment_name)
    worker = f"{socket.gethostname()}:{os.getpid()}"

    def objective(trial) -> float:
        values = suggest(trial, search)
        trial.set_user_attr("worker", worker)
        args = [a for c in fit_config for a in ("--config", c)]
        args += [f"--{key}={value}" for key, value in values.items()]
        args += [
            f"--trainer.logger.init_args.experiment_name={experiment_name}",
            f"--trainer.logger.init_args.run_name=trial-{trial.number}",
            f'--trainer.logger.init_args.tags={{"mlflow.parentRunId": "{parent}", '
            f'"optuna_trial": "{trial.number}", "optuna_study": "{study_name}"}}',
        ]
        pruning = PyTorchLightningPruningCallback(trial, monitor=monitor)
        cli = lightning_main(args, extra_callbacks=[pruning], run=False)
        _own_folder(cli.trainer, Path(output) / f"trial-{trial.number}")
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        pruning.check_pruned()
        return _score(cli.trainer, monitor, trial.number)

    study.optimize(objective, n_trials=n_trials)
    best = study.best_trial
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    best_config = _nested(best.params)
    (out / "best.yaml").write_text(
        f"# best trial {best.number} of study '{study_name}': {monitor} {best.value:.4f}\n"
        + yaml.safe_dump(best_config, sort_keys=False)
    )
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    print(
        f"study '{study_name}': {len(study.trials)} trials ({len(done)} complete); best "
        f"#{best.number} {monitor} {best.value:.4f} {best.params}; config {out / 'best.yaml'}"
    )
    return {
        "best_value": best.value,
        "best_params": best.params,
        "best_config": str(out / "best.yaml"),
    }


def _score(trainer, monitor: str, number: int) -> float:
    """The run's best ``monitor`` (its checkpoint callback's, when that watches it) or last."""
    checkpoint = trainer.checkpoint_callback
    if (
        checkpoint is not None
        and checkpoint.monitor == monitor
        and checkpoint.best_model_score is not None
    ):
        return float(checkpoint.best_model_score)
    value = trainer.callback_metrics.get(monitor)
    if value is None:
        raise ValueError(f"trial {number}: no '{monitor}' was logged; check --monitor")
    return float(value)


def _own_folder(trainer, folder: Path) -> None:
    """Checkpoints and ONNX file of one trial in its own folder (trials run side by side)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from polypseg.callbacks import OnnxExport

    for callback in trainer.callbacks:
        if isinstance(callback, ModelCheckpoint):
            callback.dirpath = str(folder / "checkpoints")
        elif isinstance(callback, OnnxExport):
            callback.path = folder / "model.onnx"


def _nested(flat: dict) -> dict:
    """``{"a.b.c": 1}`` → ``{"a": {"b": {"c": 1}}}`` (a YAML config LightningCLI reads)."""
    nested: dict = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested

"""The MLflow Model Registry as a team uses it: an exported ONNX file becomes a model version (MLflow's
onnx flavour, with polypseg's metadata), linked to the run that trained it, and an alias (``champion``)
marks the one to serve. Commands then take ``--onnx models:/<name>@<alias>``
(:mod:`polypseg.runtime.model_files`)."""

from __future__ import annotations

import json
from pathlib import Path

from polypseg.runtime.predictor import OnnxPredictor


def _training_run(run_id: str | None):
    """The run that trained the checkpoint when this tracking server knows it, else a new run."""
    import mlflow

    if run_id:
        try:
            return mlflow.start_run(run_id=run_id)
        except mlflow.exceptions.MlflowException:
            pass  # trained against another tracking store: a registration run, tagged with the id
    return mlflow.start_run(run_name="register", tags={"polypseg.training_run_id": run_id or ""})


def register_onnx(
    onnx: str | Path,
    name: str,
    alias: str | None = None,
    run_id: str | None = None,
    metrics: dict | None = None,
) -> dict:
    """Log ``onnx`` as a new version of registered model ``name`` (tracking server from
    ``MLFLOW_TRACKING_URI``); ``alias`` points at it; ``metrics`` (val/test) are logged on the run
    and tagged on the version.

    Args:
        onnx: an exported polypseg ONNX file.
        name: registered model name.
        alias: e.g. ``champion``, moved to this version.
        run_id: the training run (the checkpoint's ``mlflow_run_id``).
        metrics: numbers to record with the version.

    Returns:
        ``{"name", "version", "alias", "run_id", "uri"}``.
    """
    import mlflow
    import onnx as onnx_lib
    from mlflow import MlflowClient

    metadata = OnnxPredictor(onnx, threads=1).metadata
    metrics = {k: float(v) for k, v in (metrics or metadata.get("val_metrics", {})).items()}
    with _training_run(run_id) as run:
        info = mlflow.onnx.log_model(
            onnx_lib.load(str(onnx)),
            name="onnx-model",
            registered_model_name=name,
            metadata={"polypseg": json.dumps(metadata, default=str)},
            save_as_external_data=False,
        )
        if metrics:
            mlflow.log_metrics({k.replace("/", "_"): v for k, v in metrics.items()})
    version = str(info.registered_model_version)
    client = MlflowClient()
    for key, value in {**metrics, "git_sha": metadata.get("git_sha")}.items():
        client.set_model_version_tag(name, version, key, str(value))
    if alias:
        client.set_registered_model_alias(name, alias, version)
    uri = f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}"
    print(f"registered {onnx} as {name} version {version} (run {run.info.run_id}): {uri}")
    return {"name": name, "version": version, "alias": alias, "run_id": run.info.run_id, "uri": uri}

"""MLflow as a team runs it: a real `mlflow server` on loopback (SQLite backend, local artifact store).
`polypseg fit` logs to it over HTTP; the run, its metrics and its artifacts read back through the
client; `polypseg export --register_as` makes the ONNX file a registry version with an alias, linked to
the training run; and `infer` / `evaluate` run `models:/<name>@champion`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from test_serving import free_port, start

pytestmark = pytest.mark.data  # trains on real images

BIN = Path(sys.executable).parent
NAME = "polypseg-ci"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start(
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination",
            (folder / "artifacts").as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        folder,
        f"{url}/health",
        timeout=180,
    )
    yield url
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=60)


def polypseg(args: list[str], cwd: Path, url: str, tiny_root: Path) -> str:
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "POLYPSEG_DATA_ROOT": str(tiny_root)}
    result = subprocess.run(
        [str(BIN / "polypseg"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def test_fit_logs_to_a_server_and_export_registers_a_champion(server, tiny_root, tmp_path):
    from mlflow import MlflowClient

    (tmp_path / "data").symlink_to(REPO / "data")
    polypseg(
        [
            "fit",
            f"--config={REPO / 'configs' / 'smoke.yaml'}",
            f"--data.split_file={tiny_root / 'split.csv'}",
        ],
        tmp_path,
        server,
        tiny_root,
    )
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("polypseg-smoke")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert {"val/dice", "train/loss_epoch"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "onnx", "val_overlays"} <= artifacts
    assert client.list_artifacts(run.info.run_id, "onnx")[0].file_size > 100_000

    out = polypseg(
        [
            "export",
            "--ckpt_path=checkpoints/smoke/last.ckpt",
            "--output=exported/model.onnx",
            f"--register_as={NAME}",
            "--alias=champion",
        ],
        tmp_path,
        server,
        tiny_root,
    )
    assert f"models:/{NAME}@champion" in out
    version = client.get_model_version_by_alias(NAME, "champion")
    assert version.run_id == run.info.run_id  # linked to the run that trained it
    assert 0 <= float(version.tags["val/dice"]) <= 1 and version.tags["git_sha"]
    logged = client.get_logged_model(version.model_id) if version.model_id else None
    metadata = json.loads(logged.metadata["polypseg"] if logged else "{}") if logged else {}
    assert not logged or metadata["processing"]["size"] == 64

    polypseg(
        [
            "infer",
            f"--onnx=models:/{NAME}@champion",
            f"--input={tiny_root / 'images'}",
            "--output=masks",
        ],
        tmp_path,
        server,
        tiny_root,
    )
    assert len(list((tmp_path / "masks").glob("*.png"))) == 12

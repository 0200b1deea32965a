"""The serving image's environment, built the way the Containerfile builds it: only the ``serve``
dependency group at its uv.lock versions plus polypseg itself, no torch. It must start
``polypseg serve`` on the shipped model and answer a real prediction."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from conftest import KVASIR, REPO
from test_serving import free_port, start

pytestmark = pytest.mark.data  # reads images from ../shared/data

EXPORT = ["export", "--frozen", "--only-group", "serve", "--no-emit-project"]
"""The Containerfile's ``uv export`` arguments; a test below holds the two together."""


def uv() -> str:
    found = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    if not Path(found).exists():
        pytest.fail("uv is missing: `make setup` installs it")
    return found


def test_containerfile_installs_the_serve_group_from_the_lock():
    text = (REPO / "Containerfile").read_text()
    assert f"uv {' '.join(EXPORT)} -o /tmp/serve.txt" in text
    assert "--require-hashes -r /tmp/serve.txt" in text
    assert "ORT_DISABLE_TELEMETRY=1" in text
    assert not (REPO / "requirements").exists(), "a hand-kept pin list is back"


@pytest.fixture(scope="module")
def serve_venv(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("serve-env")
    venv, requirements = folder / "venv", folder / "serve.txt"
    run = {"check": True, "capture_output": True, "cwd": REPO, "timeout": 600}
    subprocess.run([uv(), *EXPORT, "-o", str(requirements)], **run)
    subprocess.run([uv(), "venv", "--quiet", "--python", "3.11", str(venv)], **run)
    python = ["--python", str(venv / "bin" / "python")]
    subprocess.run(
        [uv(), "pip", "install", "--quiet", *python, "--require-hashes", "-r", str(requirements)],
        **run,
    )
    subprocess.run([uv(), "pip", "install", "--quiet", *python, "--no-deps", str(REPO)], **run)
    return venv


def test_serve_environment_has_no_training_stack(serve_venv):
    for module in ("torch", "lightning", "scipy", "albumentations"):
        result = subprocess.run(
            [str(serve_venv / "bin" / "python"), "-c", f"import {module}"], capture_output=True
        )
        assert result.returncode != 0, f"{module} is installed in the serve environment"


def test_serve_environment_serves_the_shipped_model(serve_venv, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start(
        [
            str(serve_venv / "bin" / "polypseg"),
            "serve",
            f"--onnx={REPO / 'models' / 'polypseg.onnx'}",
            f"--port={port}",
        ],
        tmp_path,
        f"{url}/health",
    )
    try:
        assert requests.get(f"{url}/health", timeout=10).json() == {"status": "ok"}
        image = sorted((KVASIR / "images").glob("*.jpg"))[0]
        for _ in range(60):  # /health answers while the worker may still be loading the model
            response = requests.post(f"{url}/predict", files={"file": image.open("rb")}, timeout=60)
            if response.status_code == 200:
                break
            time.sleep(0.5)
        assert response.status_code == 200, response.text
        mask = Image.open(io.BytesIO(response.content))
        assert mask.size == Image.open(image).size
        assert 0 < sum(1 for v in mask.getdata() if v) < mask.size[0] * mask.size[1]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)

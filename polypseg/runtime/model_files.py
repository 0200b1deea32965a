"""Where an exported model comes from: a file, or a version in an MLflow Model Registry.

Every command that runs an ONNX model (``serve``, ``demo``, ``infer``, ``evaluate``, ``benchmark``)
takes ``--onnx`` as a path or as ``models:/<name>@<alias>`` (or ``models:/<name>/<version>``); a
registry URI is downloaded through MLflow (imported only then: the serving image, without mlflow,
serves files) into a fresh private folder of this process, removed when it exits, so no other user
can plant a file there and a moved alias never finds a stale one.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

DEFAULT_ONNX = "models/polypseg.onnx"
ONNX_ENV = "POLYPSEG_MODEL"
REGISTRY_PREFIX = "models:/"


def is_registry_uri(onnx: str | Path) -> bool:
    return str(onnx).startswith(REGISTRY_PREFIX)


def _download(uri: str) -> Path:
    try:
        import mlflow
    except ImportError:
        raise FileNotFoundError(
            f"{uri}: a registry model needs mlflow (pip install mlflow), or pass the .onnx file"
        ) from None
    cache = tempfile.mkdtemp(prefix="polypseg-model-")  # mode 0700, a new name per call
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    try:
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=cache))
    except mlflow.exceptions.MlflowException as exc:
        raise FileNotFoundError(
            f"{uri}: not found in the MLflow registry at {mlflow.get_tracking_uri()} "
            f"({str(exc).splitlines()[0][:200]}); set MLFLOW_TRACKING_URI to the registry's server"
        ) from None
    files = sorted(folder.rglob("*.onnx"))
    if len(files) != 1:
        raise FileNotFoundError(f"{uri}: expected one .onnx file in the model, found {len(files)}")
    return files[0]


def locate_onnx(onnx: str | Path | None, use_default: bool = False) -> Path:
    """The local ONNX file for ``onnx`` (a path or a ``models:/`` URI).

    Args:
        onnx: a path, ``models:/<name>@<alias>`` or ``models:/<name>/<version>``.
        use_default: when ``onnx`` is empty, fall back to ``$POLYPSEG_MODEL``, then the shipped
            ``models/polypseg.onnx`` (what ``serve`` and ``demo`` do).

    Raises:
        FileNotFoundError: no such file, or the registry has no such model.

    Example:
        >>> locate_onnx(None, use_default=True).name
        'polypseg.onnx'
    """
    if not onnx and use_default:
        onnx = os.environ.get(ONNX_ENV) or DEFAULT_ONNX
    if not onnx:
        raise FileNotFoundError(
            "no ONNX model given: pass --onnx FILE or --onnx models:/NAME@ALIAS"
        )
    if is_registry_uri(onnx):
        return _download(str(onnx))
    path = Path(onnx)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such ONNX model; train and `make export`, or pass --onnx FILE "
            "(or models:/NAME@ALIAS from an MLflow registry)"
        )
    return path

"""What makes a killed and resumed ``polypseg fit`` one run: checkpoints written atomically next to
their target (a kill leaves a recognisable temp file, removed on the next start) and the MLflow
run continued from the id the checkpoint carries."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from polypseg.runtime.io import atomic_path

log = logging.getLogger(__name__)
ORPHANS = ".*.ckpt.*.tmp"
"""Temp files :func:`polypseg.runtime.io.atomic_path` leaves when a checkpoint write is killed."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, writing local files through ``atomic_path``: Lightning's
    own temp file lives in the system temp folder, where nothing can tell it from others."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if "://" in str(path):  # remote storage: Lightning's fsspec transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
        return None


def remove_orphans(folder: str | Path) -> list[Path]:
    """Delete the temp files of checkpoint writes that were killed; returns what was deleted."""
    removed = sorted(Path(folder).glob(ORPHANS)) if Path(folder).is_dir() else []
    for path in removed:
        log.warning("removing %s, left by a checkpoint write that was killed", path)
        path.unlink(missing_ok=True)
    return removed


def _checkpoint_dirs(config) -> list[Path]:
    callbacks = config.get("trainer", {}).get("callbacks") or []
    return [
        Path(c.init_args.dirpath)
        for c in callbacks
        if str(getattr(c, "class_path", "")).endswith("ModelCheckpoint")
        and c.init_args.get("dirpath")
    ]


def resolve_ckpt_path(config) -> Path | None:
    """The file ``--ckpt_path`` names (``last``: ``last.ckpt`` in a ModelCheckpoint's dirpath)."""
    ckpt = config.get("ckpt_path")
    if ckpt == "last":
        found = [d / "last.ckpt" for d in _checkpoint_dirs(config) if (d / "last.ckpt").is_file()]
        return found[0] if found else None
    return Path(ckpt) if ckpt and Path(ckpt).is_file() else None


def continue_mlflow_run(config) -> str | None:
    """Point an MLFlowLogger config at the run the resumed checkpoint logged to (its
    ``mlflow_run_id``), so one model has one history; returns that id."""
    from polypseg.models.checkpoints import load_checkpoint

    logger = config.get("trainer", {}).get("logger")
    path = resolve_ckpt_path(config)
    if path is None or not str(getattr(logger, "class_path", "")).endswith("MLFlowLogger"):
        return None
    run_id = load_checkpoint(path).get("mlflow_run_id")
    if run_id and not logger.init_args.get("run_id"):
        logger.init_args.run_id = run_id
        log.info("resuming MLflow run %s from %s", run_id, path)
    return run_id

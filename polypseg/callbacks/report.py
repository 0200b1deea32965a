"""Turn ``polypseg test`` into a report folder (and MLflow artifacts)."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import pandas as pd
from lightning.pytorch.loggers import MLFlowLogger

from polypseg.evaluation.report import MANIFEST_COLUMNS, write_report
from polypseg.runtime.provenance import git_sha
from polypseg.runtime.tta import tta_mode


class TestReport(L.Callback):
    """Writes ``metrics.json``, ``per_image.csv`` and plots of the test split into ``output_dir/<run_name>``
    (``run_name`` defaults to ``test-<time>``; a fixed name suits pipelines such as DVC)."""

    def __init__(self, output_dir: str = "reports", worst_k: int = 8, run_name: str | None = None):
        self.output_dir, self.worst_k, self.run_name = Path(output_dir), worst_k, run_name
        self.run_dir: Path | None = None

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        records = pl_module.gather_test_records()  # all ranks, padding removed (DDP)
        if not records or not trainer.is_global_zero:
            return
        dm = trainer.datamodule
        frame = dm.frame("test")
        probabilities = {frame.name.iloc[r["index"]]: r.pop("probability") for r in records}
        per_image = pd.DataFrame(records)
        per_image = (
            frame.iloc[per_image["index"]]
            .reset_index(drop=True)[[c for c in [*MANIFEST_COLUMNS, "source"] if c in frame]]
            .join(per_image.drop(columns=["index"]))
        )
        context = {
            "checkpoint": str(trainer.ckpt_path) if trainer.ckpt_path else None,
            "split_file": dm.split_file,
            "data_root": str(dm.root),
            "sources": [vars(s) for s in getattr(dm, "sources", [])],
            "processing": pl_module.processing.to_dict(),
            "tta": tta_mode(pl_module.tta) or False,
            "image_size": pl_module.image_size,
            "resolution": "original (probabilities resized back, then thresholded)",
            "git_sha": git_sha(),
        }
        self.run_dir = self.output_dir / (self.run_name or time.strftime("test-%Y%m%d-%H%M%S"))
        paths = write_report(
            per_image,
            self.run_dir,
            context,
            probabilities,
            dm.root,
            pl_module.processing,
            self.worst_k,
        )
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                for path in paths:
                    logger.experiment.log_artifact(
                        logger.run_id, str(path), artifact_path="test_report"
                    )
        dice = per_image.dice
        print(
            f"test mDice {dice.mean():.4f} mIoU {per_image.iou.mean():.4f} on {len(dice)} images; report: {self.run_dir.resolve()}"
        )

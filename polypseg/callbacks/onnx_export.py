"""Export the best checkpoint to ONNX at the end of ``fit`` (with its parity check)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np

from polypseg.export.onnx import export_onnx


class OnnxExport(L.Callback):
    """Writes ``path`` (default ``<log_dir>/model.onnx``) from the best checkpoint; logs it to MLflow.

    Args:
        path: output file; ``None`` puts ``model.onnx`` in the trainer's log dir.
        parity_images: how many validation images (training images when a final fit has no
            val split) the parity check runs on.
        tolerance: largest allowed |p_onnx - p_torch|; past it the export fails and writes nothing.
    """

    def __init__(self, path: str | None = None, parity_images: int = 8, tolerance: float = 1e-3):
        self.path, self.parity_images, self.tolerance = path, parity_images, tolerance

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.interrupted:
            return
        checkpoint = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
        module = (
            type(pl_module).load_from_checkpoint(checkpoint, map_location="cpu")
            if checkpoint
            else pl_module
        )
        datamodule = trainer.datamodule
        dataset = datamodule.datasets[datamodule.check_split]
        images = [np.asarray(dataset.samples.images[r]) for r in dataset.rows[: self.parity_images]]
        out = Path(self.path or Path(trainer.log_dir or ".") / "model.onnx")
        score = getattr(trainer.checkpoint_callback, "best_model_score", None)
        extra = {
            "checkpoint": checkpoint,
            "val_metrics": {"val/dice": float(score)} if score is not None else {},
        }
        report = export_onnx(module, out, images, self.tolerance, extra)
        print(
            f"ONNX model: {out.resolve()} (parity max|Δp| {report.max_abs_diff:.1e}, mask Dice {report.mask_dice:.4f})"
        )
        logger = trainer.logger
        if (
            logger is not None
            and hasattr(logger, "run_id")
            and hasattr(logger.experiment, "log_artifact")
        ):
            logger.experiment.log_artifact(logger.run_id, str(out), artifact_path="onnx")

"""Log a grid of validation overlays (image | truth | prediction) to the logger each epoch."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import MLFlowLogger
from PIL import Image

from polypseg.runtime.overlays import grid, triptych


class ValidationOverlays(L.Callback):
    """The first ``num_images`` validation images with truth (green) and prediction (magenta)."""

    def __init__(self, num_images: int = 6, every_n_epochs: int = 1):
        self.num_images, self.every_n_epochs = num_images, every_n_epochs

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.current_epoch % self.every_n_epochs:
            return
        log_dir = trainer.log_dir  # a collective call under DDP: every rank makes it, or fit hangs
        if not trainer.is_global_zero:
            return
        dataset = trainer.datamodule.datasets["val"]
        items = [dataset[i] for i in range(min(self.num_images, len(dataset)))]
        images = torch.stack([i["image"] for i in items]).to(pl_module.device)
        prob = torch.sigmoid(pl_module.predict_logits(images))[:, 0].cpu().numpy()
        rows = [
            triptych(
                (item["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8),
                item["mask"][0].numpy(),
                prob[k] > float(pl_module.threshold),
            )
            for k, item in enumerate(items)
        ]
        picture = grid(rows)
        name = f"val_overlays/epoch_{trainer.current_epoch:03d}.png"
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                logger.experiment.log_image(logger.run_id, picture, artifact_file=name)
        if log_dir:
            path = Path(log_dir) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(picture).save(path)

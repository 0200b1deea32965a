"""Write predicted masks at each image's original resolution (``polypseg predict``)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image

from polypseg.runtime.processing import postprocess


class MaskWriter(BasePredictionWriter):
    """PNG masks (0/255) named like the images, in ``output_dir``."""

    def __init__(self, output_dir: str = "predictions"):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ):
        self.output_dir.mkdir(parents=True, exist_ok=True)
        frame = trainer.datamodule.frame(trainer.datamodule.predict_split)
        processing = pl_module.processing
        for index, prob in zip(
            prediction["index"].tolist(), prediction["probability"].numpy(), strict=True
        ):
            row = frame.iloc[index]
            mask = postprocess(prob, int(row.height), int(row.width), processing)
            path = self.output_dir / f"{row['name']}.png"  # multi-source: <source>/<name>.png
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask * 255).save(path)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        print(f"masks written to {self.output_dir.resolve()}")

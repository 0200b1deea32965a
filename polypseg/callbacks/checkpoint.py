"""Lightning's ModelCheckpoint, with ``last.ckpt`` following every epoch again.

Since Lightning 2.6, ``save_last=True`` rewrites ``last.ckpt`` only when a top-k checkpoint is
saved in the same step, so with ``monitor: val/dice, save_top_k: 1`` it is a copy of the best
and a resume from it silently drops every epoch since val last improved. This subclass keeps one
callback (so ``trainer.checkpoint_callback`` and MLflow's ``log_model`` still see the best and
the last) and restores the documented meaning: ``last.ckpt`` is the latest epoch. Checkpoints are
written atomically beside their target, and temp files of a killed write are removed on start.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint as _LightningModelCheckpoint

from polypseg.callbacks.resume import AtomicCheckpointIO, remove_orphans


class ModelCheckpoint(_LightningModelCheckpoint):
    """Same arguments as Lightning's; ``save_last=True`` saves ``last.ckpt`` every epoch."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not a user's plugin
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if trainer.is_global_zero and self.dirpath:
            remove_orphans(self.dirpath)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_behind(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_behind(trainer)

    def _save_last_if_behind(self, trainer: pl.Trainer) -> None:
        """Write last.ckpt unless this step was saved already (or saving is off: sanity check)."""
        if (
            self.save_last
            and not self._should_skip_saving_checkpoint(trainer)
            and self._last_global_step_saved != trainer.global_step
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

"""A Lightning callback that SIGKILLs its own process at a training step: the crash a resume test
needs, at a known point (importable by `polypseg fit` when tests/ is on PYTHONPATH)."""

from __future__ import annotations

import os
import signal

from lightning.pytorch.callbacks import Callback


class KillAtStep(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)

"""Record the resolved LightningCLI config and the git SHA in the MLflow run."""

from __future__ import annotations

from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger

from polypseg.runtime.provenance import git_sha


class SaveConfigToMLflow(SaveConfigCallback):
    """``config.yaml`` as an MLflow artifact plus ``git_sha``/``stage`` tags (and Lightning's own
    ``config.yaml`` in the log dir when the logger has one)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.log_dir is not None:
            super().setup(trainer, pl_module, stage)
        elif not self.already_saved and trainer.is_global_zero:
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True

    def save_config(self, trainer, pl_module, stage: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                text = self.parser.dump(self.config, skip_none=False)
                logger.experiment.log_text(logger.run_id, text, "config.yaml")
                logger.experiment.set_tag(logger.run_id, "git_sha", git_sha())
                logger.experiment.set_tag(logger.run_id, "stage", stage)

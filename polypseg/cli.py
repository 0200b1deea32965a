"""The ``polypseg`` command.

``fit | validate | test | predict`` are LightningCLI (YAML configs, ``class_path``/``init_args``);
``data``, ``export``, ``evaluate``, ``compare``, ``infer``, ``tune-threshold``, ``ensemble``, ``serve`` and
``demo`` are plain functions exposed with jsonargparse, each living in the package folder of its step.
Only the command being run is imported, so ``serve``, ``infer`` and ``evaluate`` start without torch.

Expected failures (bad data, a bad option, a refused checkpoint) print one short message naming the
file or option, the rule and the fix, and exit with status 2; ``--debug`` (or ``POLYPSEG_DEBUG=1``)
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Lightning's MLFlowLogger reads MLFLOW_TRACKING_URI as its default when first imported; mlflow 3
# refuses the old ./mlruns file store, so the embedded default is a local SQLite database.
os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

LIGHTNING_COMMANDS = {"fit", "validate", "test", "predict"}
USAGE = """usage: polypseg COMMAND [options]
  fit | validate | test | predict   LightningCLI, e.g. polypseg fit --config configs/unet.yaml
  data download | import | prepare | split | audit | sequences   get and validate data, make splits, find copies and videos
  export           checkpoint -> ONNX (+ int8 or float16 weights), parity-checked
  evaluate         ONNX model (fp32, fp16 weights, int8) on a split -> the test report (mDice with 95 % CI, ...)
  benchmark        ONNX model or any method's maps on several test sets -> the papers' metrics (meanDic, ...)
  compare          two reports of the same images -> paired difference with its 95 % CI
  infer            ONNX model over a folder of images -> masks at original resolution
  tune-threshold   pick the mask threshold on the validation split, store it in a checkpoint
  ensemble         several checkpoints -> one checkpoint averaging their logits
  tune             Optuna study of `polypseg fit` trials (pruned, MLflow-logged, RDB-shared)
  serve | demo     LitServe HTTP API | Gradio demo page
Each command takes --help."""


DEBUG_ENV = "POLYPSEG_DEBUG"
SCORING_COMMANDS = ("validate", "test", "predict")


def lightning_main(
    args: list[str] | None = None, extra_callbacks: list | None = None, run: bool = True
):
    """LightningCLI over PolypSegModule and KvasirSegDataModule; ``extra_callbacks`` are added to
    the configured ones (a sweep's pruning callback); ``run=False`` (args without a subcommand)
    only builds trainer, model and data."""
    from lightning.pytorch.cli import LightningCLI

    from polypseg.callbacks.config_logging import SaveConfigToMLflow
    from polypseg.callbacks.resume import continue_mlflow_run
    from polypseg.data.datamodule import KvasirSegDataModule
    from polypseg.models.module import PolypSegModule

    class PolypSegCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.link_arguments("data.image_size", "model.image_size")

        def before_instantiate_classes(self) -> None:
            if self.subcommand is None:
                return
            config = self.config[self.subcommand]
            if self.subcommand in SCORING_COMMANDS and not config.get("ckpt_path"):
                raise ValueError(
                    "no --ckpt_path, so it would score an untrained network; pass --ckpt_path CHECKPOINT (e.g. checkpoints/unet/last.ckpt)"
                )
            if self.subcommand == "fit" and config.get("ckpt_path"):
                continue_mlflow_run(config)

    return PolypSegCLI(
        PolypSegModule,
        KvasirSegDataModule,
        save_config_callback=SaveConfigToMLflow,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        parser_kwargs={"exit_on_error": False},
        trainer_defaults={"callbacks": list(extra_callbacks)} if extra_callbacks else None,
        args=args,
        run=run,
    )


TOOL_COMMANDS = {
    "tune": "polypseg.sweeps.study:tune",
    "data": {
        "download": "polypseg.data.commands:download",
        "import": "polypseg.data.commands:import_dataset",
        "prepare": "polypseg.data.commands:prepare",
        "split": "polypseg.data.commands:split",
        "audit": "polypseg.data.commands:audit",
        "sequences": "polypseg.data.commands:sequences",
    },
    "export": "polypseg.export.pipeline:export_checkpoint",
    "evaluate": "polypseg.evaluation.evaluate:evaluate",
    "benchmark": "polypseg.evaluation.benchmark:benchmark",
    "compare": "polypseg.evaluation.compare:compare",
    "infer": "polypseg.runtime.infer:infer",
    "tune-threshold": "polypseg.evaluation.threshold:tune_threshold",
    "ensemble": "polypseg.models.ensemble:ensemble_checkpoints",
    "serve": "polypseg.serving.api:serve",
    "demo": "polypseg.serving.demo:demo",
}
"""The non-Lightning subcommands: name -> ``module:function``, each in the package of its step."""


def _load(target: str | dict):
    if isinstance(target, dict):
        return {name: _load(t) for name, t in target.items()}
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def tool_commands(name: str | None = None) -> dict:
    """Name -> function of the tool commands; with ``name``, only that one is imported, so
    ``serve``, ``infer`` and ``evaluate`` start without the training stack."""
    chosen = {name: TOOL_COMMANDS[name]} if name in TOOL_COMMANDS else TOOL_COMMANDS
    return {command: _load(target) for command, target in chosen.items()}


DEPRECATED_FLAGS = {
    "--root": "--data_root",
    "--out": "--output",
    "--ckpt": "--ckpt_path",
    "--model": "--onnx",  # LightningCLI's --model is the LightningModule; the ONNX file is --onnx
}
"""Old flag names of the tool commands, accepted with a warning for one release."""


def renamed_flags(argv: list[str]) -> list[str]:
    """``argv`` with deprecated flag names replaced by the shared ones, each use warned about."""
    out = []
    for arg in argv:
        flag, sep, value = arg.partition("=")
        if flag in DEPRECATED_FLAGS:
            new = DEPRECATED_FLAGS[flag]
            print(f"polypseg: {flag} is deprecated, use {new}", file=sys.stderr)
            arg = new + sep + value
        out.append(arg)
    return out


EXPECTED_ERRORS = (ValueError, FileNotFoundError, argparse.ArgumentError)
"""Failures a user causes and can fix: reported in one message, without a traceback."""


def run(argv: list[str]) -> None:
    if argv and argv[0] in LIGHTNING_COMMANDS:
        lightning_main(None if argv == sys.argv[1:] else argv)  # LightningCLI warns on both
    elif not argv or argv[0] in {"-h", "--help"}:
        print(USAGE)
    else:
        from jsonargparse import auto_cli

        argv = renamed_flags(argv)
        if argv[0] == "tune":  # jsonargparse owns --config; tune's are the fit configs
            argv = [
                a.replace("--config", "--fit_config+", 1) if a.startswith("--config") else a
                for a in argv
            ]
        auto_cli(tool_commands(argv[0]), args=argv, as_positional=False, exit_on_error=False)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV) == "1"
    argv = [a for a in argv if a != "--debug"]
    try:
        run(argv)
    except EXPECTED_ERRORS as exc:
        if debug:
            raise
        command = " ".join(argv[:2] if argv[:1] == ["data"] else argv[:1])
        print(f"polypseg {command}: error: {exc}", file=sys.stderr)
        print(
            f"(`polypseg {command} --help` for options; --debug for the traceback)", file=sys.stderr
        )
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()

"""THE owner of what a polypseg checkpoint is: read safely, write atomically, carry tuned settings.

A polypseg checkpoint is a Lightning checkpoint: ``state_dict`` (weights and the inference-setting
buffers), the module's hyper-parameters (the YAML it was built from) and the DataModule's. Every
command reads, writes and rebuilds checkpoints through this module, so the layout lives in one place.

Files a user passes are never unpickled with code execution: ``torch.load(weights_only=False)``
runs whatever a pickle says, so a downloaded checkpoint could run its payload inside
``tune-threshold`` or ``ensemble``. :func:`load_checkpoint` loads tensors and plain containers only
(Lightning's own ``--ckpt_path`` loads are weights-only too).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import lightning as L
import torch

from polypseg.runtime.io import atomic_path

SETTINGS = ("threshold", "min_component", "fill_holes")
"""Inference settings a checkpoint carries besides the weights, chosen on val (``tune-threshold``);
each is both a module buffer (restored by ``--ckpt_path``) and a hyper-parameter (read without
building the module)."""

MODULE_KEY = L.LightningModule.CHECKPOINT_HYPER_PARAMS_KEY
DATA_KEY = L.LightningDataModule.CHECKPOINT_HYPER_PARAMS_KEY


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or holds more than weights and settings."""


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint at ``path`` as a dict, loaded weights-only on the CPU.

    Args:
        path: a ``.ckpt`` written by ``polypseg fit``, ``tune-threshold`` or ``ensemble``.

    Raises:
        CheckpointError: no such file, not a checkpoint, or it holds objects that only
            unpickling with code execution could build (refused, nothing is run).

    Example:
        >>> ckpt = load_checkpoint("models/polypseg.ckpt")
        >>> ckpt["hyper_parameters"]["image_size"]
        256
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused: it holds objects beyond tensors and plain settings, which loading "
            f"would have to execute ({str(exc).splitlines()[0][:160]}); use a checkpoint written "
            "by polypseg/Lightning from a source you trust"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")
    return checkpoint


def network_weights(path: str | Path, into: torch.nn.Module) -> None:
    """Copy the ``network.*`` weights of the polypseg checkpoint at ``path`` into ``into``
    (fine-tuning a trained model: on a new hospital's frames, or at another input size).

    Args:
        path: a polypseg checkpoint, read weights-only (:func:`load_checkpoint`).
        into: the network to fill; it must have the same architecture, encoder and decoder.

    Raises:
        CheckpointError: unreadable, or its network differs from ``into`` (names the tensors).

    Example:
        >>> from polypseg.models.networks import SegmentationNetwork
        >>> network = SegmentationNetwork(encoder_weights=None)
        >>> network_weights("models/polypseg.ckpt", network)
    """
    prefix = "network."
    state = load_checkpoint(path)["state_dict"]
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    own = into.state_dict()
    differ = sorted(
        k
        for k in own.keys() | weights.keys()
        if k not in own or k not in weights or own[k].shape != weights[k].shape
    )
    if differ:
        raise CheckpointError(
            f"{path}: its network does not match model.network ({len(differ)} of {len(own)} "
            f"tensors differ, e.g. {differ[:3]}); use a checkpoint of the same arch, "
            "encoder_name, decoder_channels and deep_supervision"
        )
    into.load_state_dict(weights, strict=True)


def save_checkpoint(checkpoint: dict, path: str | Path) -> Path:
    """Write ``checkpoint`` to ``path`` atomically: a crash never leaves half a file there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return path


def build_checkpoint(
    state_dict: dict, module_hparams: dict, datamodule_hparams: dict, **extra
) -> dict:
    """A checkpoint from parts (an ensemble, say), in the layout ``load_from_checkpoint`` reads."""
    return {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": L.__version__,
        "state_dict": state_dict,
        MODULE_KEY: module_hparams,
        L.LightningModule.CHECKPOINT_HYPER_PARAMS_NAME: "kwargs",
        DATA_KEY: datamodule_hparams,
        L.LightningDataModule.CHECKPOINT_HYPER_PARAMS_NAME: "kwargs",
        **extra,
    }


def settings(values: dict, source: str) -> dict:
    """The inference settings (:data:`SETTINGS`) in ``values``: a checkpoint's hyper-parameters or
    an exported model's ``processing`` metadata (``source`` names it in the error)."""
    missing = [k for k in SETTINGS if k not in values]
    if missing:
        raise CheckpointError(f"{source} lacks {missing}; is it a tuned checkpoint or its export?")
    return {k: values[k] for k in SETTINGS}


def with_settings(checkpoint: dict, values: dict) -> dict:
    """``checkpoint`` carrying ``values`` (threshold, clean-up) as buffers and hyper-parameters
    alike, so the module built from it and a reader of its hyper-parameters agree."""
    unknown = set(values) - set(SETTINGS)
    if unknown:
        raise ValueError(f"not inference settings: {sorted(unknown)}; valid: {list(SETTINGS)}")
    state = {**checkpoint["state_dict"], **{k: torch.tensor(v) for k, v in values.items()}}
    return {**checkpoint, "state_dict": state, MODULE_KEY: {**checkpoint[MODULE_KEY], **values}}


def at_image_size(checkpoint: dict, image_size: int) -> dict:
    """``checkpoint`` set to run at ``image_size`` px: the network is fully convolutional, so the
    same weights run at any multiple of 32 (a model trained with multi-scale batches has seen
    smaller and larger views); its module and data hyper-parameters agree on the new size.

    Args:
        checkpoint: a loaded checkpoint (:func:`load_checkpoint`).
        image_size: the input side to run at.

    Raises:
        CheckpointError: ``image_size`` is not a positive multiple of 32 (the encoder's stride).

    Example:
        >>> ckpt = at_image_size(load_checkpoint("models/polypseg.ckpt"), 192)
        >>> ckpt[MODULE_KEY]["image_size"], ckpt[DATA_KEY]["image_size"]
        (192, 192)
    """
    if image_size <= 0 or image_size % 32:
        raise CheckpointError(
            f"image_size {image_size}: the network needs a positive multiple of 32 (e.g. 192, 224, 256)"
        )
    return {
        **checkpoint,
        MODULE_KEY: {**checkpoint[MODULE_KEY], "image_size": image_size},
        DATA_KEY: {**checkpoint.get(DATA_KEY, {}), "image_size": image_size},
    }


def load_module(path: str | Path):
    """The :class:`~polypseg.models.module.PolypSegModule` of a checkpoint, on the CPU, in eval mode.

    Example:
        >>> module = load_module("models/polypseg.ckpt")
        >>> round(float(module.threshold), 2)
        0.45
    """
    from polypseg.models.module import PolypSegModule

    load_checkpoint(path)  # refuses a missing or code-carrying file with a clear message
    return PolypSegModule.load_from_checkpoint(path, map_location="cpu").eval()


def load_datamodule(path: str | Path, data_root: str | None = None, split_file: str | None = None):
    """The checkpoint's own data configuration, set up for val (optionally re-rooted)."""
    from polypseg.data.datamodule import KvasirSegDataModule

    hparams = {k: v for k, v in load_checkpoint(path).get(DATA_KEY, {}).items() if k[0] != "_"}
    if data_root:
        hparams["data_root"] = data_root
    if split_file:
        hparams["split_file"] = split_file
    hparams["limit_per_split"] = None
    hparams["manifest_file"] = None  # re-validate in memory: the prepared file may be elsewhere
    datamodule = KvasirSegDataModule(**hparams)
    datamodule.setup("validate")
    return datamodule

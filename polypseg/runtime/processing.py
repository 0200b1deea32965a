"""THE pre- and post-processing of polypseg, shared by training, evaluation, ONNX, server and demo.

Keeping one definition is what makes a served mask identical to an evaluated one: the network
sees RGB resized to ``size`` x ``size`` and scaled to [0, 1]; normalisation (mean/std of the encoder's
weights) happens inside the network (:class:`polypseg.models.networks.Normalize`), so it is also
inside every exported ONNX graph. Probabilities are resized back to the original resolution
*before* thresholding (smoother edges than resizing a binary mask, and what the PraNet protocol
scores).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

MASK_THRESHOLD_U8 = 127
"""JPEG masks are noisy: a ground-truth pixel is foreground when its value is > 127."""


@dataclass(frozen=True)
class Processing:
    """Everything inference needs besides the weights; stored in checkpoints and ONNX metadata."""

    size: int = 256
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    threshold: float = 0.5
    class_names: tuple[str, ...] = field(default=("background", "polyp"))
    min_component: float = 0.0
    """Drop connected components smaller than this fraction of the image (0 = keep all)."""
    fill_holes: bool = False
    """Fill holes inside predicted polyps."""

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> Processing:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        for key in ("mean", "std", "class_names"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB uint8 image to ``size`` x ``size`` (area interpolation when shrinking)."""
    h, w = image.shape[:2]
    interpolation = cv2.INTER_AREA if min(h, w) > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Grayscale uint8 mask (any size) to a {0,1} ``size`` x ``size`` mask: area-resize, then threshold."""
    return binarize_mask(cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA))


def binarize_mask(mask: np.ndarray) -> np.ndarray:
    """Grayscale uint8 mask (JPEG noise included) to {0,1} uint8."""
    return (mask > MASK_THRESHOLD_U8).astype(np.uint8)


def to_network_input(images: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """Resized RGB uint8 image(s) HWC/NHWC to float32 NCHW in [0, 1]."""
    batch = np.stack(images) if isinstance(images, list) else images
    if batch.ndim == 3:
        batch = batch[None]
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


def preprocess(image: np.ndarray, processing: Processing) -> np.ndarray:
    """One RGB uint8 image of any size to a (1, 3, size, size) float32 network input."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3); got {image.dtype} {image.shape}")
    return to_network_input(resize_image(image, processing.size))


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float32)))


def resize_probabilities(prob: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w) probability map to the original (height, width), bilinear."""
    return cv2.resize(prob.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)


def clean_mask(
    mask: np.ndarray, min_component: float = 0.0, fill_holes: bool = False
) -> np.ndarray:
    """Optional clean-up of a {0,1} mask: remove small components, fill holes."""
    if min_component > 0:
        count, labels, stats, _ = cv2.connectedComponentsWithStats(
            mask.astype(np.uint8), connectivity=8
        )
        keep = np.zeros(count, dtype=bool)
        keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_component * mask.size
        mask = keep[labels].astype(np.uint8)
    if fill_holes:
        mask = fill_mask_holes(mask)
    return mask


def fill_mask_holes(mask: np.ndarray) -> np.ndarray:
    """Background not reachable from the border (4-connected) becomes polyp, as
    ``scipy.ndimage.binary_fill_holes`` does; OpenCV keeps scipy out of the serving runtime."""
    padded = np.pad(mask.astype(np.uint8), 1)
    outside = np.zeros((padded.shape[0] + 2, padded.shape[1] + 2), np.uint8)
    cv2.floodFill(padded, outside, (0, 0), 2, flags=4)
    return (padded[1:-1, 1:-1] != 2).astype(np.uint8)


def postprocess(
    prob: np.ndarray,
    height: int,
    width: int,
    processing: Processing,
    threshold: float | None = None,
) -> np.ndarray:
    """Network probability map (h, w) to a {0,1} uint8 mask at the original resolution:
    resize probabilities back, threshold (``threshold`` overrides the stored one), clean up."""
    threshold = processing.threshold if threshold is None else threshold
    mask = (resize_probabilities(prob, height, width) > threshold).astype(np.uint8)
    return clean_mask(mask, processing.min_component, processing.fill_holes)

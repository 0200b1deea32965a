"""Augmentation pipelines (albumentations), chosen in YAML as ``class_path``/``init_args`` lists.

Transforms run on the cached, already-resized uint8 image and {0,1} mask; they must keep the size.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.core.transforms_interface import DualTransform


def default_train_transforms() -> list[A.BasicTransform]:
    """Flips, 90° rotations, mild affine and colour jitter: standard for Kvasir-SEG."""
    return [
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=0.5),
        A.Affine(
            scale=(0.85, 1.15),
            translate_percent=(-0.08, 0.08),
            rotate=(-20, 20),
            border_mode=cv2.BORDER_CONSTANT,
            p=0.5,
        ),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.15, hue=0.03, p=0.5),
    ]


class PolypFreeCrop(DualTransform):
    """A view of the frame that shows no polyp, resized back to the frame's size: the mask empties.

    Kvasir-SEG and CVC-ClinicDB show a polyp in every frame, so a model trained on them marks
    something in nearly every polyp-free frame. This crop teaches it that a view may hold none:
    a random window (each side ``side`` of the frame's) that keeps ``margin`` of the side away from
    the polyp; when ``attempts`` windows all touch it (a large polyp), the sample is left as it is.

    Args:
        side: range of the window's height and width, as fractions of the frame's.
        margin: distance the window keeps from the polyp, as a fraction of the frame's side.
        attempts: random windows tried before giving up on this sample.
        p: probability of applying the transform.

    Example:
        >>> import numpy as np
        >>> image = np.zeros((256, 256, 3), np.uint8)
        >>> mask = np.zeros((256, 256), np.uint8)
        >>> mask[:64, :64] = 1
        >>> out = A.Compose([PolypFreeCrop(p=1.0)], seed=0)(image=image, mask=mask)
        >>> out["image"].shape, int(out["mask"].sum())
        ((256, 256, 3), 0)
    """

    def __init__(
        self,
        side: tuple[float, float] = (0.35, 0.7),
        margin: float = 0.03,
        attempts: int = 10,
        p: float = 0.3,
    ):
        super().__init__(p=p)
        if not 0 < side[0] <= side[1] <= 1:
            raise ValueError(f"PolypFreeCrop side must satisfy 0 < low <= high <= 1, got {side}")
        self.side, self.margin, self.attempts = tuple(side), margin, attempts

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict:
        mask = data["mask"]
        h, w = mask.shape[:2]
        grow = max(1, round(self.margin * min(h, w)))
        near = cv2.dilate((mask > 0).astype(np.uint8), np.ones((2 * grow + 1,) * 2, np.uint8))
        for _ in range(self.attempts):
            ch = round(h * self.py_random.uniform(*self.side))
            cw = round(w * self.py_random.uniform(*self.side))
            y, x = self.py_random.randint(0, h - ch), self.py_random.randint(0, w - cw)
            if not near[y : y + ch, x : x + cw].any():
                return {"window": (y, x, ch, cw)}
        return {"window": None}

    def apply(self, img: np.ndarray, window=None, **params: Any) -> np.ndarray:
        return self._crop(img, window, cv2.INTER_LINEAR)

    def apply_to_mask(self, mask: np.ndarray, window=None, **params: Any) -> np.ndarray:
        return self._crop(mask, window, cv2.INTER_NEAREST)

    @staticmethod
    def _crop(array: np.ndarray, window, interpolation: int) -> np.ndarray:
        if window is None:
            return array
        y, x, ch, cw = window
        h, w = array.shape[:2]
        crop = np.ascontiguousarray(array[y : y + ch, x : x + cw])
        return cv2.resize(crop, (w, h), interpolation=interpolation).reshape(array.shape)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("side", "margin", "attempts")


def compose(transforms: list[A.BasicTransform] | None) -> A.Compose | None:
    """``None`` means no augmentation (evaluation)."""
    if not transforms:
        return None
    return A.Compose(transforms)

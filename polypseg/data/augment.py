"""Augmentation pipelines (albumentations), chosen in YAML as ``class_path``/``init_args`` lists.

Transforms run on the cached, already-resized uint8 image and {0,1} mask; they must keep the size.
"""

from __future__ import annotations

import albumentations as A
import cv2


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


def compose(transforms: list[A.BasicTransform] | None) -> A.Compose | None:
    """``None`` means no augmentation (evaluation)."""
    if not transforms:
        return None
    return A.Compose(transforms)

"""Turning request bytes into images and masks into responses; shared by the API and the demo."""

from __future__ import annotations

import base64
import binascii
import io

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from polypseg.data.io import IMAGE_EXTENSIONS  # noqa: F401  (documented accepted types)

MAX_PIXELS = 25_000_000
"""Largest accepted image (25 MP): bigger uploads are refused before decoding (decompression bombs)."""


class BadImage(ValueError):
    """The upload is not a decodable image within limits; ``status`` is the HTTP code to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def decode_image(data: bytes) -> np.ndarray:
    """Bytes of a JPEG/PNG/TIFF/BMP to RGB uint8, refusing non-images, truncation and bombs."""
    if not data:
        raise BadImage("empty upload: send an image file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise BadImage(
                    f"image is {img.width}x{img.height}; at most {MAX_PIXELS // 1_000_000} MP accepted",
                    413,
                )
            img.load()
            return np.asarray(img.convert("RGB"))
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage(
            "not an image format this server decodes (JPEG, PNG, TIFF, BMP)", 415
        ) from None
    except Image.DecompressionBombError as exc:
        raise BadImage(f"image refused as a decompression bomb: {exc}", 413) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImage(f"corrupt or truncated image ({exc})") from None


def decode_base64(text: str) -> bytes:
    if not isinstance(text, str):
        raise BadImage("'image' must be a base64 string")
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadImage("'image' is not valid base64") from None


def png_bytes(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def describe(
    mask: np.ndarray, probability: np.ndarray, threshold: float, max_contour_points: int = 200
) -> dict:
    """JSON summary of a mask: area, boxes and simplified contours of each polyp, mean probability."""
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    polyps = []
    for contour in sorted(contours, key=cv2.contourArea, reverse=True):
        x, y, w, h = cv2.boundingRect(contour)
        epsilon = 0.0
        while len(contour) > max_contour_points:
            epsilon = max(1.0, epsilon * 2)
            contour = cv2.approxPolyDP(contour, epsilon, True)
        polyps.append(
            {
                "bbox": [int(x), int(y), int(w), int(h)],
                "area_px": float(cv2.contourArea(contour)),
                "contour": contour.reshape(-1, 2).tolist(),
            }
        )
    inside = probability[mask.astype(bool)]
    return {
        "height": int(mask.shape[0]),
        "width": int(mask.shape[1]),
        "threshold": float(threshold),
        "polyp_area_fraction": float(mask.mean()),
        "mean_probability": float(inside.mean()) if inside.size else 0.0,
        "polyps": polyps,
    }

"""Turning request bytes into images and masks into responses; shared by the API and the demo."""

from __future__ import annotations

import base64
import binascii
import io

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from polypseg.runtime.io import ImageReadError, to_array

MAX_SIDE = 4096
"""Longest accepted side: DCI 4K, above any endoscope's frame (Kvasir-SEG's largest is 1920 px)."""
MAX_PIXELS = 4096 * 2160
"""Largest accepted frame (8.8 MP, DCI 4K): bounds the decode, resize and encode work per request."""
MAX_ASPECT = 3.0
"""Widest accepted side ratio; endoscope frames are 4:3 to 16:9, a 1 x 25,000,000 strip is an attack."""


class BadImage(ValueError):
    """The upload is not a decodable image within limits; ``status`` is the HTTP code to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


LIMITS = (
    f"accepted are at most {MAX_SIDE} px a side, {MAX_PIXELS / 1e6:.1f} MP and a {MAX_ASPECT:g}:1 "
    "aspect ratio: downscale or crop the frame"
)


def check_size(width: int, height: int) -> None:
    """Refuse, from the header alone, frames no endoscope makes (before any pixel is decoded)."""
    if min(width, height) < 1:
        raise BadImage(f"image is {width}x{height}: it has no pixels")
    if (
        max(width, height) > MAX_SIDE
        or width * height > MAX_PIXELS
        or max(width, height) / min(width, height) > MAX_ASPECT
    ):
        raise BadImage(f"image is {width}x{height}; {LIMITS}", 413)


def decode_image(data: bytes) -> np.ndarray:
    """Bytes of a JPEG/PNG/TIFF/BMP to RGB uint8 as displayed (EXIF orientation, 16-bit scaled),
    refusing non-images, truncation, float images and frames outside :func:`check_size`."""
    if not data:
        raise BadImage("empty upload: send an image file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            check_size(img.width, img.height)
            img.load()
            return to_array(img, "RGB", "upload")
    except BadImage:
        raise
    except ImageReadError as exc:
        raise BadImage(str(exc), 415) from None
    except UnidentifiedImageError:
        raise BadImage(
            "not an image format this server decodes (JPEG, PNG, TIFF, BMP)", 415
        ) from None
    except Image.DecompressionBombError as exc:
        raise BadImage(f"image is a decompression bomb ({exc}); {LIMITS}", 413) from None
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

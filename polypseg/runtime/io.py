"""Reading images and masks, and writing files so that a crash never leaves half a file behind."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
LOSSY_EXTENSIONS = (".jpg", ".jpeg")
Image.MAX_IMAGE_PIXELS = 64_000_000  # decompression-bomb guard: Kvasir-SEG's largest is ~2 MP


class ImageReadError(ValueError):
    """An image or mask file that cannot be decoded completely."""


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
"""Pillow's modes for 16-bit single-channel images (16-bit PNG/TIFF greyscale)."""


def to_array(img: Image.Image, mode: str, source: str) -> np.ndarray:
    """A decoded Pillow image as uint8 ``mode`` ("RGB" or "L") the way it is displayed.

    The EXIF orientation is applied (a camera's rotated frame is seen upright, and its mask with
    it); 16-bit images are scaled to 8 bits rather than clipped; floating-point images, whose value
    range is unknown, are refused instead of silently turning black.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode == "F":
        raise ImageReadError(
            f"{source}: 32-bit floating-point image; polypseg reads 8- or 16-bit images: save it "
            "as 8-bit RGB (JPEG/PNG)"
        )
    if img.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(img).astype(np.uint32)
        if values.max(initial=0) > 0xFFFF:
            raise ImageReadError(f"{source}: 32-bit integer image; save it as 8-bit RGB")
        img = Image.fromarray((values >> 8).astype(np.uint8), "L")
    return np.asarray(img.convert(mode))


def _open(path: Path, mode: str) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()  # forces a full decode: truncated files raise here, not later in training
            return to_array(img, mode, str(path))
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ImageReadError(f"{path}: unreadable or truncated image ({exc})") from exc


def read_rgb(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3), upright (EXIF applied), 16-bit scaled to 8.

    Raises:
        ImageReadError: the file is not an image, is truncated, or is floating-point.

    Example:
        >>> read_rgb("polypseg/serving/examples/cju2y40d8ulqo0993q0adtgtb.jpg").dtype
        dtype('uint8')
    """
    return _open(Path(path), "RGB")


def read_gray(path: str | Path) -> np.ndarray:
    """Grayscale uint8 (H, W); Kvasir-SEG masks are stored as 3-channel JPEGs."""
    return _open(Path(path), "L")


def read_mask(path: str | Path) -> np.ndarray:
    """A mask as uint8 0..255 (H, W): 0/255 masks as stored, 0/1 label masks (lossless files
    holding only 0 and 1) scaled to 0/255, so one rule
    (:data:`~polypseg.runtime.processing.MASK_THRESHOLD_U8`) binarises both. JPEG masks are never
    rescaled: their noise around 0 can hold 1s."""
    mask = read_gray(path)
    if Path(path).suffix.lower() not in LOSSY_EXTENSIONS and mask.max(initial=0) == 1:
        mask = mask * np.uint8(255)
    return mask


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; it replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def list_images(folder: Path) -> dict[str, Path]:
    """Stem -> path of every image file in ``folder`` (non-recursive).

    Raises:
        ImageReadError: two files share a stem (``a.jpg`` and ``a.png``): one would hide the other.
    """
    found: dict[str, Path] = {}
    clashes = []
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.suffix.lower() not in IMAGE_EXTENSIONS or p.name.startswith("."):
            continue
        if p.stem in found:
            clashes.append(
                f"{p}: same name as {found[p.stem].name}; one would hide the other: keep one file "
                "per name"
            )
        found[p.stem] = p
    if clashes:
        raise ImageReadError("\n".join(clashes))
    return found

"""Reading images and masks, and writing files so that a crash never leaves half a file behind."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
Image.MAX_IMAGE_PIXELS = 64_000_000  # decompression-bomb guard: Kvasir-SEG's largest is ~2 MP


class ImageReadError(ValueError):
    """An image or mask file that cannot be decoded completely."""


def _open(path: Path, mode: str) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()  # forces a full decode: truncated files raise here, not later in training
            return np.asarray(img.convert(mode))
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ImageReadError(f"{path}: unreadable or truncated image ({exc})") from exc


def read_rgb(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3)."""
    return _open(Path(path), "RGB")


def read_gray(path: str | Path) -> np.ndarray:
    """Grayscale uint8 (H, W); Kvasir-SEG masks are stored as 3-channel JPEGs."""
    return _open(Path(path), "L")


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
    """Stem -> path of every image file in ``folder`` (non-recursive)."""
    return {
        p.stem: p
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    }

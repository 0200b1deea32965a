"""``polypseg infer``: an exported model over a folder of images -> PNG masks at original size."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from polypseg.runtime.io import atomic_path, list_images, read_rgb
from polypseg.runtime.predictor import OnnxPredictor
from polypseg.runtime.tta import TTA


def infer(
    onnx: str,
    input: str,
    output: str = "predictions",
    threshold: float | None = None,
    threads: int | None = None,
    tta: TTA = False,
) -> int:
    """Write ``<output>/<name>.png`` (0/255) for every image in ``input``, predicted by the ONNX
    file ``onnx``; returns the count.
    ``tta`` averages views of each image (``true``/``flips``: four flips, 4x compute; ``d4``: eight
    rotations and mirrors, 8x)."""
    predictor = OnnxPredictor(onnx, threads, tta)
    images = list_images(Path(input))
    if not images:
        raise FileNotFoundError(f"{input}: no images (.jpg/.png/.tif/.bmp)")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    for name, path in images.items():
        prediction = predictor.predict(read_rgb(path), threshold)
        with atomic_path(out / f"{name}.png") as tmp:
            Image.fromarray(prediction.mask * 255).save(tmp, format="PNG")
    print(f"{len(images)} masks written to {out.resolve()}")
    return len(images)

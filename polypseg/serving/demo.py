"""Gradio demo page: upload or pick an example, see the overlay, the mask and the polyp area."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

from polypseg.runtime.model_files import locate_onnx
from polypseg.runtime.overlays import PRED_RGB, overlay
from polypseg.runtime.predictor import OnnxPredictor
from polypseg.serving import NOTICE
from polypseg.serving.codec import BadImage, decode_image

EXAMPLES = Path(__file__).parent / "examples"
MAX_UPLOAD = "20mb"
"""Largest upload Gradio accepts (the API's limit); the pixel limits are the API's too."""
CITATION = "Example images from Kvasir-SEG (Jha et al., MMM 2020), free for research and education with citation; see docs/data_card.md."


def unopened_path(payload) -> str | None:
    """Replaces ``gr.Image.preprocess``: hand over the uploaded file unopened, so the API's decoder
    reads it (limits from the header, EXIF, 16-bit) and a bad file gets its reason, not a bare
    "Error". (Assigned to the instance: a subclass would make Gradio write a .pyi stub here.)"""
    return None if payload is None else payload.path


def build_demo(model: str | None = None):
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import gradio as gr

    predictor = OnnxPredictor(locate_onnx(model, use_default=True))
    default_threshold = predictor.processing.threshold

    def segment(path: str | None, threshold: float):
        if path is None:
            raise gr.Error("Upload an image or pick an example first.")
        try:
            image = decode_image(Path(path).read_bytes())
        except BadImage as exc:
            raise gr.Error(f"{Path(path).name}: {exc}") from None
        prediction = predictor.predict(image, threshold)
        area = float(prediction.mask.mean())
        return (
            overlay(image, prediction.mask, PRED_RGB),
            prediction.mask * 255,
            f"Polyp area: {area:.1%} of the image ({int(prediction.mask.sum())} px) at threshold {threshold:.2f}",
        )

    # uploads older than 10 minutes are deleted every 10 minutes; the folder goes when the demo stops
    with gr.Blocks(title="polypseg demo", analytics_enabled=False, delete_cache=(600, 600)) as page:
        gr.Markdown(f"# polypseg: colorectal polyp segmentation\n**⚠️ {NOTICE}**")
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="Colonoscopy image", type="filepath", elem_id="input-image")
                image.preprocess = unopened_path
                threshold = gr.Slider(
                    0.05, 0.95, value=default_threshold, step=0.05, label="Mask threshold"
                )
                button = gr.Button("Segment", variant="primary", elem_id="segment-button")
                examples_box = gr.Column(elem_id="examples")
            with gr.Column():
                out_overlay = gr.Image(label="Overlay", elem_id="overlay")
                out_mask = gr.Image(label="Mask", elem_id="mask")
                area = gr.Markdown(elem_id="area")
        with gr.Accordion("Model metadata", open=False):
            gr.Code(json.dumps(predictor.metadata, indent=2, default=str), language="json")
        gr.Markdown(f"{CITATION}  \n**{NOTICE}**")
        outputs = [out_overlay, out_mask, area]
        button.click(segment, [image, threshold], outputs)
        examples = sorted(str(p) for p in EXAMPLES.glob("*.jpg"))
        if examples:
            with examples_box:  # clicking an example segments it straight away
                gr.Examples(
                    [[e, default_threshold] for e in examples],
                    [image, threshold],
                    outputs,
                    segment,
                    run_on_click=True,
                    cache_examples=False,
                    label="Examples (Kvasir-SEG)",
                )
        threshold.release(segment, [image, threshold], outputs)
    return page


def private_upload_dir() -> Path:
    """A fresh folder for Gradio's uploads (``GRADIO_TEMP_DIR``), removed when the process exits."""
    folder = Path(tempfile.mkdtemp(prefix="polypseg-demo-"))
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _stop(signum, frame):
    raise KeyboardInterrupt


def demo(onnx: str | None = None, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve the demo page (loopback by default, no share link, no analytics); uploads are capped
    at 20 MB and the API's pixel limits and live in a private folder deleted on exit."""
    folder = private_upload_dir()
    signal.signal(signal.SIGTERM, _stop)  # `kill PID` cleans up like Ctrl-C
    try:
        build_demo(onnx).launch(
            server_name=host, server_port=port, share=False, max_file_size=MAX_UPLOAD
        )
    except KeyboardInterrupt:
        pass
    finally:
        shutil.rmtree(folder, ignore_errors=True)

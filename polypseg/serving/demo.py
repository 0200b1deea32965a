"""Gradio demo page: upload or pick an example, see the overlay, the mask and the polyp area."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from polypseg.evaluation.overlays import PRED_RGB, overlay
from polypseg.inference.predictor import OnnxPredictor
from polypseg.serving import NOTICE, resolve_model

EXAMPLES = Path(__file__).parent / "examples"
CITATION = "Example images from Kvasir-SEG (Jha et al., MMM 2020), free for research and education with citation; see docs/data_card.md."


def build_demo(model: str | None = None):
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import gradio as gr

    predictor = OnnxPredictor(resolve_model(model))
    default_threshold = predictor.processing.threshold

    def segment(image: np.ndarray | None, threshold: float):
        if image is None:
            raise gr.Error("Upload an image or pick an example first.")
        prediction = predictor.predict(image[..., :3].astype(np.uint8), threshold)
        area = float(prediction.mask.mean())
        return (
            overlay(image[..., :3], prediction.mask, PRED_RGB),
            prediction.mask * 255,
            f"Polyp area: {area:.1%} of the image ({int(prediction.mask.sum())} px) at threshold {threshold:.2f}",
        )

    with gr.Blocks(title="polypseg demo", analytics_enabled=False) as page:
        gr.Markdown(f"# polypseg: colorectal polyp segmentation\n**⚠️ {NOTICE}**")
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="Colonoscopy image", type="numpy", elem_id="input-image")
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


def demo(model: str | None = None, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve the demo page (loopback by default, no share link, no analytics)."""
    build_demo(model).launch(server_name=host, server_port=port, share=False)

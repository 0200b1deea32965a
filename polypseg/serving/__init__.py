"""Front ends over the shared ONNX inference path: LitServe HTTP API and Gradio demo."""

from pathlib import Path

DEFAULT_MODEL = "models/polypseg.onnx"
NOTICE = (
    "Research and education only. NOT FOR CLINICAL USE: not a medical device, not for diagnosis."
)


def resolve_model(model: str | None) -> Path:
    """``model`` or ``$POLYPSEG_MODEL`` or the shipped ``models/polypseg.onnx``."""
    import os

    path = Path(model or os.environ.get("POLYPSEG_MODEL") or DEFAULT_MODEL)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no ONNX model; train and `make export`, or pass --model PATH"
        )
    return path

"""Front ends over the shared ONNX inference path: LitServe HTTP API and Gradio demo."""

import ctypes
import signal
import sys
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


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (``PR_SET_PDEATHSIG``), so a
    SIGKILLed server leaves no worker holding the port; a no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, int(sig), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG

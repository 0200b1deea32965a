"""Front ends over the shared ONNX inference path: LitServe HTTP API and Gradio demo."""

import ctypes
import signal
import sys

NOTICE = (
    "Research and education only. NOT FOR CLINICAL USE: not a medical device, not for diagnosis."
)


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (``PR_SET_PDEATHSIG``), so a
    SIGKILLed server leaves no worker holding the port; a no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, int(sig), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG

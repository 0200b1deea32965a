"""polypseg: polyp segmentation with PyTorch Lightning (research only, NOT FOR CLINICAL USE)."""

import os as _os

# onnxruntime >= 1.2x looks up a telemetry host after the first inference unless this is set
# before its environment is created; every session polypseg makes is created below this package.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"

"""Lightning callbacks of polypseg; add them under ``trainer.callbacks`` in a config."""

from polypseg.callbacks.checkpoint import ModelCheckpoint
from polypseg.callbacks.onnx_export import OnnxExport
from polypseg.callbacks.overlays import ValidationOverlays
from polypseg.callbacks.prediction_writer import MaskWriter
from polypseg.callbacks.report import TestReport

__all__ = ["MaskWriter", "ModelCheckpoint", "OnnxExport", "TestReport", "ValidationOverlays"]

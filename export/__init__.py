"""Deployment layer of tf_lth (docs/architecture.md): bake masks, then SavedModel and LiteRT files.

Imports only tf_lth core modules (layers, run_files), never `trainers`.
"""

from export.bake import SUPERMASK_EXPORTS, bake, effective_kernel, expected_supermasks
from export.report import FORMATS, export_all
from export.saved_model import write_saved_model
from export.tflite import KINDS, convert, convert_with_fallback, latency_per_example, run

__all__ = [
    "FORMATS",
    "KINDS",
    "SUPERMASK_EXPORTS",
    "bake",
    "convert",
    "convert_with_fallback",
    "effective_kernel",
    "expected_supermasks",
    "export_all",
    "latency_per_example",
    "run",
    "write_saved_model",
]

"""Deploy what was trained: ONNX export (standard QDQ, exact QONNX, float) and an integer-only reference.

Layers, from the bottom: :mod:`~stelab.export.graph` (a model lowered to plain ops) ->
:mod:`~stelab.export.ties` (where standard ONNX rounding differs from the staircase) ->
:mod:`~stelab.export.storage` (integer types per opset) -> :mod:`~stelab.export.quant_nodes` and
:mod:`~stelab.export.onnx_export` (:func:`to_onnx`) -> :mod:`~stelab.export.integer` (numpy reference) ->
:mod:`~stelab.export.verify` (onnxruntime / qonnx / integer against PyTorch). ``onnx``, ``onnxruntime`` and
``qonnx`` come with the ``stelab[export]`` extra; only :func:`to_onnx` and :mod:`verify` need them. See docs/export.md.
"""

from .graph import ExportError, lower
from .integer import IntegerModel

__all__ = ["ExportError", "IntegerModel", "build", "lower", "to_onnx"]


def to_onnx(model, example_input, path, format: str = "qdq", opset: int | None = None, int_bits: int | None = None):
    """Write ``model`` to ``path`` as ONNX (:func:`stelab.export.onnx_export.to_onnx`; ``opset=None`` is 25)."""
    from .onnx_export import to_onnx as _to_onnx
    from .storage import DEFAULT_OPSET

    return _to_onnx(model, example_input, path, format, DEFAULT_OPSET if opset is None else opset, int_bits)


def build(model, example_input, format: str = "qdq", opset: int | None = None, int_bits: int | None = None):
    """The export as an in-memory result, not written (:func:`stelab.export.onnx_export.build`)."""
    from .onnx_export import build as _build
    from .storage import DEFAULT_OPSET

    return _build(model, example_input, format, DEFAULT_OPSET if opset is None else opset, int_bits)

"""The network level, above the twin activations and weights packages: converting a whole model and summarising it.
"""

from .convert import CONVERSION_KEYS, quantize_model, summary

__all__ = ["CONVERSION_KEYS", "quantize_model", "summary"]

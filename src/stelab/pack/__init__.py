"""Quantized training in a fraction of float's memory: the tensors autograd saves that are quantized activations'
outputs are kept as their exact n-bit codes, bit-packed, and restored bit for bit in the backward.

:mod:`stelab.pack.codes`: codes from values and bit packing (tensor functions); :mod:`stelab.pack.saved`: which
saved tensors are quantized outputs (recognised by their autograd node, never by a scan) and the packed form;
:mod:`stelab.pack.context`: :class:`PackSaved`, the ``torch.autograd.graph.saved_tensors_hooks`` context.
"""

from .codes import code_bits, codes_of, level_values, pack_codes, packed_nbytes, unpack_codes
from .context import COMPILE_MESSAGE, PackSaved, pack_saved
from .saved import Grid, Packed, PackSavedWarning, PackStats, find, mark, marking

__all__ = ["COMPILE_MESSAGE", "Grid", "PackSaved", "PackSavedWarning", "PackStats", "Packed", "code_bits",
           "codes_of", "find", "level_values", "mark", "marking", "pack_codes", "pack_saved", "packed_nbytes",
           "unpack_codes"]

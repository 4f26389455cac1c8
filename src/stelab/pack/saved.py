r"""Which saved tensors are quantized outputs, and the saved-tensor hooks that keep them as packed codes.

**Recognition without a scan.** While a :class:`PackSaved` context is active, every quantized activation
(:func:`stelab.activations.ops.quantize_with`, so :class:`stelab.QuantReLU` and :func:`stelab.quantize`) records its
grid (mode, levels, ``alpha`` in the compute type, output dtype) on its output's autograd node, ``y.grad_fn`` (or, for
an output that needs no gradient, on the tensor with its version counter). When autograd saves a tensor ``t``, the
pack hook follows ``t.grad_fn`` back through at most :data:`MAX_DEPTH` nodes that keep values on the grid:

* views and copies (``view``, ``reshape``, ``flatten``, ``permute``, ``transpose``, slicing, ``clone``, ...): the
  same values;
* max pooling: each output is one of its inputs, so a max pool of a quantized output is on the same grid (its
  output is what the next conv saves in VGG-11);
* one dtype cast (``ToCopyBackward0``, the copy autocast makes of a float32 output for a bfloat16 convolution): the
  levels cast once more, restored as ``rnd_bf16(rnd_fp32(k a))``, not ``k * rnd_bf16(a)``, which differs.

Anything else (a residual add, an average pool, a batch norm, a padding whose value is unknown, a tensor whose node
chain reaches no mark) is not on the grid in general, and the hook returns it untouched. The walk is O(1) per saved
tensor: a few attribute reads, never a pass over values. An in-place change of a marked output replaces its node
(autograd rebases it), so a changed tensor is never taken for the marked one.

**What is kept.** The packed codes (:mod:`stelab.pack.codes`), the shape, strides, dtype and the grid; restoring
recomputes the levels with the forward's arithmetic into a tensor of the same strides (channels_last stays
channels_last), bit for bit the saved tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from ..kernels.reference import MODES, compute_dtype
from .codes import code_bits, pack_levels, restore_levels

MARK = "_stelab_grid"
MAX_DEPTH = 8
#: Autograd nodes whose output holds values of their (first) input only.
SAME_GRID = frozenset({
    "ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0", "AliasBackward0", "CloneBackward0",
    "PermuteBackward0", "TransposeBackward0", "TransposeBackward1", "TBackward0", "SliceBackward0",
    "SelectBackward0", "SqueezeBackward0", "SqueezeBackward1", "SqueezeBackward2", "UnsqueezeBackward0",
    "ExpandBackward0", "SplitBackward0", "SplitWithSizesBackward0", "UnbindBackward0", "NarrowBackward0",
    "MaxPool1DWithIndicesBackward0", "MaxPool2DWithIndicesBackward0", "MaxPool3DWithIndicesBackward0",
    "AdaptiveMaxPool1DBackward0", "AdaptiveMaxPool2DBackward0", "AdaptiveMaxPool3DBackward0",
})
CAST = "ToCopyBackward0"

_active = 0  # PackSaved contexts entered and not left (any thread): quantized outputs are marked meanwhile


def marking() -> bool:
    """Whether quantized activations should mark their outputs (a :class:`PackSaved` context is active)."""
    return _active > 0


@dataclass(frozen=True, eq=False)
class Grid:
    """The levels a quantized output holds: ``mode`` (:data:`stelab.kernels.MODES`), ``levels`` L, ``alpha`` (0-d,
    in the compute type of ``dtype``, a copy: a learned one may move after the forward) and the output ``dtype``."""

    mode: int
    levels: int
    alpha: Tensor
    dtype: torch.dtype


@lru_cache(maxsize=256)
def _fixed_alpha(value: float, dtype: torch.dtype) -> Tensor:
    return torch.tensor(value, dtype=dtype)


def mark(y: Tensor, formula: str, bits: int, alpha: float | Tensor) -> None:
    """Record that ``y`` is the output of a quantizer of the kernels' ``formula`` (staircase, round, sign) at ``bits``
    bits and resolution ``alpha``."""
    if torch.compiler.is_compiling() or not isinstance(y, Tensor):
        return
    c = compute_dtype(y.dtype)
    if isinstance(alpha, Tensor):
        a = alpha.detach().reshape(()).to(device=y.device, dtype=c, copy=True)
    else:
        a = _fixed_alpha(float(alpha), c)
    grid = Grid(MODES[formula], 2**bits - 1, a, y.dtype)
    if y.grad_fn is not None:
        setattr(y.grad_fn, MARK, grid)
    else:
        setattr(y, MARK, (grid, y._version))


def find(t: Tensor) -> tuple[Grid, tuple[torch.dtype, ...]] | None:
    """``(grid, dtypes)`` when ``t`` holds a marked quantized output's levels (``dtypes``: the output's dtype, then
    ``t``'s if a cast lies between), else ``None``. O(1): node attributes only (module docstring)."""
    own = getattr(t, MARK, None)
    if own is not None:
        return (own[0], (own[0].dtype,)) if own[1] == t._version else None
    node, cast = t.grad_fn, False
    for _ in range(MAX_DEPTH):
        if node is None:
            return None
        grid = getattr(node, MARK, None)
        if grid is not None:
            return grid, (grid.dtype, t.dtype) if cast else (grid.dtype,)
        name = node.name()
        if name == CAST and not cast:
            cast = True
        elif name not in SAME_GRID:
            return None
        nexts = node.next_functions
        node = nexts[0][0] if nexts else None
    return None


def flat_storage_order(t: Tensor) -> Tensor:
    """``t``'s elements in storage order, one dimension (``t`` is dense): no copy, any layout."""
    return t.detach().as_strided((t.numel(),), (1,), t.storage_offset())


class Packed:
    """A saved quantized output as packed codes: restores to the same values, shape and strides."""

    __slots__ = ("data", "bits", "n", "shape", "stride", "dtypes", "grid")

    def __init__(self, t: Tensor, grid: Grid, dtypes: tuple[torch.dtype, ...]) -> None:
        self.n, self.shape, self.stride, self.dtypes, self.grid = t.numel(), t.shape, t.stride(), dtypes, grid
        self.bits = code_bits(grid.levels, grid.mode)
        flat = flat_storage_order(t)
        self.data = pack_levels(flat, grid.alpha, grid.levels, grid.mode, dtypes, self.bits)

    @property
    def nbytes(self) -> int:
        return self.data.numel()

    def restore(self) -> Tensor:
        values = restore_levels(self.data, self.n, self.grid.alpha, self.grid.mode, self.dtypes, self.bits)
        return values.as_strided(self.shape, self.stride)


@dataclass
class PackStats:
    """What the saved-tensor hooks saw in one forward (or summed over several, :attr:`PackSaved.total`).

    ``saved_bytes``: what autograd keeps (distinct storages of the tensors passed through, plus the packed codes);
    ``unpacked_bytes``: what it would have kept without packing; ``tensors``/``packed``: saved tensors seen/packed
    as quantized outputs; ``states``: STE states kept in bits; ``recomputed``: convolution outputs kept as recipes.
    """

    forwards: int = 0
    tensors: int = 0
    packed: int = 0
    states: int = 0
    recomputed: int = 0
    saved_bytes: int = 0
    unpacked_bytes: int = 0

    @property
    def ratio(self) -> float:
        """``saved_bytes / unpacked_bytes`` (1.0 when nothing was saved)."""
        return self.saved_bytes / self.unpacked_bytes if self.unpacked_bytes else 1.0

    def add(self, other: PackStats) -> None:
        for name in ("forwards", "tensors", "packed", "states", "recomputed", "saved_bytes", "unpacked_bytes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class PackSavedWarning(UserWarning):
    """:class:`PackSaved` cannot apply (no quantized activation); issued once per :class:`PackSaved`."""


@dataclass
class _Forward:
    stats: PackStats = field(default_factory=lambda: PackStats(forwards=1))
    storages: dict[int, Any] = field(default_factory=dict)  # address -> StorageWeakRef of the storages counted
    pending: dict[int, Any] = field(default_factory=dict)  # id(int64 tensor) -> recompute.Pending, unclaimed
    packed: dict[int, tuple[Any, int, Packed]] = field(default_factory=dict)  # id(t) -> (weakref, version, codes)

r"""What :class:`stelab.PackSaved` keeps besides the quantized outputs: the STE's backward state in bits, and, with
``recompute=True``, a convolution's output as the recipe that recomputes it.

**The STE state in bits.** The fused quantized activation keeps one byte per element for its backward
(:mod:`stelab.kernels`): a mask bit when ``mu'`` takes two values, else the region index :math:`r \le R` of ``mu'``'s
:math:`R` breakpoints (for a learned resolution with the mean, pact or min rule, of those breakpoints merged with 0
and top: :func:`stelab.activations.ops.state_plan`). The kernel marks the state it saves with its width
(:data:`stelab.kernels.STATE_BITS`: 1, or the bits of :math:`R`), and the hook keeps it bit-packed
(:func:`stelab.pack.codes.pack_codes`): 1/8 or 2/8 of a byte per element instead of one. Restoring gives the same bytes.

**Recomputing a convolution's output** (``recompute=True``). In a conv -> batch norm -> quantized activation unit,
what autograd keeps per element is the convolution's input (a quantized output: packed codes), the batch norm's input
(the convolution's float output, which no lossless code shrinks) and the STE state. The convolution's output is a
function of what its own autograd node keeps anyway (input and weight), so instead of the tensor the hook keeps a
reference to that node and, when the backward asks for the tensor, runs the same ``aten::convolution`` on the node's
saved input and weight with autocast off (they already have the forward's dtypes), which gives the same bits: the
same kernel on the same operands (tested for every configuration; a CPU or GPU convolution that is not
deterministic would break this, and the test would say so). The price is one more convolution forward per unit in
the backward.

**Recomputing a max pool's indices** (``recompute=True``). A 2-d max pool keeps its input (a quantized output:
packed) and the int64 argmax of every window, 8 bytes per output element (VGG-11: about 30 % of what the packed step
still keeps). The indices are a function of the input and the pool's arguments, all in the pool's node, but the hook
sees them before the node exists. So an int64 tensor saved without a node is held as it is (:class:`Pending`) until
the pool's output is packed as a quantized output (the next layer saves it); then its node is at hand, and the
pending indices become a recipe: ``aten::max_pool2d_with_indices`` on the restored input, the same argmax, ties
included (same kernel, same input). Pending tensors never claimed (a loss's targets) stay as they are.

Choosing which: a convolution costs :math:`C_{in}/\mathrm{groups} \cdot k_h k_w` multiply-adds per output element
to recompute, and frees 2-4 bytes per element. Early layers of a CIFAR network have many elements and few input
channels (VGG-11's first convolution: 27 per element, 43 % of the network's activations), late ones the reverse, so
``limit`` (the most multiply-adds per element worth recomputing; ``None``: every convolution) keeps most of the
saving for a fraction of the time (BENCHMARKS.md).

Why it is safe: the batch norm's backward, the only consumer of the saved output, runs before the convolution's own
backward (it produces the convolution's output gradient), so the node's saved input and weight are still there. A
tensor whose node is not the convolution (a view, an in-place change: autograd rebases the node) is not taken, nor a
convolution whose bias cannot be found (a computed bias: not a parameter, or a cast of one).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..kernels import STATE_BITS
from .codes import pack_state, restore_state
from .saved import CAST, MAX_DEPTH, SAME_GRID, flat_storage_order

CONV = "ConvolutionBackward0"
POOL = "MaxPool2DWithIndicesBackward0"


class PackedState:
    """A saved STE state (uint8, values below ``2**bits``) kept as packed ``bits``-bit codes."""

    __slots__ = ("data", "bits", "n", "shape", "stride")

    def __init__(self, t: Tensor, bits: int) -> None:
        self.n, self.shape, self.stride, self.bits = t.numel(), t.shape, t.stride(), bits
        self.data = pack_state(flat_storage_order(t), bits)

    @property
    def nbytes(self) -> int:
        return self.data.numel()

    def restore(self) -> Tensor:
        return restore_state(self.data, self.bits, self.n).as_strided(self.shape, self.stride)


def state_bits(t: Tensor) -> int | None:
    """The width of a marked STE state that packing makes smaller (under 8 bits), else ``None``."""
    bits = getattr(t, STATE_BITS, None) if t.dtype == torch.uint8 else None
    return bits if bits is not None and bits < 8 else None


def _bias(node: Any) -> tuple[bool, Tensor | None]:
    """``(found, bias)`` of a convolution node: ``(True, None)`` without a bias, ``(False, None)`` when there is
    one that is not a parameter (or a cast of one), so the output cannot be recomputed from the node alone."""
    sizes = node._saved_bias_sym_sizes_opt
    if sizes is None or tuple(sizes) == (0,):  # no bias (``F.conv2d(x, w)`` records zero sizes)
        return True, None
    source = node.next_functions[2][0]
    if source is None:  # a bias that needs no gradient: not reachable from the graph
        return False, None
    dtype = None
    if source.name() == "ToCopyBackward0":  # autocast's cast of the parameter
        dtype, source = node._saved_weight.dtype, source.next_functions[0][0]
    variable = getattr(source, "variable", None)
    if variable is None:
        return False, None
    return True, variable.detach() if dtype is None else variable.detach().to(dtype)


class Recomputed:
    """A convolution's output, kept as its autograd node (which holds the input and weight anyway)."""

    __slots__ = ("node", "bias", "shape", "stride", "dtype")

    def __init__(self, t: Tensor, node: Any, bias: Tensor | None) -> None:
        self.node, self.bias, self.shape, self.stride, self.dtype = node, bias, t.shape, t.stride(), t.dtype

    nbytes = 0  # what it adds to memory: references to tensors the node keeps for its own backward

    def restore(self) -> Tensor:
        n = self.node
        x, w = n._saved_input, n._saved_weight
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            out = torch.ops.aten.convolution(x, w, self.bias, n._saved_stride, n._saved_padding, n._saved_dilation,
                                             n._saved_transposed, n._saved_output_padding, n._saved_groups)
        if out.shape != self.shape or out.dtype != self.dtype:  # pragma: no cover - aten's contract
            raise RuntimeError(f"stelab.PackSaved: a recomputed convolution gave {tuple(out.shape)} {out.dtype}, "
                               f"the forward {tuple(self.shape)} {self.dtype}; run without recompute")
        if out.stride() != self.stride:
            out = torch.empty_strided(self.shape, self.stride, dtype=self.dtype, device=out.device).copy_(out)
        return out


class Pending:
    """An int64 tensor saved without a node: kept as it is until :func:`claim` finds it to be a max pool's indices
    (then recomputed from the pool's node, :meth:`restore`)."""

    __slots__ = ("tensor", "node")

    def __init__(self, t: Tensor) -> None:
        self.tensor, self.node = t, None

    @property
    def nbytes(self) -> int:
        return 0 if self.tensor is None else self.tensor.untyped_storage().nbytes()

    def restore(self) -> Tensor:
        if self.tensor is not None:
            return self.tensor
        n = self.node
        with torch.no_grad():
            return torch.ops.aten.max_pool2d_with_indices(n._saved_self, n._saved_kernel_size, n._saved_stride,
                                                          n._saved_padding, n._saved_dilation, n._saved_ceil_mode)[1]


def pending(t: Tensor) -> Pending | None:
    """A :class:`Pending` for an int64 tensor without a node (possibly a max pool's indices), else ``None``."""
    return Pending(t) if t.dtype == torch.int64 and t.grad_fn is None and t.numel() > 1 else None


def claim(node: Any, held: dict[int, Pending]) -> int:
    """If ``node`` (a packed quantized output's, reached through views and one cast as in
    :func:`stelab.pack.saved.find`) is a 2-d max pool whose indices are in ``held`` (by ``id`` of the tensor), turn
    them into a recipe; returns the bytes freed (0 when nothing was claimed)."""
    for _ in range(MAX_DEPTH):
        if node is None:
            return 0
        name = node.name()
        if name == POOL:
            break
        if name not in SAME_GRID and name != CAST:
            return 0
        node = node.next_functions[0][0] if node.next_functions else None
    else:
        return 0
    found = held.pop(id(node._saved_result1), None)  # the unpack hook hands back the held tensor itself
    if found is None or found.tensor is None:
        return 0
    freed = found.nbytes
    found.tensor, found.node = None, node
    return freed


def cost_per_element(node: Any) -> int:
    r"""Multiply-adds per output element of a convolution node: :math:`C_{in}/\mathrm{groups} \cdot k_h k_w`."""
    weight = node._saved_weight  # (C_out, C_in/g, kh, kw); transposed: (C_in, C_out/g, kh, kw)
    out_channels = weight.shape[1] * node._saved_groups if node._saved_transposed else weight.shape[0]
    return weight.numel() // max(1, out_channels)


def recipe(t: Tensor, limit: int | None = None) -> Recomputed | None:
    """A :class:`Recomputed` for ``t`` when it is a convolution's unmodified output with a findable bias, costing
    at most ``limit`` multiply-adds per element (:func:`cost_per_element`; ``None``: any)."""
    node = t.grad_fn
    if node is None or t.output_nr != 0 or node.name() != CONV:
        return None
    if limit is not None and cost_per_element(node) > limit:
        return None
    found, bias = _bias(node)
    return Recomputed(t, node, bias) if found else None


__all__ = ["CONV", "POOL", "PackedState", "Pending", "Recomputed", "claim", "cost_per_element", "pending", "recipe",
           "state_bits"]

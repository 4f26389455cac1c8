"""``PackSaved``: the context manager that keeps quantized outputs saved for backward as packed codes."""

from __future__ import annotations

import warnings
import weakref
from typing import Any

import torch
from torch import Tensor, nn
from torch.multiprocessing.reductions import StorageWeakRef

from ..kernels.backend import dense
from . import saved
from .recompute import PackedState, Pending, Recomputed, claim, pending, recipe, state_bits
from .saved import Packed, PackSavedWarning, PackStats, _Forward, find

_KEPT = (Packed, PackedState, Recomputed, Pending)

COMPILE_MESSAGE = ("pack_saved does not apply under torch.compile: the compiled graph saves fused intermediates "
                   "that carry no autograd node to recognise a quantized output by; drop torch.compile (--compile) "
                   "or the packing (--pack-saved)")


def _is_compiled(model: nn.Module) -> bool:
    return any(type(m).__name__ == "OptimizedModule" for m in (model, getattr(model, "module", None)))


class PackSaved:
    """Inside ``with PackSaved(model):``, every tensor that autograd saves and that is a quantized activation's
    output (or a view, max pool or dtype cast of one) is kept as packed n-bit codes and restored bit for bit when
    the backward needs it (:mod:`stelab.pack`), and so is the STE's one-byte backward state (in 1 or 2 bits,
    :mod:`stelab.pack.recompute`). With ``recompute=True``, a convolution's output (what the batch norm after it
    saves) is not kept at all but recomputed in the backward from the input and weight its own node keeps: bit for
    bit, for one more convolution forward per layer. Every other saved tensor passes through untouched.

    Wrap the forward (and the loss); the backward may run after the block::

        packer = stelab.PackSaved(model)
        with packer, torch.autocast("cpu", torch.bfloat16):
            loss = loss_fn(model(x), y)
        loss.backward()            # gradients bit-identical to the run without the block
        packer.last.ratio          # saved bytes kept / saved bytes without packing, of that forward

        stelab.PackSaved(model, recompute=True)   # keep the convolutions' outputs as recipes too
        stelab.PackSaved(model, recompute=True, recompute_limit=300)  # only those costing <= 300 MACs per element

    ``model`` (optional) is checked once: a compiled model raises ``ValueError`` (:data:`COMPILE_MESSAGE`), a model
    with no :class:`stelab.QuantReLU` warns (:class:`PackSavedWarning`) that nothing will be packed. A forward that
    saves tensors but packs none warns once per object too. The object is reusable (one block per step) but not
    re-entrant; :attr:`last` and :attr:`total` are :class:`PackStats` of the last forward and of all of them.
    """

    def __init__(self, model: nn.Module | None = None, *, recompute: bool = False,
                 recompute_limit: int | None = None) -> None:
        if not isinstance(recompute, bool):
            raise TypeError(f"recompute must be a bool, got {recompute!r}")
        check_limit(recompute_limit)
        self.recompute, self.recompute_limit = recompute, recompute_limit
        self.last: PackStats | None = None
        self.total = PackStats()
        self._warned = False
        self._forward: _Forward | None = None
        self._hooks: Any = None
        if model is not None:
            if _is_compiled(model):
                raise ValueError(COMPILE_MESSAGE)
            # a quantized activation says so with a class attribute (stelab.QuantReLU.packs_saved_output): the packing
            # sits below the activations and does not import them
            if not any(getattr(m, "packs_saved_output", False) for m in model.modules()):
                self._warn("the model has no quantized activation (stelab.QuantReLU), so no saved tensor can be "
                           "packed; quantize its activations (stelab.quantize_activations) or drop pack_saved")

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(f"stelab.PackSaved: {message}", PackSavedWarning, stacklevel=3)

    def __enter__(self) -> PackSaved:
        if torch.compiler.is_compiling():
            raise RuntimeError(COMPILE_MESSAGE)
        if self._forward is not None:
            raise RuntimeError("this PackSaved is already active; it is not re-entrant (use one block per forward)")
        self._forward = _Forward()
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _restore)
        self._hooks.__enter__()
        saved._active += 1
        return self

    def __exit__(self, *exc: object) -> None:
        saved._active -= 1
        self._hooks.__exit__(*exc)
        forward, self._forward, self._hooks = self._forward, None, None
        self.last = forward.stats
        self.total.add(forward.stats)
        if forward.stats.tensors and not forward.stats.packed and exc[0] is None:
            self._warn("a forward saved tensors for backward but none was a quantized activation's output (no "
                       "stelab.QuantReLU ran with gradients, or they ran under torch.compile); nothing was packed")

    def _pack(self, t: Tensor) -> Any:
        forward = self._forward
        if forward is None:  # a hook kept alive by another thread's graph after the block: pass through
            return t
        stats = forward.stats
        stats.tensors += 1
        kept = self._other(t)
        if kept is not None:
            stats.saved_bytes += kept.nbytes
            stats.unpacked_bytes += self._storage_bytes(forward, t)
            return kept
        found = find(t) if t.is_floating_point() and t.numel() and t.layout == torch.strided and dense(t) else None
        if found is None:
            nbytes = self._storage_bytes(forward, t)
            stats.saved_bytes += nbytes
            stats.unpacked_bytes += nbytes
            return t
        hit = forward.packed.get(id(t))
        if hit is not None and hit[0]() is t and hit[1] == t._version:  # saved twice (x * x): one copy
            return hit[2]
        packed = Packed(t, *found)
        forward.packed[id(t)] = (weakref.ref(t), t._version, packed)
        stats.packed += 1
        if self.recompute:  # the output of a max pool: its indices, held pending, become a recipe
            freed = claim(t.grad_fn, forward.pending)
            if freed:
                stats.saved_bytes -= freed
                stats.recomputed += 1
        stats.saved_bytes += packed.nbytes
        stats.unpacked_bytes += self._storage_bytes(forward, t)
        return packed

    def _other(self, t: Tensor) -> PackedState | Recomputed | None:
        """The packed STE state or the convolution recipe that replaces ``t``, counted in the stats; else ``None``."""
        stats = self._forward.stats
        bits = state_bits(t)
        if bits is not None and dense(t):
            stats.states += 1
            return PackedState(t, bits)
        if self.recompute and t.is_floating_point():
            kept = recipe(t, self.recompute_limit)
            if kept is not None:
                stats.recomputed += 1
                return kept
        if self.recompute:
            held = pending(t)
            if held is not None:
                self._forward.pending[id(t)] = held
                return held
        return None

    @staticmethod
    def _storage_bytes(forward: _Forward, t: Tensor) -> int:
        """The bytes of ``t``'s storage the first time it is seen in this forward (autograd keeps it whole)."""
        # Keyed by address, with a weak reference: a packed tensor's storage is freed after the forward moves on, and
        # a later tensor at the same address is another storage (a plain set of addresses undercounted those).
        storage = t.untyped_storage()
        seen = forward.storages.get(storage.data_ptr())
        if seen is not None and not seen.expired():
            return 0
        forward.storages[storage.data_ptr()] = StorageWeakRef(storage)
        return storage.nbytes()


def check_limit(limit: object) -> None:
    """``recompute_limit``: ``None`` or a positive int (multiply-adds per output element)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"recompute_limit must be a positive int (multiply-adds per output element of a "
                         f"convolution, C_in/groups * kh * kw) or None (every convolution), got {limit!r}")


def _restore(kept: Any) -> Tensor:
    return kept.restore() if isinstance(kept, _KEPT) else kept


def pack_saved(model: nn.Module | None = None, *, recompute: bool = False,
               recompute_limit: int | None = None) -> PackSaved:
    """``with stelab.pack_saved(model): loss = ...``: a :class:`PackSaved` (the same object, by function)."""
    return PackSaved(model, recompute=recompute, recompute_limit=recompute_limit)


__all__ = ["COMPILE_MESSAGE", "PackSaved", "PackSavedWarning", "PackStats", "Packed", "pack_saved"]

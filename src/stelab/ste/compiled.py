r"""The backward of a smooth STE as one compiled elementwise pass: :math:`g \cdot \mu'(x; \mathrm{top})`.

An STE whose ``mu'`` is piecewise constant runs on the fused operator (a one-byte state, one pass back). A smooth one
(``ede``, ``reste``, ``dsq``, ``gaussian_smoothed``, ``log_tailed_relu``, a user's) must evaluate ``mu'`` on the
saved input, and eagerly that is a chain of PyTorch ops, each a pass over memory (``log_tailed_relu``: nine, then
the product with the incoming gradient): 7-14x the cost of ``relu`` forward + backward (BENCHMARKS.md).
``torch.compile`` (Inductor) fuses the chain and the product into one loop: C++ with OpenMP on a CPU, Triton on a
GPU. The formula is the STE's own Python, traced, so nothing is re-derived by hand and a user's STE gets it too.

When: floating tensors of at least :data:`MIN_NUMEL` elements (below, a compiled call's guards cost more than the
ops) in float32, bfloat16 or float16 (float64 is for checking: it stays eager, the reference); not inside a region
being compiled already (the outer compile fuses it there); and unless ``STELAB_COMPILE_STE=0``. ``top`` is passed as
a 0-d tensor, so one compiled function serves every layer's resolution without recompiling; shapes are dynamic.

Exactness: the same formula in the same dtype, but Inductor may contract ``a * b + c`` into one rounding or
vectorise a transcendental differently, so the compiled product agrees with the eager one to a few units in the last
place, not bit for bit (``tests/test_ste_compiled.py`` checks it at every breakpoint and its neighbours).

A compile that fails (no C++ compiler, a ``mu'`` Dynamo cannot trace) falls back to the eager product for that STE,
with one warning naming it and the reason: slower, the same numbers.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .registry import STE

#: Smallest tensor the compiled product is used for (elements).
MIN_NUMEL = 1 << 16
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
ENV = "STELAB_COMPILE_STE"
_COMPILED: dict[tuple, Callable[[Tensor, Tensor, Tensor], Tensor]] = {}
_FAILED: set[tuple] = set()  # STEs whose compile failed: eager from then on


def enabled() -> bool:
    """Whether the compiled product may be used (``STELAB_COMPILE_STE`` is not ``0``)."""
    return os.environ.get(ENV, "1") != "0"


def eager_product(ste: STE, grad: Tensor, x: Tensor, top: float | Tensor) -> Tensor:
    """:math:`g \\cdot \\mu'(x; \\mathrm{top})` with PyTorch ops: the reference."""
    return grad * ste.derivative(x, top)


def grad_times_derivative(ste: STE, grad: Tensor, x: Tensor, top: float | Tensor) -> Tensor:
    r""":math:`g \cdot \mu'(x; \mathrm{top})`, compiled where that pays (see the module's docstring)."""
    if (not enabled() or x.dtype not in DTYPES or x.numel() < MIN_NUMEL or grad.dtype != x.dtype
            or torch.compiler.is_compiling() or _ste_key(ste) in _FAILED):
        return eager_product(ste, grad, x, top)
    top_t = top.detach().to(torch.float64) if isinstance(top, Tensor) else torch.tensor(float(top),
                                                                                       dtype=torch.float64)
    try:
        return _compiled(ste, x)(grad, x, top_t.to(x.device))
    except Exception as err:  # noqa: BLE001 - any compile failure: say so once, then the same math eagerly
        _FAILED.add(_ste_key(ste))
        warnings.warn(f"STE {ste.label!r}: its compiled backward failed ({type(err).__name__}: "
                      f"{str(err).splitlines()[0] if str(err) else ''}); it runs eagerly (the same math, slower). "
                      f"Set {ENV}=0 to skip compiling.", RuntimeWarning, stacklevel=2)
        return eager_product(ste, grad, x, top)


def _ste_key(ste: STE) -> tuple:
    # the label names the parameters; the function tells an STE redefined under the same name (overwrite=True)
    return ste.label, ste.derivative_fn


def _compiled(ste: STE, x: Tensor) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """The compiled product for ``ste`` and ``x``'s dtype, device and this process's thread count.

    Dynamo keeps its compiled variants per *code object*, at most ``recompile_limit`` (8) of them, and past that
    runs the function eagerly without a word. One code object for every STE would fill that quickly (each STE, dtype,
    memory layout and thread count is a variant: the benchmark's grid alone is 8), so each (STE, dtype, device,
    threads) gets a code object of its own, made by ``exec``; within it only the layouts vary."""
    key = (*_ste_key(ste), x.dtype, x.device.type, torch.get_num_threads())
    if key not in _COMPILED:
        namespace: dict = {"ste": ste}
        exec("def product(grad, x, top):\n    return grad * ste.derivative(x, top)\n", namespace)  # noqa: S102
        _COMPILED[key] = torch.compile(namespace["product"], dynamic=True)
    return _COMPILED[key]

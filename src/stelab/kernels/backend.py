r"""The kernel backend protocol: what one implementation of the fused op's math provides.

A backend evaluates :mod:`stelab.kernels.reference`'s math (that module is the reference backend itself) on the
tensors it accepts. The operator picks, for each call, the first backend of :data:`stelab.kernels.BACKENDS` whose
:meth:`Backend.supports` is true; the reference supports everything, so there is always one. A new backend (another
device, another compiler) is one module defining an object of this shape, added to ``BACKENDS``; the tests
parametrise over ``BACKENDS`` and call every backend through these methods alone.

Conventions every backend keeps:

* ``forward(x, alpha, levels, mode, breaks, mask_bits) -> (y, state, nan)``: ``y`` in ``x``'s dtype and layout,
  ``state`` one byte per element (an empty uint8 tensor when ``breaks`` is empty: ``mu'`` is one constant), ``nan``
  whether ``x`` held a NaN if the pass looked (``finds_nan``), else ``None`` (the operator then checks first, when
  asked to).
* ``backward(grad, state, values) -> dx``: ``grad`` arrives in ``state``'s layout when ``needs_state_layout``;
  ``dx = grad * values[state]`` in the compute type, rounded to ``grad``'s dtype.
* ``learned_backward`` (optional, ``None`` when absent): ``dx`` and :math:`\partial\ell/\partial\alpha` of a learned
  resolution in one pass (:func:`stelab.kernels.cpu.learned_backward` gives the signature).
* ``learned_state_backward`` (optional): the same from the forward's one-byte region state instead of ``x``, for
  the three-valued rules (:func:`stelab.kernels.cpu.learned_state_backward`, :func:`stelab.activations.ops.state_plan`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from torch import Tensor


class Backend(Protocol):
    """One implementation of ``stelab::quantize`` and ``stelab::ste_backward`` (see the module docstring)."""

    name: str
    #: device types it runs on (``"cpu"``, ``"cuda"``); the reference lists both
    devices: tuple[str, ...]
    #: the most breakpoints of ``mu'`` it evaluates (more regions go to the next backend)
    max_breaks: int
    #: its forward pass reports NaN inputs itself
    finds_nan: bool
    #: its backward wants ``grad`` in the state's memory layout (a flat loop over both)
    needs_state_layout: bool
    learned_backward: Callable[..., float] | None
    learned_state_backward: Callable[..., float] | None

    def available(self) -> bool:
        """Whether it can run here at all (compiler, library, device)."""

    def accepts(self, t: Tensor) -> bool:
        """Whether it takes this tensor (dtype, layout) on a device it runs on."""

    def forward(self, x: Tensor, alpha: float, levels: int, mode: int, breaks: list[float],
                mask_bits: int) -> tuple[Tensor, Tensor, bool | None]: ...

    def backward(self, grad: Tensor, state: Tensor, values: list[float]) -> Tensor: ...


def supports(b: Backend, t: Tensor, n_breaks: int = 0) -> bool:
    """Whether backend ``b`` runs on ``t`` (its device, dtype and layout) with ``n_breaks`` breakpoints."""
    return t.device.type in b.devices and n_breaks <= b.max_breaks and b.available() and b.accepts(t)


def dense(t: Tensor) -> bool:
    """Whether ``t``'s elements fill its memory span exactly in some order of its dimensions (contiguous,
    channels_last, any permutation), so a flat loop covers them and ``empty_like`` repeats the layout."""
    if t.is_contiguous():
        return True
    expected = 1
    for size, stride in sorted(((n, st) for n, st in zip(t.shape, t.stride()) if n != 1), key=lambda p: p[1]):
        if stride != expected:
            return False
        expected *= size
    return True

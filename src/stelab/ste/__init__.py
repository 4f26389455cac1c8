r"""Straight-through estimators: the backward pass of a quantized activation.

This package is the estimators' layer, shared by activations and weights: the registry (:mod:`.registry`), the
:class:`Piecewise` table (:mod:`.piecewise`), the built-ins as data (:mod:`.builtin`), users' STEs from files,
modules and entry points (:mod:`.plugins`), the smoothed step (:mod:`.smoothing`), the NaN/shape probe
(:mod:`.probe`) and the compiled backward of smooth STEs (:mod:`.compiled`). Its public names are re-exported
here: ``stelab.ste.get``, ``stelab.ste.register``, ...

A quantizer :math:`q` is a staircase, so :math:`q'(x) = 0` almost everywhere. An STE replaces :math:`q'` by the
derivative of a *proxy* function :math:`\mu` in the backward pass only:

.. math::  \frac{\partial \ell}{\partial x} := \frac{\partial \ell}{\partial q(x)}\,\mu'(x).

The resulting "coarse gradient" is not the gradient of any function in general (Yin et al., ICLR 2019).

Conventions. Every STE is evaluated as ``mu'(x; top)`` where ``top`` is the top level of the forward quantizer
(``L * alpha`` for the staircase and round quantizers, ``alpha`` for sign). Proxies with a shape of their own are
defined in units of ``top``: :math:`\mu(x) = \mathrm{top}\cdot f(x/\mathrm{top})`, so
:math:`\mu'(x) = f'(x/\mathrm{top})`.
Identity, relu and leaky relu do not depend on ``top`` at all. The exception is ``log_tailed_relu``, whose
logarithmic tail above ``top`` is in absolute units, as in HWGQ (:math:`\log(x - \mathrm{top} + 1)`).

Each STE states three properties as data:

* ``monotone``: :math:`\mu` is non-decreasing, i.e. :math:`\mu' \ge 0` everywhere. This is condition 1 of stelab's
  definition of a monotone STE (:mod:`stelab.theory.classify_ste`, ``docs/classify.md``); on every registered STE
  the flag and that definition agree. The definition is ours: Long, Yin & Xin (2021) were read only in their
  abstract, which speaks of "a class of STEs with certain monotonicity" without defining it. Monotone alone
  does not make coarse gradient descent classify (identity, hardtanh and approx_sign are monotone and fail).
* ``zero_below``: :math:`\mu'(x) = 0` for :math:`x \le 0`.
* ``scale_invariant``: :math:`\mu'(cx) = \mu'(x)` for every :math:`c > 0` (identity, relu and leaky relu are; clipped
  relu is not, since it has a clip level). This is why identity/relu coarse gradients keep the scale symmetry of a
  bias-free binary network and clipped relu breaks it (Gongyo & Ishikawa 2021).

STEs whose derivative is piecewise constant with breakpoints at fixed multiples of ``top`` are *defined* by that
table (:class:`Piecewise`): their ``mu'``, the fused op's one-byte backward state (a mask or region code,
:func:`stelab.activations.ops.fused_plan`) and their three properties all follow from it, so they cannot disagree.
Only STEs with a smooth ``mu'`` declare their properties (or have them measured).
"""

import importlib

# Public name -> its module, loaded on first use (PEP 562): `stelab.ste.plugins`, which the command line imports for
# --import before it knows the command, must not load torch through this package.
_EXPORTS = {"Piecewise": ".piecewise", "DEFAULT_STE": ".registry", "PAPER_STES": ".registry", "STE": ".registry",
            "DerivativeFn": ".registry", "get": ".registry", "measure_properties": ".registry", "names": ".registry",
            "register": ".registry", "unregister": ".registry",
            "_get_with": ".registry"}  # what STEs pickled before the package existed name to rebuild themselves

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'stelab.ste' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

r"""Closed forms of the expected coarse gradient (and of its correlation with the true gradient), keyed by the shape
of :math:`\mu'`, not by the STE's name.

A closed form is exact for one derivative, so it is looked up by the STE's declared :class:`~stelab.ste.Piecewise`
table (breakpoints and values in units of ``top``): an STE re-registered under the name ``"relu"`` with another
derivative does not match relu's table and falls back to integration, while any STE that declares relu's table
(``leaky_relu(slope=0)``, say) is relu as far as the expectation is concerned. STEs without a table (smooth
:math:`\mu'`) have no closed form. Derivations: ``docs/theory.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from ...ste import STE, Piecewise
from .model import COLLINEAR, SQRT_2PI, Frame, h_term


def _norm_pdf(x: float) -> float:
    return math.exp(-x * x / 2) / SQRT_2PI


def _identity(v, v_star, fr: Frame, clip: float) -> np.ndarray:
    vs = float(v @ v_star)
    w_star = math.cos(fr.theta) * fr.w_hat + math.sin(fr.theta) * fr.u
    return ((v @ v) * fr.w_hat - vs * w_star) / SQRT_2PI


def _relu(v, v_star, fr: Frame, clip: float) -> np.ndarray:
    vs, h = float(v @ v_star), h_term(v, v_star)
    sin, cos = math.sin(fr.theta), math.cos(fr.theta)
    return (h - (1 + cos) * vs) / (2 * SQRT_2PI) * fr.w_hat - sin * vs / (2 * SQRT_2PI) * fr.u


def _clipped_relu(v, v_star, fr: Frame, clip: float) -> np.ndarray:
    """``mu'(x) = 1{0 < x <= clip}``; with ``a = clip/||w||``."""
    vs, h = float(v @ v_star), h_term(v, v_star)
    sin, cos = math.sin(fr.theta), math.cos(fr.theta)
    a = clip / fr.norm
    p = (1 - math.exp(-a * a / 2)) / SQRT_2PI
    # Phi(a / sin) and Phi(a cot) at the collinear limits sin -> 0+ (theta -> 0 or pi).
    big = float(ndtr(a / sin)) if sin > COLLINEAR else 1.0
    cot = float(ndtr(a * cos / sin)) if sin > COLLINEAR else float(cos > 0)
    b = sin / SQRT_2PI * (big - 0.5)
    a_coef = 1 / (2 * SQRT_2PI) - _norm_pdf(a) * cot + cos / SQRT_2PI * (big - 0.5)
    return (p / 2 * h - a_coef * vs) * fr.w_hat - b * vs * fr.u


def _relu_correlation(vs: float, fr: Frame) -> float:
    return math.sin(fr.theta) * vs**2 / (2 * (2 * math.pi) ** 1.5 * fr.norm)


def _clipped_relu_correlation(vs: float, fr: Frame, clip: float) -> float:
    sin = math.sin(fr.theta)
    return _relu_correlation(vs, fr) * 2 * (float(ndtr(clip / (fr.norm * sin))) - 0.5) if sin > 0 else 0.0


@dataclass(frozen=True)
class ClosedForm:
    """The closed forms of one derivative shape: ``expected(v, v*, frame, clip)`` is :math:`E g_\\mu` and
    ``correlation(v'v*, frame, clip)`` is :math:`\\langle E g_\\mu, \\partial_w f\\rangle` (the paper's formulas)."""

    name: str  # the shape's usual name, for messages only; never used to look the form up
    expected: Callable[..., np.ndarray]
    correlation: Callable[[float, Frame, float], float]


# The key is the whole table: breakpoints and values (in units of top), exactly as the STE declares them.
CLOSED_FORMS: dict[Piecewise, ClosedForm] = {
    Piecewise((), (1.0,)): ClosedForm("identity", _identity, lambda vs, fr, clip: 2 * _relu_correlation(vs, fr)),
    Piecewise((0.0,), (0.0, 1.0)): ClosedForm("relu", _relu, lambda vs, fr, clip: _relu_correlation(vs, fr)),
    Piecewise((0.0, 1.0), (0.0, 1.0, 0.0)): ClosedForm("clipped_relu", _clipped_relu, _clipped_relu_correlation),
}


def closed_form_for(ste: STE) -> ClosedForm | None:
    """The closed form of ``ste``'s derivative, or None (no piecewise table, or a table without a closed form)."""
    return None if ste.piecewise is None else CLOSED_FORMS.get(ste.piecewise)  # Piecewise holds floats: 0 == 0.0


def closed_form_names() -> str:
    """The shapes that have closed forms, for error messages."""
    return ", ".join(form.name for form in CLOSED_FORMS.values())

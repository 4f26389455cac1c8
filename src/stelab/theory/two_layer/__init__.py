r"""The two-linear-layer model of Yin et al. (ICLR 2019): exact population loss, gradients and coarse gradients.

Model. :math:`Z \in \mathbb{R}^{m\times n}` has i.i.d. :math:`N(0,1)` entries (rows are patches sharing the filter
:math:`w \in \mathbb{R}^n`), :math:`v \in \mathbb{R}^m`, :math:`\sigma(x) = 1\{x > 0\}`, teacher :math:`(v^*, w^*)`,

.. math::  \ell(v, w; Z) = \tfrac12\big(v^\top\sigma(Zw) - v^{*\top}\sigma(Zw^*)\big)^2,\qquad f(v, w) = E_Z\,\ell.

:math:`\sigma(Zw^*)` depends on the direction of :math:`w^*` only, so ``w_star`` is normalised here (the paper takes
:math:`\|w^*\| = 1`). With :math:`J = 11^\top`, :math:`\theta = \angle(w, w^*)`, :math:`\hat w = w/\|w\|` and
:math:`u = (w^* - \cos\theta\,\hat w)/\sin\theta`:

.. math::
    f = \tfrac18\big[v^\top(I+J)v - 2v^\top((1-\tfrac{2\theta}{\pi})I + J)v^* + v^{*\top}(I+J)v^*\big],\quad
    \partial_v f = \tfrac14(I+J)v - \tfrac14((1-\tfrac{2\theta}{\pi})I+J)v^*,\quad
    \partial_w f = -\frac{v^\top v^*}{2\pi\|w\|}\,u.

The coarse gradient of an STE :math:`\mu` replaces :math:`\sigma'` by :math:`\mu'`:
:math:`g_\mu = Z^\top(\mu'(Zw)\odot v)\,(v^\top\sigma(Zw) - v^{*\top}\sigma(Zw^*))`. Its expectation
(:func:`expected_coarse_grad`) is in closed form for the derivatives of identity, relu and clipped relu (looked up by
the STE's piecewise table, :mod:`.closed_forms`) and by exact-in-one-variable, Gauss-Legendre-in-the-other
integration over :math:`\mathrm{span}(w, w^*)` for every other STE; see ``docs/theory.md`` for the derivations.
Every STE evaluation goes through :func:`stelab.ste.get` so the theory uses the same :math:`\mu'` as the training
code. Float64 throughout.

At :math:`\theta \in \{0, \pi\}` the loss is not differentiable in :math:`w` (it is a cone in the component of
:math:`w` orthogonal to :math:`w^*`, unless :math:`v^\top v^* = 0`); :func:`population_grad` then returns
:math:`\partial_w f = 0`, the minimum-norm element of the Clarke subdifferential, and ``u`` is taken as 0.

Modules: :mod:`.model` (geometry, population loss and gradient, critical points, problem generators),
:mod:`.closed_forms`, :mod:`.expected` (expected coarse gradient), :mod:`.sampling` (Monte Carlo),
:mod:`.descent` (coarse gradient descent). They import one another in that order only; this package re-exports
their public names.
"""

from __future__ import annotations

from .closed_forms import CLOSED_FORMS, ClosedForm, closed_form_for
from .descent import Trajectory, coarse_gradient_descent
from .expected import (
    METHODS,
    correlation,
    correlation_formula,
    descent_ratio,
    expected_at,
    expected_coarse_grad,
    integration_grid,
    span_coefficients,
)
from .model import (
    CriticalPoint,
    Frame,
    angle,
    check_clip,
    check_problem,
    critical_points,
    frame,
    h_term,
    population_grad,
    population_loss,
    random_problem,
    student_near_teacher,
    teacher_with_spurious_minima,
    unit_at_angle,
)
from .sampling import (
    MonteCarlo,
    empirical_loss_along,
    sample_coarse_grad,
    sample_coarse_grads,
    sample_terms,
    standard_error_ok,
    standard_normal_inputs,
    teacher_outputs,
    z_scores,
)

__all__ = [
    "CLOSED_FORMS", "METHODS", "ClosedForm", "CriticalPoint", "Frame", "MonteCarlo", "Trajectory", "angle",
    "check_clip", "check_problem", "closed_form_for", "coarse_gradient_descent", "correlation", "correlation_formula",
    "critical_points", "descent_ratio", "empirical_loss_along", "expected_at", "expected_coarse_grad", "frame",
    "h_term", "integration_grid", "population_grad", "population_loss", "random_problem", "sample_coarse_grad",
    "sample_coarse_grads", "sample_terms", "span_coefficients", "standard_error_ok", "standard_normal_inputs",
    "student_near_teacher", "teacher_outputs", "teacher_with_spurious_minima", "unit_at_angle", "z_scores",
]

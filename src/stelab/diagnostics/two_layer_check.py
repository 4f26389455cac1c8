r"""Cross-check of the diagnostics against the theory: the two-layer Gaussian model of Yin et al. (ICLR 2019).

Input :math:`Z \in \mathbb{R}^{m\times n}` with i.i.d. :math:`N(0,1)` entries, student :math:`v^\top\sigma(Zw)`,
teacher :math:`y^* = v^{*\top}\sigma(Zw^*)`, :math:`\|w^*\| = 1`, :math:`\sigma(x) = 1\{x > 0\}` (the 1-bit
staircase at :math:`\alpha = 1`, so top = 1), loss :math:`\tfrac12 (v^\top\sigma(Zw) - y^*)^2`. We run the generic
machinery of :mod:`.fidelity` on this model as an ``nn.Module`` and compare the cosine between each STE's mean
coarse gradient and the smoothed reference (w.r.t. :math:`w`) with the closed form
:math:`\cos(\mathbb{E}\, g_\mu, \nabla_w f)`.

The closed forms come from :mod:`stelab.theory.two_layer` when it is installed (``population_grad``,
``expected_coarse_grad``); :func:`expected_coarse_grad_quadrature` is an independent derivation used to check them
and as the fallback. With :math:`\hat w = w/\|w\|`, :math:`u` the unit vector of :math:`w^*` orthogonal to
:math:`\hat w`, :math:`x_1 = z\cdot\hat w`, :math:`x_2 = z\cdot u` and :math:`k(x) = \mu'(\|w\| x)`, each row
gives :math:`a = \mathbb{E}[z\,\mu'(z\cdot w)] = \hat w\int x\varphi k`,
:math:`b = \mathbb{E}[z\,\mu'(z\cdot w)\sigma(z\cdot w)] = \hat w\int_0^\infty x\varphi k`,
:math:`c = \mathbb{E}[z\,\mu'(z\cdot w)\sigma(z\cdot w^*)] = \hat w\int x\varphi(x)\Phi(x\cot\theta)k
+ u\int\varphi(x)\varphi(x\cot\theta)k`, and rows are independent, so

.. math::  \mathbb{E}\,g_w = \tfrac{a}{2}\big[(1\cdot v)(1\cdot(v - v^*)) - \|v\|^2 + v\cdot v^*\big]
   + \|v\|^2 b - (v\cdot v^*)\,c, \qquad \nabla_w f = -\frac{v\cdot v^*}{2\pi\|w\|}\,u .
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from scipy import integrate
from scipy.stats import norm
from torch import Tensor, nn

from .. import ste as ste_registry
from ..modules import QuantReLU
from .fidelity import DEFAULT_STES, EXTRAPOLATED, gradient_fidelity, reference_key


class TwoLayerNet(nn.Module):
    r""":math:`v^\top \sigma(Zw)` on inputs ``Z`` of shape ``[batch, m, n]``; ``w`` is the layer ``"first"``."""

    def __init__(self, v: np.ndarray, w: np.ndarray, train_v: bool = False) -> None:
        super().__init__()
        self.first = nn.Linear(len(w), 1, bias=False, dtype=torch.float64)
        self.act = QuantReLU(bits=1, ste="clipped_relu", forward="staircase", alpha=1.0)
        self.second = nn.Linear(len(v), 1, bias=False, dtype=torch.float64)
        with torch.no_grad():
            self.first.weight.copy_(torch.as_tensor(w, dtype=torch.float64)[None])
            self.second.weight.copy_(torch.as_tensor(v, dtype=torch.float64)[None])
        self.second.weight.requires_grad_(train_v)

    def forward(self, z: Tensor) -> Tensor:
        return self.second(self.act(self.first(z).squeeze(-1))).squeeze(-1)


def half_squared_error(outputs: Tensor, targets: Tensor) -> Tensor:
    return 0.5 * ((outputs - targets) ** 2).mean()


def gaussian_batches(v_star: np.ndarray, w_star: np.ndarray, batch_size: int, n_batches: int, seed: int = 0
                     ) -> Iterator[tuple[Tensor, Tensor]]:
    """i.i.d. batches ``(Z, y*)`` of the teacher, float64."""
    gen = torch.Generator().manual_seed(seed)
    vs, ws = torch.as_tensor(v_star, dtype=torch.float64), torch.as_tensor(w_star, dtype=torch.float64)
    for _ in range(n_batches):
        z = torch.randn(batch_size, len(vs), len(ws), generator=gen, dtype=torch.float64)
        yield z, ((z @ ws) > 0).to(torch.float64) @ vs


def _frame(w: np.ndarray, w_star: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    w_hat = w / np.linalg.norm(w)
    cos_t = float(np.clip(w_hat @ w_star / np.linalg.norm(w_star), -1.0, 1.0))
    theta = math.acos(cos_t)
    if not 1e-8 < theta < math.pi - 1e-8:
        raise ValueError("the cross-check needs w and w* neither parallel nor antiparallel")
    u = (w_star / np.linalg.norm(w_star) - cos_t * w_hat) / math.sin(theta)
    return w_hat, u, theta, float(np.linalg.norm(w))


def true_grad_w(v: np.ndarray, w: np.ndarray, v_star: np.ndarray, w_star: np.ndarray) -> np.ndarray:
    r""":math:`\nabla_w f = -(v\cdot v^*)\,u / (2\pi\|w\|)` (Yin et al. 2019, for :math:`\|w^*\| = 1`)."""
    _, u, _, norm_w = _frame(w, w_star)
    return -(v @ v_star) / (2 * math.pi * norm_w) * u


def expected_coarse_grad_quadrature(v: np.ndarray, w: np.ndarray, v_star: np.ndarray, w_star: np.ndarray,
                                    ste: str = "relu", top: float = 1.0) -> np.ndarray:
    """:math:`\\mathbb{E}\\,g_w` for any STE by one-dimensional quadrature (module docstring)."""
    w_hat, u, theta, norm_w = _frame(w, w_star)
    estimator = ste_registry.get(ste)
    cot = math.cos(theta) / math.sin(theta)

    def k(x: float) -> float:
        return float(estimator.derivative(torch.tensor([norm_w * x], dtype=torch.float64), top)[0])

    # Breakpoints of piecewise STEs (scaled to x1 units) help quad; the tails beyond 12 sigma are negligible.
    points = sorted({0.0, top / norm_w, -top / norm_w})

    def quad(f, lo: float, hi: float) -> float:
        inner = [p for p in points if lo < p < hi]
        return integrate.quad(f, lo, hi, points=inner or None, limit=200, epsabs=1e-13, epsrel=1e-11)[0]

    a = quad(lambda x: x * norm.pdf(x) * k(x), -12.0, 12.0)
    b = quad(lambda x: x * norm.pdf(x) * k(x), 0.0, 12.0)
    c1 = quad(lambda x: x * norm.pdf(x) * norm.cdf(x * cot) * k(x), -12.0, 12.0)
    c2 = quad(lambda x: norm.pdf(x) * norm.pdf(x * cot) * k(x), -12.0, 12.0)
    one_v, one_vs, vv, vvs = v.sum(), v_star.sum(), v @ v, v @ v_star
    coef_w = a / 2 * (one_v * (one_v - one_vs) - vv + vvs) + vv * b - vvs * c1
    return coef_w * w_hat - vvs * c2 * u


def closed_form(v, w, v_star, w_star, ste: str) -> tuple[np.ndarray, np.ndarray, str]:
    """``(E g_w, grad_w f, source)``: from :mod:`stelab.theory.two_layer` when available, else the quadrature."""
    try:
        from ..theory import two_layer  # type: ignore[attr-defined]

        expected = np.asarray(two_layer.expected_coarse_grad(v, w, v_star, w_star, ste=ste, clip=1.0))
        return expected, np.asarray(two_layer.population_grad(v, w, v_star, w_star)[1]), "stelab.theory.two_layer"
    except ImportError:
        return expected_coarse_grad_quadrature(v, w, v_star, w_star, ste), true_grad_w(v, w, v_star, w_star), \
            "quadrature (stelab.diagnostics.two_layer_check)"


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def default_problem(m: int = 8, n: int = 6, theta: float = 1.0, seed: int = 0):
    """A reproducible ``(v, w, v*, w*)``: unit ``w*``, ``w`` at angle ``theta`` to it with norm 1.3."""
    rng = np.random.default_rng(seed)
    w_star = rng.standard_normal(n)
    w_star /= np.linalg.norm(w_star)
    other = rng.standard_normal(n)
    other -= (other @ w_star) * w_star
    other /= np.linalg.norm(other)
    w = 1.3 * (math.cos(theta) * w_star + math.sin(theta) * other)
    v_star = rng.standard_normal(m)
    v = v_star + 0.3 * rng.standard_normal(m)
    return v, w, v_star, w_star


def cross_check(v, w, v_star, w_star, stes: Sequence[str] = DEFAULT_STES, widths: Sequence[float] = (0.1, 0.05),
                batch_size: int = 2000, n_batches: int = 40, seed: int = 0) -> dict:
    """The diagnostic's cosine (w.r.t. ``w``) next to the closed form, per STE, against the reference extrapolated to
    ``s = 0`` from the two narrowest widths and against the narrowest width itself (which carries an O(s) bias)."""
    model = TwoLayerNet(v, w)
    batches = gaussian_batches(v_star, w_star, batch_size, n_batches, seed)
    result = gradient_fidelity(model, batches, stes, widths=widths, loss_fn=half_squared_error, seed=seed)
    rows = []
    for name in stes:
        expected, true, source = closed_form(v, w, v_star, w_star, name)
        theory = _cos(expected, true)
        for reference in (EXTRAPOLATED, reference_key(min(widths))):
            row = result.get(name, "first", reference)
            rows.append({"ste": row["ste"], "reference": reference, "diagnostic_cosine": row["cosine"],
                         "diagnostic_se": row["cosine_se"], "closed_form_cosine": theory,
                         "z_score": (row["cosine"] - theory) / row["cosine_se"], "closed_form_source": source})
    return {"m": len(v), "n": len(w), "widths": list(widths), "samples": batch_size * n_batches, "rows": rows}

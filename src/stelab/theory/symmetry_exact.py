r"""An exactly integrable 2-D data model for the scale-symmetry study, and its stationary set.

Inputs :math:`x = R(\cos\varphi, \sin\varphi)` with the angle :math:`\varphi` drawn from the density
:math:`a(\varphi) = (1 + \tau\cos\varphi)/(2\pi)` and the radius :math:`R` independent of it: ``radial="disk"``
(density :math:`2R` on :math:`[0, 1]`: :math:`x` uniform on the unit disk, so :math:`x` has a density in
:math:`\mathbb R^2`) or ``radial="circle"`` (:math:`R = 1`). Labels depend on the angle only,

.. math::  y(\varphi) = \kappa + \cos\varphi + b\cos 3\varphi,

which no :math:`v\,1\{w\cdot x > 0\}` can represent (misspecified). With :math:`\tau = 0` the inputs are symmetric
under :math:`x \to -x`.

Integrals are computed by a quadrature rule adapted to the network: composite Gauss-Legendre in :math:`\varphi`
with breakpoints wherever an integrand is not smooth (every unit's boundary :math:`\theta_j \pm \pi/2` and the
angles where :math:`w_j\cdot x` can cross a kink of the STE), and in :math:`R` with breakpoints at
:math:`R = z_b / (s_j\cos(\varphi - \theta_j))`. Between breakpoints every integrand is a smooth function, so the
rule is exact to rounding for the piecewise-constant STEs; its nodes go through the same
:func:`~stelab.theory.symmetry.coarse_grad_w` as samples do.

For one unit and :math:`\tau = 0` (derivation in ``docs/symmetry.md``), with
:math:`B(\theta) = \mathbb E[y\,\sigma] = (\kappa\pi + 2\cos\theta - \tfrac{2b}{3}\cos 3\theta)/(2\pi)`:
the optimal :math:`v = 2B(\theta)`, and :math:`(v, \theta)` is stationary iff :math:`v = 2B` and
:math:`v\,B'(\theta) = 0`, :math:`B'(\theta) = \sin\theta\,(3b - 1 - 4b\sin^2\theta)/\pi`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from .. import ste as ste_registry
from ..errors import check_choice
from .symmetry import DTYPE, WeightedData, _params, grad_v, loss

RADIAL_LAWS = ("disk", "circle")
TWO_PI = 2 * math.pi


@dataclass(frozen=True)
class AngularModel:
    """Inputs on the disk or circle with angular density ``(1 + tilt cos phi)/(2 pi)``; labels
    ``kappa + cos phi + b cos 3 phi``. ``order``: Gauss-Legendre nodes per panel."""

    kappa: float = 0.25
    b: float = 0.0
    tilt: float = 0.0
    radial: str = "disk"
    order: int = 12

    def __post_init__(self) -> None:
        check_choice("radial law", self.radial, RADIAL_LAWS)
        for name in ("kappa", "b", "tilt"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")
        if abs(self.tilt) >= 1:
            raise ValueError(f"tilt must be in (-1, 1) so the angular density stays positive, got {self.tilt}")
        if not (isinstance(self.order, int) and 2 <= self.order <= 200):
            raise ValueError(f"order must be an int in 2..200, got {self.order!r}")

    def to_dict(self) -> dict:
        """The parameters as plain data (for results files)."""
        return dataclasses.asdict(self)

    @property
    def symmetric(self) -> bool:
        """Inputs symmetric under ``x -> -x`` (the angular density is then pi-periodic)."""
        return self.tilt == 0

    def label(self, phi: np.ndarray) -> np.ndarray:
        return self.kappa + np.cos(phi) + self.b * np.cos(3 * phi)

    def density(self, phi: np.ndarray) -> np.ndarray:
        return (1 + self.tilt * np.cos(phi)) / TWO_PI

    def quadrature(self, W: Tensor, ste: str | None = None, top: float = 1.0) -> WeightedData:
        """A quadrature rule for the network with hidden weights ``W`` (and the kinks of ``ste``, if given)."""
        W = torch.as_tensor(W, dtype=DTYPE)
        W = W.unsqueeze(0) if W.ndim == 1 else W
        if W.ndim != 2 or W.shape[1] != 2:
            raise ValueError(f"the angular model has 2-D inputs; W must be [m, 2], got {tuple(W.shape)}")
        theta = np.arctan2(W[:, 1].numpy(), W[:, 0].numpy())
        s = W.norm(dim=1).numpy()
        if np.any(s == 0):
            raise ValueError("every w_j must be non-zero")
        kinks = _kinks(ste, top)
        # angles where unit j's pre-activation s_j R cos(phi - theta_j) can reach a kink z_b at some R <= 1
        cuts = [0.0, TWO_PI]
        for tj, sj in zip(theta, s):
            for zb in kinks:
                if abs(zb) < sj:
                    a = math.acos(zb / sj)
                    cuts += [(tj + a) % TWO_PI, (tj - a) % TWO_PI]
            # On the disk the slab 0 < w.x <= z_b is the region |cos(phi - theta)| <~ 1/s: the angular integrand
            # peaks within ~1/s of the boundary, so grade the panels geometrically towards both boundaries.
            levels = int(min(max(math.log2(sj), 0) + 6, 50))
            offsets = (math.pi / 2) * 2.0 ** -np.arange(1, levels + 1)
            for centre in (tj + math.pi / 2, tj - math.pi / 2):
                cuts += list(np.concatenate([centre + offsets, centre - offsets]) % TWO_PI)
        edges = np.unique(np.array(cuts))
        t, wt = _gauss_legendre(self.order)
        lo, hi = edges[:-1], edges[1:]
        phi = (lo[:, None] + (hi - lo)[:, None] * (t + 1) / 2).ravel()
        w_phi = ((hi - lo)[:, None] * wt / 2).ravel() * self.density(phi)
        if self.radial == "circle":
            r, w_r = np.ones((len(phi), 1)), np.ones((len(phi), 1))
        else:
            r, w_r = self._radial_nodes(phi, theta, s, [zb for zb in kinks if zb != 0])
        x = np.stack([r * np.cos(phi)[:, None], r * np.sin(phi)[:, None]], axis=-1).reshape(-1, 2)
        y = np.broadcast_to(self.label(phi)[:, None], r.shape).ravel()
        p = (w_phi[:, None] * w_r).ravel()
        return WeightedData(*(torch.from_numpy(np.array(a, dtype=np.float64)) for a in (x, y, p)))

    def _radial_nodes(self, phi: np.ndarray, theta: np.ndarray, s: np.ndarray, kinks: list[float]):
        """Composite Gauss-Legendre in R on [0, 1] against the density 2R, split where a unit hits a kink."""
        cos = np.cos(phi[:, None] - theta[None, :]) * s[None, :]  # [n_phi, m]: pre-activation per unit radius
        with np.errstate(divide="ignore", invalid="ignore"):
            cands = [zb / cos for zb in kinks]
        cands = np.concatenate(cands + [np.ones((len(phi), 1))], axis=1)
        cands = np.where(np.isfinite(cands) & (cands > 0) & (cands < 1), cands, 1.0)  # unused -> empty panel [1, 1]
        edges = np.concatenate([np.zeros((len(phi), 1)), np.sort(cands, axis=1)], axis=1)
        t, wt = _gauss_legendre(max(self.order // 2, 2))
        lo, hi = edges[:, :-1], edges[:, 1:]
        r = lo[..., None] + (hi - lo)[..., None] * (t + 1) / 2
        w = (hi - lo)[..., None] * wt / 2 * 2 * r
        return r.reshape(len(phi), -1), w.reshape(len(phi), -1)

    def loss(self, v: Tensor, W: Tensor) -> float:
        return loss(v, W, self.quadrature(W))

    def grad_v(self, v: Tensor, W: Tensor) -> Tensor:
        return grad_v(v, W, self.quadrature(W))

    def optimal_v(self, W: Tensor, data: WeightedData | None = None) -> Tensor:
        """Least-squares output weights for fixed ``W`` (the solution of ``grad_v = 0``)."""
        data = self.quadrature(W) if data is None else data
        act = (data.x @ torch.as_tensor(W, dtype=DTYPE).reshape(-1, 2).T > 0).to(DTYPE)
        gram = act.T @ (data.p.unsqueeze(1) * act)
        return torch.linalg.lstsq(gram, act.T @ (data.p * data.y)).solution

    def coarse_grad_w(self, v: Tensor, W: Tensor, ste: str, top: float = 1.0) -> Tensor:
        from .symmetry import coarse_grad_w

        return coarse_grad_w(v, W, self.quadrature(W, ste, top), ste, top)

    # Closed forms on the boundaries (the line w_j . x = 0 is the two rays at theta_j +- pi/2).

    def _boundary(self, v: Tensor, W: Tensor):
        v, W = _params(v, W, 2)
        theta = torch.atan2(W[:, 1], W[:, 0])
        s = W.norm(dim=1)
        tangent = torch.stack([-torch.sin(theta), torch.cos(theta)], dim=1)
        out = {}
        for sign in (+1, -1):
            phi = theta + sign * math.pi / 2
            on = (torch.cos(phi.unsqueeze(1) - theta.unsqueeze(0)) > 1e-12).to(DTYPE)  # [m(boundary), m(unit)]
            on.fill_diagonal_(0.0)  # F_{-j}: the other units
            f_other = on @ v
            y = torch.from_numpy(self.label(phi.numpy()))
            a = torch.from_numpy(self.density(phi.numpy()))
            out[sign] = (f_other, y, a)
        return v, s, tangent, out

    def true_grad_w(self, v: Tensor, W: Tensor) -> Tensor:
        r""":math:`\nabla_{w_j} f = \hat t_j\,[a_+\Delta_+ - a_-\Delta_-]/\|w_j\|` with
        :math:`\Delta_\pm = v_j(F_{-j} - y)(\theta_j \pm \pi/2) + v_j^2/2` (loss change when unit j switches on)."""
        v, s, tangent, b = self._boundary(v, W)
        term = {k: a * (v * (f - y) + v * v / 2) for k, (f, y, a) in b.items()}
        return ((term[1] - term[-1]) / s).unsqueeze(1) * tangent

    def symmetry_breaking_term(self, v: Tensor, W: Tensor) -> Tensor:
        r""":math:`\tfrac{v_j^2}{2}\int x\,\delta(w_j\cdot x)\,p(x)\,dx = \tfrac{v_j^2}{2}(a_+ - a_-)\hat t_j/\|w_j\|`;
        zero when the inputs are symmetric under :math:`x\to -x`."""
        v, s, tangent, b = self._boundary(v, W)
        return (v * v / 2 * (b[1][2] - b[-1][2]) / s).unsqueeze(1) * tangent

    def crelu_limit(self, v: Tensor, W: Tensor) -> Tensor:
        """:math:`\\lim_{c\\to\\infty} c\\, g_{crelu}(cW)` = true gradient + symmetry-breaking term."""
        return self.true_grad_w(v, W) + self.symmetry_breaking_term(v, W)


@lru_cache(maxsize=16)
def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)


def _kinks(ste: str | None, top: float) -> list[float]:
    """Pre-activation values where ``mu'`` may be non-smooth: 0 always (sigma), and +-top plus declared breaks."""
    if ste is None:
        return [0.0]
    mu = ste_registry.get(ste)
    ks = {0.0, -top, top}
    if mu.piecewise is not None:
        ks |= {b * top for b in mu.piecewise.breaks}
    return sorted(ks)


def crelu_scaling(model: AngularModel, v: Tensor, W: Tensor, cs: np.ndarray, top: float = 1.0) -> dict:
    """The clipped-ReLU coarse gradient along the rays ``c W`` (exact quadrature), against its two limits:

    * ``small_c_gap``: :math:`\\|g_{crelu}(cW) - g_{relu}(W)\\|` (0 once :math:`c\\|w_j\\| \\le 1` on the unit disk);
    * ``large_c_gap``: :math:`\\|c\\,g_{crelu}(cW) - (\\nabla f(W) + \\text{breaking term})\\|`;
    * ``radial`` / ``tangential``: :math:`\\sum_j |\\hat w_j\\cdot g_j|` and :math:`\\|g - \\text{radial part}\\|`.
    """
    from .symmetry import radial_tangential

    v, W = _params(v, W, 2)
    relu = model.coarse_grad_w(v, W, "relu", top)
    limit = model.crelu_limit(v, W)
    out = {k: [] for k in ("c", "radial", "tangential", "small_c_gap", "large_c_gap")}
    for c in np.asarray(cs, dtype=float):
        g = model.coarse_grad_w(v, c * W, "clipped_relu", top)  # by name: these are clipped relu's limits
        r, t = radial_tangential(c * W, g)
        out["c"].append(float(c))
        out["radial"].append(float(r.abs().sum()))
        out["tangential"].append(float(t.norm()))
        out["small_c_gap"].append(float((g - relu).norm()))
        out["large_c_gap"].append(float((c * g - limit).norm()))
    return {k: np.array(x) for k, x in out.items()}


def loglog_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of ``log y`` against ``log x``."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def exact_descent(model: AngularModel, v0: Tensor, W0: Tensor, ste: str | None, lr: float = 0.5, steps: int = 600,
                  top: float = 1.0) -> tuple[Tensor, Tensor, float]:
    """Coarse gradient descent on the population loss of ``model`` (one quadrature rule per step, adapted to the
    current ``W`` and to the kinks of ``ste``); ``ste=None`` descends the true gradient instead. Returns the final
    ``(v, W)`` and the final norm of the whole update direction ``(d_v f, g_W)``."""
    from .symmetry import coarse_grad_w

    if not (math.isfinite(lr) and lr > 0) or steps < 0:
        raise ValueError(f"need lr > 0 and steps >= 0, got lr={lr}, steps={steps}")
    v, W = (t.clone() for t in _params(v0, W0, 2))
    for step in range(steps + 1):
        data = model.quadrature(W, ste, top)
        gv = grad_v(v, W, data)
        gw = model.true_grad_w(v, W) if ste is None else coarse_grad_w(v, W, data, ste, top)
        if step == steps:
            break
        v, W = v - lr * gv, W - lr * gw
    return v, W, float(torch.cat([gv, gw.ravel()]).norm())

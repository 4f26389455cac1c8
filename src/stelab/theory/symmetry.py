r"""Scale symmetry of a bias-free binary network and how STEs keep or break it (Gongyo & Ishikawa 2021).

The network is :math:`F(x) = \sum_j v_j\,\sigma(w_j\cdot x)` with :math:`\sigma(z) = 1\{z > 0\}`, trained on the
squared loss :math:`f(v, W) = \tfrac12\,\mathbb E[(F(x) - y)^2]`. Since :math:`\sigma(c z) = \sigma(z)` for
:math:`c > 0`, :math:`f` is invariant under :math:`w_j \to c_j w_j` for any data and labels: minima are rays.

The data is a weighted point set :math:`\{(x_i, y_i, p_i)\}`: an empirical sample (``p_i = 1/N``) or the nodes of an
exact quadrature rule (:mod:`stelab.theory.symmetry_exact`), so one implementation serves both. With residual
:math:`r_i = F(x_i) - y_i`,

.. math::  \partial_{v_j} f = \sum_i p_i\, r_i\, \sigma(w_j\cdot x_i), \qquad
           g_{w_j} = \sum_i p_i\, r_i\, v_j\, \mu'(w_j\cdot x_i)\, x_i \quad\text{(coarse gradient, STE } \mu').

:math:`\partial f/\partial v` is exact (no STE involved). :math:`\mu'` comes from the core STE registry
(``stelab.ste.get(name).derivative(z, top)``), with clip level ``top = 1``. A scale-invariant STE
(:math:`\mu'(cz) = \mu'(z)`: identity, relu, leaky relu) gives a coarse gradient of degree 0 in :math:`\|w_j\|`, so it
vanishes on a whole ray or nowhere on it; its radial part :math:`\hat w_j\cdot g_{w_j}` then moves :math:`\|w_j\|`
at a constant rate. The clipped ReLU (:math:`\mu' = 1\{0 < z \le 1\}`) sees only the slab
:math:`0 < w_j\cdot x \le 1`, which shrinks as :math:`\|w_j\|` grows: it breaks the symmetry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .. import ste as ste_registry
from ..errors import check_choice

DTYPE = torch.float64
DATASETS = ("uniform_square", "mixture", "gaussian")


@dataclass(frozen=True)
class WeightedData:
    """Inputs ``x`` [N, d], labels ``y`` [N] and probability weights ``p`` [N] (summing to 1), float64."""

    x: Tensor
    y: Tensor
    p: Tensor

    def __post_init__(self) -> None:
        x, y, p = (torch.as_tensor(t, dtype=DTYPE) for t in (self.x, self.y, self.p))
        if x.ndim != 2 or y.ndim != 1 or p.ndim != 1 or not (len(x) == len(y) == len(p)):
            raise ValueError(f"WeightedData needs x [N, d], y [N], p [N]; got {tuple(x.shape)}, {tuple(y.shape)}, "
                             f"{tuple(p.shape)}")
        if bool((p < 0).any()):
            raise ValueError("WeightedData weights p must be non-negative")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "p", p)

    @classmethod
    def empirical(cls, x: Tensor, y: Tensor) -> WeightedData:
        """Equal weights ``1/N``: sums become sample means."""
        n = len(x)
        return cls(x, y, torch.full((n,), 1.0 / n, dtype=DTYPE))


def _params(v: Tensor | Sequence[float], W: Tensor | Sequence, d: int | None = None) -> tuple[Tensor, Tensor]:
    v = torch.as_tensor(v, dtype=DTYPE).reshape(-1)
    W = torch.as_tensor(W, dtype=DTYPE)
    if W.ndim == 1:
        W = W.unsqueeze(0)
    if W.ndim != 2 or W.shape[0] != v.shape[0]:
        raise ValueError(f"need v [m] and W [m, d] with the same m; got v {tuple(v.shape)}, W {tuple(W.shape)}")
    if d is not None and W.shape[1] != d:
        raise ValueError(f"W has input dimension {W.shape[1]} but the data has {d}")
    return v, W


def network_output(v: Tensor, W: Tensor, x: Tensor) -> Tensor:
    """:math:`F(x) = \\sum_j v_j 1\\{w_j\\cdot x > 0\\}`, shape [N]."""
    v, W = _params(v, W, x.shape[1])
    return (x @ W.T > 0).to(DTYPE) @ v


def loss(v: Tensor, W: Tensor, data: WeightedData) -> float:
    """Population (or sample) loss :math:`\\tfrac12 \\sum_i p_i (F(x_i) - y_i)^2`."""
    r = network_output(v, W, data.x) - data.y
    return float(0.5 * (data.p * r * r).sum())


def grad_v(v: Tensor, W: Tensor, data: WeightedData) -> Tensor:
    """Exact gradient of the loss with respect to the output weights ``v`` (no STE is involved)."""
    v, W = _params(v, W, data.x.shape[1])
    act = (data.x @ W.T > 0).to(DTYPE)
    r = act @ v - data.y
    return act.T @ (data.p * r)


def coarse_grad_w(v: Tensor, W: Tensor, data: WeightedData, ste: str = "relu", top: float = 1.0) -> Tensor:
    """Coarse gradient :math:`g_{w_j} = \\sum_i p_i r_i v_j \\mu'(w_j\\cdot x_i; \\mathrm{top}) x_i`, shape [m, d]."""
    v, W = _params(v, W, data.x.shape[1])
    mu = ste_registry.get(ste)
    z = data.x @ W.T
    r = (z > 0).to(DTYPE) @ v - data.y
    # [N, m]: weight of sample i in unit j's coarse gradient
    coef = (data.p * r).unsqueeze(1) * mu.derivative(z, top) * v.unsqueeze(0)
    return coef.T @ data.x


def radial_tangential(W: Tensor, G: Tensor) -> tuple[Tensor, Tensor]:
    """Split each row ``g_j`` of ``G`` into its radial part :math:`\\hat w_j\\cdot g_j` (a scalar: the rate at which
    a descent step shrinks :math:`\\|w_j\\|`) and its tangential part :math:`g_j - (\\hat w_j\\cdot g_j)\\hat w_j`."""
    W = torch.as_tensor(W, dtype=DTYPE).reshape(G.shape)
    norms = W.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("radial/tangential split needs every w_j != 0")
    unit = W / norms
    radial = (unit * G).sum(dim=1)
    return radial, G - radial.unsqueeze(1) * unit


def sample_inputs(name: str, n: int, seed: int = 0) -> Tensor:
    """Non-Gaussian (and Gaussian, for comparison) 2-D inputs, seeded:

    * ``uniform_square``: uniform on :math:`[-1, 1]^2` (symmetric under :math:`x\\to -x`);
    * ``mixture``: equal mixture of :math:`N((\\pm 0.6, 0.3\\cdot[\\pm]), 0.35^2 I)` (two blobs, symmetric);
    * ``gaussian``: :math:`N(0, I)`.
    """
    check_choice("input distribution", name, DATASETS)
    if n < 1:
        raise ValueError(f"need at least one sample, got n={n}")
    gen = torch.Generator().manual_seed(seed)
    if name == "uniform_square":
        return 2 * torch.rand(n, 2, generator=gen, dtype=DTYPE) - 1
    if name == "gaussian":
        return torch.randn(n, 2, generator=gen, dtype=DTYPE)
    sign = 2 * torch.randint(0, 2, (n, 1), generator=gen).to(DTYPE) - 1
    centre = sign * torch.tensor([0.6, 0.3], dtype=DTYPE)
    return centre + 0.35 * torch.randn(n, 2, generator=gen, dtype=DTYPE)


def misspecified_labels(x: Tensor, kappa: float = 0.25, b: float = 0.0) -> Tensor:
    """Labels that a binary student cannot represent: :math:`y = \\kappa + \\cos\\varphi + b\\cos 3\\varphi` where
    :math:`\\varphi` is the angle of ``x`` (the labels of the exact model in :mod:`symmetry_exact`)."""
    phi = torch.atan2(x[:, 1], x[:, 0])
    return kappa + torch.cos(phi) + b * torch.cos(3 * phi)


@dataclass(frozen=True)
class Trajectory:
    """Coarse gradient descent record: per step the loss, ``||w_j||`` [steps+1, m] and ``||g_w||``."""

    ste: str
    loss: np.ndarray
    w_norm: np.ndarray
    grad_norm: np.ndarray
    v: np.ndarray
    W: np.ndarray

    def to_dict(self) -> dict:
        return {"ste": self.ste, "loss": self.loss, "w_norm": self.w_norm, "grad_norm": self.grad_norm,
                "final_v": self.v, "final_W": self.W}


def coarse_descent(v0: Tensor, W0: Tensor, data: WeightedData, ste: str, lr: float = 0.1, steps: int = 1000,
                   top: float = 1.0, record_every: int = 1) -> Trajectory:
    """Full-batch coarse gradient descent: :math:`v \\leftarrow v - \\eta\\,\\partial_v f`,
    :math:`w_j \\leftarrow w_j - \\eta\\, g_{w_j}` (the STE enters only through :math:`g_w`)."""
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"learning rate must be positive and finite, got {lr}")
    if steps < 0 or record_every < 1:
        raise ValueError(f"need steps >= 0 and record_every >= 1, got {steps}, {record_every}")
    ste_registry.get(ste)
    v, W = (t.clone() for t in _params(v0, W0, data.x.shape[1]))
    losses, norms, gnorms = [], [], []
    for step in range(steps + 1):
        gw = coarse_grad_w(v, W, data, ste, top)
        if step % record_every == 0 or step == steps:
            losses.append(loss(v, W, data))
            norms.append(W.norm(dim=1).numpy().copy())
            gnorms.append(float(gw.norm()))
        if step == steps:
            break
        v = v - lr * grad_v(v, W, data)
        W = W - lr * gw
    return Trajectory(ste, np.array(losses), np.array(norms), np.array(gnorms), v.numpy(), W.numpy())


@dataclass(frozen=True)
class GaussianMixture:
    r"""Inputs from :math:`\sum_k \pi_k N(\mu_k, \sigma_k^2 I)` in any dimension (a density, generally not symmetric
    under :math:`x \to -x`), for checking the true-gradient formula away from the exactly integrable model."""

    means: Tensor
    sigmas: Tensor
    weights: Tensor

    def __post_init__(self) -> None:
        means, sigmas, weights = (torch.as_tensor(t, dtype=DTYPE) for t in (self.means, self.sigmas, self.weights))
        if means.ndim != 2 or sigmas.shape != (len(means),) or weights.shape != (len(means),):
            raise ValueError("GaussianMixture needs means [K, d], sigmas [K] and weights [K]")
        total = float(weights.sum())
        if bool((sigmas <= 0).any()) or bool((weights < 0).any()) or not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError("GaussianMixture needs positive sigmas and non-negative weights summing to 1")
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "sigmas", sigmas)
        object.__setattr__(self, "weights", weights)

    def sample(self, n: int, seed: int = 0) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        k = torch.multinomial(self.weights, n, replacement=True, generator=gen)
        return self.means[k] + self.sigmas[k, None] * torch.randn(n, self.means.shape[1], generator=gen, dtype=DTYPE)

    def hyperplane_samples(self, u: Tensor, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        r"""Points on :math:`H = \{u\cdot x = 0\}` (``u`` a unit vector) and weights such that
        :math:`\sum_i q_i \phi(x_i) \approx \int_H \phi\,p\,dS`: per component, the surface density of :math:`H` is
        :math:`\pi_k N(0; u\cdot\mu_k, \sigma_k^2)` and the conditional law is :math:`N(\mu_k - (u\cdot\mu_k) u,
        \sigma_k^2(I - uu^\top))`."""
        gen = torch.Generator().manual_seed(seed)
        xs, qs = [], []
        for mean, sigma, weight in zip(self.means, self.sigmas, self.weights):
            m = float(mean @ u)
            mass = float(weight) * math.exp(-0.5 * (m / float(sigma)) ** 2) / (math.sqrt(2 * math.pi) * float(sigma))
            z = torch.randn(n, len(u), generator=gen, dtype=DTYPE)
            z = z - (z @ u).unsqueeze(1) * u  # project the noise onto H
            xs.append(mean - m * u + sigma * z)
            qs.append(torch.full((n,), mass / n, dtype=DTYPE))
        return torch.cat(xs), torch.cat(qs)


def hyperplane_gradients(v: Tensor, W: Tensor, mixture: GaussianMixture, label_fn, n: int = 200_000,
                         seed: int = 0) -> tuple[Tensor, Tensor]:
    r"""Monte Carlo over each unit's hyperplane of the true gradient and of the symmetry-breaking term (section 2 and 3
    of ``docs/symmetry.md``):

    .. math:: \nabla_{w_j} f = \frac{1}{\|w_j\|}\int_{H_j} \Delta_j\,x\,p\,dS, \quad
              \Delta_j = v_j(F_{-j} - y) + \tfrac12 v_j^2, \qquad
              \text{breaking}_j = \frac{v_j^2}{2\|w_j\|}\int_{H_j} x\,p\,dS.

    ``label_fn(x) -> y`` must be continuous across the hyperplanes."""
    v, W = _params(v, W, mixture.means.shape[1])
    grads, breaks = torch.zeros_like(W), torch.zeros_like(W)
    for j in range(len(v)):
        s = W[j].norm()
        x, q = mixture.hyperplane_samples(W[j] / s, n, seed + j)
        others = torch.ones(len(v), dtype=DTYPE)
        others[j] = 0
        f_other = (x @ W.T > 0).to(DTYPE) @ (v * others)
        delta = v[j] * (f_other - label_fn(x)) + 0.5 * v[j] ** 2
        grads[j] = (q * delta) @ x / s
        breaks[j] = 0.5 * v[j] ** 2 * (q @ x) / s
    return grads, breaks

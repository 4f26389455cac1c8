r"""Cross-check of the diagnostics against the theory: the two-layer Gaussian model of Yin et al. (ICLR 2019).

Input :math:`Z \in \mathbb{R}^{m\times n}` with i.i.d. :math:`N(0,1)` entries, student :math:`v^\top\sigma(Zw)`,
teacher :math:`y^* = v^{*\top}\sigma(Zw^*)`, :math:`\|w^*\| = 1`, :math:`\sigma(x) = 1\{x > 0\}` (the 1-bit
staircase at :math:`\alpha = 1`, so top = 1), loss :math:`\tfrac12 (v^\top\sigma(Zw) - y^*)^2`. We run the generic
machinery of :mod:`.fidelity` on this model as an ``nn.Module`` and compare the cosine between each STE's mean
coarse gradient and the smoothed reference (w.r.t. :math:`w`) with the closed form
:math:`\cos(\mathbb{E}\, g_\mu, \nabla_w f)`.

The true gradient :math:`\nabla_w f`, the expected coarse gradient :math:`\mathbb{E}\,g_\mu` (closed form or the
integration recipe), the frame of :math:`(w, w^*)`, the teacher and the problem generator all come from
:mod:`stelab.theory.two_layer`: this module only runs the diagnostics on that model and compares.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..activations.modules import QuantReLU
from ..ste import DEFAULT_STE
from ..theory import two_layer
from .fidelity import DEFAULT_STES, EXTRAPOLATED, gradient_fidelity, reference_key

SOURCE = "stelab.theory.two_layer"


class TwoLayerNet(nn.Module):
    r""":math:`v^\top \sigma(Zw)` on inputs ``Z`` of shape ``[batch, m, n]``; ``w`` is the layer ``"first"``."""

    def __init__(self, v: np.ndarray, w: np.ndarray, train_v: bool = False) -> None:
        super().__init__()
        self.first = nn.Linear(len(w), 1, bias=False, dtype=torch.float64)
        # sigma is the 1-bit staircase at alpha = 1; the module's own STE is never used (the diagnostics swap in each
        # STE they compare), so any registered name does.
        self.act = QuantReLU(bits=1, ste=DEFAULT_STE, forward="staircase", alpha=1.0)
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
        yield z, two_layer.teacher_outputs(z, vs, ws)


def closed_form(v, w, v_star, w_star, ste: str) -> tuple[np.ndarray, np.ndarray, str]:
    """``(E g_w, grad_w f, source)`` from :mod:`stelab.theory.two_layer` (closed form or its integration recipe)."""
    _, w, _, w_star = two_layer.check_problem(v, w, v_star, w_star)
    theta = two_layer.frame(w, w_star).theta
    if not 1e-8 < theta < math.pi - 1e-8:
        # At theta in {0, pi} grad_w f is the zero subgradient and the cosine is undefined.
        raise ValueError("the cross-check needs w and w* neither parallel nor antiparallel")
    expected = two_layer.expected_coarse_grad(v, w, v_star, w_star, ste=ste, clip=1.0)
    return expected, two_layer.population_grad(v, w, v_star, w_star)[1], SOURCE


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def default_problem(m: int = 8, n: int = 6, theta: float = 1.0, seed: int = 0):
    """A reproducible ``(v, w, v*, w*)``: unit ``w*``, ``w`` at angle ``theta`` to it with norm 1.3."""
    return two_layer.student_near_teacher(m, n, theta, w_norm=1.3, v_noise=0.3, seed=seed)


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

"""Theory of straight-through estimators, float64 and checked numerically.

* :mod:`stelab.theory.two_layer` — the two-linear-layer model of Yin et al. (ICLR 2019): population loss and
  gradient, expected coarse gradients (closed forms and a general integration recipe), critical points, Monte Carlo,
  coarse gradient descent; ``stelab theory`` runs its report.
* :mod:`stelab.theory.symmetry` — Gongyo & Ishikawa (2021).
* :mod:`stelab.theory.classify` — Long, Yin & Xin (2021).

Submodules are imported on demand (``from stelab.theory import two_layer``) so importing the package stays cheap.
"""

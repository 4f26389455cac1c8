"""Theory of straight-through estimators: math only, float64 and checked numerically.

* :mod:`stelab.theory.two_layer` — the two-linear-layer model of Yin et al. (ICLR 2019): population loss and
  gradient, expected coarse gradients (closed forms keyed by the STE's derivative, and a general integration
  recipe), critical points, Monte Carlo, coarse gradient descent.
* :mod:`stelab.theory.symmetry` — Gongyo & Ishikawa (2021).
* :mod:`stelab.theory.classify` — Long, Yin & Xin (2021).

Functions on arrays and tensors, nothing else: no files, no data sets, no report text (the experiments and reports
built on them are in :mod:`stelab.experiments`). Theory imports only the core (``ste``, ``ops``, ``quantizers``,
``lloyd``, ``kernels``) and ``errors``. Submodules are imported on demand (``from stelab.theory import two_layer``)
so importing the package stays cheap.
"""

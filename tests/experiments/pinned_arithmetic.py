"""Run ``stelab`` with the arithmetic pinned, so that a quantized training run repeats bit for bit on any x86-64 CPU.

    python pinned_arithmetic.py ARG ...    (the arguments of ``stelab``; run with :data:`ENV` in the environment)

Why: a 2-bit network's training is chaotic in the rounding. A float32 sum taken in another order moves a
pre-activation by one ulp, that flips a code at a threshold, and the flip changes the next step. Measured on one
LeNet-5 epoch (2,048 MNIST images): test accuracy 78.4-82.6 % depending only on the thread count, oneDNN on or off
and the CPU's vector width, so pinned values with a tolerance of float rounding hold only on the CPU that wrote
them. Here every choice that depends on the machine is fixed instead:

- one thread (no parallel reduction order);
- oneDNN and NNPACK off: convolutions go to ATen's im2col + MKL sgemm;
- ``MKL_CBWR=COMPATIBLE``: MKL's conditional numerical reproducibility, the same code path on every x86-64 CPU;
- ``ATEN_CPU_CAPABILITY=default``: ATen's own kernels without AVX2/AVX-512 dispatch (the same vector width and so
  the same reduction order everywhere).

stelab's quantize kernel is elementwise and exact (bit-equal to its numpy formula), so it needs no pinning.
"""

from __future__ import annotations

import os
import sys

ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default"}

if __name__ == "__main__":
    missing = {k: v for k, v in ENV.items() if os.environ.get(k) != v}
    if missing:  # read at library load, so they must be in the environment before torch is imported
        sys.exit(f"run with {missing} in the environment")
    import torch

    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False
    torch.backends.nnpack.set_flags(False)
    from stelab.cli import main

    sys.exit(main(sys.argv[1:]))

"""Regression: the run folders' ``results.json`` values stay what they were when the values file was written.

What is pinned: the theory lab (``stelab theory --seed 0 --quick``), the symmetry study (``stelab symmetry --quick``
with 40 descent steps on 500 samples), the classification study (``stelab classify --quick``) and one-epoch LeNet-5
runs (float and 2-bit clipped relu, 512 synthetic images; and 2,048 real MNIST images when ``../shared/data`` is
there). Smaller than the full commands so that CI stays fast; the same code paths.

Compared: every boolean and string of ``results.json`` (claims held or not, verdicts, STE names) exactly, and a
deterministic sample of its numbers (at most ``SAMPLE`` per run, spread over the sorted paths) with a tolerance.
Left out: wall times, throughputs and file paths, which differ from run to run by nature.

Tolerances, and why:
- the theory, symmetry and classification studies are float64 (numpy / torch): ``rtol = 1e-7, atol = 1e-12``. Within
  one machine they repeat bit for bit. Across CPUs they do not: a BLAS (numpy's OpenBLAS, torch's MKL) picks its
  kernels by CPU, and an AVX-512 kernel sums in another order than an AVX2 one. Most values still agree to 1e-15,
  but the studies hold chaotic ones (the last descent steps near 1e-7, a classifier trained on 80 points whose
  accuracy moves when one rounding flips a step), so their values are stored per ATen CPU capability
  (:func:`stored_key`): a code change still shows on every machine, and a machine of a new kind says to regenerate.
- training is float32 and a quantized network's training is chaotic in the rounding (a one-ulp change flips a code,
  and the flip changes every later step), so the training cases run in a subprocess with the arithmetic pinned:
  one thread, no oneDNN, MKL's reproducible mode, ATen without AVX dispatch (``pinned_arithmetic.py`` says why
  each). Then ``rtol = 1e-3`` on losses and ``atol`` of one test image on accuracies is slack, not a hope.

To rewrite the stored values after a change that is *meant* to change results (say why in the commit):
``STELAB_REGENERATE=1 python -m pytest -n 0 tests/experiments/test_regression.py``.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pinned_arithmetic import ENV as PINNED_ENV

from stelab.cli import main

VALUES = Path(__file__).with_name("regression_values.json")
SAMPLE = 600  # numbers kept per run: enough that a changed computation shows, small enough to review
VOLATILE = re.compile(r"(seconds|time|wall|per_s|/dir$|/out$|/path$|/run$|data_dir)", re.IGNORECASE)
MATH = {"rtol": 1e-7, "atol": 1e-12}
TRAIN = {"rtol": 1e-3, "atol": 1e-6}

CASES = {
    "theory": (["theory", "--seed", "0", "--quick"], MATH),
    "symmetry": (["symmetry", "--quick", "--steps", "40", "--samples", "500"], MATH),
    "classify": (["classify", "--quick"], MATH),
    "lenet5-float": (["train", "--model", "lenet5", "--float", "--epochs", "1", "--synthetic", "512",
                      "--batch-size", "64"], TRAIN),
    "lenet5-2bit": (["train", "--model", "lenet5", "--bits", "2", "--ste", "clipped_relu", "--epochs", "1",
                     "--synthetic", "512", "--batch-size", "64"], TRAIN),
    "lenet5-2bit-mnist": (["train", "--model", "lenet5", "--bits", "2", "--ste", "clipped_relu", "--epochs", "1",
                           "--limit-train", "2048", "--limit-test", "500", "--batch-size", "64"], TRAIN),
}
REAL_DATA = {"lenet5-2bit-mnist"}
TEST_IMAGES = {"lenet5-float": 128, "lenet5-2bit": 128, "lenet5-2bit-mnist": 500}  # accuracy: one image of slack


def leaves(obj, path: str = ""):
    """``(path, value)`` for every scalar of a JSON document, paths like ``/claims/3/held``."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from leaves(value, f"{path}/{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from leaves(value, f"{path}/{i}")
    else:
        yield path, obj


def pinned(results: dict) -> dict:
    """The values the regression keeps: every bool and string, a strided sample of the finite numbers."""
    kept, numbers = {}, []
    for path, value in leaves(results):
        if VOLATILE.search(path):
            continue
        if isinstance(value, (bool, str)) or value is None:
            kept[path] = value
        elif isinstance(value, (int, float)):
            numbers.append((path, value))
    stride = max(1, math.ceil(len(numbers) / SAMPLE))
    kept.update(sorted(numbers)[::stride])
    return kept


PINNED = Path(__file__).with_name("pinned_arithmetic.py")


def stored_key(name: str) -> str:
    """Where a case's values are stored: the float64 studies per CPU capability (module docstring), the training
    cases, whose arithmetic is pinned, once."""
    if CASES[name][1] is MATH:
        return f"{name}@{torch.backends.cpu.get_cpu_capability()}"
    return name


def run_case(name: str, tmp_path: Path, data_dir: Path | None) -> dict:
    argv, tol = CASES[name]
    out = tmp_path / name
    extra = ["--data-dir", str(data_dir)] if name in REAL_DATA else []
    args = [*argv, *extra, "--out", str(out), "--no-progress"]
    if tol is TRAIN:  # in a fresh process: the pinning is read when torch loads
        done = subprocess.run([sys.executable, str(PINNED), *args], env={**os.environ, **PINNED_ENV},
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    else:
        assert main(args) == 0
    return json.loads((out / "results.json").read_text())


def _stored() -> dict:
    return json.loads(VALUES.read_text()) if VALUES.is_file() else {}


@pytest.mark.parametrize("name", sorted(CASES))
def test_results_json_values_unchanged(name, tmp_path, request):
    data_dir = request.getfixturevalue("shared_data_dir") if name in REAL_DATA else None
    now = pinned(run_case(name, tmp_path, data_dir))
    if os.environ.get("STELAB_REGENERATE"):
        stored = _stored()
        stored[stored_key(name)] = now
        VALUES.write_text(json.dumps(stored, indent=0, sort_keys=True) + "\n")
        pytest.skip(f"regenerated {name} in {VALUES.name}")
    expected = _stored().get(stored_key(name))
    assert expected, f"no stored values for {stored_key(name)}; regenerate (module docstring)"
    tol = CASES[name][1]
    missing = sorted(set(expected) - set(now))
    assert not missing, f"{len(missing)} pinned values are gone from results.json, e.g. {missing[:5]}"
    changed = []
    for path, want in expected.items():
        got = now[path]
        if isinstance(want, (bool, str)) or want is None or isinstance(got, (bool, str)) or got is None:
            ok = got == want
        else:
            atol = tol["atol"]
            if name in TEST_IMAGES and path.endswith("_acc"):
                atol = 1.0 / TEST_IMAGES[name] + 1e-12
            ok = math.isclose(got, want, rel_tol=tol["rtol"], abs_tol=atol)
        if not ok:
            changed.append(f"{path}: {want!r} -> {got!r}")
    assert not changed, f"{len(changed)} of {len(expected)} pinned values changed:\n" + "\n".join(changed[:20])


def test_pinned_sample_is_spread_and_skips_volatile_keys():
    doc = {"seconds": 3.0, "a": [{"x": float(i), "ok": i % 2 == 0} for i in range(5000)], "run": "name"}
    kept = pinned(doc)
    numbers = [p for p, v in kept.items() if isinstance(v, float)]
    assert "/seconds" not in kept and "/run" not in kept
    assert SAMPLE // 2 <= len(numbers) <= SAMPLE
    assert sum(isinstance(v, bool) for v in kept.values()) == 5000  # every bool is kept
    assert {p.split("/")[2][0] for p in numbers} == set("0123456789")  # spread over the whole document

"""The C++ CPU kernels (``quant_cpu.cpp``, the activation op; ``weight_cpu.cpp``, the learned-step weight op): built
into one library with the system's ``g++`` on first use, cached, loaded with ctypes.

Why this way: the kernel is two plain loops with ``extern "C"`` entry points, so it needs no PyTorch headers and
builds in about 2 s (a ``torch.utils.cpp_extension`` build takes a minute on 2 cores), works with any torch version,
and the same binary serves every process. It is compiled for the machine it runs on (``-march=native``), so the cache
key holds the source, the flags, the compiler's version and the CPU's feature flags:
``$STELAB_CACHE_DIR`` (default ``~/.cache/stelab``) ``/kernels/<key>/quant_cpu.so``, written atomically (concurrent
first uses each build and the last rename wins, which is safe). OpenMP threads come from libgomp, the runtime torch's
CPU build already loaded, so the kernel and torch share one thread pool.

Where no compiler is found or the build fails, :func:`library` returns ``None`` once with one warning, and the
operator takes the pure-PyTorch path (:mod:`stelab.kernels.reference`) with identical results.
``STELAB_NO_CPP=1`` turns the kernel off (tests of the fallback, comparisons).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("quant_cpu.cpp")
SOURCES = (SOURCE, Path(__file__).with_name("weight_cpu.cpp"))
FLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", "-shared",
         "-fPIC")
DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}
ABI_VERSION = 5


def cache_dir() -> Path:
    return Path(os.environ.get("STELAB_CACHE_DIR") or Path.home() / ".cache" / "stelab") / "kernels"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _key(compiler: str) -> str:
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    text = "\n".join([*(f.read_text() for f in SOURCES), " ".join(FLAGS), version, platform.machine(), _cpu_flags()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build(compiler: str | None = None) -> Path:
    """Compile the kernel (or find it in the cache) and return the shared library's path; raises on failure."""
    compiler = compiler or os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not compiler:
        raise RuntimeError("no C++ compiler found (g++ or c++ on PATH, or $CXX)")
    target = cache_dir() / _key(compiler) / "quant_cpu.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        result = subprocess.run([compiler, *FLAGS, "-o", tmp, *map(str, SOURCES)], capture_output=True, text=True,
                                timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed:\n{result.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    if lib.stelab_abi_version() != ABI_VERSION:
        raise RuntimeError(f"{path} has ABI {lib.stelab_abi_version()}, expected {ABI_VERSION}; delete it to rebuild")
    i64, i32, dbl, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_double, ctypes.c_void_p
    lib.stelab_quant_forward.argtypes = [i32, ptr, ptr, ptr, i64, dbl, i32, i32, ptr, i32, i32, i32]
    lib.stelab_quant_forward.restype = i32
    lib.stelab_quant_backward.argtypes = [i32, ptr, ptr, ptr, i64, ptr, i32, i32]
    lib.stelab_quant_backward.restype = i32
    lib.stelab_pack_codes.argtypes = [i32, ptr, ptr, i64, dbl, i32, i32, i32]
    lib.stelab_pack_codes.restype = i32
    lib.stelab_unpack_codes.argtypes = [ptr, ptr, i64, ptr, i32, i32, i32]
    lib.stelab_unpack_codes.restype = i32
    lib.stelab_learned_backward.argtypes = [i32, ptr, ptr, ptr, i64, dbl, i32, i32, i32, ptr, i32, ptr, i32, dbl, i32]
    lib.stelab_learned_backward.restype = dbl
    lib.stelab_learned_state_backward.argtypes = [i32, ptr, ptr, ptr, i64, ptr, ptr, i32, i32]
    lib.stelab_learned_state_backward.restype = dbl
    lib.stelab_weight_forward.argtypes = [i32, ptr, ptr, ptr, i64, i64, dbl, i32, i32]
    lib.stelab_weight_forward.restype = i64
    lib.stelab_weight_step_grad.argtypes = [i32, ptr, ptr, ptr, ptr, i64, i64, dbl, i32, i32]
    lib.stelab_weight_step_grad.restype = i32
    return lib


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded kernel, or ``None`` (with one warning) where it cannot be built; cached per process."""
    if os.environ.get("STELAB_NO_CPP", "") not in ("", "0"):
        return None
    try:
        return _load(build())
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        warnings.warn(f"stelab: the C++ CPU kernel is unavailable ({err}); using the pure-PyTorch path, which gives "
                      "identical results more slowly. Install g++ (e.g. apt-get install g++) to enable it.",
                      RuntimeWarning, stacklevel=3)
        return None


def available() -> bool:
    return library() is not None


# Below this many elements one thread does the work: waking the pool costs more than it saves.
PARALLEL_GRAIN = 1 << 15


def threads_for(n: int) -> int:
    return torch.get_num_threads() if n >= PARALLEL_GRAIN else 1


def forward(x: torch.Tensor, y: torch.Tensor, state: torch.Tensor | None, alpha: float, levels: int, mode: int,
            breaks: list[float], mask_bits: int) -> bool:
    """Fill ``y`` (and ``state``) from dense ``x`` with the same strides; returns whether ``x`` held a NaN."""
    lib = library()
    assert lib is not None
    n = x.numel()
    table = (ctypes.c_double * max(len(breaks), 1))(*breaks)
    nan = lib.stelab_quant_forward(DTYPE_CODES[x.dtype], x.data_ptr(), y.data_ptr(),
                                   state.data_ptr() if state is not None else None, n, alpha, levels, mode, table,
                                   len(breaks), mask_bits, threads_for(n))
    return bool(nan)


def backward(grad: torch.Tensor, state: torch.Tensor, out: torch.Tensor, values: list[float]) -> None:
    lib = library()
    assert lib is not None
    n = grad.numel()
    table = (ctypes.c_double * len(values))(*values)
    lib.stelab_quant_backward(DTYPE_CODES[grad.dtype], grad.data_ptr(), state.data_ptr(), out.data_ptr(), n, table,
                              len(values), threads_for(n))


PACK_DTYPES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.uint8: 4}


def pack_codes(x: torch.Tensor, out: torch.Tensor, inv: float, bits: int, sign: bool) -> None:
    """Fill ``out`` (uint8, packed size) with the ``bits``-bit codes of the flat dense levels ``x`` (or of a uint8
    state, its own codes); ``inv``: ``1/alpha`` in the compute type (:mod:`stelab.pack.codes`)."""
    lib = library()
    assert lib is not None
    n = x.numel()
    if lib.stelab_pack_codes(PACK_DTYPES[x.dtype], x.data_ptr(), out.data_ptr(), n, inv, bits, int(sign),
                             threads_for(n)) != 0:
        raise ValueError(f"stelab_pack_codes: unsupported dtype {x.dtype} or {bits} bits")


def unpack_codes(data: torch.Tensor, out: torch.Tensor, table: torch.Tensor, bits: int) -> None:
    """Fill the flat dense ``out`` with ``table[code]`` for the codes packed in ``data`` (``table``: ``2**bits``
    entries of ``out``'s type, contiguous, on the CPU)."""
    lib = library()
    assert lib is not None
    n = out.numel()
    if lib.stelab_unpack_codes(data.data_ptr(), out.data_ptr(), n, table.data_ptr(), bits, out.element_size(),
                               threads_for(n)) != 0:
        raise ValueError(f"stelab_unpack_codes: unsupported element size {out.element_size()} or {bits} bits")


RULES = {"mean": 0, "ae": 1, "pact": 2, "min": 3, "lsq": 4}


def learned_backward(x: torch.Tensor, grad: torch.Tensor, dx: torch.Tensor, alpha: float, levels: int, bits: int,
                     mode: int, breaks: list[float], values: list[float], rule: str, lsq_scale: float) -> float:
    """Fill ``dx`` (``grad * mu'(x)``) and return ``d alpha`` (``sum grad * dq/dalpha`` by ``rule``) for dense ``x``,
    ``grad`` and ``dx`` of one layout, in one pass (``values``: ``mu'`` on each of the ``len(breaks) + 1`` regions)."""
    lib = library()
    assert lib is not None
    n = x.numel()
    b = (ctypes.c_double * max(len(breaks), 1))(*breaks)
    v = (ctypes.c_double * len(values))(*values)
    return lib.stelab_learned_backward(DTYPE_CODES[x.dtype], x.data_ptr(), grad.data_ptr(), dx.data_ptr(), n, alpha,
                                       levels, bits, mode, b, len(breaks), v, RULES[rule], lsq_scale, threads_for(n))


def learned_state_backward(grad: torch.Tensor, state: torch.Tensor, dx: torch.Tensor, values: list[float],
                           factors: list[float]) -> float:
    """Fill ``dx`` (``grad * values[state]``) and return ``d alpha`` (``sum grad * factors[state]``) for dense
    ``grad``, ``state`` and ``dx`` of one layout, in one pass (at most 16 regions)."""
    lib = library()
    assert lib is not None and len(values) == len(factors) <= 16
    n = grad.numel()
    v = (ctypes.c_double * len(values))(*values)
    f = (ctypes.c_double * len(factors))(*factors)
    return lib.stelab_learned_state_backward(DTYPE_CODES[grad.dtype], grad.data_ptr(), state.data_ptr(),
                                             dx.data_ptr(), n, v, f, len(values), threads_for(n))


class _Cpp:
    """This kernel as a backend (:mod:`stelab.kernels.backend`): dense CPU tensors of the four float types."""

    name = "cpp"
    devices = ("cpu",)
    max_breaks = 8  # the kernel's region table
    finds_nan = True  # the forward pass counts NaN inputs as it goes
    needs_state_layout = True
    learned_backward = staticmethod(learned_backward)
    learned_state_backward = staticmethod(learned_state_backward)

    def available(self) -> bool:
        return available()

    def accepts(self, dtype: torch.dtype, dense: bool) -> bool:
        return dense and dtype in DTYPE_CODES

    def forward(self, x: torch.Tensor, alpha: float, levels: int, mode: int, breaks: list[float],
                mask_bits: int) -> tuple[torch.Tensor, torch.Tensor, bool | None]:
        y = torch.empty_like(x)
        state = torch.empty_like(x, dtype=torch.uint8) if breaks else torch.empty(0, dtype=torch.uint8)
        nan = forward(x, y, state if breaks else None, alpha, levels, mode, breaks, mask_bits)
        return y, state, nan

    def backward(self, grad: torch.Tensor, state: torch.Tensor, values: list[float]) -> torch.Tensor:
        out = torch.empty_like(grad)
        backward(grad, state, out, values)
        return out


BACKEND = _Cpp()


WEIGHT_KINDS = {"uniform": 0, "midrise": 1}


def weight_forward(w: torch.Tensor, step: torch.Tensor, out: torch.Tensor, q: int, kind: str) -> int:
    """Fill ``out`` with ``s k(w/s)`` for dense ``w`` (float32/64), one step per output channel (``step`` of shape
    ``(C,)``) or one for the tensor; returns how many steps are not positive and finite."""
    lib = library()
    assert lib is not None
    channels = step.numel()
    return lib.stelab_weight_forward(DTYPE_CODES[w.dtype], w.data_ptr(), step.data_ptr(), out.data_ptr(), channels,
                                     w.numel() // channels, float(q), WEIGHT_KINDS[kind], threads_for(w.numel()))


def weight_step_grad(w: torch.Tensor, step: torch.Tensor, grad: torch.Tensor, q: int, kind: str) -> torch.Tensor:
    """Per step, the sum of ``grad * d(s k)/ds`` over the weights it scales (float64, shape ``(step.numel(),)``)."""
    lib = library()
    assert lib is not None
    channels = step.numel()
    out = torch.empty(channels, dtype=torch.float64)
    lib.stelab_weight_step_grad(DTYPE_CODES[w.dtype], w.data_ptr(), step.data_ptr(), grad.data_ptr(), out.data_ptr(),
                                channels, w.numel() // channels, float(q), WEIGHT_KINDS[kind], threads_for(w.numel()))
    return out

"""Triton kernels of ``stelab::quantize`` (imported only where ``triton`` is installed; see ``triton_quant.py``).

Triton resolves names used inside a kernel from this module's globals, so the kernels live at module level here.
"""

import triton
import triton.language as tl


@triton.jit
def to_output(v, out_ptr):
    # float32 -> bfloat16 rounded to nearest even by hand: the interpreter's cast truncates, the GPU's rounds;
    # this way both give the C++ kernel's (and PyTorch's) result.
    if out_ptr.dtype.element_ty == tl.bfloat16:
        u = v.to(tl.uint32, bitcast=True)
        rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        quiet = (u >> 16) | 0x40
        return tl.where(v != v, quiet, rounded).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    return v.to(out_ptr.dtype.element_ty)

@triton.jit
def region_of(v, t_ptr, NB: tl.constexpr):
    # the region of mu': how many of the NB (<= 4) thresholds at t_ptr v exceeds
    r = tl.zeros(v.shape, dtype=tl.int32)
    if NB > 0:
        r += (v > tl.load(t_ptr)).to(tl.int32)
    if NB > 1:
        r += (v > tl.load(t_ptr + 1)).to(tl.int32)
    if NB > 2:
        r += (v > tl.load(t_ptr + 2)).to(tl.int32)
    if NB > 3:
        r += (v > tl.load(t_ptr + 3)).to(tl.int32)
    return r


@triton.jit
def ratio(v, a, F64: tl.constexpr):
    # v / a rounded to nearest: float64 division is IEEE on every backend, float32's needs div_rn
    if F64:
        return v / a
    return tl.math.div_rn(v, tl.zeros_like(v) + a)


@triton.jit
def level_index(v, a, levels, MODE: tl.constexpr, F64: tl.constexpr):
    # k with q(v) = k a: +-1 for sign (MODE 2), else clamp(ceil(v/a [- 1/2 for round]), 0, L)
    if MODE == 2:
        return tl.where(v > 0, 1.0, -1.0).to(a.dtype)
    r = ratio(v, a, F64)
    if MODE == 1:
        r = r - 0.5
    k = tl.math.ceil(r)
    k = tl.where(k > 0, k, 0.0)
    return tl.where(k < levels, k, levels)


@triton.jit
def fwd(x_ptr, y_ptr, s_ptr, p_ptr, n, mask_bits,
        MODE: tl.constexpr, NB: tl.constexpr, MASK: tl.constexpr, F64: tl.constexpr, BLOCK: tl.constexpr):
    # p_ptr: [alpha, L, t0, t1, t2, t3] in the compute type (float32, or float64 for float64 inputs).
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    a = tl.load(p_ptr)
    levels = tl.load(p_ptr + 1)
    v = tl.load(x_ptr + offs, mask=inside, other=0.0).to(a.dtype)
    q = level_index(v, a, levels, MODE, F64) * a
    q = tl.where(v != v, v, q)
    tl.store(y_ptr + offs, to_output(q, y_ptr), mask=inside)
    if NB > 0:
        code = region_of(v, p_ptr + 2, NB)
        if MASK:
            code = (mask_bits >> code) & 1
        tl.store(s_ptr + offs, code.to(tl.uint8), mask=inside)

@triton.jit
def bwd(g_ptr, s_ptr, out_ptr, v_ptr, n, BLOCK: tl.constexpr):
    # v_ptr: mu' per state value (up to 5), in the compute type.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    s = tl.load(s_ptr + offs, mask=inside, other=0).to(tl.int32)
    value = tl.load(v_ptr + s, mask=inside, other=0.0)
    g = tl.load(g_ptr + offs, mask=inside, other=0.0).to(value.dtype)
    tl.store(out_ptr + offs, to_output(g * value, out_ptr), mask=inside)

@triton.jit
def learned_bwd(x_ptr, g_ptr, dx_ptr, part_ptr, p_ptr, v_ptr, n,
                MODE: tl.constexpr, RULE: tl.constexpr, NB: tl.constexpr, F64: tl.constexpr, BLOCK: tl.constexpr):
    # p_ptr: [alpha, L, top, 2^(bits-1), lsq scale, t0, t1, t2, t3] in the compute type; v_ptr: mu' per region.
    # dx = g mu'(x) per element, and this block's sum of g dq/dalpha (by RULE: 0 mean, 1 ae, 2 pact, 3 min, 4 lsq)
    # in part_ptr[program]: the C++ kernel's math (quant_cpu.cpp, learned_impl), the reduction per block.
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    a = tl.load(p_ptr)
    levels = tl.load(p_ptr + 1)
    top = tl.load(p_ptr + 2)
    v = tl.load(x_ptr + offs, mask=inside, other=0.0).to(a.dtype)
    g = tl.load(g_ptr + offs, mask=inside, other=0.0).to(a.dtype)
    region = region_of(v, p_ptr + 5, NB)
    d = tl.load(v_ptr + region, mask=inside, other=0.0)
    tl.store(dx_ptr + offs, to_output(g * d, dx_ptr), mask=inside)
    u = ratio(v, a, F64)
    k = level_index(v, a, levels, MODE, F64)
    zero = tl.zeros_like(v)
    if RULE == 1:
        f = k
    elif RULE == 4:
        f = tl.where(u <= 0, zero, tl.where(u >= levels, zero + levels, k - u)) * tl.load(p_ptr + 4)
    elif RULE == 2:
        f = tl.where(v > top, zero + levels, zero)
    elif RULE == 0:
        f = tl.where(v > top, zero + levels, tl.where(v > 0, zero + tl.load(p_ptr + 3), zero))
    else:
        f = tl.where((v > 0) & (v <= top), zero + 1.0, zero)
    tl.store(part_ptr + pid, tl.sum(tl.where(inside, g * f, zero), axis=0))

@triton.jit
def learned_state_bwd(g_ptr, s_ptr, dx_ptr, part_ptr, v_ptr, f_ptr, n, BLOCK: tl.constexpr):
    # From the forward's region state: dx = g * v_ptr[s], and this block's sum of g * f_ptr[s] (d alpha) in
    # part_ptr[program] (the C++ kernel's learned_state_impl, the reduction per block).
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    s = tl.load(s_ptr + offs, mask=inside, other=0).to(tl.int32)
    d = tl.load(v_ptr + s, mask=inside, other=0.0)
    f = tl.load(f_ptr + s, mask=inside, other=0.0)
    g = tl.load(g_ptr + offs, mask=inside, other=0.0).to(d.dtype)
    tl.store(dx_ptr + offs, to_output(g * d, dx_ptr), mask=inside)
    tl.store(part_ptr + pid, tl.sum(tl.where(inside, g * f, tl.zeros_like(g)), axis=0))

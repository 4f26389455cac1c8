// stelab's fused quantized activation for the CPU: one pass forward, one pass backward.
//
// Built on first use by stelab/kernels/cpu.py (g++ -O3 -march=native -fopenmp -fno-trapping-math: ceil only
// vectorizes when it need not raise the inexact flag; no result changes) and loaded with ctypes; the math is
// stated, and checked against, stelab/kernels/reference.py (the pure-PyTorch path, used where no compiler exists).
//
// Forward, in the compute type C (float; double for double inputs), with a = alpha rounded to C:
//   staircase: k = ceil(x / a)          round: k = ceil(x / a - 1/2)       (a tie x = (k + 1/2) a rounds down)
//   k = min(max(k, 0), L),  y = k * a rounded to the input type;   sign: y = x > 0 ? a : -a.   NaN in, NaN out.
// Backward state, one byte per element written in the same pass: the STE region r = #{j : x > t_j} with
// t_j = breaks_j * top (top = L * a, or a for sign); when mu' takes two values only (relu, clipped relu, hardtanh,
// leaky relu) the byte is the mask (mask_bits >> r) & 1 instead, so the backward is a select, not a table lookup.
// Backward: dx = g * values[s] in C, rounded to the gradient's type.
//
// Why division and not x * (1/a): the user's formula is ceil(x / a); a reciprocal is off by an ulp near every step.
// Vector division is cheap next to the memory traffic of an elementwise op. No -ffast-math: NaN and exact IEEE
// division are part of the contract. Tensors arrive as flat dense buffers (any dense memory format: an elementwise
// op does not care about the order of elements, only that x, y and the state share it).

#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

// ---- storage types: bf16 and fp16 are converted to and from float (round to nearest even) ----
struct bf16 { uint16_t bits; };
typedef _Float16 f16;

inline float load(float v) { return v; }
inline double load(double v) { return v; }
inline float load(f16 v) { return (float)v; }
inline float load(bf16 v) {
    uint32_t u = (uint32_t)v.bits << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

template <typename T> inline T store(float v);
template <> inline float store<float>(float v) { return v; }
template <> inline f16 store<f16>(float v) { return (f16)v; }
template <> inline bf16 store<bf16>(float v) {
    uint32_t u;
    std::memcpy(&u, &v, 4);
    // Round to nearest even.
    // Every NaN reaching here came from a bfloat16 (low 16 bits zero) or is the default NaN, so adding the rounding
    // bias cannot carry into the exponent: no NaN test is needed.
    return bf16{(uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16)};
}

template <typename T, typename C> inline T out(C v) { return store<T>(v); }
template <> inline double out<double, double>(double v) { return v; }

enum Mode { STAIRCASE = 0, ROUND = 1, SIGN = 2 };

// One element of the forward. NB >= 0: that many breakpoints; NB < 0: up to 8, the unused ones +inf (never
// exceeded, not even by NaN), so every loop has a trip count known at compile time.
// Written without branches so the loop vectorizes: the clamps are ordered so that NaN passes through them
// (NaN < 0 and NaN > L are false), and "+ 0" turns the -0 that ceil gives for x in (-a, 0] into +0.
template <typename T, typename C, int MODE, int NB, bool MASK>
inline void element(const T* __restrict x, T* __restrict y, uint8_t* __restrict s, int64_t i, C a, C L,
                    const C* t, uint32_t mask_bits, int& nan) {
    C v = load(x[i]);
    C q;
    if (MODE == SIGN) {
        q = v > 0 ? a : -a;
        q = v == v ? q : v;
    } else {
        C r = v / a;
        if (MODE == ROUND) r = r - (C)0.5;
        C k = std::ceil(r);
        k = k < 0 ? (C)0 : k;
        k = k > L ? L : k;
        q = k * a + (C)0;
    }
    nan |= (int)(v != v);
    y[i] = out<T, C>(q);
    if (NB != 0) {
        if (MASK && NB > 0 && NB <= 2) {
            // The mask as boolean selects (cheaper in vector registers than a variable shift of the region).
            const bool b0 = mask_bits & 1u, b1 = (mask_bits >> 1) & 1u, b2 = (mask_bits >> 2) & 1u;
            const bool g0 = v > t[0];
            const bool m = NB == 1 ? (g0 ? b1 : b0) : ((v > t[1]) ? b2 : (g0 ? b1 : b0));
            s[i] = (uint8_t)m;
        } else {
            uint32_t code = 0;
            for (int j = 0; j < (NB > 0 ? NB : 8); ++j) code += (uint32_t)(v > t[j]);
            s[i] = (uint8_t)(MASK ? (mask_bits >> code) & 1u : code);
        }
    }
}

template <typename T, typename C, int MODE, int NB, bool MASK>
int forward_impl(const T* __restrict x, T* __restrict y, uint8_t* __restrict s, int64_t n, double alpha, int levels,
                 const double* breaks, int nb, uint32_t mask_bits, int threads) {
    const C a = (C)alpha;
    const C L = (C)levels;
    const C top = MODE == SIGN ? a : L * a;
    C thresholds[8];
    for (int j = 0; j < 8; ++j) thresholds[j] = j < nb ? (C)breaks[j] * top : (C)INFINITY;
    int nan = 0;
#pragma omp parallel num_threads(threads) reduction(| : nan) if (threads > 1)
    {
        // A private copy: the compiler cannot prove that stores to y and s leave a shared array alone, and would
        // reload it for every element instead of keeping it in registers.
        C t[8];
        for (int j = 0; j < 8; ++j) t[j] = thresholds[j];
#pragma omp for simd schedule(static)
        for (int64_t i = 0; i < n; ++i) element<T, C, MODE, NB, MASK>(x, y, s, i, a, L, t, mask_bits, nan);
    }
    return nan;
}

template <typename T, typename C, int MODE>
int forward_nb(const T* x, T* y, uint8_t* s, int64_t n, double alpha, int levels, const double* breaks, int nb,
               int mask_bits, int threads) {
    const uint32_t m = (uint32_t)mask_bits;
    // One break: the region code is the mask (mask_bits = 0b10, or 0b01 for a falling step). Two: the clipped shapes.
    switch (nb) {
        case 0: return forward_impl<T, C, MODE, 0, false>(x, y, s, n, alpha, levels, breaks, nb, m, threads);
        case 1:
            if (mask_bits >= 0) return forward_impl<T, C, MODE, 1, true>(x, y, s, n, alpha, levels, breaks, nb, m,
                                                                            threads);
            return forward_impl<T, C, MODE, 1, false>(x, y, s, n, alpha, levels, breaks, nb, m, threads);
        case 2:
            if (mask_bits >= 0) return forward_impl<T, C, MODE, 2, true>(x, y, s, n, alpha, levels, breaks, nb, m,
                                                                            threads);
            return forward_impl<T, C, MODE, 2, false>(x, y, s, n, alpha, levels, breaks, nb, m, threads);
        default:
            if (mask_bits >= 0) return forward_impl<T, C, MODE, -1, true>(x, y, s, n, alpha, levels, breaks, nb, m,
                                                                             threads);
            return forward_impl<T, C, MODE, -1, false>(x, y, s, n, alpha, levels, breaks, nb, m, threads);
    }
}

template <typename T, typename C>
int forward_mode(const void* x, void* y, uint8_t* s, int64_t n, double alpha, int levels, int mode,
                 const double* breaks, int nb, int mask_bits, int threads) {
    const T* xx = static_cast<const T*>(x);
    T* yy = static_cast<T*>(y);
    if (mode == STAIRCASE)
        return forward_nb<T, C, STAIRCASE>(xx, yy, s, n, alpha, levels, breaks, nb, mask_bits, threads);
    if (mode == ROUND) return forward_nb<T, C, ROUND>(xx, yy, s, n, alpha, levels, breaks, nb, mask_bits, threads);
    return forward_nb<T, C, SIGN>(xx, yy, s, n, alpha, levels, breaks, nb, mask_bits, threads);
}

template <typename T, typename C>
void backward_impl(const void* g, const uint8_t* __restrict s, void* dx, int64_t n, const double* values, int nv,
                   int threads) {
    const T* __restrict gg = static_cast<const T*>(g);
    T* __restrict out_ = static_cast<T*>(dx);
    C lut[256];
    for (int j = 0; j < 256; ++j) lut[j] = (C)values[j < nv ? j : nv - 1];
    if (nv == 2) {  // two regions (a mask): a select, no table lookup
        const C lo = lut[0], hi = lut[1];
#pragma omp parallel for simd num_threads(threads) schedule(static) if (parallel : threads > 1)
        for (int64_t i = 0; i < n; ++i) out_[i] = out<T, C>(load(gg[i]) * (s[i] ? hi : lo));
        return;
    }
#pragma omp parallel for num_threads(threads) schedule(static) if (parallel : threads > 1)
    for (int64_t i = 0; i < n; ++i) out_[i] = out<T, C>(load(gg[i]) * lut[s[i]]);
}

// ---- learned resolution: the backward's dx and d alpha in one pass over x and g ----
// dx = g * values[r] (r the region of mu', as in the forward's state); d alpha = sum g * f(x) with f the rule's
// dq/dalpha (stelab/ops.py states them): mean 2^(b-1) on (0, top] and L above, ae the level index k (+-1 for sign),
// pact L above top, min 1 on (0, top], lsq (k - x/a on 0 < x/a < L, L above, 0 below) times LSQ's scale. f and the
// products are in C, the sum in double (per-thread partial sums, then added).
enum Rule { MEAN = 0, AE = 1, PACT = 2, MIN = 3, LSQ = 4 };

template <typename C, int MODE> inline C level_of(C v, C a, C L) {
    if (MODE == SIGN) return v > 0 ? (C)1 : (C)-1;
    C r = v / a;
    if (MODE == ROUND) r = r - (C)0.5;
    C k = std::ceil(r);
    k = k > 0 ? k : (C)0;  // NaN -> 0, as the reference's where(k > 0, k, 0)
    return k > L ? L : k;
}

template <typename T, typename C, int MODE, int RULE, int NB>
double learned_impl(const T* __restrict x, const T* __restrict g, T* __restrict dx, int64_t n, double alpha,
                    int levels, int bits, const double* breaks, int nb, const double* values, double lsq_scale,
                    int threads) {
    const C a = (C)alpha, L = (C)levels, top = MODE == SIGN ? a : L * a, half = (C)(1 << (bits - 1));
    C t0[8], v0[9];
    for (int j = 0; j < 8; ++j) t0[j] = j < nb ? (C)breaks[j] * top : (C)INFINITY;
    for (int j = 0; j <= 8; ++j) v0[j] = (C)values[j <= nb ? j : nb];
    const C scale = (C)lsq_scale;
    double acc = 0.0;  // shared; the loop's reduction adds each thread's partial sum to it
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        C t[8], vals[9];  // private copies, kept in registers (see forward_impl)
        for (int j = 0; j < 8; ++j) t[j] = t0[j];
        for (int j = 0; j <= 8; ++j) vals[j] = v0[j];
#pragma omp for simd schedule(static) reduction(+ : acc)
        for (int64_t i = 0; i < n; ++i) {
            const C v = load(x[i]), gi = load(g[i]);
            C d;
            if (NB == 0) {
                d = vals[0];
            } else if (NB == 1) {
                d = v > t[0] ? vals[1] : vals[0];
            } else if (NB == 2) {
                d = v > t[1] ? vals[2] : (v > t[0] ? vals[1] : vals[0]);
            } else {
                int r = 0;
                for (int j = 0; j < 8; ++j) r += v > t[j];  // unused breaks are +inf
                d = vals[r];
            }
            dx[i] = out<T, C>(gi * d);
            C f;
            if (RULE == AE || RULE == LSQ) {
                const C k = level_of<C, MODE>(v, a, L);
                if (RULE == AE) {
                    f = k;
                } else {
                    const C u = v / a;
                    f = (u <= 0 ? (C)0 : (u >= L ? L : k - u)) * scale;
                }
            } else if (RULE == PACT) {
                f = v > top ? L : (C)0;
            } else if (RULE == MEAN) {
                f = v > top ? L : (v > 0 ? half : (C)0);
            } else {
                f = (v > 0 && v <= top) ? (C)1 : (C)0;
            }
            acc += (double)(gi * f);
        }
    }
    return acc;
}

// The same from the forward's one-byte state instead of x (the mask rules mean, pact and min): the state is the
// region of the merged breakpoints of mu' and of dq/dalpha, so dx = g * values[s] and d alpha = sum g * factors[s].
// Two to four regions (every built-in STE with mean, pact or min: 0, the top and mu''s own breakpoints): a chain of
// selects instead of two table lookups, which the compiler turns into gathers; the pass then runs at the fixed
// backward's speed (the lookups made it 2.6x slower on AVX-512).
template <typename T, typename C, int NV>
double learned_state_select(const void* g, const uint8_t* __restrict s, void* dx, int64_t n, const double* values,
                            const double* factors, int threads) {
    const T* __restrict gg = static_cast<const T*>(g);
    T* __restrict out_ = static_cast<T*>(dx);
    C v[NV], f[NV];
    for (int j = 0; j < NV; ++j) v[j] = (C)values[j], f[j] = (C)factors[j];
    double acc = 0.0;
#pragma omp parallel for simd num_threads(threads) schedule(static) reduction(+ : acc) if (parallel : threads > 1)
    for (int64_t i = 0; i < n; ++i) {
        const C gi = load(gg[i]);
        const int r = s[i];
        C vi = v[0], fi = f[0];
        for (int j = 1; j < NV; ++j) {  // NV is a constant: unrolled into compares and blends
            vi = r == j ? v[j] : vi;
            fi = r == j ? f[j] : fi;
        }
        out_[i] = out<T, C>(gi * vi);
        acc += (double)(gi * fi);
    }
    return acc;
}

template <typename T, typename C>
double learned_state_impl(const void* g, const uint8_t* __restrict s, void* dx, int64_t n, const double* values,
                          const double* factors, int nv, int threads) {
    if (nv == 2) return learned_state_select<T, C, 2>(g, s, dx, n, values, factors, threads);
    if (nv == 3) return learned_state_select<T, C, 3>(g, s, dx, n, values, factors, threads);
    if (nv == 4) return learned_state_select<T, C, 4>(g, s, dx, n, values, factors, threads);
    const T* __restrict gg = static_cast<const T*>(g);
    T* __restrict out_ = static_cast<T*>(dx);
    C lut0[16], fac0[16];
    for (int j = 0; j < 16; ++j) lut0[j] = (C)values[j < nv ? j : nv - 1], fac0[j] = (C)factors[j < nv ? j : nv - 1];
    double acc = 0.0;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        C lut[16], fac[16];
        for (int j = 0; j < 16; ++j) lut[j] = lut0[j], fac[j] = fac0[j];
#pragma omp for simd schedule(static) reduction(+ : acc)
        for (int64_t i = 0; i < n; ++i) {
            const C gi = load(gg[i]);
            const int r = s[i] & 15;
            out_[i] = out<T, C>(gi * lut[r]);
            acc += (double)(gi * fac[r]);
        }
    }
    return acc;
}

template <typename T, typename C, int MODE>
double learned_rule(const void* x, const void* g, void* dx, int64_t n, double alpha, int levels, int bits,
                    const double* breaks, int nb, const double* values, int rule, double lsq_scale, int threads) {
    const T* xx = static_cast<const T*>(x);
    const T* gg = static_cast<const T*>(g);
    T* d = static_cast<T*>(dx);
#define STELAB_RULE(R, B) learned_impl<T, C, MODE, R, B>(xx, gg, d, n, alpha, levels, bits, breaks, nb, values, \
                                                         lsq_scale, threads)
#define STELAB_NB(R) (nb == 0 ? STELAB_RULE(R, 0) : nb == 1 ? STELAB_RULE(R, 1) : nb == 2 ? STELAB_RULE(R, 2) \
                                                                                        : STELAB_RULE(R, -1))
    switch (rule) {
        case MEAN: return STELAB_NB(MEAN);
        case AE: return STELAB_NB(AE);
        case PACT: return STELAB_NB(PACT);
        case MIN: return STELAB_NB(MIN);
        default: return STELAB_NB(LSQ);
    }
#undef STELAB_NB
#undef STELAB_RULE
}

template <typename T, typename C>
double learned_mode(const void* x, const void* g, void* dx, int64_t n, double alpha, int levels, int bits, int mode,
                    const double* breaks, int nb, const double* values, int rule, double lsq_scale, int threads) {
    if (mode == STAIRCASE)
        return learned_rule<T, C, STAIRCASE>(x, g, dx, n, alpha, levels, bits, breaks, nb, values, rule, lsq_scale,
                                             threads);
    if (mode == ROUND)
        return learned_rule<T, C, ROUND>(x, g, dx, n, alpha, levels, bits, breaks, nb, values, rule, lsq_scale,
                                         threads);
    return learned_rule<T, C, SIGN>(x, g, dx, n, alpha, levels, bits, breaks, nb, values, rule, lsq_scale, threads);
}

// ---- packed codes of saved quantized outputs (stelab/pack/codes.py states the math) ----
// Pack: code k of a level v is (v * inv + 1/2) truncated, in C (exact within the bound proved there), or v > 0 for
// sign; a uint8 input (an STE state) is its own code. Groups of G = 8 / gcd(8, B) codes fill G B / 8 bytes of a
// little-endian word, code i at bits [i B, (i + 1) B). Unpack: out[e] = table[code], the table holding the raw
// bits of each level in the output's type (computed by the caller with the forward's arithmetic), so the restore
// is a lookup, bit for bit. One pass each way; whole groups in parallel, the last partial group padded with zeros.
constexpr int gcd8(int b) { return b % 8 == 0 ? 8 : b % 4 == 0 ? 4 : b % 2 == 0 ? 2 : 1; }

template <typename T, typename C, bool SIGNED> inline uint64_t code_of(T v, C inv) {
    if (SIGNED) return load(v) > 0 ? 1u : 0u;
    return (uint64_t)(uint8_t)(load(v) * inv + (C)0.5);
}
template <> inline uint64_t code_of<uint8_t, float, false>(uint8_t v, float) { return v; }

template <typename T, typename C, bool SIGNED, int B>
void pack_impl(const T* __restrict x, uint8_t* __restrict out, int64_t n, C inv, int threads) {
    constexpr int G = 8 / gcd8(B), NB = G * B / 8;
    const int64_t groups = n / G;
#pragma omp parallel for num_threads(threads) schedule(static) if (parallel : threads > 1)
    for (int64_t j = 0; j < groups; ++j) {
        uint64_t w = 0;
        for (int i = 0; i < G; ++i) w |= code_of<T, C, SIGNED>(x[j * G + i], inv) << (B * i);
        std::memcpy(out + j * NB, &w, NB);
    }
    if (groups * G < n) {
        uint64_t w = 0;
        for (int64_t e = groups * G; e < n; ++e) w |= code_of<T, C, SIGNED>(x[e], inv) << (B * (e - groups * G));
        std::memcpy(out + groups * NB, &w, NB);
    }
}

template <typename U, int B>
void unpack_impl(const uint8_t* __restrict in, U* __restrict out, int64_t n, const U* table_, int threads) {
    constexpr int G = 8 / gcd8(B), NB = G * B / 8;
    constexpr uint64_t MASK = (1u << B) - 1;
    U table[1 << B];
    for (int k = 0; k < (1 << B); ++k) table[k] = table_[k];
    const int64_t groups = n / G;
#pragma omp parallel for num_threads(threads) schedule(static) if (parallel : threads > 1)
    for (int64_t j = 0; j < groups; ++j) {
        uint64_t w = 0;
        std::memcpy(&w, in + j * NB, NB);
        for (int i = 0; i < G; ++i) out[j * G + i] = table[(w >> (B * i)) & MASK];
    }
    uint64_t w = 0;
    if (groups * G < n) std::memcpy(&w, in + groups * NB, NB);
    for (int64_t e = groups * G; e < n; ++e) out[e] = table[(w >> (B * (e - groups * G))) & MASK];
}

template <typename T, typename C, bool SIGNED>
int pack_bits(const void* x, uint8_t* out, int64_t n, double inv, int bits, int threads) {
    const T* xx = static_cast<const T*>(x);
    switch (bits) {
        case 1: pack_impl<T, C, SIGNED, 1>(xx, out, n, (C)inv, threads); return 0;
        case 2: pack_impl<T, C, SIGNED, 2>(xx, out, n, (C)inv, threads); return 0;
        case 3: pack_impl<T, C, SIGNED, 3>(xx, out, n, (C)inv, threads); return 0;
        case 4: pack_impl<T, C, SIGNED, 4>(xx, out, n, (C)inv, threads); return 0;
        case 5: pack_impl<T, C, SIGNED, 5>(xx, out, n, (C)inv, threads); return 0;
        case 6: pack_impl<T, C, SIGNED, 6>(xx, out, n, (C)inv, threads); return 0;
        case 7: pack_impl<T, C, SIGNED, 7>(xx, out, n, (C)inv, threads); return 0;
        case 8: pack_impl<T, C, SIGNED, 8>(xx, out, n, (C)inv, threads); return 0;
        default: return -1;
    }
}

template <typename U> int unpack_bits(const uint8_t* in, void* out, int64_t n, const void* table, int bits,
                                      int threads) {
    U* o = static_cast<U*>(out);
    const U* t = static_cast<const U*>(table);
    switch (bits) {
        case 1: unpack_impl<U, 1>(in, o, n, t, threads); return 0;
        case 2: unpack_impl<U, 2>(in, o, n, t, threads); return 0;
        case 3: unpack_impl<U, 3>(in, o, n, t, threads); return 0;
        case 4: unpack_impl<U, 4>(in, o, n, t, threads); return 0;
        case 5: unpack_impl<U, 5>(in, o, n, t, threads); return 0;
        case 6: unpack_impl<U, 6>(in, o, n, t, threads); return 0;
        case 7: unpack_impl<U, 7>(in, o, n, t, threads); return 0;
        case 8: unpack_impl<U, 8>(in, o, n, t, threads); return 0;
        default: return -1;
    }
}

}  // namespace

// dtype codes shared with cpu.py: 0 float32, 1 float64, 2 bfloat16, 3 float16.
extern "C" {

// mask_bits < 0: the state is the region code; otherwise bit r says whether region r takes values[1].
int stelab_quant_forward(int dtype, const void* x, void* y, uint8_t* state, int64_t n, double alpha, int levels,
                         int mode, const double* breaks, int nb, int mask_bits, int threads) {
    switch (dtype) {
        case 0: return forward_mode<float, float>(x, y, state, n, alpha, levels, mode, breaks, nb, mask_bits, threads);
        case 1: return forward_mode<double, double>(x, y, state, n, alpha, levels, mode, breaks, nb, mask_bits, threads);
        case 2: return forward_mode<bf16, float>(x, y, state, n, alpha, levels, mode, breaks, nb, mask_bits, threads);
        case 3: return forward_mode<f16, float>(x, y, state, n, alpha, levels, mode, breaks, nb, mask_bits, threads);
        default: return -1;
    }
}

int stelab_quant_backward(int dtype, const void* grad, const uint8_t* state, void* dx, int64_t n,
                          const double* values, int nv, int threads) {
    switch (dtype) {
        case 0: backward_impl<float, float>(grad, state, dx, n, values, nv, threads); return 0;
        case 1: backward_impl<double, double>(grad, state, dx, n, values, nv, threads); return 0;
        case 2: backward_impl<bf16, float>(grad, state, dx, n, values, nv, threads); return 0;
        case 3: backward_impl<f16, float>(grad, state, dx, n, values, nv, threads); return 0;
        default: return -1;
    }
}

// The learned-resolution backward: fills dx, returns d alpha (NaN for an unsupported dtype).
double stelab_learned_backward(int dtype, const void* x, const void* grad, void* dx, int64_t n, double alpha,
                               int levels, int bits, int mode, const double* breaks, int nb, const double* values,
                               int rule, double lsq_scale, int threads) {
    switch (dtype) {
        case 0: return learned_mode<float, float>(x, grad, dx, n, alpha, levels, bits, mode, breaks, nb, values, rule,
                                                  lsq_scale, threads);
        case 1: return learned_mode<double, double>(x, grad, dx, n, alpha, levels, bits, mode, breaks, nb, values,
                                                    rule, lsq_scale, threads);
        case 2: return learned_mode<bf16, float>(x, grad, dx, n, alpha, levels, bits, mode, breaks, nb, values, rule,
                                                 lsq_scale, threads);
        case 3: return learned_mode<f16, float>(x, grad, dx, n, alpha, levels, bits, mode, breaks, nb, values, rule,
                                                lsq_scale, threads);
        default: return NAN;
    }
}

// dtype: as above, or 4 for uint8 (an STE state, its own code); sign: v > 0 is the code. Returns -1 if unsupported.
int stelab_pack_codes(int dtype, const void* x, uint8_t* out, int64_t n, double inv, int bits, int sign,
                      int threads) {
    switch (dtype * 2 + (sign ? 1 : 0)) {
        case 0: return pack_bits<float, float, false>(x, out, n, inv, bits, threads);
        case 1: return pack_bits<float, float, true>(x, out, n, inv, bits, threads);
        case 2: return pack_bits<double, double, false>(x, out, n, inv, bits, threads);
        case 3: return pack_bits<double, double, true>(x, out, n, inv, bits, threads);
        case 4: return pack_bits<bf16, float, false>(x, out, n, inv, bits, threads);
        case 5: return pack_bits<bf16, float, true>(x, out, n, inv, bits, threads);
        case 8: return pack_bits<uint8_t, float, false>(x, out, n, inv, bits, threads);
        default: return -1;
    }
}

// table: 2^bits entries of element_size bytes each (the raw bits of the levels in the output's type).
int stelab_unpack_codes(const uint8_t* in, void* out, int64_t n, const void* table, int bits, int element_size,
                        int threads) {
    switch (element_size) {
        case 1: return unpack_bits<uint8_t>(in, out, n, table, bits, threads);
        case 2: return unpack_bits<uint16_t>(in, out, n, table, bits, threads);
        case 4: return unpack_bits<uint32_t>(in, out, n, table, bits, threads);
        case 8: return unpack_bits<uint64_t>(in, out, n, table, bits, threads);
        default: return -1;
    }
}

// The learned-resolution backward from the forward's state (nv <= 16 regions): fills dx, returns d alpha.
double stelab_learned_state_backward(int dtype, const void* grad, const uint8_t* state, void* dx, int64_t n,
                                     const double* values, const double* factors, int nv, int threads) {
    switch (dtype) {
        case 0: return learned_state_impl<float, float>(grad, state, dx, n, values, factors, nv, threads);
        case 1: return learned_state_impl<double, double>(grad, state, dx, n, values, factors, nv, threads);
        case 2: return learned_state_impl<bf16, float>(grad, state, dx, n, values, factors, nv, threads);
        case 3: return learned_state_impl<f16, float>(grad, state, dx, n, values, factors, nv, threads);
        default: return NAN;
    }
}

int stelab_abi_version(void) { return 5; }
}


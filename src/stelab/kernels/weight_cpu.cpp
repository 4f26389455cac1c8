// stelab's fused learned-step weight quantizer for the CPU (uniform and midrise codes, LSQ step gradient, identity
// STE): one call forward, one call backward per layer, instead of about ten small tensor operations each way.
//
// Built with quant_cpu.cpp into one library by stelab/kernels/cpu.py (same flags: -ffp-contract=off, no fast math,
// so every operation is the IEEE one PyTorch performs). The math is stelab/weights/quantizers.py's and
// stelab/quant/lsq.py's, and the tests check it against them bit for bit (forward) and to rounding (step gradient):
//   u = w / s (s the step of w's channel, in w's type)
//   uniform: k = clamp(sign(u) ceil(|u| - 1/2), -q, q) (+0, never -0)      midrise: k = clamp(2 ceil(u / 2) - 1, -q, q)
//   y = s k;   d step = sum over the channel of g * (u <= -q ? -q : u >= q ? q : k - u), in double (the caller scales
//   it by LSQ's factor).  NaN in w gives NaN codes and outputs, as PyTorch's arithmetic does.
// A weight tensor arrives dense, channel after channel: `channels` runs of `per` elements (one run per tensor step).

#include <cmath>
#include <cstdint>

namespace {

template <typename T, int KIND> inline T weight_code(T u, T q) {
    T k;
    if (KIND == 0) {
        const T a = std::ceil(std::fabs(u) - (T)0.5);
        k = (u > 0 ? a : u < 0 ? -a : u) + (T)0;  // u = +-0 gives +0; NaN stays NaN
    } else {
        k = (T)2 * std::ceil(u / (T)2) - (T)1;
    }
    return k < -q ? -q : (k > q ? q : k);  // NaN compares false: stays NaN
}

template <typename T, int KIND>
int64_t forward_impl(const T* w, const T* s, T* y, int64_t channels, int64_t per, double qd, int threads) {
    const T q = (T)qd;
    int64_t bad = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : bad) if (parallel : threads > 1)
    for (int64_t c = 0; c < channels; ++c) {
        const T sc = s[c];
        if (!(sc > 0 && sc < INFINITY)) ++bad;  // a learned step must stay positive and finite
        const T* wc = w + c * per;
        T* yc = y + c * per;
#pragma omp simd
        for (int64_t i = 0; i < per; ++i) yc[i] = sc * weight_code<T, KIND>(wc[i] / sc, q);
    }
    return bad;
}

template <typename T, int KIND>
void backward_impl(const T* w, const T* s, const T* g, double* out, int64_t channels, int64_t per, double qd,
                   int threads) {
    const T q = (T)qd;
#pragma omp parallel for num_threads(threads) schedule(static) if (parallel : threads > 1)
    for (int64_t c = 0; c < channels; ++c) {
        const T sc = s[c];
        const T* wc = w + c * per;
        const T* gc = g + c * per;
        double acc = 0.0;
#pragma omp simd reduction(+ : acc)
        for (int64_t i = 0; i < per; ++i) {
            const T u = wc[i] / sc;
            const T f = u <= -q ? -q : (u >= q ? q : weight_code<T, KIND>(u, q) - u);
            acc += (double)(gc[i] * f);
        }
        out[c] = acc;
    }
}

}  // namespace

extern "C" {

// dtype 0 float, 1 double; kind 0 uniform, 1 midrise; q the largest code. Returns the number of channels whose step
// is not positive and finite (their outputs are still written), or -1 for an unsupported dtype or kind.
int64_t stelab_weight_forward(int dtype, const void* w, const void* s, void* y, int64_t channels, int64_t per,
                              double q, int kind, int threads) {
    if (dtype == 0 && kind == 0)
        return forward_impl<float, 0>((const float*)w, (const float*)s, (float*)y, channels, per, q, threads);
    if (dtype == 0 && kind == 1)
        return forward_impl<float, 1>((const float*)w, (const float*)s, (float*)y, channels, per, q, threads);
    if (dtype == 1 && kind == 0)
        return forward_impl<double, 0>((const double*)w, (const double*)s, (double*)y, channels, per, q, threads);
    if (dtype == 1 && kind == 1)
        return forward_impl<double, 1>((const double*)w, (const double*)s, (double*)y, channels, per, q, threads);
    return -1;
}

// Writes each channel's sum of g * d(s k)/ds into out (double, `channels` entries); returns 0, or -1 as above.
int stelab_weight_step_grad(int dtype, const void* w, const void* s, const void* g, double* out, int64_t channels,
                            int64_t per, double q, int kind, int threads) {
    if (dtype == 0 && kind == 0)
        backward_impl<float, 0>((const float*)w, (const float*)s, (const float*)g, out, channels, per, q, threads);
    else if (dtype == 0 && kind == 1)
        backward_impl<float, 1>((const float*)w, (const float*)s, (const float*)g, out, channels, per, q, threads);
    else if (dtype == 1 && kind == 0)
        backward_impl<double, 0>((const double*)w, (const double*)s, (const double*)g, out, channels, per, q, threads);
    else if (dtype == 1 && kind == 1)
        backward_impl<double, 1>((const double*)w, (const double*)s, (const double*)g, out, channels, per, q, threads);
    else
        return -1;
    return 0;
}

}  // extern "C"

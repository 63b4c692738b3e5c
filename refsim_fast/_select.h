/* Branch-free selects with the exact semantics of numpy's float clip: refsim_gt_or(x, lo) is
 * `x > lo ? x : lo` and refsim_lt_or(x, hi) is `x < hi ? x : hi`, NaN and signed zeros
 * included; refsim_if_zero(x, a, b) is `x == 0 ? a : b`. On x86-64 they are the SSE max/min instructions, whose definition is exactly that
 * (the second operand when either is NaN or both are zeros); compilers otherwise keep such a
 * ternary as a branch, which mispredicts on data like conductance pairs with one idle device.
 */
#ifndef REFSIM_SELECT_H
#define REFSIM_SELECT_H

#if defined(__SSE2__) || defined(__x86_64__)
#include <emmintrin.h>
static inline float refsim_gt_or_f(float x, float lo) {
    return _mm_cvtss_f32(_mm_max_ss(_mm_set_ss(x), _mm_set_ss(lo)));
}
static inline float refsim_lt_or_f(float x, float hi) {
    return _mm_cvtss_f32(_mm_min_ss(_mm_set_ss(x), _mm_set_ss(hi)));
}
static inline double refsim_gt_or_d(double x, double lo) {
    return _mm_cvtsd_f64(_mm_max_sd(_mm_set_sd(x), _mm_set_sd(lo)));
}
static inline double refsim_lt_or_d(double x, double hi) {
    return _mm_cvtsd_f64(_mm_min_sd(_mm_set_sd(x), _mm_set_sd(hi)));
}
/* `x == 0 ? a : b` (a compare mask and a blend) */
static inline float refsim_if_zero_f(float x, float a, float b) {
    __m128 zero = _mm_cmpeq_ss(_mm_set_ss(x), _mm_setzero_ps());
    return _mm_cvtss_f32(_mm_or_ps(_mm_and_ps(zero, _mm_set_ss(a)),
                                   _mm_andnot_ps(zero, _mm_set_ss(b))));
}
static inline double refsim_if_zero_d(double x, double a, double b) {
    __m128d zero = _mm_cmpeq_sd(_mm_set_sd(x), _mm_setzero_pd());
    return _mm_cvtsd_f64(_mm_or_pd(_mm_and_pd(zero, _mm_set_sd(a)),
                                   _mm_andnot_pd(zero, _mm_set_sd(b))));
}
#else
static inline float refsim_gt_or_f(float x, float lo) { return x > lo ? x : lo; }
static inline float refsim_lt_or_f(float x, float hi) { return x < hi ? x : hi; }
static inline double refsim_gt_or_d(double x, double lo) { return x > lo ? x : lo; }
static inline double refsim_lt_or_d(double x, double hi) { return x < hi ? x : hi; }
static inline float refsim_if_zero_f(float x, float a, float b) { return x == 0 ? a : b; }
static inline double refsim_if_zero_d(double x, double a, double b) { return x == 0 ? a : b; }
#endif

#endif

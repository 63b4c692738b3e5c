/* Philox4x32-10 and the uniform / Gaussian transforms of spec/rng.md, in C.
 *
 * Header-only so that every refsim_fast kernel draws exactly the same numbers as refsim.rng
 * (the reference) for the same (seed, stream id, call, index). All functions are pure.
 */
#ifndef REFSIM_PHILOX_H
#define REFSIM_PHILOX_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* The arithmetic must round exactly like the reference: no fused multiply-add contraction
 * (GCC does not contract in ISO C mode; clang does by default where FMA exists). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define REFSIM_PHILOX_M0 0xD2511F53u
#define REFSIM_PHILOX_M1 0xCD9E8D57u
#define REFSIM_PHILOX_W0 0x9E3779B9u
#define REFSIM_PHILOX_W1 0xBB67AE85u

/* One Philox4x32-10 block: counter (c0..c3), key (k0, k1) -> out[0..3]. */
static inline void refsim_philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                        uint32_t k0, uint32_t k1, uint32_t out[4]) {
    for (int r = 0; r < 10; ++r) {
        if (r) {
            k0 += REFSIM_PHILOX_W0;
            k1 += REFSIM_PHILOX_W1;
        }
        uint64_t p0 = (uint64_t)REFSIM_PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)REFSIM_PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* Block `block` of call `call` of stream (seed, sid). */
static inline void refsim_block(uint32_t seed, uint32_t sid, uint64_t call, uint64_t block,
                                uint32_t out[4]) {
    refsim_philox4x32_10((uint32_t)block, (uint32_t)(block >> 32), (uint32_t)call,
                         (uint32_t)(call >> 32), seed, sid, out);
}

/* Uniform on [0, 1) from one word (spec/rng.md section 3): (w >> 8) * 2^-24. */
static inline double refsim_uniform(uint32_t w) {
    return (double)(int32_t)(w >> 8) * (1.0 / 16777216.0);
}

/* v = (2w + 1) * 2^-33, exactly, through an int32 conversion (which vectorizes). */
static inline double refsim_v(uint32_t w) {
    return ((double)(int32_t)(w ^ 0x80000000u) + 2147483648.0) * (1.0 / 4294967296.0)
           + (1.0 / 8589934592.0);
}

/* The central branch of Wichura's AS241 (abs(q) <= 0.425), q = v - 1/2. */
static inline double refsim_as241_central(double q) {
    double r = 0.180625 - q * q;
    double num = ((((((2.5090809287301226727e3 * r + 3.3430575583588128105e4) * r
                      + 6.7265770927008700853e4) * r + 4.5921953931549871457e4) * r
                    + 1.3731693765509461125e4) * r + 1.9715909503065514427e3) * r
                  + 1.3314166789178437745e2) * r + 3.3871328727963666080e0;
    double den = ((((((5.2264952788528545610e3 * r + 2.8729085735721942674e4) * r
                      + 3.9307895800092710610e4) * r + 2.1213794301586595867e4) * r
                    + 5.3941960214247511077e3) * r + 6.8718700749205790830e2) * r
                  + 4.2313330701600911252e1) * r + 1.0;
    return num * q / den;
}

/* The tail branch of AS241 (abs(q) > 0.425; r <= 5 always holds for our v). */
static inline double refsim_as241_tail(double v, double q) {
    double r = sqrt(-log(q <= 0.0 ? v : 1.0 - v)) - 1.6;
    double num = ((((((7.74545014278341407640e-4 * r + 2.27238449892691845833e-2) * r
                      + 2.41780725177450611770e-1) * r + 1.27045825245236838258e0) * r
                    + 3.64784832476320460504e0) * r + 5.76949722146069140550e0) * r
                  + 4.63033784615654529590e0) * r + 1.42343711074968357734e0;
    double den = ((((((1.05075007164441684324e-9 * r + 5.47593808499534494600e-4) * r
                      + 1.51986665636164571966e-2) * r + 1.48103976427480074590e-1) * r
                    + 6.89767334985100004550e-1) * r + 1.67638483018380384940e0) * r
                  + 2.05319162663775882187e0) * r + 1.0;
    return q < 0.0 ? -(num / den) : num / den;
}

/* Is word w in the tail branch? The integer form of abs(v - 1/2) > 0.425. */
static inline int refsim_in_tail(uint32_t w) {
    return (uint32_t)(w - 0x13333333u) > (0xECCCCCCCu - 0x13333333u);
}

/* Standard normal from one word (spec/rng.md section 4): the AS241 quantile of v(w). Same
 * operations in the same order as refsim.rng.normal_from_words. */
static inline double refsim_normal(uint32_t w) {
    double v = refsim_v(w);
    double q = v - 0.5;
    return refsim_in_tail(w) ? refsim_as241_tail(v, q) : refsim_as241_central(q);
}

/* ---- runs of numbers (vectorizable loops) -------------------------------------------------- */

#define REFSIM_RUN_BLOCKS 64  /* Philox blocks computed together, rounds outside the block loop */

/* out[k] = word start+k of the call, k < n: refsim_block's words, computed REFSIM_RUN_BLOCKS
 * blocks at a time so that the compiler vectorizes the rounds. Integer arithmetic only: every
 * instruction set gives the same words (see refsim_words below for the AVX-512 copy). */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline void refsim_words_run(uint32_t seed, uint32_t sid, uint64_t call, uint64_t start,
                                    int64_t n, uint32_t *restrict out) {
    uint32_t c0[REFSIM_RUN_BLOCKS], c1[REFSIM_RUN_BLOCKS], c2[REFSIM_RUN_BLOCKS],
        c3[REFSIM_RUN_BLOCKS], tmp[4 * REFSIM_RUN_BLOCKS];
    if (n <= 0) return;
    uint64_t end = start + (uint64_t)n;
    uint64_t first = start >> 2, last = (end + 3) >> 2;
    for (uint64_t b0 = first; b0 < last; b0 += REFSIM_RUN_BLOCKS) {
        int nb = (last - b0 < REFSIM_RUN_BLOCKS) ? (int)(last - b0) : REFSIM_RUN_BLOCKS;
        for (int i = 0; i < nb; ++i) {
            uint64_t b = b0 + (uint64_t)i;
            c0[i] = (uint32_t)b;
            c1[i] = (uint32_t)(b >> 32);
            c2[i] = (uint32_t)call;
            c3[i] = (uint32_t)(call >> 32);
        }
        uint32_t k0 = seed, k1 = sid;
        for (int r = 0; r < 10; ++r) {
            if (r) {
                k0 += REFSIM_PHILOX_W0;
                k1 += REFSIM_PHILOX_W1;
            }
            for (int i = 0; i < nb; ++i) {
                uint64_t p0 = (uint64_t)REFSIM_PHILOX_M0 * c0[i];
                uint64_t p1 = (uint64_t)REFSIM_PHILOX_M1 * c2[i];
                uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[i] ^ k0;
                uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3[i] ^ k1;
                c1[i] = (uint32_t)p1;
                c3[i] = (uint32_t)p0;
                c0[i] = n0;
                c2[i] = n2;
            }
        }
        for (int i = 0; i < nb; ++i) {
            tmp[4 * i] = c0[i];
            tmp[4 * i + 1] = c1[i];
            tmp[4 * i + 2] = c2[i];
            tmp[4 * i + 3] = c3[i];
        }
        uint64_t lo = 4 * b0 < start ? start : 4 * b0;
        uint64_t hi = 4 * (b0 + (uint64_t)nb) > end ? end : 4 * (b0 + (uint64_t)nb);
        memcpy(out + (lo - start), tmp + (lo - 4 * b0), (size_t)(hi - lo) * sizeof(uint32_t));
    }
}

/* Copies of the hot loops compiled for AVX-512 (8 lanes of the 32×32→64-bit products and of
 * doubles), picked at run time where the CPU has it: the same integer and separately rounded
 * IEEE operations (no fused multiply-add: -ffp-contract=off), so the same numbers. Measured on
 * the project's 2-core machine (AMD EPYC, one thread): words 1.27 → 0.66 ns, a normal
 * 5.7 → 4.5 ns. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__AVX512F__)
#define REFSIM_HAVE_AVX512_COPY 1
__attribute__((target("avx512f"))) static void refsim_words_avx512(
    uint32_t seed, uint32_t sid, uint64_t call, uint64_t start, int64_t n, uint32_t *restrict out) {
    refsim_words_run(seed, sid, call, start, n, out);
}
#else
#define REFSIM_HAVE_AVX512_COPY 0
#endif

static int refsim_has_avx512 = 0;

static void refsim_words(uint32_t seed, uint32_t sid, uint64_t call, uint64_t start, int64_t n,
                         uint32_t *restrict out) {
#if REFSIM_HAVE_AVX512_COPY
    if (refsim_has_avx512) {
        refsim_words_avx512(seed, sid, call, start, n, out);
        return;
    }
#endif
    refsim_words_run(seed, sid, call, start, n, out);
}

/* out[k] = refsim_uniform(w[k]). */
static void refsim_uniforms(const uint32_t *restrict w, int64_t n, double *restrict out) {
    for (int64_t k = 0; k < n; ++k) out[k] = refsim_uniform(w[k]);
}

/* The central branch for every element, branch-free (vectorizable). */
#define REFSIM_CENTRAL_LOOP \
    for (int64_t k = 0; k < n; ++k) out[k] = refsim_as241_central(refsim_v(w[k]) - 0.5);
static void refsim_central_run(const uint32_t *restrict w, int64_t n, double *restrict out) {
    REFSIM_CENTRAL_LOOP
}
/* The same loop compiled for AVX where the CPU has it: AVX has no fused multiply-add, so every
 * operation stays the separately rounded IEEE one. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__AVX__)
#define REFSIM_HAVE_AVX_COPY 1
__attribute__((target("avx"))) static void refsim_central_run_avx(const uint32_t *restrict w,
                                                                   int64_t n,
                                                                   double *restrict out) {
    REFSIM_CENTRAL_LOOP
}
#else
#define REFSIM_HAVE_AVX_COPY 0
#endif
#if REFSIM_HAVE_AVX512_COPY
__attribute__((target("avx512f"))) static void refsim_central_run_avx512(
    const uint32_t *restrict w, int64_t n, double *restrict out) {
    REFSIM_CENTRAL_LOOP
}
#endif

static int refsim_has_avx = 0;

/* Once per extension module, at import (not thread-safe itself). */
static void refsim_streams_init(void) {
#if REFSIM_HAVE_AVX_COPY
    __builtin_cpu_init();
    refsim_has_avx = __builtin_cpu_supports("avx") ? 1 : 0;
#endif
#if REFSIM_HAVE_AVX512_COPY
    __builtin_cpu_init();
    refsim_has_avx512 = __builtin_cpu_supports("avx512f") ? 1 : 0;
#endif
}

/* The inputs of the tail branch of a compacted block: for the words wb[at[j]], q[j] = v - 1/2
 * and x[j] = min(v, 1 - v) as refsim_as241_tail chooses it (q <= 0 ? v : 1 - v). */
#define REFSIM_TAIL_INPUTS_LOOP                                                                   \
    for (int j = 0; j < m; ++j) {                                                                 \
        double v = refsim_v(wb[at[j]]);                                                           \
        q[j] = v - 0.5;                                                                           \
        x[j] = q[j] <= 0.0 ? v : 1.0 - v;                                                         \
    }
/* The rest of the tail branch for the logarithms lx[j] = ln(x[j]), into out[at[j]]. Branch-free,
 * so it vectorizes; the same separately rounded operations in the same order as
 * refsim_as241_tail. */
#define REFSIM_TAIL_LOOP                                                                          \
    for (int j = 0; j < m; ++j) {                                                                 \
        double r = sqrt(-lx[j]) - 1.6;                                                            \
        double num = ((((((7.74545014278341407640e-4 * r + 2.27238449892691845833e-2) * r          \
                          + 2.41780725177450611770e-1) * r + 1.27045825245236838258e0) * r        \
                        + 3.64784832476320460504e0) * r + 5.76949722146069140550e0) * r           \
                      + 4.63033784615654529590e0) * r + 1.42343711074968357734e0;                 \
        double den = ((((((1.05075007164441684324e-9 * r + 5.47593808499534494600e-4) * r          \
                          + 1.51986665636164571966e-2) * r + 1.48103976427480074590e-1) * r       \
                        + 6.89767334985100004550e-1) * r + 1.67638483018380384940e0) * r          \
                      + 2.05319162663775882187e0) * r + 1.0;                                      \
        double z = num / den;                                                                     \
        out[at[j]] = q[j] < 0.0 ? -z : z;                                                         \
    }
static void refsim_tail_inputs(const uint32_t *restrict wb, const int32_t *restrict at, int m,
                               double *restrict q, double *restrict x) {
    REFSIM_TAIL_INPUTS_LOOP
}
static void refsim_tail_run(const double *restrict lx, const double *restrict q,
                            const int32_t *restrict at, int m, double *restrict out) {
    REFSIM_TAIL_LOOP
}
#if REFSIM_HAVE_AVX512_COPY
__attribute__((target("avx512f"))) static void refsim_tail_inputs_avx512(
    const uint32_t *restrict wb, const int32_t *restrict at, int m, double *restrict q,
    double *restrict x) {
    REFSIM_TAIL_INPUTS_LOOP
}
__attribute__((target("avx512f"))) static void refsim_tail_run_avx512(
    const double *restrict lx, const double *restrict q, const int32_t *restrict at, int m,
    double *restrict out) {
    REFSIM_TAIL_LOOP
}
#endif

#define REFSIM_TAIL_BLOCK 256

/* at[0 .. m-1] = the positions k < nb of the words in the tail branch, in order; returns m.
 * Without a branch (the branch would be mispredicted for 15 % of random words). */
static int refsim_tail_positions(const uint32_t *restrict w, int nb, int32_t *restrict at) {
    int m = 0;
    for (int k = 0; k < nb; ++k) {
        at[m] = k;
        m += refsim_in_tail(w[k]);
    }
    return m;
}
#if REFSIM_HAVE_AVX512_COPY
#include <immintrin.h>
/* The same with AVX-512: 16 words compared at once, their tail positions compressed into a
 * register and stored (the register form of vpcompressd; at has room for 16 past nb). */
__attribute__((target("avx512f"))) static int refsim_tail_positions_avx512(
    const uint32_t *restrict w, int nb, int32_t *restrict at) {
    const __m512i offset = _mm512_set1_epi32((int)0x13333333u);
    const __m512i span = _mm512_set1_epi32((int)(0xECCCCCCCu - 0x13333333u));
    const __m512i step = _mm512_set1_epi32(16);
    __m512i index = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    int m = 0, k = 0;
    for (; k + 16 <= nb; k += 16) {
        __m512i words = _mm512_loadu_si512((const void *)(w + k));
        __mmask16 tail = _mm512_cmpgt_epu32_mask(_mm512_sub_epi32(words, offset), span);
        _mm512_storeu_si512((void *)(at + m), _mm512_maskz_compress_epi32(tail, index));
        m += __builtin_popcount((unsigned)tail);
        index = _mm512_add_epi32(index, step);
    }
    for (; k < nb; ++k) {
        at[m] = k;
        m += refsim_in_tail(w[k]);
    }
    return m;
}
#endif

/* out[k] = refsim_normal(w[k]): the central branch for all elements (vectorized), then the tail
 * branch (15 % of the words) block by block: the tail positions of a block are compacted
 * without a branch, the C library's log is taken of each (the one scalar step, so the values
 * are refsim_as241_tail's bit for bit), and the rest of the branch runs vectorized over the
 * compacted values. Measured (one thread, 2^20 normals, AMD EPYC with AVX-512): 4.2 ns a
 * normal with the tail element by element behind its unpredictable branch, 3.0 ns so; the
 * scalar log is 1.75 ns of it. */
static void refsim_normals(const uint32_t *restrict w, int64_t n, double *restrict out) {
#if REFSIM_HAVE_AVX512_COPY
    if (refsim_has_avx512) {
        refsim_central_run_avx512(w, n, out);
    } else
#endif
#if REFSIM_HAVE_AVX_COPY
    if (refsim_has_avx)
        refsim_central_run_avx(w, n, out);
    else
        refsim_central_run(w, n, out);
#else
    refsim_central_run(w, n, out);
#endif
    int32_t at[REFSIM_TAIL_BLOCK + 16];
    double lx[REFSIM_TAIL_BLOCK], q[REFSIM_TAIL_BLOCK];
    for (int64_t base = 0; base < n; base += REFSIM_TAIL_BLOCK) {
        int nb = (n - base < REFSIM_TAIL_BLOCK) ? (int)(n - base) : REFSIM_TAIL_BLOCK;
        const uint32_t *wb = w + base;
        int m;
#if REFSIM_HAVE_AVX512_COPY
        if (refsim_has_avx512)
            m = refsim_tail_positions_avx512(wb, nb, at);
        else
#endif
            m = refsim_tail_positions(wb, nb, at);
#if REFSIM_HAVE_AVX512_COPY
        if (refsim_has_avx512)
            refsim_tail_inputs_avx512(wb, at, m, q, lx);
        else
#endif
            refsim_tail_inputs(wb, at, m, q, lx);
        for (int j = 0; j < m; ++j) lx[j] = log(lx[j]);  /* the C library's, element by element */
#if REFSIM_HAVE_AVX512_COPY
        if (refsim_has_avx512)
            refsim_tail_run_avx512(lx, q, at, m, out + base);
        else
#endif
            refsim_tail_run(lx, q, at, m, out + base);
    }
}

#endif

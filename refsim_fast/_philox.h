/* Philox4x32-10 and the uniform / Gaussian transforms of spec/rng.md, in C.
 *
 * Header-only so that every refsim_fast kernel draws exactly the same numbers as refsim.rng
 * (the reference) for the same (seed, stream id, call, index). All functions are pure.
 */
#ifndef REFSIM_PHILOX_H
#define REFSIM_PHILOX_H

#include <math.h>
#include <stdint.h>

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
    return (double)(w >> 8) * (1.0 / 16777216.0);
}

/* Standard normal from one word (spec/rng.md section 4): Wichura's AS241 quantile of
 * v = (2w + 1) * 2^-33. Same operations in the same order as refsim.rng.normal_from_words. */
static inline double refsim_normal(uint32_t w) {
    double v = (double)(2 * (uint64_t)w + 1) * (1.0 / 8589934592.0);
    double q = v - 0.5;
    double r, num, den;
    if (fabs(q) <= 0.425) {
        r = 0.180625 - q * q;
        num = ((((((2.5090809287301226727e3 * r + 3.3430575583588128105e4) * r
                   + 6.7265770927008700853e4) * r + 4.5921953931549871457e4) * r
                 + 1.3731693765509461125e4) * r + 1.9715909503065514427e3) * r
               + 1.3314166789178437745e2) * r + 3.3871328727963666080e0;
        den = ((((((5.2264952788528545610e3 * r + 2.8729085735721942674e4) * r
                   + 3.9307895800092710610e4) * r + 2.1213794301586595867e4) * r
                 + 5.3941960214247511077e3) * r + 6.8718700749205790830e2) * r
               + 4.2313330701600911252e1) * r + 1.0;
        return num * q / den;
    }
    r = sqrt(-log(q <= 0.0 ? v : 1.0 - v)) - 1.6;
    num = ((((((7.74545014278341407640e-4 * r + 2.27238449892691845833e-2) * r
               + 2.41780725177450611770e-1) * r + 1.27045825245236838258e0) * r
             + 3.64784832476320460504e0) * r + 5.76949722146069140550e0) * r
           + 4.63033784615654529590e0) * r + 1.42343711074968357734e0;
    den = ((((((1.05075007164441684324e-9 * r + 5.47593808499534494600e-4) * r
               + 1.51986665636164571966e-2) * r + 1.48103976427480074590e-1) * r
             + 6.89767334985100004550e-1) * r + 1.67638483018380384940e0) * r
           + 2.05319162663775882187e0) * r + 1.0;
    return q < 0.0 ? -(num / den) : num / den;
}

#endif

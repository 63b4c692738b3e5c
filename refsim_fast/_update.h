/* The pulsed update in C (spec/pulses.md, spec/devices.md §V3): pulse trains packed into 64-bit
 * words, coincidences by popcount, and the per-pulse device rules with the same counter-based
 * noise as the reference. The row kernel is generated for float and double from
 * _update_impl.h; the Cython module _update runs it in parallel over the rows of the tile.
 */
#ifndef REFSIM_UPDATE_H
#define REFSIM_UPDATE_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_philox.h"

enum RefsimCountMode { REFSIM_TRAINS = 0, REFSIM_PRODUCTS = 1 };
enum RefsimModel {
    REFSIM_CONSTANT = 0,        /* ConstantStep */
    REFSIM_LINEAR = 1,          /* LinearStep, SoftBounds, SoftBoundsPmax (slopes) */
    REFSIM_SOFT_REFERENCE = 2,  /* SoftBoundsReference */
    REFSIM_EXP = 3,             /* ExpStep */
    REFSIM_POW = 4,             /* PowStep, PowStepReference (exponents) */
    REFSIM_PIECEWISE = 5        /* PiecewiseStep */
};

/* The arguments of the row kernel, filled once per call by the Cython module: arrays as
 * untyped pointers (the weight-typed ones in the tile's dtype), scalars as the Python floats of
 * the config. See CTX in _update_impl.h for the meaning of each field. */
typedef struct {
    int64_t m, n, batch, nw, n_nodes;
    int mode, model, noisy, mult_noise, extended;
    void *w;
    const uint64_t *xbits, *dbits;
    const double *ax, *ad;
    const uint8_t *xneg, *dneg;
    const int32_t *bl;
    const uint64_t *calls;
    const int32_t *active;
    const int64_t *n_active;
    const void *b_min, *b_max, *dw_up, *dw_down, *p_up, *p_down, *ref, *nodes_up, *nodes_down,
        *table;
    double sigma, es_a, b, A_up, A_down, gamma_up, neg_gamma_down, std_add, std_slope;
    uint32_t seed, sid;
    uint64_t offset;
    int64_t *last_touch, *pulses_up, *pulses_down;
    /* optional line snapshots (snap_slot NULL: none): after cycle b with snap_slot[b] >= 0, line
       snap_line[b] of w (a column when snap_columns, else a row) is copied to row snap_slot[b]
       of snap (S, m) or (S, n) */
    const int64_t *snap_slot, *snap_line;
    void *snap;
    int snap_columns;
} refsim_update_args;

/* Whether a rule's first pulses run in the vectorized loop (no libm call in its step). */
static inline int refsim_first_pulses_vectorized(int model) {
    return model == REFSIM_CONSTANT || model == REFSIM_LINEAR || model == REFSIM_SOFT_REFERENCE;
}

/* Small helpers of the row kernel are always inlined (so that each model gets its own loop). */
#if defined(__GNUC__)
#define REFSIM_INLINE inline __attribute__((always_inline))
#else
#define REFSIM_INLINE inline
#endif

/* The row kernel is compiled twice on x86-64 Linux with GCC, for the baseline and for CPUs with
 * the popcnt instruction, and picked at load time (only the instructions differ, not the
 * arithmetic: no FMA contraction either way). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define REFSIM_MULTIVERSION __attribute__((target_clones("popcnt", "default")))
#else
#define REFSIM_MULTIVERSION
#endif

/* Scratch of one row kernel call: 4 n int32 (indices, counts, prefix sums of the counts,
 * directions), then `words_cap` c2c words, then 2 words_cap normals of `real_size` bytes (8-byte
 * aligned). */
static inline size_t refsim_scratch_words_at(int64_t n) { return (size_t)(4 * n) * 4u; }
static inline size_t refsim_scratch_normals_at(int64_t n, int64_t words_cap) {
    return (refsim_scratch_words_at(n) + (size_t)words_cap * 4u + 7u) & ~(size_t)7u;
}
static inline size_t refsim_update_scratch(int64_t n, int64_t words_cap, size_t real_size) {
    return refsim_scratch_normals_at(n, words_cap) + (size_t)(2 * words_cap) * real_size;
}

/* Set bits of a word. */
static REFSIM_INLINE int64_t refsim_popcount(uint64_t v) {
#if defined(__GNUC__)
    return (int64_t)__builtin_popcountll(v);
#else
    v = v - ((v >> 1) & 0x5555555555555555ull);
    v = (v & 0x3333333333333333ull) + ((v >> 2) & 0x3333333333333333ull);
    v = (v + (v >> 4)) & 0x0F0F0F0F0F0F0F0Full;
    return (int64_t)((v * 0x0101010101010101ull) >> 56);
#endif
}

/* A pulse count from a double (MeanCount / DeterministicImplicit products), saturating and
 * NaN-safe: rint(v) for 0 < v < bl, 0 for v <= 0 and NaN, bl for v >= bl and +inf. Valid
 * products lie in [0, bl], where this is plain rint; nothing else can reach a conversion whose
 * result is undefined or a count that overruns the row's scratch (spec/pulses.md, "Compiled
 * kernels"). */
static REFSIM_INLINE int32_t refsim_count(double v, int64_t bl) {
    if (!(v > 0.0)) return 0;
    if (!(v < (double)bl)) return (int32_t)bl;
    return (int32_t)rint(v);
}

/* Append element j with count q (> 0) and direction up (1: up pulses) to the compacted list
 * (written always, kept when q > 0: no branch); pre receives the running total of the counts
 * before it. */
static REFSIM_INLINE void refsim_push(int32_t *idx, int32_t *cnt, int32_t *pre, int32_t *dir,
                                      int64_t *nnz, int64_t *total, int64_t j, int32_t q,
                                      int32_t up) {
    idx[*nnz] = (int32_t)j;
    cnt[*nnz] = q;
    pre[*nnz] = (int32_t)*total;
    dir[*nnz] = up;
    *total += q;
    *nnz += q > 0;
}

#define REFSIM_TRAIN_CHUNK 4096  /* words drawn at a time for the pulse trains */

/* The integer form of "p > uniform(w)": uniform(w) = (w >> 8)·2^-24 (refsim_uniform), so the
 * test is (w >> 8) < p·2^24, and for an integer left side (w >> 8) < ceil(p·2^24), an exact
 * integer threshold (0 for p <= 0 and NaN: no bit; 2^24 for p >= 1: every bit). */
static REFSIM_INLINE uint32_t refsim_train_threshold(double p) {
    double t = p * 16777216.0;
    if (!(t > 0.0)) return 0u;
    if (t >= 16777216.0) return 16777216u;
    return (uint32_t)ceil(t);
}

/* Pulse trains of values j0 .. j1-1 of one cycle: bit k of train j (word k / 64 of out[j nw ..])
 * is set when p[j] > uniform number j bl + k of the call (spec/pulses.md §U4; a NaN p sets no
 * bit). A value with p <= 0 (or NaN) can set no bit, as every uniform is >= 0: its numbers are
 * not drawn (a one-hot transfer row draws BL numbers, not n BL). The others are drawn a group of
 * whole trains at a time, each train's bits by the integer test of refsim_train_threshold. */
static void refsim_trains(uint32_t seed, uint32_t sid, uint64_t call, int64_t bl, int64_t nw,
                          const double *p, int64_t j0, int64_t j1, uint64_t *out) {
    uint32_t words[REFSIM_TRAIN_CHUNK];
    /* (bl > 64 nw: the trains do not fit their words; the caller rejects this, see _update.pyx) */
    if (j1 <= j0 || bl <= 0 || nw <= 0 || bl > 64 * nw) return;
    memset(out + j0 * nw, 0, (size_t)((j1 - j0) * nw) * sizeof(uint64_t));
    /* whole trains per draw (a train longer than the chunk: slot by slot, below) */
    int64_t per = REFSIM_TRAIN_CHUNK / bl;
    int64_t j = j0;
    while (j < j1) {
        while (j < j1 && !(p[j] > 0.0)) ++j;  /* values that cannot pulse */
        int64_t end = j;
        while (end < j1 && p[end] > 0.0) ++end;  /* a run of values that can */
        for (int64_t g = j; g < end; g += per > 0 ? per : 1) {
            int64_t count = per > 0 ? (end - g < per ? end - g : per) : 1;
            if (per == 0) {  /* one train of more than REFSIM_TRAIN_CHUNK slots */
                uint32_t thr = refsim_train_threshold(p[g]);
                for (int64_t s0 = 0; s0 < bl; s0 += REFSIM_TRAIN_CHUNK) {
                    int64_t n = bl - s0 < REFSIM_TRAIN_CHUNK ? bl - s0 : REFSIM_TRAIN_CHUNK;
                    refsim_words(seed, sid, call, (uint64_t)(g * bl + s0), n, words);
                    for (int64_t r = 0; r < n; ++r)
                        out[g * nw + ((s0 + r) >> 6)] |= (uint64_t)((words[r] >> 8) < thr)
                                                          << ((s0 + r) & 63);
                }
                continue;
            }
            refsim_words(seed, sid, call, (uint64_t)(g * bl), count * bl, words);
            for (int64_t v = 0; v < count; ++v) {
                uint32_t thr = refsim_train_threshold(p[g + v]);
                const uint32_t *wv = words + v * bl;
                uint64_t *dst = out + (g + v) * nw;
                for (int64_t q = 0; q < nw; ++q) {
                    int64_t lo = q * 64, hi = bl < lo + 64 ? bl : lo + 64;
                    uint64_t bits = 0;
                    for (int64_t k = lo; k < hi; ++k)
                        bits |= (uint64_t)((wv[k] >> 8) < thr) << (k - lo);
                    dst[q] = bits;
                }
            }
        }
        j = end;
    }
}

#define REFSIM_T float
#define REFSIM_SUF(name) name##_f32
#define REFSIM_M(name) name##f
#include "_update_impl.h"
#undef REFSIM_T
#undef REFSIM_SUF
#undef REFSIM_M

#define REFSIM_T double
#define REFSIM_SUF(name) name##_f64
#define REFSIM_M(name) name
#include "_update_impl.h"
#undef REFSIM_T
#undef REFSIM_SUF
#undef REFSIM_M

#endif

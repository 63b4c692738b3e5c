/* The pulsed update of one weight row, for one real type (spec/pulses.md §U4, spec/devices.md
 * §V3). Included twice by _update.h, with REFSIM_T = float / double and REFSIM_SUF(name) adding
 * the type suffix. Each expression follows refsim/stages/devices.py `_step` operation by operation
 * (same operand order, same rounding in REFSIM_T, no fused multiply-add), so the results are the
 * reference's bit for bit wherever no libm function (exp, pow) is involved.
 */

#define T REFSIM_T
#define CTX REFSIM_SUF(refsim_update_ctx)

typedef struct {
    /* the tile: weights (m, n), updated in place */
    int64_t m, n;
    T *w;
    /* the cycles */
    int64_t batch;
    int mode;                           /* REFSIM_TRAINS or REFSIM_PRODUCTS */
    int64_t nw;                         /* uint64 words per pulse train */
    const uint64_t *xbits, *dbits;      /* (batch, n, nw), (batch, m, nw) */
    const double *ax, *ad;              /* (batch, n), (batch, m): count = rint(ad_i * ax_j) */
    const uint8_t *xneg, *dneg;         /* (batch, n), (batch, m): 1 where the value is < 0
                                           (dneg already flipped for lr < 0) */
    const int32_t *bl;                  /* (batch,) train length of each cycle, 0: no pulses */
    const uint64_t *calls;              /* (batch,) the cycle's call number */
    const int32_t *active;              /* (batch, n): the columns j whose x can give pulses in
                                           cycle b (a nonzero train or ax), increasing */
    const int64_t *n_active;            /* (batch,): how many of them */
    /* the device */
    int model;                          /* a RefsimModel */
    const T *b_min, *b_max, *dw_up, *dw_down;
    const T *p_up, *p_down;             /* slopes (linear family) or exponents (power family) */
    const T *ref;                       /* reference devices: u = w + ref; else NULL */
    T sigma;                            /* dw_min_std */
    int noisy;                          /* sigma > 0: one 16-bit normal per pulse */
    int mult_noise;
    int extended;                       /* ExpStep: dw_min_std_add / _slope in use (and noisy) */
    T es_a, b, A_up, A_down, gamma_up, neg_gamma_down, std_add, std_slope;  /* ExpStep */
    const T *nodes_up, *nodes_down;     /* PiecewiseStep: n_nodes values each */
    int64_t n_nodes;
    const T *table;                     /* the 65536 16-bit normals, in T */
    uint32_t seed, sid;                 /* stream device.c2c */
    uint64_t offset;                    /* device_index * m * n */
    /* optional outputs (NULL: not wanted) */
    int64_t *last_touch;                /* (m, n): call of the last cycle with pulses */
    int64_t *pulses_up, *pulses_down;   /* (m, n): pulse counters, accumulated */
    const int64_t *snap_slot, *snap_line; /* (batch,): line snapshots after cycles (or NULL) */
    T *snap;
    int snap_columns;
} CTX;

/* The typed view of the arguments (scalars rounded to T once, as numpy does with Python floats
 * in an array expression). */
static void REFSIM_SUF(refsim_update_ctx_init)(const refsim_update_args *a, CTX *c) {
    c->m = a->m; c->n = a->n; c->w = (T *)a->w;
    c->batch = a->batch; c->mode = a->mode; c->nw = a->nw;
    c->xbits = a->xbits; c->dbits = a->dbits; c->ax = a->ax; c->ad = a->ad;
    c->xneg = a->xneg; c->dneg = a->dneg; c->bl = a->bl; c->calls = a->calls;
    c->active = a->active; c->n_active = a->n_active;
    c->model = a->model;
    c->b_min = (const T *)a->b_min; c->b_max = (const T *)a->b_max;
    c->dw_up = (const T *)a->dw_up; c->dw_down = (const T *)a->dw_down;
    c->p_up = (const T *)a->p_up; c->p_down = (const T *)a->p_down;
    c->ref = (const T *)a->ref;
    c->sigma = (T)a->sigma; c->noisy = a->noisy; c->mult_noise = a->mult_noise;
    c->extended = a->extended;
    c->es_a = (T)a->es_a; c->b = (T)a->b; c->A_up = (T)a->A_up; c->A_down = (T)a->A_down;
    c->gamma_up = (T)a->gamma_up; c->neg_gamma_down = (T)a->neg_gamma_down;
    c->std_add = (T)a->std_add; c->std_slope = (T)a->std_slope;
    c->nodes_up = (const T *)a->nodes_up; c->nodes_down = (const T *)a->nodes_down;
    c->n_nodes = a->n_nodes; c->table = (const T *)a->table;
    c->seed = a->seed; c->sid = a->sid; c->offset = a->offset;
    c->last_touch = a->last_touch; c->pulses_up = a->pulses_up; c->pulses_down = a->pulses_down;
    c->snap_slot = a->snap_slot; c->snap_line = a->snap_line; c->snap = (T *)a->snap;
    c->snap_columns = a->snap_columns;
}

/* Piecewise-linear node factor at w (devices.py `_piecewise`). */
static REFSIM_INLINE T REFSIM_SUF(refsim_piecewise)(const CTX *c, const T *nodes, int64_t k, T w) {
    int64_t k_max = c->n_nodes - 1;
    if (k_max == 0) return nodes[0];
    T span = c->b_max[k] - c->b_min[k];
    if (!(span > (T)0)) return nodes[0];
    T t = (w - c->b_min[k]) / span * (T)k_max;
    if (!(t > (T)0)) t = (T)0; /* (a NaN t, from a NaN weight, takes node 0: q stays in range) */
    T kf = REFSIM_M(floor)(t);
    if (kf > (T)(k_max - 1)) kf = (T)(k_max - 1);
    T f = t - kf;
    if (f > (T)1) f = (T)1;
    int64_t q = (int64_t)kf;
    return ((T)1 - f) * nodes[q] + f * nodes[q + 1];
}

/* w after one pulse (up or down) of element k, before the clamp (devices.py `_step`). `xi` is
 * the pulse's normal when c->noisy. */
static REFSIM_INLINE T REFSIM_SUF(refsim_step)(const CTX *c, int model, int64_t k, T w, int up,
                                              T xi) {
    T noise = c->noisy ? (T)1 + c->sigma * xi : (T)1;
    switch (model) {
    case REFSIM_CONSTANT: {
        /* w − a equals w + (−a) exactly: one select instead of a branch on the direction */
        T step = (up ? c->dw_up[k] : c->dw_down[k]) * noise;
        return w + (up ? step : -step);
    }
    case REFSIM_LINEAR:
        if (c->mult_noise)
            return up ? w + (c->p_up[k] * w + c->dw_up[k]) * noise
                      : w - (c->p_down[k] * w + c->dw_down[k]) * noise;
        return up ? w + c->p_up[k] * w + c->dw_up[k] * noise
                  : w - (c->p_down[k] * w + c->dw_down[k] * noise);
    case REFSIM_SOFT_REFERENCE: {
        T bound = up ? c->b_max[k] : c->b_min[k];
        int inside = up ? bound > (T)0 : bound < (T)0;
        T f = (T)1 - w / (inside ? bound : (T)1);
        f = inside ? f : (T)1;
        T dw = up ? c->dw_up[k] : c->dw_down[k];
        T step = c->mult_noise ? dw * f * noise : dw * (f + (c->noisy ? c->sigma * xi : (T)0));
        return w + (up ? step : -step);
    }
    case REFSIM_EXP: {
        T span = c->b_max[k] - c->b_min[k];  /* > 0 here (frozen otherwise) */
        T z = (T)2 * w / span * c->es_a + c->b;  /* aihwkit's order: ((2w)/span)·a + b */
        T y;
        if (up) {
            y = (T)1 - c->A_up * REFSIM_M(exp)(c->gamma_up * z);
        } else {
            y = (T)1 - c->A_down * REFSIM_M(exp)(c->neg_gamma_down * z);
        }
        if (y < (T)0) y = (T)0;
        if (c->extended) {
            T d = up ? y * c->dw_up[k] : -y * c->dw_down[k];
            T base = c->std_add + c->std_slope * REFSIM_M(fabs)(w);
            return w + d + c->sigma * (REFSIM_M(fabs)(d) + base) * xi;
        }
        return up ? w + y * noise * c->dw_up[k] : w - y * noise * c->dw_down[k];
    }
    case REFSIM_POW: {
        T span = c->b_max[k] - c->b_min[k];
        T r = up ? (c->b_max[k] - w) / span : (w - c->b_min[k]) / span;
        if (r < (T)0) r = (T)0;
        /* the power in double, rounded once to T (float32 powf and numpy's float32 power are not
           both correctly rounded; devices.py `_power`) */
        T f = (T)pow((double)r, (double)(up ? c->p_up[k] : c->p_down[k]));
        return up ? w + c->dw_up[k] * f * noise : w - c->dw_down[k] * f * noise;
    }
    default: { /* REFSIM_PIECEWISE */
        T f = REFSIM_SUF(refsim_piecewise)(c, up ? c->nodes_up : c->nodes_down, k, w);
        return up ? w + c->dw_up[k] * f * noise : w - c->dw_down[k] * f * noise;
    }
    }
}

/* Pulses t0 .. count-1 (up or down) on element k in a cycle: pulse t has the 16-bit normal
 * xi[t] of stream device.c2c, and each pulse is followed by the clamp to [b_min, b_max]
 * (devices.py `apply_pulses`). `model` is a constant where this is inlined, so each device gets
 * its own loop. */
static REFSIM_INLINE void REFSIM_SUF(refsim_pulse_element)(const CTX *c, int model, int64_t k,
                                                           int64_t t0, int64_t count, int up,
                                                           const T *xi) {
    T lo = c->b_min[k], hi = c->b_max[k];
    if (model == REFSIM_EXP || model == REFSIM_POW) {
        if (!(hi - lo > (T)0)) return; /* frozen without range: no pulse, no clamp */
    }
    /* a reference device pulses u = w + ref and stores u − ref, at every pulse (aihwkit's order:
     * the sum and the difference round in T each time) */
    T w = c->w[k];
    for (int64_t t = t0; t < count; ++t) {
        T u = c->ref ? w + c->ref[k] : w;
        T v = REFSIM_SUF(refsim_step)(c, model, k, u, up, c->noisy ? xi[t] : (T)0);
        v = v < lo ? lo : v;  /* xp.clip of array-api-compat: below lo -> lo, then above hi -> hi */
        v = v > hi ? hi : v;
        w = c->ref ? v - c->ref[k] : v;
    }
    c->w[k] = w;
}

/* refsim_step for the rules without libm calls, written with unconditional loads and selects
 * (both directions computed, one kept) so that a loop over elements has no control flow: the
 * same operations, in the same order and type, as refsim_step's branch for the direction. */
static REFSIM_INLINE T REFSIM_SUF(refsim_step_select)(const CTX *c, int model, int64_t k, T w,
                                                     int up, T xi) {
    T noise = c->noisy ? (T)1 + c->sigma * xi : (T)1;
    T dw_up = c->dw_up[k], dw_down = c->dw_down[k];
    if (model == REFSIM_CONSTANT) {
        T step = (up ? dw_up : dw_down) * noise;
        return w + (up ? step : -step);
    }
    if (model == REFSIM_LINEAR) {
        T p_up = c->p_up[k], p_down = c->p_down[k];
        T w_up = c->mult_noise ? w + (p_up * w + dw_up) * noise : w + p_up * w + dw_up * noise;
        T w_down = c->mult_noise ? w - (p_down * w + dw_down) * noise
                                 : w - (p_down * w + dw_down * noise);
        return up ? w_up : w_down;
    }
    /* REFSIM_SOFT_REFERENCE */
    T bound = up ? c->b_max[k] : c->b_min[k];
    int inside = up ? bound > (T)0 : bound < (T)0;
    T f = (T)1 - w / (inside ? bound : (T)1);
    f = inside ? f : (T)1;
    T dw = up ? dw_up : dw_down;
    T step = c->mult_noise ? dw * f * noise : dw * (f + (c->noisy ? c->sigma * xi : (T)0));
    return w + (up ? step : -step);
}

/* The normal of pulse r of a row's run: 16-bit half (r + b1) of the run's words (b1: the parity
 * of the run's first number), through the table (refsim_update_cycle's numbering). */
static REFSIM_INLINE T REFSIM_SUF(refsim_xi_at)(const T *table, const uint32_t *words, int32_t b1,
                                                int32_t r) {
    int32_t s = r + b1;
    return table[(words[s >> 1] >> (16u * (uint32_t)(s & 1))) & 0xFFFFu];
}

/* The first pulse of every listed element of row i (elements are distinct, so the loop has no
 * dependence between iterations and is vectorized with gathers and scatters where the CPU has
 * them): the same operations per element as refsim_pulse_element's pulse 0. REF and NOISY are
 * constants where this is expanded. Models without exp/pow only (a vectorized libm call could
 * round differently). */
#define REFSIM_FIRST_PULSES(MODEL, REF, NOISY)                                                  \
    _Pragma("omp simd")                                                                      \
    for (int64_t e = 0; e < nnz; ++e) {                                                      \
        int64_t k = base + idx[e];                                                           \
        T lo = b_min[k], hi = b_max[k];                                                      \
        T u = REF ? w[k] + ref[k] : w[k];                                                    \
        T v = REFSIM_SUF(refsim_step_select)(                                                \
            c, MODEL, k, u, dir[e],                                                          \
            NOISY ? REFSIM_SUF(refsim_xi_at)(table, words, b1, pre[e]) : (T)0);               \
        v = v < lo ? lo : v;                                                                 \
        v = v > hi ? hi : v;                                                                 \
        w[k] = REF ? v - ref[k] : v;                                                         \
    }

#define REFSIM_FIRST_PULSES_OF(MODEL)                                                           \
    if (ref) {                                                                               \
        if (c->noisy) { REFSIM_FIRST_PULSES(MODEL, 1, 1) } else { REFSIM_FIRST_PULSES(MODEL, 1, 0) } \
    } else {                                                                                 \
        if (c->noisy) { REFSIM_FIRST_PULSES(MODEL, 0, 1) } else { REFSIM_FIRST_PULSES(MODEL, 0, 0) } \
    }

static REFSIM_INLINE void REFSIM_SUF(refsim_first_pulses_body)(const CTX *c, int64_t base,
                                                              int64_t nnz, const int32_t *idx,
                                                              const int32_t *pre,
                                                              const int32_t *dir,
                                                              const uint32_t *words, int32_t b1) {
    T *restrict w = c->w;
    const T *restrict table = c->table;
    const T *restrict b_min = c->b_min, *restrict b_max = c->b_max, *restrict ref = c->ref;
    switch (c->model) {
    case REFSIM_CONSTANT: REFSIM_FIRST_PULSES_OF(REFSIM_CONSTANT) break;
    case REFSIM_LINEAR: REFSIM_FIRST_PULSES_OF(REFSIM_LINEAR) break;
    default: REFSIM_FIRST_PULSES_OF(REFSIM_SOFT_REFERENCE) break;
    }
}

#if REFSIM_HAVE_AVX512_COPY
__attribute__((target("avx512f"))) static void REFSIM_SUF(refsim_first_pulses_avx512)(
    const CTX *c, int64_t base, int64_t nnz, const int32_t *idx, const int32_t *pre,
    const int32_t *dir, const uint32_t *words, int32_t b1) {
    REFSIM_SUF(refsim_first_pulses_body)(c, base, nnz, idx, pre, dir, words, b1);
}
#endif

static void REFSIM_SUF(refsim_first_pulses)(const CTX *c, int64_t base, int64_t nnz,
                                            const int32_t *idx, const int32_t *pre,
                                            const int32_t *dir, const uint32_t *words,
                                            int32_t b1) {
#if REFSIM_HAVE_AVX512_COPY
    if (refsim_has_avx512) {
        REFSIM_SUF(refsim_first_pulses_avx512)(c, base, nnz, idx, pre, dir, words, b1);
        return;
    }
#endif
    REFSIM_SUF(refsim_first_pulses_body)(c, base, nnz, idx, pre, dir, words, b1);
}

/* The cycle's pulses on the elements idx[0 .. nnz-1] of row i (counts cnt, directions dir, c2c
 * normals from xi[pre[e]] on). ConstantStep, the linear family and SoftBoundsReference: the
 * first pulse of every element in one vectorized loop, then the further pulses element by
 * element (each element's pulses stay in order, and elements are independent: the same result
 * as all pulses of one element after the other); the other rules element by element. */
static void REFSIM_SUF(refsim_apply_row)(const CTX *c, int64_t i, int64_t nnz, const int32_t *idx,
                                        const int32_t *cnt, const int32_t *pre,
                                        const int32_t *dir, const uint32_t *words, int32_t b1,
                                        int multi, const T *xi) {
    int64_t base = i * c->n;
    int64_t t0 = 0;
    if (refsim_first_pulses_vectorized(c->model)) {
        REFSIM_SUF(refsim_first_pulses)(c, base, nnz, idx, pre, dir, words, b1);
        t0 = 1;
        if (!multi) return;  /* one pulse per element: done */
    }
#define REFSIM_APPLY(MODEL)                                                                    \
    for (int64_t e = 0; e < nnz; ++e)                                                          \
        if (cnt[e] > t0)                                                                       \
            REFSIM_SUF(refsim_pulse_element)(c, MODEL, base + idx[e], t0, cnt[e], dir[e],      \
                                             xi + pre[e]);                                     \
    break;
    switch (c->model) {
    case REFSIM_CONSTANT: REFSIM_APPLY(REFSIM_CONSTANT)
    case REFSIM_LINEAR: REFSIM_APPLY(REFSIM_LINEAR)
    case REFSIM_SOFT_REFERENCE: REFSIM_APPLY(REFSIM_SOFT_REFERENCE)
    case REFSIM_EXP: REFSIM_APPLY(REFSIM_EXP)
    case REFSIM_POW: REFSIM_APPLY(REFSIM_POW)
    default: REFSIM_APPLY(REFSIM_PIECEWISE)
    }
#undef REFSIM_APPLY
}

/* Cycle b on row i (see refsim_update_row for the scratch and the memory-safety conditions). */
static REFSIM_INLINE void REFSIM_SUF(refsim_update_cycle)(const CTX *c, int64_t i, int64_t b,
                                                         int32_t *idx, int32_t *cnt, int32_t *pre,
                                                         int32_t *dir, uint32_t *words, T *xi) {
    int64_t n = c->n, nw = c->nw;
    int64_t bl = c->bl[b];
    if (bl <= 0) return;
    uint64_t call = c->calls[b];
    const uint8_t *xneg = c->xneg + b * n;
    /* only the columns whose x can pulse: the others give a count of 0, which the list
       drops anyway (a one-hot x, as the transfers write, leaves one column of n) */
    const int32_t *act = c->active + b * n;
    int64_t n_act = c->n_active[b];
    int64_t nnz = 0, total = 0;
    uint8_t dneg = c->dneg[b * c->m + i];
    if (c->mode == REFSIM_TRAINS) {
        const uint64_t *dw = c->dbits + (b * c->m + i) * nw;
        const uint64_t *xw = c->xbits + b * n * nw;
        if (nw == 1 && !dw[0]) return;
        if (nw == 1) {  /* one word per train: the loop with everything in registers */
            const uint64_t d0 = dw[0];
            int32_t *restrict I = idx, *restrict C = cnt, *restrict P = pre, *restrict D = dir;
            int32_t cap = (int32_t)bl;
            int64_t nz = 0, tot = 0;
            for (int64_t e = 0; e < n_act; ++e) {
                int32_t j = act[e];
                int32_t q = (int32_t)refsim_popcount(d0 & xw[j]);
                q = q < cap ? q : cap;
                I[nz] = j;
                C[nz] = q;
                P[nz] = (int32_t)tot;
                D[nz] = xneg[j] != dneg;
                tot += q;
                nz += q > 0;
            }
            nnz = nz;
            total = tot;
        } else for (int64_t e = 0; e < n_act; ++e) {
            int64_t j = act[e];
            int64_t q = refsim_popcount(dw[0] & xw[j * nw]);
            for (int64_t r = 1; r < nw; ++r) q += refsim_popcount(dw[r] & xw[j * nw + r]);
            /* at most bl (bits past slot bl are never set by refsim_trains; clamped all the
               same, so that the row's pulses always fit its scratch) */
            refsim_push(idx, cnt, pre, dir, &nnz, &total, j, (int32_t)(q < bl ? q : bl),
                        xneg[j] != dneg);
        }
    } else {
        double adi = c->ad[b * c->m + i];
        if (adi == 0.0) return;
        const double *ax = c->ax + b * n;
        for (int64_t e = 0; e < n_act; ++e) {
            int64_t j = act[e];
            /* the product rounded to the weight type (exact in double for two float32
               factors), as the reference computes it in the tile dtype; outside (−BL, BL),
               and for NaN, the count saturates anyway (and the cast could overflow) */
            double v = adi * ax[j];
            if (v > -(double)bl && v < (double)bl) v = (double)(T)v;
            refsim_push(idx, cnt, pre, dir, &nnz, &total, j, refsim_count(v, bl),
                        xneg[j] != dneg);
        }
    }
    if (!nnz) return;
    /* the row's pulses take consecutive c2c numbers from (offset + i n) bl on, in element
     * order: draw their words in one vectorized run */
    int32_t b1 = 0;
    int multi = total > nnz;  /* some element takes more than one pulse */
    if (c->noisy) {
        uint64_t base = (c->offset + (uint64_t)(i * n)) * (uint64_t)bl, w0 = base >> 1;
        refsim_words(c->seed, c->sid, call, w0,
                     (int64_t)(((base + (uint64_t)total + 1) >> 1) - w0), words);
        b1 = (int32_t)(base & 1u);
        /* the normals of the pulses after the first, gathered from the table (the first
           pulses read theirs in their own loop) */
        if (multi || !refsim_first_pulses_vectorized(c->model))
            for (int64_t r = 0; r < total; ++r)
                xi[r] = REFSIM_SUF(refsim_xi_at)(c->table, words, b1, (int32_t)r);
    }
    REFSIM_SUF(refsim_apply_row)(c, i, nnz, idx, cnt, pre, dir, words, b1, multi, xi);
    if (c->last_touch || c->pulses_up) {
        for (int64_t e = 0; e < nnz; ++e) {
            int64_t k = i * n + idx[e];
            if (c->last_touch) c->last_touch[k] = (int64_t)call;
            if (c->pulses_up) {
                if (dir[e]) c->pulses_up[k] += cnt[e];
                else c->pulses_down[k] += cnt[e];
            }
        }
    }
}

/* The snapshot after cycle b, row i's share: its element of a column, or the whole row when
 * row i is the line (slots and lines checked by _update.pyx). */
static REFSIM_INLINE void REFSIM_SUF(refsim_snapshot)(const CTX *c, int64_t i, int64_t b) {
    int64_t slot = c->snap_slot[b], line = c->snap_line[b];
    if (slot < 0) return;
    if (c->snap_columns) {
        c->snap[slot * c->m + i] = c->w[i * c->n + line];
    } else if (i == line) {
        memcpy(c->snap + slot * c->n, c->w + i * c->n, (size_t)c->n * sizeof(T));
    }
}

/* Every cycle of the batch, in order, on row i (rows are independent: the parallel loop), with
 * the line snapshots asked for after each cycle.
 * `scratch`: see refsim_update_scratch (words_cap: c2c words of the longest row run).
 * Memory safety rests on: every count in [0, bl[b]] (clamped here), bl[b] <= bl_max with
 * n bl_max < 2^31 and words_cap >= (n bl_max + 1) / 2 + 1, (offset + m n) bl_max without uint64
 * wrap-around, the array shapes of CTX, n_nodes >= 1 for PiecewiseStep, and snapshot slots in
 * [-1, S) with lines inside w: all checked by _update.pyx before the first row runs. */
static REFSIM_MULTIVERSION void REFSIM_SUF(refsim_update_row)(const CTX *c, int64_t i,
                                                             void *scratch, int64_t words_cap) {
    int64_t n = c->n;
    int32_t *idx = (int32_t *)scratch, *cnt = idx + n, *pre = cnt + n, *dir = pre + n;
    uint32_t *words = (uint32_t *)((char *)scratch + refsim_scratch_words_at(n));
    T *xi = (T *)((char *)scratch + refsim_scratch_normals_at(n, words_cap));
    for (int64_t b = 0; b < c->batch; ++b) {
        REFSIM_SUF(refsim_update_cycle)(c, i, b, idx, cnt, pre, dir, words, xi);
        if (c->snap_slot) REFSIM_SUF(refsim_snapshot)(c, i, b);
    }
}

#undef T
#undef CTX

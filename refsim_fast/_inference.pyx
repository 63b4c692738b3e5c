# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The element-wise passes of the inference stage (spec/inference.md §I1-§I3) as OpenMP loops.

Each pass runs over the elements of a weight matrix in fixed chunks of CHUNK elements that
threads take in any order; a chunk draws its normals with the vectorized routines of _philox.h
(number ``k·N + e`` of the stream for element e of slice k, N the element count, as the
reference). Every operation is the reference's (refsim/stages/inference.py) in the same order
and the same type: a scalar enters as the caller's ``real_t`` value (numpy's rounding of the
Python float), a clip is ``x > lo ? x : lo`` then ``x < hi ? x : hi`` (numpy's float clip), and
there is no fused multiply-add. The logarithm and the powers are not here: the caller forms them
with numpy between the passes, so the results are the reference's bit for bit for the same
normals. Argument checking happens in refsim_fast.inference; these functions check the shapes
they index with and raise ValueError otherwise.
"""

from cython.parallel cimport prange
from libc.math cimport fabs, fabsf
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t

from refsim_fast._philox cimport refsim_normals, refsim_streams_init, refsim_words

ctypedef fused real_t:
    float
    double

cdef enum:
    CHUNK = 1024  # elements per parallel task (and per stack buffer of words and normals)


refsim_streams_init()


cdef inline real_t _abs(real_t x) noexcept nogil:
    if real_t is float:
        return fabsf(x)
    else:
        return fabs(x)


cdef extern from "_select.h" nogil:
    float refsim_gt_or_f(float x, float lo)
    float refsim_lt_or_f(float x, float hi)
    double refsim_gt_or_d(double x, double lo)
    double refsim_lt_or_d(double x, double hi)
    float refsim_if_zero_f(float x, float a, float b)
    double refsim_if_zero_d(double x, double a, double b)


cdef inline real_t _clip_min(real_t x, real_t lo) noexcept nogil:
    """x > lo ? x : lo, without a branch (_select.h)."""
    if real_t is float:
        return refsim_gt_or_f(x, lo)
    else:
        return refsim_gt_or_d(x, lo)


cdef inline real_t _clip_max(real_t x, real_t hi) noexcept nogil:
    """x < hi ? x : hi, without a branch."""
    if real_t is float:
        return refsim_lt_or_f(x, hi)
    else:
        return refsim_lt_or_d(x, hi)


cdef inline real_t _clip(real_t x, real_t lo, real_t hi) noexcept nogil:
    return _clip_max(_clip_min(x, lo), hi)


cdef inline real_t _if_zero(real_t x, real_t a, real_t b) noexcept nogil:
    """x == 0 ? a : b, without a branch."""
    if real_t is float:
        return refsim_if_zero_f(x, a, b)
    else:
        return refsim_if_zero_d(x, a, b)


cdef inline void _draw(uint32_t seed, uint32_t sid, uint64_t call, uint64_t start, int64_t n,
                       uint32_t* words, double* out) noexcept nogil:
    """Normals start .. start+n-1 of a call into out (n <= CHUNK)."""
    refsim_words(seed, sid, call, start, n, words)
    refsim_normals(words, n, out)


cdef inline void _draw_nonzero(uint32_t seed, uint32_t sid, uint64_t call, uint64_t start,
                               int64_t n, const real_t* g, uint32_t* words, int32_t* at,
                               double* dense, double* out) noexcept nogil:
    """Normals start .. start+n-1 of a call into out (n <= CHUNK) where g is not 0, and 0
    where it is: the read noise of a zero conductance, abs(0)·σ·ξ, is 0 for any ξ, so its
    normal is not needed (half of the devices idle at g_min = 0). The words are drawn for all
    (Philox makes them four at a time), the normals for the nonzero ones, compacted."""
    cdef int64_t i, count = 0
    for i in range(n):  # branch-free compaction
        at[count] = <int32_t>i
        count = count + (g[i] != 0)
        out[i] = 0
    refsim_words(seed, sid, call, start, n, words)
    for i in range(count):
        words[i] = words[at[i]]  # at[i] >= i: in place
    refsim_normals(words, count, dense)
    for i in range(count):
        out[at[i]] = dense[i]


cdef int _check(object a, tuple shape, str name) except -1:
    if a is not None and tuple(a.shape[:a.ndim]) != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(a.shape[:a.ndim])}")
    return 0


cdef int64_t _chunks(int64_t n) noexcept nogil:
    return (n + CHUNK - 1) // CHUNK


def conductances(const real_t[::1] w not None, real_t scale, real_t g_max, real_t g_min,
                 real_t[:, ::1] g not None, real_t[:, ::1] ratio, bint ratio_of_abs,
                 int num_threads):
    """G⁺ = clip(w·s, 0, g_max) + g_min into g[0], G⁻ = clip(−w·s, 0, g_max) + g_min into g[1]
    (§I1); with ``ratio`` (2, N) also, per slice, max(abs(G/g_max), 1e-7) (the programming's
    drift-coefficient input, §I2) or, with ``ratio_of_abs``, abs(G)/g_max (the drift's read-noise
    input, §I3) with 1 in place of 0: numpy's vectorized power takes a slow path for zeros
    (4.3 instead of 0.6 ms for 512² pairs, half of whose devices idle at 0), and each element's
    power does not depend on its neighbours; :func:`drift` puts 0^0.65 = 0 back."""
    cdef int64_t n = w.shape[0], c
    _check(g, (2, n), "g")
    _check(ratio, (2, n), "ratio")
    if n == 0:
        return
    cdef real_t* rp = &ratio[0, 0] if ratio is not None else NULL
    for c in prange(_chunks(n), nogil=True, schedule="static", num_threads=max(1, num_threads)):
        _conductance_chunk(&w[0], scale, g_max, g_min, &g[0, 0], rp, ratio_of_abs, n,
                           c * CHUNK, min(c * CHUNK + CHUNK, n))


cdef void _conductance_chunk(const real_t* w, real_t scale, real_t g_max, real_t g_min,
                             real_t* g, real_t* ratio, bint ratio_of_abs, int64_t n,
                             int64_t lo, int64_t hi) noexcept nogil:
    cdef int64_t e
    cdef real_t zero = 0, one = 1, floor = <real_t>1e-7, v, gp, gm
    for e in range(lo, hi):
        v = w[e] * scale
        gp = _clip(v, zero, g_max) + g_min
        gm = _clip(-v, zero, g_max) + g_min
        g[e] = gp
        g[n + e] = gm
        if ratio != NULL:
            if ratio_of_abs:
                v = _abs(gp) / g_max
                ratio[e] = _if_zero(v, one, v)
                v = _abs(gm) / g_max
                ratio[n + e] = _if_zero(v, one, v)
            else:
                ratio[e] = _clip_min(_abs(gp / g_max), floor)
                ratio[n + e] = _clip_min(_abs(gm / g_max), floor)


def program(const real_t[:, ::1] g not None, const real_t[:, ::1] log_rel,
            const real_t[::1] coeff not None, real_t g_max, real_t g_min, real_t sigma_factor,
            real_t prog_noise_scale, real_t drift_scale, real_t scale,
            uint32_t seed, uint32_t sid_prog, uint32_t sid_nu, uint64_t call,
            real_t[::1] w_out not None, real_t[:, ::1] nu not None, int num_threads):
    """Programming of both slices (§I2): G_p = max(G + prog_noise_scale·σ_p·ξ, 0) (G itself when
    prog_noise_scale = 0), ν = abs(μ + σ_ν·ξ')·drift_scale from ``log_rel`` = ln(max(abs(G/g_max),
    1e-7)) (all 0 without ``log_rel``: drift_scale = 0), and the programmed weights
    ((G_p⁺ − g_min) − (G_p⁻ − g_min))/s into ``w_out``."""
    cdef int64_t n = g.shape[1], c
    _check(g, (2, n), "g")
    _check(log_rel, (2, n), "log_rel")
    _check(w_out, (n,), "w_out")
    _check(nu, (2, n), "nu")
    if coeff.shape[0] < 1:
        raise ValueError("coeff: expected at least one coefficient")
    if n == 0:
        return
    cdef const real_t* lp = &log_rel[0, 0] if log_rel is not None else NULL
    for c in prange(_chunks(n), nogil=True, schedule="static", num_threads=max(1, num_threads)):
        _program_chunk(&g[0, 0], lp, &coeff[0], coeff.shape[0], g_max, g_min, sigma_factor,
                       prog_noise_scale, drift_scale, scale, seed, sid_prog, sid_nu, call,
                       &w_out[0], &nu[0, 0], n, c * CHUNK, min(c * CHUNK + CHUNK, n))


cdef void _program_chunk(const real_t* g, const real_t* log_rel, const real_t* coeff,
                         int64_t ncoeff, real_t g_max, real_t g_min, real_t sigma_factor,
                         real_t prog_noise_scale, real_t drift_scale, real_t scale,
                         uint32_t seed, uint32_t sid_prog, uint32_t sid_nu, uint64_t call,
                         real_t* w_out, real_t* nu, int64_t n, int64_t lo,
                         int64_t hi) noexcept nogil:
    # simple loops over the chunk, one quantity each, so that the compiler vectorizes them
    cdef uint32_t words[CHUNK]
    cdef double xi[CHUNK]
    cdef real_t ratio[CHUNK]
    cdef real_t power[CHUNK]
    cdef real_t sigma[CHUNK]
    cdef real_t gp[2][CHUNK]
    cdef int64_t m = hi - lo, k, i, j
    cdef const real_t* gk
    cdef const real_t* lr
    cdef real_t* nuk
    cdef real_t zero = 0, one = 1, c, mu, sd
    cdef real_t mu_a = <real_t>-0.0155, mu_b = <real_t>0.0244, mu_lo = <real_t>0.049
    cdef real_t mu_hi = <real_t>0.1, sd_a = <real_t>-0.0125, sd_b = <real_t>0.0059
    cdef real_t sd_lo = <real_t>0.008, sd_hi = <real_t>0.045
    for k in range(2):
        gk = g + k * n + lo
        nuk = nu + k * n + lo
        if prog_noise_scale != 0:
            _draw(seed, sid_prog, call, <uint64_t>(k * n + lo), m, words, xi)
            c = coeff[0]
            for i in range(m):
                ratio[i] = gk[i] / g_max
                power[i] = one
                sigma[i] = c
            for j in range(1, ncoeff):
                c = coeff[j]
                for i in range(m):
                    power[i] = power[i] * ratio[i]
                    sigma[i] = sigma[i] + power[i] * c
            for i in range(m):
                gp[k][i] = _clip_min(gk[i] + prog_noise_scale * (sigma[i] * sigma_factor)
                                     * <real_t>xi[i], zero)
        else:
            for i in range(m):
                gp[k][i] = gk[i]
        if log_rel != NULL:
            lr = log_rel + k * n + lo
            _draw(seed, sid_nu, call, <uint64_t>(k * n + lo), m, words, xi)
            for i in range(m):
                mu = _clip(mu_a * lr[i] + mu_b, mu_lo, mu_hi)
                sd = _clip(sd_a * lr[i] - sd_b, sd_lo, sd_hi)
                nuk[i] = _abs(mu + sd * <real_t>xi[i]) * drift_scale
        else:
            for i in range(m):
                nuk[i] = zero
    for i in range(m):
        w_out[lo + i] = ((gp[0][i] - g_min) - (gp[1][i] - g_min)) / scale


def drift(const real_t[:, ::1] g not None, const real_t[:, ::1] decay,
          const real_t[:, ::1] power, real_t g_max, real_t g_min, real_t read_noise_scale,
          real_t spread, real_t scale, uint32_t seed, uint32_t sid_read, uint64_t call,
          real_t[::1] w_out not None, int num_threads):
    """Drift and read noise of both slices (§I3): G_d = G·decay (G itself without ``decay``:
    t ≤ t₀), with ``power`` = (abs(G)/g_max)^0.65 (any value where abs(G)/g_max is 0: the power
    is 0 there, see :func:`conductances`) the read noise
    G_f = max(G_d + abs(G_d)·read_noise_scale·(q·σ_r)·ξ'', 0),
    q = min((1/max(power, 1e-3))·0.0088, 0.2) (G_f = max(G_d, 0) without ``power``), and the
    weights ((G_f⁺ − g_min) − (G_f⁻ − g_min))/s into ``w_out``."""
    cdef int64_t n = g.shape[1], c
    _check(g, (2, n), "g")
    _check(decay, (2, n), "decay")
    _check(power, (2, n), "power")
    _check(w_out, (n,), "w_out")
    if n == 0:
        return
    cdef const real_t* dp = &decay[0, 0] if decay is not None else NULL
    cdef const real_t* pp = &power[0, 0] if power is not None else NULL
    for c in prange(_chunks(n), nogil=True, schedule="static", num_threads=max(1, num_threads)):
        _drift_chunk(&g[0, 0], dp, pp, g_max, g_min, read_noise_scale, spread, scale, seed,
                     sid_read, call, &w_out[0], n, c * CHUNK, min(c * CHUNK + CHUNK, n))


cdef void _drift_chunk(const real_t* g, const real_t* decay, const real_t* power, real_t g_max,
                       real_t g_min, real_t read_noise_scale, real_t spread, real_t scale,
                       uint32_t seed,
                       uint32_t sid_read, uint64_t call, real_t* w_out, int64_t n, int64_t lo,
                       int64_t hi) noexcept nogil:
    # simple loops over the chunk, one quantity each, so that the compiler vectorizes them
    cdef uint32_t words[CHUNK]
    cdef int32_t at[CHUNK]
    cdef double xi[CHUNK]
    cdef double dense[CHUNK]
    cdef real_t gf[2][CHUNK]
    cdef int64_t m = hi - lo, k, i
    cdef const real_t* gk
    cdef const real_t* dk
    cdef const real_t* pk
    cdef real_t zero = 0, one = 1, q, pw
    cdef real_t p_floor = <real_t>1e-3, q_factor = <real_t>0.0088, q_cap = <real_t>0.2
    for k in range(2):
        gk = g + k * n + lo
        if decay != NULL:
            dk = decay + k * n + lo
            for i in range(m):
                gf[k][i] = gk[i] * dk[i]
        else:
            for i in range(m):
                gf[k][i] = gk[i]
        if power != NULL:
            pk = power + k * n + lo
            _draw_nonzero(seed, sid_read, call, <uint64_t>(k * n + lo), m, gf[k], words, at,
                          dense, xi)
            for i in range(m):
                # the power, 0 where abs(G)/g_max is 0 (conductances put 1 there)
                pw = _if_zero(_abs(gk[i]) / g_max, zero, pk[i])
                q = _clip_max((one / _clip_min(pw, p_floor)) * q_factor, q_cap)
                gf[k][i] = _clip_min(gf[k][i] + _abs(gf[k][i]) * read_noise_scale * (q * spread)
                                     * <real_t>xi[i], zero)
        else:
            for i in range(m):
                gf[k][i] = _clip_min(gf[k][i], zero)
    for i in range(m):
        w_out[lo + i] = ((gf[0][i] - g_min) - (gf[1][i] - g_min)) / scale

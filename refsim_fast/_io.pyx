# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Fast kernels of the IO stage (spec/io.md): the DAC (``prepare``) and, after the matrix
products, the element-wise analog terms, the pos/neg combination and the ADC (``finalize``) of one
bound-management pass, as OpenMP loops over batch rows (``prange``, static schedule).

Each row's result depends only on that row's inputs and on its own random numbers, addressed
exactly as ``refsim.stages.io.Draws`` does (number ``((p·B + row)·H + half)·L + k`` of call
``call`` of stream ``io.<direction>.<quantity>``), so the output does not depend on the thread
count. Every element-wise operation is the reference's, in the reference's order and in the
working type ``real_t`` (float32 or float64): Python-float constants are cast to ``real_t`` first
(NumPy's rule for Python scalars), random numbers are computed in double and cast like
``xp.astype``. The matrix products and the row sums (``Σ_j x̃_j``, ``Σ_j x̃_j²``) are computed by
the Python wrapper (refsim_fast/io.py) with NumPy, as the reference does.

The random numbers of a row are made in vectorizable passes: Philox blocks with the rounds
outside the block loop, the central branch of AS241 for all elements (an AVX-compiled copy where
the CPU has AVX; AVX has no FMA, so every operation stays the separately rounded one), then the
tail branch element by element with ``refsim_normal``. Numbers equal ``_philox.h``'s and
``refsim.rng``'s bit for bit (tests/test_io_fast_kernels.py).

The wrapper prepares the arguments: the arrays reaching these functions are C-contiguous and of
one real type (the typed memoryviews refuse anything else). The functions check once more, at the
compiled boundary, every shape the loops index with (for the effects that are on) and the range
of the random-number addresses, and raise ValueError rather than read or write out of bounds,
whatever they are given (spec/pulses.md, "Compiled kernels").
"""

import numpy as np

from cython.parallel cimport prange, threadid
from libc.float cimport DBL_MIN, FLT_MIN
from libc.math cimport fabs, fabsf
from libc.stdlib cimport free, malloc
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t, uintptr_t

cdef extern from *:
    """
    #include <math.h>
    #include <stdint.h>
    #include <string.h>
    #include "_philox.h"

    /* clang contracts a*b+c into an FMA by default on targets that have one; the reference's
       operations are separately rounded (GCC in ISO C mode, -std=c11, does not contract). */
    #if defined(__clang__)
    #pragma STDC FP_CONTRACT OFF
    #endif

    /* rint in the default rounding mode (half to even, as numpy.round), branch-free so that
       loops over it vectorize: for abs(x) < 2^p the addition abs(x) + 2^p itself rounds to an
       integer; larger magnitudes (and inf, nan) are integers already and pass unchanged. The
       sign, also of a zero result, is x's. The selection uses integer masks (a floating-point
       comparison would keep the compiler from if-converting the loop). */
    static inline double refsim_io_rint_d(double x) {
        uint64_t u, ru, au, mask;
        double a, r;
        memcpy(&u, &x, 8);
        au = u & 0x7fffffffffffffffull;
        memcpy(&a, &au, 8);
        r = (a + 4503599627370496.0) - 4503599627370496.0;
        memcpy(&ru, &r, 8);
        mask = -(uint64_t)((uint32_t)(au >> 32) < 0x43300000u);  /* abs(x) < 2^52 */
        ru = ((ru & mask) | (au & ~mask)) | (u & 0x8000000000000000ull);
        memcpy(&r, &ru, 8);
        return r;
    }
    static inline float refsim_io_rint_f(float x) {
        uint32_t u, ru, au, mask;
        float a, r;
        memcpy(&u, &x, 4);
        au = u & 0x7fffffffu;
        memcpy(&a, &au, 4);
        r = (a + 8388608.0f) - 8388608.0f;
        memcpy(&ru, &r, 4);
        mask = -(uint32_t)(au < 0x4B000000u);  /* abs(x) < 2^23 */
        ru = ((ru & mask) | (au & ~mask)) | (u & 0x80000000u);
        memcpy(&r, &ru, 4);
        return r;
    }

    /* max abs(x[k]) of a row as the integer maximum of the bit patterns without the sign: for
       non-negative floats the integer order is the float order, so this is the value of
       numpy.max(numpy.abs(x)) when every element is finite; an inf or NaN element has a
       pattern at least the exponent mask's, which *bad reports. Integer operations only, so
       the copies compiled for AVX2 / AVX-512 (picked at run time; baseline x86-64 has no packed
       32-bit maximum) give the same result. */
    #define REFSIM_ABSMAX_BITS_FN(ATTR, NAME, R, T, MASK)                 \
        ATTR static T NAME(const R* x, int64_t n) {                      \
            T m = 0, u;                                                  \
            for (int64_t k = 0; k < n; k++) {                            \
                memcpy(&u, x + k, sizeof(T));                            \
                u &= MASK;                                               \
                m = m > u ? m : u;                                       \
            }                                                            \
            return m;                                                    \
        }
    #define REFSIM_ABSMAX_BITS_FNS(ATTR, SUFFIX)                                                 \
        REFSIM_ABSMAX_BITS_FN(ATTR, refsim_io_absmax_bits_f##SUFFIX, float, int32_t, 0x7fffffff) \
        REFSIM_ABSMAX_BITS_FN(ATTR, refsim_io_absmax_bits_d##SUFFIX, double, int64_t,            \
                              0x7fffffffffffffffll)
    REFSIM_ABSMAX_BITS_FNS(, )
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__AVX2__)
    #define REFSIM_HAVE_ABSMAX_COPIES 1
    REFSIM_ABSMAX_BITS_FNS(__attribute__((target("avx2"))), _avx2)
    REFSIM_ABSMAX_BITS_FNS(__attribute__((target("avx512f"))), _avx512)
    #else
    #define REFSIM_HAVE_ABSMAX_COPIES 0
    #endif
    #if REFSIM_HAVE_ABSMAX_COPIES
    #define REFSIM_ABSMAX_BITS(S, x, n)                                  \
        (refsim_has_avx512 ? refsim_io_absmax_bits_##S##_avx512(x, n) :  \
         __builtin_cpu_supports("avx2") ? refsim_io_absmax_bits_##S##_avx2(x, n) : \
         refsim_io_absmax_bits_##S(x, n))
    #else
    #define REFSIM_ABSMAX_BITS(S, x, n) refsim_io_absmax_bits_##S(x, n)
    #endif
    #define REFSIM_ABSMAX(T, BITS, S, EXPONENT)                          \
        BITS m = REFSIM_ABSMAX_BITS(S, x, n);                            \
        T r;                                                             \
        *bad |= m >= EXPONENT;                                           \
        memcpy(&r, &m, sizeof(T));                                       \
        return r;
    static float refsim_io_absmax_f(const float* x, int64_t n, int* bad) {
        REFSIM_ABSMAX(float, int32_t, f, 0x7f800000)
    }
    static double refsim_io_absmax_d(const double* x, int64_t n, int* bad) {
        REFSIM_ABSMAX(double, int64_t, d, 0x7ff0000000000000ll)
    }
    """
    double refsim_io_rint_d(double x) noexcept nogil
    float refsim_io_rint_f(float x) noexcept nogil
    float refsim_io_absmax_f(const float* x, int64_t n, int* bad) noexcept nogil
    double refsim_io_absmax_d(const double* x, int64_t n, int* bad) noexcept nogil

from refsim_fast._philox cimport (refsim_has_avx, refsim_has_avx512, refsim_normals,
                                  refsim_streams_init, refsim_uniforms, refsim_words)

refsim_streams_init()


def uses_avx():
    """True if the normal transform runs its AVX-compiled loop on this CPU."""
    return bool(refsim_has_avx)


def uses_avx512():
    """True if the random words and the normal transform run their AVX-512-compiled loops on
    this CPU (the same numbers, spec/rng.md)."""
    return bool(refsim_has_avx512)


ctypedef fused real_t:
    float
    double

# Modes of the analog product (mv_type).
cdef enum:
    ONE_PASS = 0
    POS_NEG_SEPARATE = 1
    POS_NEG_DIGITAL_SUM = 2

# Voltage-offset / series-resistance variants (refsim.stages.io.voltage_offsets).
cdef enum:
    VOFF_NONE = 0
    VOFF_NO_REF = 1        # v_offset_w_min == 0
    VOFF_REF = 2           # reference current, no series resistance
    VOFF_REF_SERIES = 3    # reference current and series resistance


cdef struct Address:
    uint32_t seed
    uint64_t call
    int64_t batch
    int64_t halves
    int64_t pass_index
    int64_t row_calls      # 1: batch row b is call ``call + b`` of its own (Draws.row_calls)


cdef struct DacArgs:
    int pos_neg
    double step
    int sto_round
    double bound
    double noise
    double neg_factor          # 1 - inp_asymmetry
    uint32_t sid_sto_round
    uint32_t sid_noise


cdef struct AdcArgs:
    int mode
    # analog product (per half)
    int ir
    double ir_drop
    double ir_scale            # n / ir_drop_g_ratio
    int voff
    double neg_w_min           # -v_offset_w_min
    double rho                 # r_series
    int w_noise_on
    double w_noise
    uint32_t sid_w_noise
    double neg_out_factor      # 1 - out_asymmetry
    # ADC
    int nonlinearity
    double slope               # the slope-calibration factor F
    double out_noise
    int noise_std              # per-output sigma given
    uint32_t sid_out_noise
    double step
    int sto_round
    uint32_t sid_sto_round
    double bound
    int bm_neg


cdef struct Product:
    # one analog product x̃ Wᵀ of R rows and its extra terms (NULL when the effect is off)
    const void* y              # (R, m)
    const void* ir_a           # (R, m) abs(x̃) abs(W)ᵀ
    const void* ir_g           # (R, m) (x̃·position) Wᵀ
    const void* row_sum        # (R,) Σ_j x̃_j
    const void* spread         # (R, 1) or (R, m): the weight-noise spread
    int64_t spread_cols        # 1 or m


#: Largest random-number index of a call (refsim.rng.MAX_INDEX).
_MAX_INDEX = 2**62
#: A run of numbers start .. start+n-1 must end by here (no uint64 wrap-around in _philox.h).
_MAX_RUN_END = 2**63
#: Largest call number (refsim.rng.MAX_CALL).
_MAX_CALL = 2**64 - 1


cdef object _pyint(int64_t v):
    """v as a Python int (overflow-free arithmetic in the argument checks)."""
    return v


cdef object _pyuint(uint64_t v):
    return v


cdef int _expect(object a, tuple shape, str name) except -1:
    """ValueError unless the array ``a`` has ``shape``."""
    if a is None:
        raise ValueError(f"{name}: required, expected an array of shape {shape}")
    got = tuple(a.shape[:a.ndim])
    if got != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {got}")
    return 0


cdef int _check_address(const Address* ad, const int64_t[::1] rows, int64_t half_max,
                        int64_t width) except -1:
    """ValueError unless every random number the rows draw has an index in [0, 2^62]: number
    ((p·B + row)·H + half)·width + k, k < width, half <= half_max (no int64 overflow in _start,
    no wrap-around in the runs)."""
    cdef int64_t r, lo = 0, hi = 0
    if ad.batch < 0 or ad.halves < 0 or ad.pass_index < 0:
        raise ValueError(f"address: expected non-negative batch, halves and pass_index, got "
                         f"{ad.batch}, {ad.halves}, {ad.pass_index}")
    if rows.shape[0] == 0 or width == 0:
        return 0
    lo = hi = rows[0]
    for r in range(1, rows.shape[0]):
        lo = min(lo, rows[r])
        hi = max(hi, rows[r])
    if lo < 0:
        raise ValueError(f"rows: expected non-negative batch-row indices, got {lo}")
    # each partial result of _start, in Python integers (the module has wraparound=False: no
    # negative indices here)
    if ad.row_calls:
        if _pyuint(ad.call) + hi > _MAX_CALL:
            raise ValueError(f"rows: call {ad.call} + row {hi} exceeds {_MAX_CALL}")
        t0 = t1 = 0
        t2 = _pyint(ad.pass_index) * ad.halves
    else:
        t0 = _pyint(ad.pass_index) * ad.batch
        t1 = t0 + hi
        t2 = t1 * ad.halves
    t3 = (t2 + half_max) * width + width
    top = max(t0, t1, t2, t3)
    if top > _MAX_INDEX:
        raise ValueError(f"rows: random-number index {top} exceeds 2^62")
    return 0


cdef int _check_run(uint64_t start, int64_t n) except -1:
    if _pyuint(start) + n > _MAX_RUN_END:
        raise ValueError(f"start: numbers {start} .. {start} + {n} - 1 run past 2^63")
    return 0


cdef inline real_t _abs(real_t v) noexcept nogil:
    if real_t is float:
        return fabsf(v)
    else:
        return fabs(v)


cdef inline real_t _rint(real_t v) noexcept nogil:
    if real_t is float:
        return refsim_io_rint_f(v)
    else:
        return refsim_io_rint_d(v)


cdef inline int64_t _start(const Address* ad, int64_t row, int64_t half,
                           int64_t width) noexcept nogil:
    """First number of a row's run: ((p·B + row)·H + half)·width ((p·H + half)·width of the
    row's own call with row_calls)."""
    if ad.row_calls:
        return (ad.pass_index * ad.halves + half) * width
    return ((ad.pass_index * ad.batch + row) * ad.halves + half) * width


cdef inline uint64_t _call(const Address* ad, int64_t row) noexcept nogil:
    """The call a row draws from: ``call``, or ``call + row`` with row_calls."""
    return ad.call + <uint64_t>row if ad.row_calls else ad.call


cdef void _normals(const Address* ad, int64_t row, uint32_t sid, int64_t start, int64_t n,
                   uint32_t* words, double* out) noexcept nogil:
    refsim_words(ad.seed, sid, _call(ad, row), <uint64_t>start, n, words)
    refsim_normals(words, n, out)


cdef void _uniforms(const Address* ad, int64_t row, uint32_t sid, int64_t start, int64_t n,
                    uint32_t* words, double* out) noexcept nogil:
    refsim_words(ad.seed, sid, _call(ad, row), <uint64_t>start, n, words)
    refsim_uniforms(words, n, out)


# -- the DAC ---------------------------------------------------------------------------------------


cdef void _prepare_row(const real_t* x, real_t s, int64_t row, int64_t n, real_t* out,
                       real_t* neg, const DacArgs* a, const Address* ad, uint32_t* words,
                       double* ubuf, double* nbuf) noexcept nogil:
    """prepare_input for one row into ``out``; with ``a.pos_neg``, analog_mv's split follows:
    ``neg`` = clip(x̃, max=0)·(1 − inp_asymmetry) and ``out`` = clip(x̃, min=0)."""
    cdef int64_t k
    cdef real_t v
    cdef double dstep = a.step
    cdef double dbound = a.bound
    cdef double dnoise = a.noise
    cdef int sto = a.sto_round
    cdef real_t step = <real_t>dstep
    cdef real_t half = <real_t>0.5
    cdef real_t lo = <real_t>(-dbound)
    cdef real_t hi = <real_t>dbound
    cdef real_t noise = <real_t>dnoise
    cdef real_t nf = <real_t>a.neg_factor
    cdef real_t zero = 0
    cdef int64_t start = _start(ad, row, 0, n)
    for k in range(n):
        out[k] = x[k] * s
    if dstep > 0:  # quantize: rint(v/step [+ u − ½])·step
        if sto:
            _uniforms(ad, row, a.sid_sto_round, start, n, words, ubuf)
            for k in range(n):
                out[k] = _rint(out[k] / step + (<real_t>ubuf[k] - half)) * step
        else:
            for k in range(n):
                out[k] = _rint(out[k] / step) * step
    if dbound > 0:  # numpy clip: max(v, lo), then min(., hi)
        for k in range(n):
            v = out[k]
            v = v if v > lo else lo
            out[k] = v if v < hi else hi
    if dnoise > 0:
        _normals(ad, row, a.sid_noise, start, n, words, nbuf)
        for k in range(n):
            out[k] = out[k] + noise * <real_t>nbuf[k]
    if a.pos_neg:
        for k in range(n):
            v = out[k]
            neg[k] = (v if v < zero else zero) * nf  # clip(max=0), then the asymmetry
            out[k] = v if v > zero else zero          # clip(min=0)


def prepare(const real_t[:, ::1] x not None, const real_t[::1] scale, const int64_t[::1] rows,
            real_t[:, ::1] out, real_t[:, ::1] neg, real_t[:, ::1] pos, DacArgs args,
            Address address, int num_threads):
    """The DAC of refsim.stages.io.prepare_input for the rows ``rows``: writes x̃ (R, n) to
    ``out``, or, when ``args.pos_neg``, its negative part times (1 − inp_asymmetry) to ``neg`` and
    its positive part to ``pos`` (``out`` may then be empty; ``neg``, ``pos`` otherwise)."""
    cdef int64_t R = x.shape[0]
    cdef int64_t n = x.shape[1]
    cdef int64_t r
    _expect(scale, (R,), "scale")
    _expect(rows, (R,), "rows")
    if args.pos_neg:
        _expect(neg, (R, n), "neg")
        _expect(pos, (R, n), "pos")
    else:
        _expect(out, (R, n), "out")
    _check_address(&address, rows, 0, n)
    if R == 0 or n == 0:
        return
    cdef const real_t* px = &x[0, 0]
    cdef const real_t* ps = &scale[0]
    cdef const int64_t* prow = &rows[0]
    cdef real_t* po = NULL
    cdef real_t* pn = NULL
    cdef real_t* pp = NULL
    if args.pos_neg:
        pn = &neg[0, 0]
        pp = &pos[0, 0]
    else:
        po = &out[0, 0]
    # per-thread scratch: words, uniforms, normals of one row
    cdef int nt = max(1, num_threads)
    cdef uint32_t[:, ::1] words_all = np.empty((nt, n + 8), dtype=np.uint32)
    cdef double[:, ::1] dbl_all = np.empty((nt, 2 * n), dtype=np.float64)
    cdef uint32_t* pw = &words_all[0, 0]
    cdef double* pd = &dbl_all[0, 0]
    cdef int tid
    for r in prange(R, nogil=True, schedule="static", num_threads=nt):
        tid = threadid()
        _prepare_row(px + r * n, ps[r], prow[r], n,
                     (pp if args.pos_neg else po) + r * n,
                     pn + r * n if args.pos_neg else NULL,
                     &args, &address, pw + tid * (n + 8), pd + tid * 2 * n,
                     pd + tid * 2 * n + n)


# -- the analog product's element-wise terms and the ADC ------------------------------------------


cdef void _analog_row(const Product* P, real_t* y, int64_t r, int64_t row, int64_t m,
                      int64_t half, const real_t* v_offset, const AdcArgs* a, const Address* ad,
                      uint32_t* words, double* nbuf) noexcept nogil:
    """y[0:m] = row r of analog_product's output after the GEMM x̃ Wᵀ: IR drop, voltage
    offsets / series resistance, weight noise, in the reference's order (one loop per effect)."""
    cdef int64_t i
    cdef real_t t, av, pi, ref, coded, v
    cdef const real_t* Y = (<const real_t*>P.y) + r * m
    cdef const real_t* A
    cdef const real_t* G
    cdef const real_t* S
    cdef real_t one = 1
    cdef real_t two = 2
    cdef real_t ir_drop = <real_t>a.ir_drop
    cdef real_t ir_scale = <real_t>a.ir_scale
    cdef real_t c05 = <real_t>0.05
    cdef real_t c02 = <real_t>0.2
    cdef real_t c5 = <real_t>0.5
    cdef double drho = a.rho
    cdef real_t rho = <real_t>drho
    cdef real_t w_noise = <real_t>a.w_noise
    cdef int voff = a.voff
    cdef int64_t scol = P.spread_cols
    for i in range(m):
        y[i] = Y[i]
    if a.ir:  # y − π·(ir_drop·G) with a = (n/g)·A, π = ((0.05a − 0.2)a + 0.5)a
        A = (<const real_t*>P.ir_a) + r * m
        G = (<const real_t*>P.ir_g) + r * m
        for i in range(m):
            av = ir_scale * A[i]
            pi = ((c05 * av - c02) * av + c5) * av
            y[i] = y[i] - pi * (ir_drop * G[i])
    if voff == VOFF_NO_REF:
        if drho > 0:
            for i in range(m):
                y[i] = (one - v_offset[i]) * y[i] / (one + rho * _abs(y[i]))
        else:
            for i in range(m):
                y[i] = (one - v_offset[i]) * y[i]
    elif voff == VOFF_REF:
        ref = <real_t>a.neg_w_min * (<const real_t*>P.row_sum)[r]
        for i in range(m):
            v = v_offset[i]
            y[i] = (one - v) * y[i] - two * v * ref
    elif voff == VOFF_REF_SERIES:
        ref = <real_t>a.neg_w_min * (<const real_t*>P.row_sum)[r]
        for i in range(m):
            v = v_offset[i]
            coded = y[i] + ref
            y[i] = ((one - v) * coded / (one + rho * _abs(coded))
                    - (one + v) * ref / (one + rho * _abs(ref)))
    if a.w_noise_on:
        S = (<const real_t*>P.spread) + r * scol
        _normals(ad, row, a.sid_w_noise, _start(ad, row, half, m), m, words, nbuf)
        if scol == 1:
            t = w_noise * S[0]
            for i in range(m):
                y[i] = y[i] + t * <real_t>nbuf[i]
        else:
            for i in range(m):
                y[i] = y[i] + w_noise * S[i] * <real_t>nbuf[i]


cdef int _adc_row(real_t* y, int64_t row, int64_t m, int64_t half, const real_t* nonlin,
                  const real_t* noise_std, const AdcArgs* a, const Address* ad, uint32_t* words,
                  double* nbuf, double* ubuf) noexcept nogil:
    """finalize_output on y[0:m] in place; returns 1 if the bound test passed."""
    cdef int64_t i
    cdef real_t t
    cdef real_t one = 1
    cdef real_t half_ = <real_t>0.5
    cdef double dnoise = a.out_noise
    cdef double dstep = a.step
    cdef double dbound = a.bound
    cdef real_t slope = <real_t>a.slope
    cdef real_t sigma = <real_t>dnoise
    cdef real_t step = <real_t>dstep
    cdef real_t hi = <real_t>dbound
    cdef real_t lo = <real_t>(-dbound)
    cdef int bm_neg = a.bm_neg
    cdef int over = 0
    cdef int64_t start = _start(ad, row, half, m)
    if a.nonlinearity:  # F·y / (1 + abs(ν·y))
        for i in range(m):
            y[i] = slope * y[i] / (one + _abs(nonlin[i] * y[i]))
    if dnoise > 0:
        _normals(ad, row, a.sid_out_noise, start, m, words, nbuf)
        if a.noise_std:
            for i in range(m):
                y[i] = y[i] + noise_std[i] * <real_t>nbuf[i]
        else:
            for i in range(m):
                y[i] = y[i] + sigma * <real_t>nbuf[i]
    if dstep > 0:  # rint(y/step [+ u − ½])·step
        if a.sto_round:
            _uniforms(ad, row, a.sid_sto_round, start, m, words, ubuf)
            for i in range(m):
                y[i] = _rint(y[i] / step + (<real_t>ubuf[i] - half_)) * step
        else:
            for i in range(m):
                y[i] = _rint(y[i] / step) * step
    if dbound > 0:  # bound test, then numpy clip: max(y, lo), then min(., hi)
        if bm_neg:
            for i in range(m):
                t = y[i]
                over = over | (t > hi) | (t < lo)
        else:
            for i in range(m):
                over = over | (y[i] > hi)
        for i in range(m):
            t = y[i]
            t = t if t > lo else lo
            y[i] = t if t < hi else hi
    return not over


cdef void _finalize_row(const Product* P0, const Product* P1, int64_t r, int64_t row, int64_t m,
                        real_t* out, uint8_t* ok, real_t* tmp, const real_t* v_offset,
                        const real_t* nonlin, const real_t* noise_std, const AdcArgs* a,
                        const Address* ad, uint32_t* words, double* nbuf,
                        double* ubuf) noexcept nogil:
    cdef int64_t i
    cdef real_t nf = <real_t>a.neg_out_factor
    cdef int good
    if a.mode == ONE_PASS:
        _analog_row(P0, out, r, row, m, 0, v_offset, a, ad, words, nbuf)
        ok[0] = _adc_row(out, row, m, 0, nonlin, noise_std, a, ad, words, nbuf, ubuf)
        return
    # pos/neg: P0 is the negative pass (half 0), P1 the positive one (half 1)
    _analog_row(P0, out, r, row, m, 0, v_offset, a, ad, words, nbuf)
    for i in range(m):
        out[i] = out[i] * nf
    _analog_row(P1, tmp, r, row, m, 1, v_offset, a, ad, words, nbuf)
    if a.mode == POS_NEG_SEPARATE:
        for i in range(m):
            out[i] = out[i] + tmp[i]
        ok[0] = _adc_row(out, row, m, 0, nonlin, noise_std, a, ad, words, nbuf, ubuf)
        return
    good = _adc_row(out, row, m, 0, nonlin, noise_std, a, ad, words, nbuf, ubuf)
    good = _adc_row(tmp, row, m, 1, nonlin, noise_std, a, ad, words, nbuf, ubuf) & good
    for i in range(m):
        out[i] = out[i] + tmp[i]
    ok[0] = good


cdef inline Product _product_alone(const void* y) noexcept nogil:
    """A product without extra terms (IR drop, row sums, weight-noise spread off)."""
    cdef Product p
    p.y = y
    p.ir_a = NULL
    p.ir_g = NULL
    p.row_sum = NULL
    p.spread = NULL
    p.spread_cols = 1
    return p


cdef Product _product(real_t[:, ::1] y, real_t[:, ::1] ir_a, real_t[:, ::1] ir_g,
                      real_t[::1] row_sum, real_t[:, ::1] spread):
    cdef Product p = _product_alone(NULL)
    if y.shape[0] * y.shape[1] > 0:
        p.y = &y[0, 0]
    if ir_a.shape[0] * ir_a.shape[1] > 0:
        p.ir_a = &ir_a[0, 0]
        p.ir_g = &ir_g[0, 0]
    if row_sum.shape[0] > 0:
        p.row_sum = &row_sum[0]
    if spread.shape[0] * spread.shape[1] > 0:
        p.spread = &spread[0, 0]
        p.spread_cols = spread.shape[1]
    return p


cdef const real_t* _ptr(real_t[::1] a) noexcept:
    return &a[0] if a.shape[0] > 0 else NULL


def finalize(real_t[:, ::1] y0, real_t[:, ::1] ir_a0, real_t[:, ::1] ir_g0,
             real_t[::1] row_sum0, real_t[:, ::1] spread0,
             real_t[:, ::1] y1, real_t[:, ::1] ir_a1, real_t[:, ::1] ir_g1,
             real_t[::1] row_sum1, real_t[:, ::1] spread1,
             real_t[::1] v_offset, real_t[::1] nonlinearity, real_t[::1] noise_std,
             const int64_t[::1] rows, real_t[:, ::1] out not None, uint8_t[::1] ok,
             AdcArgs args, Address address, int num_threads):
    """The element-wise rest of analog_mv after the matrix products: for each row, the analog
    terms of analog_product for the product(s) (``*0``: the one pass, or the negative pass of the
    pos/neg modes; ``*1``: the positive pass), their combination per ``args.mode``, and
    finalize_output. Writes the outputs (R, m) to ``out`` and the bound test to ``ok``. Arrays of
    effects that are off are empty."""
    cdef int64_t R = out.shape[0]
    cdef int64_t m = out.shape[1]
    cdef int64_t r
    _expect(ok, (R,), "ok")
    _expect(rows, (R,), "rows")
    if args.mode < ONE_PASS or args.mode > POS_NEG_DIGITAL_SUM:
        raise ValueError(f"args.mode: expected 0, 1 or 2, got {args.mode}")
    if args.voff < VOFF_NONE or args.voff > VOFF_REF_SERIES:
        raise ValueError(f"args.voff: expected 0..3, got {args.voff}")
    if R == 0:
        return
    if m == 0:
        ok[:] = 1
        return
    # the arrays of the effects that are on, against the sizes the row loops index with
    parts = [("0", y0, ir_a0, ir_g0, row_sum0, spread0)]
    if args.mode != ONE_PASS:
        parts.append(("1", y1, ir_a1, ir_g1, row_sum1, spread1))
    for k, y, ir_a, ir_g, row_sum, spread in parts:
        _expect(y, (R, m), "y" + k)
        if args.ir:
            _expect(ir_a, (R, m), "ir_a" + k)
            _expect(ir_g, (R, m), "ir_g" + k)
        if args.voff == VOFF_REF or args.voff == VOFF_REF_SERIES:
            _expect(row_sum, (R,), "row_sum" + k)
        if args.w_noise_on:
            _expect(spread, (R, 1 if spread is not None and spread.shape[1] == 1 else m),
                    "spread" + k)
    if args.voff != VOFF_NONE:
        _expect(v_offset, (m,), "v_offset")
    if args.nonlinearity:
        _expect(nonlinearity, (m,), "nonlinearity")
    if args.out_noise > 0 and args.noise_std:
        _expect(noise_std, (m,), "noise_std")
    _check_address(&address, rows, 0 if args.mode == ONE_PASS else 1, m)
    cdef Product p0 = _product(y0, ir_a0, ir_g0, row_sum0, spread0)
    cdef Product p1 = _product(y1, ir_a1, ir_g1, row_sum1, spread1)
    cdef const real_t* pv = _ptr(v_offset)
    cdef const real_t* pnl = _ptr(nonlinearity)
    cdef const real_t* pstd = _ptr(noise_std)
    cdef const int64_t* prow = &rows[0]
    cdef real_t* po = &out[0, 0]
    cdef uint8_t* pok = &ok[0]
    # per-thread scratch: words, normals, uniforms and the second pass of one row
    cdef int nt = max(1, num_threads)
    cdef uint32_t[:, ::1] words_all = np.empty((nt, m + 8), dtype=np.uint32)
    cdef double[:, ::1] dbl_all = np.empty((nt, 2 * m), dtype=np.float64)
    cdef real_t[:, ::1] tmp_all = np.empty(
        (nt, m), dtype=np.float32 if real_t is float else np.float64)
    cdef uint32_t* pw = &words_all[0, 0]
    cdef double* pd = &dbl_all[0, 0]
    cdef real_t* pt = &tmp_all[0, 0]
    cdef int tid
    for r in prange(R, nogil=True, schedule="static", num_threads=nt):
        tid = threadid()
        _finalize_row(&p0, &p1, r, prow[r], m, po + r * m, pok + r, pt + tid * m, pv, pnl, pstd,
                      &args, &address, pw + tid * (m + 8), pd + tid * 2 * m,
                      pd + tid * 2 * m + m)


# -- the driver's scales and the plain pass (refsim_fast.io.mvm) ------------------------------------

# Noise-management types (refsim.stages.io.noise_management), as refsim_fast.io numbers them.
cdef enum:
    NM_NONE = 0
    NM_CONSTANT = 1
    NM_AVERAGE_ABS_MAX = 2
    NM_MAX = 3
    NM_ABS_MAX = 4
    NM_ABS_MAX_NP_SUM = 5


def noise_scales(const real_t[:, ::1] x not None, int nm, double theta, double bound,
                 double step_in, double max_bm_res, double wmax, double decay, object running):
    """α per row of refsim.stages.io.noise_management (spec/io.md §S3) for the noise-management
    type ``nm`` (NM_* above), tiny scales counted as 0, in the dtype of ``x`` and the reference's
    order; ``bound``, ``step_in``: the AbsMaxNPSum rule's ``out_bound`` (1 when off) and DAC step,
    ``wmax``, ``decay``: NM_ASSUMED_WMAX and NM_DECAY, ``running``: the AverageAbsMax running
    value (None before the first row). Returns ``(alpha, running, positive)`` (``positive``: the
    number of rows with α > 0), or None when a row has no element or ``x`` a non-finite one (the
    caller then takes the reference's path)."""
    cdef int64_t B = x.shape[0]
    cdef int64_t n = x.shape[1]
    cdef int64_t b, k
    if nm < NM_NONE or nm > NM_ABS_MAX_NP_SUM:
        raise ValueError(f"nm: expected 0..5, got {nm}")
    if n == 0:
        return None
    alpha = np.empty(B, dtype=np.float32 if real_t is float else np.float64)
    cdef real_t[::1] al = alpha
    cdef real_t v, a, q, amax, vmax, P, N
    cdef real_t zero = 0
    cdef real_t one = 1
    cdef real_t rtheta = <real_t>theta
    cdef real_t rbound = <real_t>bound
    cdef real_t rstep = <real_t>step_in
    cdef real_t rres = <real_t>max_bm_res
    cdef real_t rwmax = <real_t>wmax
    cdef real_t rdecay = <real_t>decay
    cdef real_t keep = one - rdecay
    cdef real_t tiny = <real_t>(FLT_MIN if real_t is float else DBL_MIN)
    cdef int have_running = running is not None
    cdef real_t run = <real_t>(<double>running) if have_running else 0
    cdef int64_t positive = 0
    cdef const real_t* row
    cdef int bad = 0
    with nogil:
        for b in range(B):
            row = &x[b, 0]
            if real_t is float:
                amax = refsim_io_absmax_f(row, n, &bad)
            else:
                amax = refsim_io_absmax_d(row, n, &bad)
            vmax = row[0]
            if nm == NM_MAX:
                for k in range(1, n):
                    vmax = vmax if vmax > row[k] else row[k]
            if nm == NM_NONE:
                a = one
            elif nm == NM_CONSTANT:
                a = rtheta if theta > 0 else one
            elif nm == NM_AVERAGE_ABS_MAX:
                run = run * keep + rdecay * amax if have_running else amax
                have_running = 1
                a = run
            else:
                a = vmax if nm == NM_MAX else amax
                if theta > 0:  # clip(max=θ)
                    a = rtheta if a > rtheta else a
                if nm == NM_ABS_MAX_NP_SUM:  # left-to-right sums, as sequential_sum
                    P = x[b, 0] if x[b, 0] > zero else zero
                    N = x[b, 0] if x[b, 0] < zero else zero
                    for k in range(1, n):
                        v = x[b, k]
                        P = P + (v if v > zero else zero)
                        N = N + (v if v < zero else zero)
                    q = (P if P >= -N else -N) * rwmax / rbound
                    if step_in > 0:
                        v = a / rstep * rres
                        q = q if q <= v else v
                    a = a if a >= q else q
            a = zero if (a > zero and a < tiny) else a
            al[b] = a
            positive = positive + (a > zero)
    if bad:
        return None
    if nm == NM_AVERAGE_ABS_MAX and have_running:
        running = float(run)
    return alpha, running, positive


cdef inline int64_t _align64(int64_t size) noexcept nogil:
    return (size + 63) // 64 * 64


cdef inline void _pass_scale(real_t a, bint managed, bint backward, double reduction,
                             double out_scale, real_t* scale, real_t* rescale) noexcept nogil:
    """One row of refsim.stages.io.input_output_scales, in real_t and the reference's order."""
    cdef real_t one = 1
    cdef real_t s = (one / a if a > 0 else one) if managed else one
    if reduction != 1.0:
        s = s / <real_t>reduction
    scale[0] = s
    rescale[0] = <real_t>out_scale * (a if a > 0 else one) if (backward and managed) else \
        <real_t>out_scale / s


def pass_scales(const real_t[::1] alpha not None, bint managed, bint backward, double reduction,
                double out_scale):
    """refsim.stages.io.input_output_scales: per row the input scale ``s`` of a pass and the
    factor of its outputs, in the dtype of ``alpha`` and the reference's order."""
    cdef int64_t R = alpha.shape[0]
    cdef int64_t r
    dtype = np.float32 if real_t is float else np.float64
    scale = np.empty(R, dtype=dtype)
    rescale = np.empty(R, dtype=dtype)
    cdef real_t[::1] sc = scale
    cdef real_t[::1] rs = rescale
    for r in range(R):
        _pass_scale(alpha[r], managed, backward, reduction, out_scale, &sc[r], &rs[r])
    return scale, rescale


cdef class PlainPass:
    """The converted DAC and ADC arguments of a *plain* pass: no IR drop, voltage offsets,
    series resistance, output nonlinearity, per-output noise sigmas or weight noise (the
    configuration's and the periphery's effects that need more than the product x̃ Wᵀ).
    refsim_fast.io keeps one per config, direction and dtype."""
    cdef DacArgs dac
    cdef AdcArgs adc

    def __init__(self, DacArgs dac, AdcArgs adc):
        if adc.ir or adc.voff != VOFF_NONE or adc.nonlinearity or adc.noise_std or \
                adc.w_noise_on:
            raise ValueError("adc: not a plain pass (IR drop, offsets, nonlinearity, noise "
                             "sigmas or weight noise is on)")
        if adc.mode < ONE_PASS or adc.mode > POS_NEG_DIGITAL_SUM:
            raise ValueError(f"adc.mode: expected 0, 1 or 2, got {adc.mode}")
        if (adc.mode != ONE_PASS) != (dac.pos_neg != 0):
            raise ValueError("dac.pos_neg: expected 1 exactly for the pos/neg modes of adc.mode")
        self.dac = dac
        self.adc = adc


def plain_pass(PlainPass plan not None, const real_t[:, ::1] x not None,
               const real_t[::1] alpha not None, const int64_t[::1] rows not None,
               object weights_t, object product, bint managed, bint backward, double reduction, double out_scale, uint32_t seed,
               uint64_t call, int64_t batch, int64_t halves, int64_t pass_index, bint row_calls,
               int num_threads):
    """One bound-management pass of refsim.stages.io.mvm for a plain configuration
    (:class:`PlainPass`): the scales of the rows from their α (:func:`pass_scales`' with
    ``managed``, ``backward``, ``reduction``, ``out_scale``), then analog_mv's DAC, product(s)
    ``product(x̃, weights_t)`` (refsim.stages.io.product, or numpy's matmul where that is what
    it calls, so the same numbers; ``weights_t`` is Wᵀ, (n, m), of x's dtype), pos/neg
    combination and ADC, and the outputs times the rows' factors. Returns the outputs (R, m) and the bound test (R,) bool; the random numbers are
    addressed as in prepare / finalize (seed, call, batch, halves, pass_index, row_calls)."""
    cdef int64_t R = x.shape[0]
    cdef int64_t n = x.shape[1]
    cdef int64_t m
    cdef int64_t r, i
    cdef int pos_neg = plan.dac.pos_neg
    if alpha.shape[0] != R or rows.shape[0] != R:
        raise ValueError(f"alpha, rows: expected {R} rows (those of x), got {alpha.shape[0]}, "
                         f"{rows.shape[0]}")
    dtype = np.float32 if real_t is float else np.float64
    if not isinstance(weights_t, np.ndarray) or weights_t.dtype != dtype or \
            weights_t.ndim != 2 or weights_t.shape[0] != n:
        raise ValueError(f"weights_t: expected a {np.dtype(dtype).name} numpy array of shape "
                         f"({n}, m)")
    m = weights_t.shape[1]
    result = np.empty((R, m), dtype=dtype)
    passed = np.empty((R,), dtype=np.bool_)
    cdef real_t[:, ::1] out = result
    cdef uint8_t[::1] ok = passed.view(np.uint8)
    cdef Address ad
    ad.seed = seed
    ad.call = call
    ad.batch = batch
    ad.halves = halves
    ad.pass_index = pass_index
    ad.row_calls = row_calls
    _check_address(&ad, rows, 0, n)
    _check_address(&ad, rows, 0 if plan.adc.mode == ONE_PASS else 1, m)
    if R == 0:
        return result, passed
    if m == 0:
        passed[:] = True
        return result, passed
    cdef int nt = max(1, num_threads)
    cdef int64_t w = max(n, m)
    # per row: its scale and factor; per thread: words, uniforms + normals, the second half
    # (each part at a multiple of 64 bytes)
    cdef int64_t words_size = _align64((w + 8) * sizeof(uint32_t))
    cdef int64_t dbl_size = _align64(2 * w * sizeof(double))
    cdef int64_t per_thread = words_size + dbl_size + _align64(m * sizeof(real_t))
    cdef int64_t rows_size = _align64(2 * R * sizeof(real_t))
    cdef char* scratch = <char*>malloc(<size_t>(rows_size + nt * per_thread + 64))
    if scratch == NULL:
        raise MemoryError()
    cdef char* base = scratch + (64 - (<uintptr_t>scratch) % 64) % 64
    cdef real_t* sc = <real_t*>base
    cdef real_t* rs = sc + R
    cdef char* threads_at = base + rows_size
    cdef char* mine
    cdef const real_t* px = &x[0, 0]
    cdef const int64_t* prow = &rows[0]
    cdef real_t* p0
    cdef real_t* p1 = NULL
    cdef real_t[:, ::1] v0
    cdef real_t[:, ::1] v1
    cdef real_t[:, ::1] y0
    cdef real_t[:, ::1] y1
    cdef Product q0
    cdef Product q1
    cdef real_t* po = &out[0, 0]
    cdef uint8_t* pok = &ok[0]
    try:
        for r in range(R):
            _pass_scale(alpha[r], managed, backward, reduction, out_scale, sc + r, rs + r)
        first = np.empty((R, n), dtype=dtype)           # x̃, or its negative part
        second = np.empty((R if pos_neg else 0, n), dtype=dtype)  # its positive part
        if n:
            v0 = first
            p0 = &v0[0, 0]
            if pos_neg:
                v1 = second
                p1 = &v1[0, 0]
            for r in prange(R, nogil=True, schedule="static", num_threads=nt):
                mine = threads_at + threadid() * per_thread
                _prepare_row(px + r * n, sc[r], prow[r], n, (p1 + r * n) if pos_neg else
                             (p0 + r * n), (p0 + r * n) if pos_neg else NULL, &plan.dac, &ad,
                             <uint32_t*>mine, <double*>(mine + words_size),
                             <double*>(mine + words_size) + w)
        # the products (analog_mv's: the negative part first), on the caller's BLAS setting
        y0 = np.ascontiguousarray(product(first, weights_t))
        if y0.shape[0] != R or y0.shape[1] != m:
            raise ValueError(f"product: expected a result of shape ({R}, {m})")
        q0 = _product_alone(&y0[0, 0])
        q1 = q0
        if pos_neg:
            y1 = np.ascontiguousarray(product(second, weights_t))
            if y1.shape[0] != R or y1.shape[1] != m:
                raise ValueError(f"product: expected a result of shape ({R}, {m})")
            q1.y = &y1[0, 0]
        for r in prange(R, nogil=True, schedule="static", num_threads=nt):
            mine = threads_at + threadid() * per_thread
            _finalize_row(&q0, &q1, r, prow[r], m, po + r * m, pok + r,
                          <real_t*>(mine + words_size + dbl_size), NULL, NULL, NULL, &plan.adc,
                          &ad, <uint32_t*>mine, <double*>(mine + words_size),
                          <double*>(mine + words_size) + w)
            for i in range(m):
                po[r * m + i] = po[r * m + i] * rs[r]
    finally:
        free(scratch)
    return result, passed


def normals_row(uint32_t seed, uint32_t sid, uint64_t call, uint64_t start,
                double[::1] out not None):
    """out[k] = normal start+k of a call, through this module's vectorized path (for tests)."""
    cdef int64_t n = out.shape[0]
    _check_run(start, n)
    cdef uint32_t[::1] words = np.empty(n + 8, dtype=np.uint32)
    if n > 0:
        refsim_words(seed, sid, call, start, n, &words[0])
        refsim_normals(&words[0], n, &out[0])


def normals_of_words(const uint32_t[::1] words not None, double[::1] out not None):
    """out[k] = the normal of word words[k], through this module's vectorized path (for tests)."""
    if words.shape[0] != out.shape[0]:
        raise ValueError("words, out: expected equal lengths")
    if words.shape[0] > 0:
        refsim_normals(&words[0], words.shape[0], &out[0])


def uniforms_row(uint32_t seed, uint32_t sid, uint64_t call, uint64_t start,
                 double[::1] out not None):
    """out[k] = uniform start+k of a call, through this module's vectorized path (for tests)."""
    cdef int64_t n = out.shape[0]
    _check_run(start, n)
    cdef uint32_t[::1] words = np.empty(n + 8, dtype=np.uint32)
    if n > 0:
        refsim_words(seed, sid, call, start, n, &words[0])
        refsim_uniforms(&words[0], n, &out[0])


def rint(real_t[::1] a not None):
    """In place: a[k] = round-half-to-even of a[k] by this module's rint (for tests)."""
    cdef int64_t k
    for k in range(a.shape[0]):
        a[k] = _rint(a[k])

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Fast counter-based random streams (spec/rng.md): the same numbers as refsim.rng, in parallel.

The output is cut into fixed chunks of CHUNK elements that threads take in any order; each chunk
is made with the vectorized run routines of _philox.h. Element ``i`` is a pure function of word
``start + i`` of the call, so the result does not depend on the thread count. Argument checking
happens in refsim_fast.rng (the Python wrapper); these functions check again what the C loops rely
on (a run start .. start+n-1 that ends by 2^63, so that no index wraps around; the table's length)
and raise ValueError otherwise (spec/pulses.md, "Compiled kernels").
"""

from cython.parallel cimport prange
from libc.stdint cimport uint32_t, uint64_t, int64_t

from refsim_fast._philox cimport (refsim_normals, refsim_philox4x32_10, refsim_streams_init,
                                  refsim_uniforms, refsim_words)

cdef extern from "_openmp.h":
    int REFSIM_OPENMP
    int omp_get_max_threads() nogil

ctypedef fused out_t:
    uint32_t
    float
    double

cdef enum:
    CHUNK = 4096  # numbers per parallel chunk (and per stack buffer)
    CHUNK_WORDS16 = 2049  # words behind a chunk of 16-bit normals (CHUNK/2 + 1)
cdef enum Transform:
    WORDS, UNIFORM, NORMAL


#: A run of numbers start .. start+n-1 must end by here (no uint64 wrap-around in _philox.h).
_MAX_RUN_END = 2**63


refsim_streams_init()


cdef object _pyuint(uint64_t v):
    """v as a Python int (overflow-free arithmetic in the argument checks)."""
    return v


cdef int _check_run(uint64_t start, int64_t n) except -1:
    if _pyuint(start) + n > _MAX_RUN_END:
        raise ValueError(f"start: numbers {start} .. {start} + {n} - 1 run past 2^63")
    return 0


def openmp_enabled():
    """True if this extension was compiled with OpenMP."""
    return bool(REFSIM_OPENMP)


def max_threads():
    """OpenMP's default thread count (1 without OpenMP)."""
    return omp_get_max_threads()


def philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1):
    """One Philox4x32-10 block (for known-answer tests)."""
    cdef uint32_t out[4]
    refsim_philox4x32_10(c0, c1, c2, c3, k0, k1, out)
    return (out[0], out[1], out[2], out[3])


cdef void _chunk(uint32_t seed, uint32_t sid, uint64_t call, uint64_t start, out_t* out,
                 int64_t lo, int64_t hi, Transform kind) noexcept nogil:
    """out[lo:hi] for words start+lo .. start+hi-1 (hi - lo <= CHUNK)."""
    cdef uint32_t words[CHUNK]
    cdef double values[CHUNK]
    cdef int64_t n = hi - lo, k
    refsim_words(seed, sid, call, start + <uint64_t>lo, n, words)
    if out_t is uint32_t:
        for k in range(n):
            out[lo + k] = words[k]
        return
    if kind == NORMAL:
        refsim_normals(words, n, values)
    else:
        refsim_uniforms(words, n, values)
    for k in range(n):
        out[lo + k] = <out_t>values[k]


cdef int _fill(uint32_t seed, uint32_t sid, uint64_t call, uint64_t start, out_t[::1] out,
               int num_threads, Transform kind) except -1:
    cdef int64_t n = out.shape[0]
    cdef int64_t c
    _check_run(start, n)
    if n == 0:
        return 0
    cdef out_t* p = &out[0]
    for c in prange((n + CHUNK - 1) // CHUNK, nogil=True, schedule="static",
                    num_threads=max(1, num_threads)):
        _chunk(seed, sid, call, start, p, c * CHUNK, min(c * CHUNK + CHUNK, n), kind)
    return 0


def fill_words(uint32_t seed, uint32_t sid, uint64_t call, uint64_t start,
               uint32_t[::1] out not None, int num_threads):
    """out[i] = word start+i of the call."""
    _fill(seed, sid, call, start, out, num_threads, WORDS)


cdef void _normal16_chunk(uint32_t seed, uint32_t sid, uint64_t call, uint64_t start,
                          out_t* out, const double* table, int64_t lo, int64_t hi) noexcept nogil:
    """out[lo:hi] = 16-bit normals start+lo .. start+hi-1: half (g & 1) of word g >> 1."""
    cdef uint32_t words[CHUNK_WORDS16]
    cdef uint64_t first = (start + <uint64_t>lo) >> 1
    cdef uint64_t g
    cdef int64_t i
    refsim_words(seed, sid, call, first, <int64_t>(((start + <uint64_t>hi - 1) >> 1) - first + 1),
                 words)
    for i in range(lo, hi):
        g = start + <uint64_t>i
        out[i] = <out_t>table[(words[(g >> 1) - first] >> (16 * (g & 1))) & 0xFFFF]


def fill_normal16(uint32_t seed, uint32_t sid, uint64_t call, uint64_t start,
                  out_t[::1] out not None, const double[::1] table, int num_threads):
    """out[i] = 16-bit normal start+i of the call (``table`` holds the 65536 values)."""
    cdef int64_t n = out.shape[0]
    cdef int64_t c
    if table is None or table.shape[0] != 65536:
        raise ValueError("table: expected the 65536 values of refsim.rng.normal16_table()")
    _check_run(start, n)
    if n == 0:
        return
    cdef out_t* p = &out[0]
    cdef const double* t = &table[0]
    for c in prange((n + CHUNK - 1) // CHUNK, nogil=True, schedule="static",
                    num_threads=max(1, num_threads)):
        _normal16_chunk(seed, sid, call, start, p, t, c * CHUNK, min(c * CHUNK + CHUNK, n))


def fill_uniform(uint32_t seed, uint32_t sid, uint64_t call, uint64_t start,
                 out_t[::1] out not None, int num_threads):
    """out[i] = uniform start+i of the call."""
    _fill(seed, sid, call, start, out, num_threads, UNIFORM)


def fill_normal(uint32_t seed, uint32_t sid, uint64_t call, uint64_t start,
                out_t[::1] out not None, int num_threads):
    """out[i] = normal start+i of the call (float64 quantile, cast to the output type)."""
    _fill(seed, sid, call, start, out, num_threads, NORMAL)


def words_of_calls(uint32_t seed, uint32_t sid, const uint64_t[::1] calls not None,
                   uint64_t index, uint32_t[::1] out not None):
    """out[r] = word ``index`` of call ``calls[r]`` (one number from each of many calls, as a
    compound's per-event draws take them). ValueError unless out has the length of calls."""
    cdef int64_t n = calls.shape[0], r
    if out.shape[0] != n:
        raise ValueError(f"out: expected {n} words, got {out.shape[0]}")
    _check_run(index, 1)
    with nogil:
        for r in range(n):
            refsim_words(seed, sid, calls[r], index, 1, &out[r])

# Declarations of _philox.h for the kernels that draw random numbers (cimport this).
from libc.stdint cimport int64_t, uint32_t, uint64_t

cdef extern from "_philox.h" nogil:
    void refsim_philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                              uint32_t k0, uint32_t k1, uint32_t out[4])
    void refsim_block(uint32_t seed, uint32_t sid, uint64_t call, uint64_t block, uint32_t out[4])
    double refsim_uniform(uint32_t w)
    double refsim_normal(uint32_t w)
    # runs of numbers (vectorized); call refsim_streams_init() once at module import
    void refsim_words(uint32_t seed, uint32_t sid, uint64_t call, uint64_t start, int64_t n,
                      uint32_t* out)
    void refsim_uniforms(const uint32_t* w, int64_t n, double* out)
    void refsim_normals(const uint32_t* w, int64_t n, double* out)
    void refsim_streams_init()
    int refsim_has_avx
    int refsim_has_avx512

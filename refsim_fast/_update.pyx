# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The pulsed update (spec/pulses.md §U4, spec/devices.md §V3) as OpenMP loops.

``pulse_trains`` draws the stochastic pulse trains of every cycle of a batch (bits packed into
uint64 words; parallel over fixed chunks of values). ``pulsed_update`` then runs the row kernel of
_update_impl.h over the rows of the tile (``prange``): each row goes through all cycles in order,
counting coincidences by popcount (or from the MeanCount / DeterministicImplicit products) and
applying the pulses with their 16-bit normals. Rows are independent and every random number is
addressed by (seed, stream, call, index), so the result does not depend on the thread count or
on the schedule. Arguments are checked by refsim_fast.update (the Python wrapper).
"""

from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc

from refsim_fast._philox cimport refsim_streams_init

cdef extern from "_update.h" nogil:
    ctypedef struct refsim_update_args:
        int64_t m, n, batch, nw, n_nodes
        int mode, model, noisy, mult_noise, extended
        void* w
        const uint64_t* xbits
        const uint64_t* dbits
        const double* ax
        const double* ad
        const uint8_t* xneg
        const uint8_t* dneg
        const int32_t* bl
        const uint64_t* calls
        const void* b_min
        const void* b_max
        const void* dw_up
        const void* dw_down
        const void* p_up
        const void* p_down
        const void* ref
        const void* nodes_up
        const void* nodes_down
        const void* table
        double sigma, two_a, b, A_up, A_down, gamma_up, neg_gamma_down, std_add, std_slope
        uint32_t seed, sid
        uint64_t offset
        int64_t* last_touch
        int64_t* pulses_up
        int64_t* pulses_down
    ctypedef struct refsim_update_ctx_f32:
        pass
    ctypedef struct refsim_update_ctx_f64:
        pass
    void refsim_update_ctx_init_f32(const refsim_update_args* a, refsim_update_ctx_f32* c)
    void refsim_update_ctx_init_f64(const refsim_update_args* a, refsim_update_ctx_f64* c)
    void refsim_update_row_f32(const refsim_update_ctx_f32* c, int64_t i, void* scratch,
                               int64_t words_cap)
    void refsim_update_row_f64(const refsim_update_ctx_f64* c, int64_t i, void* scratch,
                               int64_t words_cap)
    size_t refsim_update_scratch(int64_t n, int64_t words_cap, size_t real_size)
    void refsim_trains(uint32_t seed, uint32_t sid, uint64_t call, int64_t bl, int64_t nw,
                       const double* p, int64_t j0, int64_t j1, uint64_t* out)

ctypedef fused real_t:
    float
    double

cdef enum:
    TRAIN_CHUNK = 256  # values per parallel task of pulse_trains


refsim_streams_init()


def pulse_trains(uint32_t seed, uint32_t sid, const uint64_t[::1] calls, const int32_t[::1] bl,
                 const double[:, ::1] p, uint64_t[:, :, ::1] out, int num_threads):
    """out[b, j, :] = the packed pulse train of value j in cycle b (``out`` zeroed by the caller;
    cycles with bl[b] = 0 are left alone)."""
    cdef int64_t batch = p.shape[0], n = p.shape[1], nw = out.shape[2]
    cdef int64_t per = (n + TRAIN_CHUNK - 1) // TRAIN_CHUNK
    cdef int64_t t, b, c
    if batch == 0 or n == 0:
        return
    for t in prange(batch * per, nogil=True, schedule="static", num_threads=max(1, num_threads)):
        b = t // per
        c = t - b * per
        refsim_trains(seed, sid, calls[b], bl[b], nw, &p[b, 0], c * TRAIN_CHUNK,
                      min(c * TRAIN_CHUNK + TRAIN_CHUNK, n), &out[b, 0, 0])


cdef const void* _ptr(const real_t[:, ::1] a):
    return NULL if a is None else <const void*>&a[0, 0]


cdef int64_t* _counter(int64_t[:, ::1] a):
    return NULL if a is None else &a[0, 0]


def pulsed_update(real_t[:, ::1] w, int mode,
                  const uint64_t[:, :, ::1] xbits, const uint64_t[:, :, ::1] dbits,
                  const double[:, ::1] ax, const double[:, ::1] ad,
                  const uint8_t[:, ::1] xneg, const uint8_t[:, ::1] dneg,
                  const int32_t[::1] bl, const uint64_t[::1] calls,
                  int model, const real_t[:, ::1] b_min, const real_t[:, ::1] b_max,
                  const real_t[:, ::1] dw_up, const real_t[:, ::1] dw_down,
                  const real_t[:, ::1] p_up, const real_t[:, ::1] p_down,
                  const real_t[:, ::1] ref, const real_t[::1] nodes_up,
                  const real_t[::1] nodes_down, const real_t[::1] table, dict scalars,
                  uint32_t seed, uint32_t sid, uint64_t offset,
                  int64_t[:, ::1] last_touch, int64_t[:, ::1] pulses_up,
                  int64_t[:, ::1] pulses_down, int num_threads):
    """Apply every cycle of a batch to ``w`` in place (see the module docstring; the shapes are
    checked by the caller: w, b_min, b_max, dw_up, dw_down, p_up, p_down, ref, last_touch and
    the counters (m, n); xbits (batch, n, nw), dbits (batch, m, nw) in TRAINS mode; ax, xneg
    (batch, n), ad, dneg (batch, m); bl, calls (batch,); table 65536 values)."""
    cdef refsim_update_args a
    cdef refsim_update_ctx_f32 c32
    cdef refsim_update_ctx_f64 c64
    cdef int64_t i
    a.m, a.n, a.batch = w.shape[0], w.shape[1], bl.shape[0]
    if a.m == 0 or a.n == 0 or a.batch == 0:
        return
    a.mode, a.model = mode, model
    a.w = <void*>&w[0, 0]
    a.nw = xbits.shape[2] if mode == 0 else 0
    a.xbits = &xbits[0, 0, 0] if mode == 0 else NULL
    a.dbits = &dbits[0, 0, 0] if mode == 0 else NULL
    a.ax = &ax[0, 0] if mode == 1 else NULL
    a.ad = &ad[0, 0] if mode == 1 else NULL
    a.xneg, a.dneg = &xneg[0, 0], &dneg[0, 0]
    a.bl, a.calls = &bl[0], &calls[0]
    a.b_min, a.b_max = _ptr(b_min), _ptr(b_max)
    a.dw_up, a.dw_down = _ptr(dw_up), _ptr(dw_down)
    a.p_up, a.p_down, a.ref = _ptr(p_up), _ptr(p_down), _ptr(ref)
    a.n_nodes = 0 if nodes_up is None else nodes_up.shape[0]
    a.nodes_up = NULL if nodes_up is None else <const void*>&nodes_up[0]
    a.nodes_down = NULL if nodes_down is None else <const void*>&nodes_down[0]
    a.table = <const void*>&table[0]
    a.sigma = scalars["sigma"]
    a.noisy, a.mult_noise, a.extended = scalars["noisy"], scalars["mult_noise"], scalars["extended"]
    a.two_a, a.b = scalars["two_a"], scalars["b"]
    a.A_up, a.A_down = scalars["A_up"], scalars["A_down"]
    a.gamma_up, a.neg_gamma_down = scalars["gamma_up"], scalars["neg_gamma_down"]
    a.std_add, a.std_slope = scalars["std_add"], scalars["std_slope"]
    a.seed, a.sid, a.offset = seed, sid, offset
    a.last_touch = _counter(last_touch)
    a.pulses_up, a.pulses_down = _counter(pulses_up), _counter(pulses_down)
    cdef int nt = max(1, num_threads)
    cdef int64_t bl_max = 0
    for i in range(a.batch):
        bl_max = max(bl_max, bl[i])
    # the row's run of c2c words (up to n·BL 16-bit normals, two per word, plus an odd start)
    cdef int64_t words_cap = (a.n * bl_max + 1) // 2 + 1 if a.noisy else 0
    cdef size_t size = refsim_update_scratch(a.n, words_cap, sizeof(real_t))
    cdef void* scratch
    if real_t is float:
        refsim_update_ctx_init_f32(&a, &c32)
    else:
        refsim_update_ctx_init_f64(&a, &c64)
    cdef int failed = 0
    for i in prange(a.m, nogil=True, schedule="dynamic", chunksize=4, num_threads=nt):
        scratch = malloc(size)
        if scratch == NULL:
            failed = 1
            continue
        if real_t is float:
            refsim_update_row_f32(&c32, i, scratch, words_cap)
        else:
            refsim_update_row_f64(&c64, i, scratch, words_cap)
        free(scratch)
    if failed:
        raise MemoryError("pulsed_update: no memory for the row scratch")

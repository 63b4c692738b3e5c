# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The pulsed update (spec/pulses.md §U4, spec/devices.md §V3) as OpenMP loops.

``pulse_trains`` draws the stochastic pulse trains of every cycle of a batch (bits packed into
uint64 words; parallel over fixed chunks of values). ``pulsed_update`` then runs the row kernel of
_update_impl.h over the rows of the tile (``prange``): each row goes through all cycles in order,
counting coincidences by popcount (or from the MeanCount / DeterministicImplicit products) and
applying the pulses with their 16-bit normals. Rows are independent and every random number is
addressed by (seed, stream, call, index), so the result does not depend on the thread count or
on the schedule. The Python wrapper (refsim_fast.update) prepares and checks the arguments;
these functions check again, at the compiled boundary, everything the C loops index with (shapes,
train lengths, node counts, random-number ranges) and raise ValueError rather than read or write
out of bounds, whatever they are given (spec/pulses.md, "Compiled kernels").
"""

from cython.parallel cimport prange, threadid
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
        const int32_t* active
        const int64_t* n_active
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
        double sigma, es_a, b, A_up, A_down, gamma_up, neg_gamma_down, std_add, std_slope
        uint32_t seed, sid
        uint64_t offset
        int64_t* last_touch
        int64_t* pulses_up
        int64_t* pulses_down
        const int64_t* snap_slot
        const int64_t* snap_line
        void* snap
        int snap_columns
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
    CONSTANT = 0       # the RefsimModel codes of _update.h
    LINEAR = 1
    SOFT_REFERENCE = 2
    EXP = 3
    POW = 4
    PIECEWISE = 5

#: Largest random-number index of a call (refsim.rng.MAX_INDEX).
_MAX_INDEX = 2**62
#: Pulse slots of one row and cycle, n·BL, index the kernel's int32 scratch.
_MAX_ROW_SLOTS = 2**31 - 1
#: Below this many (row, active column, cycle) triples a call runs on one thread: waking the
#: OpenMP team costs more than the work (a transfer's one-hot write pulses one column).
SERIAL_WORK = 32768
#: Below this many pulse slots (Σ n·BL over the cycles) pulse_trains runs on one thread.
TRAIN_SERIAL_SLOTS = 1 << 17


refsim_streams_init()


cdef object _pyint(int64_t v):
    """v as a Python int (overflow-free arithmetic in the argument checks)."""
    return v


cdef object _pyuint(uint64_t v):
    return v


cdef object _shape(object a):
    return None if a is None else tuple(a.shape[:a.ndim])


cdef int _expect(object a, tuple shape, str name, bint required) except -1:
    """ValueError unless ``a`` has ``shape`` (or is None and not ``required``)."""
    if a is None:
        if required:
            raise ValueError(f"{name}: required, expected an array of shape {shape}")
        return 0
    if _shape(a) != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {_shape(a)}")
    return 0


cdef int64_t _max_bl(const int32_t[::1] bl) noexcept:
    cdef int64_t i, top = 0
    for i in range(bl.shape[0]):
        if bl[i] > top:
            top = bl[i]
    return top


def pulse_trains(uint32_t seed, uint32_t sid, const uint64_t[::1] calls,
                 const int32_t[::1] bl not None, const double[:, ::1] p not None,
                 uint64_t[:, :, ::1] out not None, int num_threads):
    """out[b, j, :] = the packed pulse train of value j in cycle b (``out`` zeroed by the caller;
    cycles with bl[b] <= 0 are left alone). Shapes: calls, bl (batch,), p (batch, n),
    out (batch, n, nw) with 64·nw >= every bl[b]; ValueError otherwise."""
    cdef int64_t batch = p.shape[0], n = p.shape[1], nw = out.shape[2]
    cdef int64_t per = (n + TRAIN_CHUNK - 1) // TRAIN_CHUNK
    cdef int64_t t, b, c
    _expect(calls, (batch,), "calls", True)
    _expect(bl, (batch,), "bl", True)
    _expect(out, (batch, n, nw), "out", True)
    cdef int64_t bl_max = _max_bl(bl)
    if bl_max > 64 * nw:
        raise ValueError(f"out: {nw} words per train hold {64 * nw} slots, bl has {bl_max}")
    if _pyint(n) * bl_max > _MAX_INDEX:
        raise ValueError(f"bl: n × BL = {n} × {bl_max} exceeds the random-number index range")
    if batch == 0 or n == 0 or bl_max == 0:
        return
    # too few slots to pay for waking the team (the same bits on any number of threads)
    cdef int64_t slots = 0
    for b in range(batch):
        slots = slots + n * max(bl[b], 0)
    cdef int nt = max(1, num_threads) if slots >= TRAIN_SERIAL_SLOTS else 1
    for t in prange(batch * per, nogil=True, schedule="static", num_threads=nt):
        b = t // per
        c = t - b * per
        refsim_trains(seed, sid, calls[b], bl[b], nw, &p[b, 0], c * TRAIN_CHUNK,
                      min(c * TRAIN_CHUNK + TRAIN_CHUNK, n), &out[b, 0, 0])


cdef int64_t _active_columns(int mode, const uint64_t[:, :, ::1] xbits, const double[:, ::1] ax,
                            const int32_t[::1] bl, int32_t* active,
                            int64_t* n_active) noexcept nogil:
    """For each cycle b, the columns j in increasing order whose x can give a pulse (a train with
    a set bit; a nonzero ax: a zero gives a count of 0 whatever ad is, NaN included) into
    active[b n ..], their number into n_active[b] (0 for a cycle without pulses); the total."""
    cdef int64_t batch = bl.shape[0], b, j, r, k, nw, n, total = 0
    cdef bint live
    n = xbits.shape[1] if mode == 0 else ax.shape[1]
    nw = xbits.shape[2] if mode == 0 else 0
    for b in range(batch):
        k = 0
        if bl[b] > 0:
            for j in range(n):
                if mode == 0:
                    live = False
                    for r in range(nw):
                        if xbits[b, j, r] != 0:
                            live = True
                            break
                else:
                    live = ax[b, j] != 0.0
                if live:
                    active[b * n + k] = <int32_t>j
                    k = k + 1
        n_active[b] = k
        total = total + k
    return total


cdef const void* _ptr(const real_t[:, ::1] a):
    return NULL if a is None else <const void*>&a[0, 0]


cdef int64_t* _counter(int64_t[:, ::1] a):
    return NULL if a is None else &a[0, 0]


def pulsed_update(real_t[:, ::1] w not None, int mode,
                  const uint64_t[:, :, ::1] xbits, const uint64_t[:, :, ::1] dbits,
                  const double[:, ::1] ax, const double[:, ::1] ad,
                  const uint8_t[:, ::1] xneg, const uint8_t[:, ::1] dneg,
                  const int32_t[::1] bl not None, const uint64_t[::1] calls,
                  int model, const real_t[:, ::1] b_min, const real_t[:, ::1] b_max,
                  const real_t[:, ::1] dw_up, const real_t[:, ::1] dw_down,
                  const real_t[:, ::1] p_up, const real_t[:, ::1] p_down,
                  const real_t[:, ::1] ref, const real_t[::1] nodes_up,
                  const real_t[::1] nodes_down, const real_t[::1] table, dict scalars,
                  uint32_t seed, uint32_t sid, uint64_t offset,
                  int64_t[:, ::1] last_touch, int64_t[:, ::1] pulses_up,
                  int64_t[:, ::1] pulses_down, int num_threads,
                  const int64_t[::1] snap_slot=None, const int64_t[::1] snap_line=None,
                  real_t[:, ::1] snap=None, bint snap_columns=True):
    """Apply every cycle of a batch to ``w`` in place (see the module docstring). Shapes, checked
    here (ValueError): w, b_min, b_max, dw_up, dw_down, and ref, last_touch and the counters when
    given, (m, n); p_up, p_down (m, n) for the linear and power rules; xbits (batch, n, nw),
    dbits (batch, m, nw) in TRAINS mode (0); ax, xneg (batch, n), ad, dneg (batch, m) in
    PRODUCTS mode (1); bl, calls (batch,); nodes_up, nodes_down of one length >= 1 for
    PiecewiseStep; table 65536 values. Counts are clamped to [0, bl[b]] (a NaN product gives 0),
    n·max(bl) must stay below 2^31 and (offset + m·n)·max(bl) within the random-number range.
    Snapshots (optional, all three or none): after cycle b with snap_slot[b] >= 0, line
    snap_line[b] of w (column, < n, when snap_columns; else row, < m) is copied to row
    snap_slot[b] (< S) of snap, (S, m) or (S, n)."""
    cdef refsim_update_args a
    cdef refsim_update_ctx_f32 c32
    cdef refsim_update_ctx_f64 c64
    cdef int64_t i
    a.m, a.n, a.batch = w.shape[0], w.shape[1], bl.shape[0]
    cdef int64_t m = a.m, n = a.n, batch = a.batch
    # -- the boundary: every array the row kernel indexes, against the sizes it indexes with ----
    if mode != 0 and mode != 1:
        raise ValueError(f"mode: expected 0 (trains) or 1 (products), got {mode}")
    if model < CONSTANT or model > PIECEWISE:
        raise ValueError(f"model: expected a RefsimModel code 0..5, got {model}")
    _expect(calls, (batch,), "calls", True)
    _expect(xneg, (batch, n), "xneg", True)
    _expect(dneg, (batch, m), "dneg", True)
    if mode == 0:
        if xbits is None:
            raise ValueError(f"xbits: required, expected an array of shape ({batch}, {n}, nw)")
        a.nw = xbits.shape[2]
        _expect(xbits, (batch, n, a.nw), "xbits", True)
        _expect(dbits, (batch, m, a.nw), "dbits", True)
        if a.nw < 1:
            raise ValueError("xbits, dbits: expected at least one word per train")
    else:
        a.nw = 0
        _expect(ax, (batch, n), "ax", True)
        _expect(ad, (batch, m), "ad", True)
    for name, arr in (("b_min", b_min), ("b_max", b_max), ("dw_up", dw_up),
                      ("dw_down", dw_down)):
        _expect(arr, (m, n), name, True)
    slopes = model == LINEAR or model == POW
    _expect(p_up, (m, n), "p_up", slopes)
    _expect(p_down, (m, n), "p_down", slopes)
    _expect(ref, (m, n), "ref", False)
    if model == PIECEWISE:
        if nodes_up is None:
            raise ValueError("nodes_up: required for PiecewiseStep, expected a 1-D array")
        _expect(nodes_down, (nodes_up.shape[0],), "nodes_down", True)
        if nodes_up.shape[0] < 1:
            raise ValueError("nodes_up, nodes_down: expected at least one node")
    _expect(table, (65536,), "table", True)
    _expect(last_touch, (m, n), "last_touch", False)
    if (pulses_up is None) != (pulses_down is None):
        raise ValueError("pulses_up, pulses_down: give both or neither")
    _expect(pulses_up, (m, n), "pulses_up", False)
    _expect(pulses_down, (m, n), "pulses_down", False)
    cdef int64_t b, slots, lines
    a.snap_slot = a.snap_line = NULL
    a.snap = NULL
    a.snap_columns = snap_columns
    if snap_slot is not None or snap_line is not None or snap is not None:
        if snap_slot is None or snap_line is None or snap is None:
            raise ValueError("snap_slot, snap_line, snap: give all three or none")
        _expect(snap_slot, (batch,), "snap_slot", True)
        _expect(snap_line, (batch,), "snap_line", True)
        slots, lines = snap.shape[0], (n if snap_columns else m)
        _expect(snap, (slots, m if snap_columns else n), "snap", True)
        for b in range(batch):
            if snap_slot[b] < -1 or snap_slot[b] >= slots:
                raise ValueError(f"snap_slot[{b}]: expected -1 or a slot in [0, {slots}), got "
                                 f"{snap_slot[b]}")
            if snap_slot[b] >= 0 and (snap_line[b] < 0 or snap_line[b] >= lines):
                raise ValueError(f"snap_line[{b}]: expected a line in [0, {lines}), got "
                                 f"{snap_line[b]}")
        if batch:
            a.snap_slot, a.snap_line = &snap_slot[0], &snap_line[0]
            a.snap = <void*>&snap[0, 0] if slots and snap.shape[1] else NULL
            if a.snap == NULL:
                a.snap_slot = a.snap_line = NULL  # nothing to copy into (no slot is >= 0)
    cdef int64_t bl_max = _max_bl(bl)
    if _pyint(n) * bl_max > _MAX_ROW_SLOTS:
        raise ValueError(f"bl: in_size × BL = {n} × {bl_max} pulse slots per row exceed the "
                         f"kernel's int32 range")
    if (_pyuint(offset) + _pyint(m) * n) * bl_max > _MAX_INDEX:
        raise ValueError(f"offset: pulse-noise numbers up to ({offset} + {m}·{n})·{bl_max} exceed "
                         f"the random-number index range 2^62")
    if m == 0 or n == 0 or batch == 0:
        return
    a.mode, a.model = mode, model
    a.w = <void*>&w[0, 0]
    a.xbits = &xbits[0, 0, 0] if mode == 0 else NULL
    a.dbits = &dbits[0, 0, 0] if mode == 0 else NULL
    a.ax = &ax[0, 0] if mode == 1 else NULL
    a.ad = &ad[0, 0] if mode == 1 else NULL
    a.xneg, a.dneg = &xneg[0, 0], &dneg[0, 0]
    a.bl, a.calls = &bl[0], &calls[0]
    a.b_min, a.b_max = _ptr(b_min), _ptr(b_max)
    a.dw_up, a.dw_down = _ptr(dw_up), _ptr(dw_down)
    a.p_up, a.p_down, a.ref = _ptr(p_up), _ptr(p_down), _ptr(ref)
    a.n_nodes = nodes_up.shape[0] if model == PIECEWISE else 0
    a.nodes_up = <const void*>&nodes_up[0] if model == PIECEWISE else NULL
    a.nodes_down = <const void*>&nodes_down[0] if model == PIECEWISE else NULL
    a.table = <const void*>&table[0]
    a.sigma = scalars["sigma"]
    a.noisy, a.mult_noise, a.extended = scalars["noisy"], scalars["mult_noise"], scalars["extended"]
    a.es_a, a.b = scalars["es_a"], scalars["b"]
    a.A_up, a.A_down = scalars["A_up"], scalars["A_down"]
    a.gamma_up, a.neg_gamma_down = scalars["gamma_up"], scalars["neg_gamma_down"]
    a.std_add, a.std_slope = scalars["std_add"], scalars["std_slope"]
    a.seed, a.sid, a.offset = seed, sid, offset
    a.last_touch = _counter(last_touch)
    a.pulses_up, a.pulses_down = _counter(pulses_up), _counter(pulses_down)
    # the columns of each cycle whose x can give a pulse (the others count 0)
    cdef int32_t* active = <int32_t*>malloc(<size_t>(batch * n) * sizeof(int32_t))
    cdef int64_t* n_active = <int64_t*>malloc(<size_t>batch * sizeof(int64_t))
    if active == NULL or n_active == NULL:
        free(active)
        free(n_active)
        raise MemoryError("pulsed_update: no memory for the active columns")
    cdef int64_t work = _active_columns(mode, xbits, ax, bl, active, n_active) * m
    a.active, a.n_active = active, n_active
    cdef int nt = max(1, num_threads) if work >= SERIAL_WORK else 1
    # the row's run of c2c words (up to n·BL 16-bit normals, two per word, plus an odd start)
    cdef int64_t words_cap = (n * bl_max + 1) // 2 + 1 if a.noisy else 0
    cdef size_t size = refsim_update_scratch(n, words_cap, sizeof(real_t))
    if real_t is float:
        refsim_update_ctx_init_f32(&a, &c32)
    else:
        refsim_update_ctx_init_f64(&a, &c64)
    # one scratch per thread (threadid() < nt), each on its own cache lines, reused row after row
    size = (size + 63) & ~(<size_t>63)
    cdef char* scratch_all = <char*>malloc(<size_t>nt * size)
    if scratch_all == NULL:
        free(active)
        free(n_active)
        raise MemoryError("pulsed_update: no memory for the row scratch")
    for i in prange(m, nogil=True, schedule="dynamic", chunksize=4, num_threads=nt):
        if real_t is float:
            refsim_update_row_f32(&c32, i, scratch_all + <size_t>threadid() * size, words_cap)
        else:
            refsim_update_row_f64(&c64, i, scratch_all + <size_t>threadid() * size, words_cap)
    free(scratch_all)
    free(active)
    free(n_active)


def outer_accumulate(real_t[:, ::1] chi not None, const real_t[:, ::1] a not None,
                     const real_t[:, ::1] b not None, int num_threads):
    """chi[i, j] ← chi[i, j] + a[k, i]·b[k, j] for k = 0 … B−1 in order, the product and the sum
    each rounded to the type (the reference's row-by-row ``chi + outer(a_k, b_k)`` of a mixed-
    precision compound, spec/unit_cells.md); in place. Shapes: chi (m, n), a (B, m), b (B, n)
    (ValueError otherwise). Rows are independent: parallel over i."""
    cdef int64_t m = chi.shape[0], n = chi.shape[1], batch = a.shape[0], i, j, k
    cdef real_t ai
    cdef real_t* row
    _expect(a, (batch, m), "a", True)
    _expect(b, (batch, n), "b", True)
    if m == 0 or n == 0 or batch == 0:
        return
    cdef int nt = max(1, num_threads) if batch * m * n >= SERIAL_WORK * 8 else 1
    for i in prange(m, nogil=True, schedule="static", num_threads=nt):
        row = &chi[i, 0]
        for k in range(batch):
            ai = a[k, i]
            for j in range(n):
                row[j] = row[j] + ai * b[k, j]

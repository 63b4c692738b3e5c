"""Fast IO stage: :func:`analog_mv` of :mod:`refsim.stages.io` with compiled kernels (numpy only).

``refsim.stages.io.mvm(..., impl=refsim_fast.io)`` calls :func:`analog_mv` here for every
bound-management pass (the tile does this for numpy arrays unless ``backend="reference"``). The
DAC (``prepare_input``) and everything after the matrix products (the IR-drop, voltage-offset /
series-resistance and weight-noise terms of ``analog_product``, the pos/neg combination, and
``finalize_output``: nonlinearity, output noise, ADC, bound test, clip) run in ``_io``'s OpenMP
loops over rows; the matrix products and the row sums are the reference's NumPy expressions on
identically laid-out arrays, on one BLAS thread like the reference's ``matmul``, so they are the
same numbers. Random numbers are the reference's (spec/rng.md, addressed as
``refsim.stages.io.Draws``), element-wise arithmetic is done in the same order and dtype, and
results agree with the reference under spec/agreement.md (in practice bit for bit) and are
bit-identical for any thread count (rule 5).

Differences from the reference, all at the boundary: only numpy arrays are accepted, and the
weights, ``scale`` and the periphery arrays are cast to the dtype of ``x`` (the reference would
promote a float32 pass to float64 when given float64 weights or periphery; the tile never does).
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, List, Optional, Tuple

import numpy as np

from refsim import rng as _rng_ref
from refsim.configs import (
    AnalogMVType,
    BoundManagementType,
    IOParameters,
    NoiseManagementType,
    WeightNoiseType,
)
from refsim.precision import real
from refsim.stages import io as _ref

from . import _io
from .pool import parallel
from .rng import resolve_threads

__all__ = ["analog_mv", "mvm", "num_threads"]

#: Threads of the kernels when ``analog_mv`` gets no ``num_threads`` (OpenMP's default: the
#: OMP_NUM_THREADS variable, else the core count). Set this attribute to change it for calls made
#: through ``refsim.stages.io.mvm`` / the tile. Results do not depend on it.
num_threads: int = resolve_threads(None)

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
#: Stream ids of the per-call quantities, per direction.
_SIDS = {d: {q: _rng_ref.stream_id(f"io.{d}.{q}") for q in _ref.PER_CALL_QUANTITIES}
         for d in _ref.DIRECTIONS}
#: Empty arrays passed for effects that are off (never written).
_EMPTY = {dt: (np.empty((0,), dtype=dt), np.empty((0, 0), dtype=dt)) for dt in (_F32, _F64)}
#: The kernels specialized per dtype (skips Cython's fused-type dispatch).
_PREPARE = {_F32: _io.prepare["float"], _F64: _io.prepare["double"]}
_FINALIZE = {_F32: _io.finalize["float"], _F64: _io.finalize["double"]}
_NOISE_SCALES = {_F32: _io.noise_scales["float"], _F64: _io.noise_scales["double"]}
_PASS_SCALES = {_F32: _io.pass_scales["float"], _F64: _io.pass_scales["double"]}
_PLAIN_PASS = {_F32: _io.plain_pass["float"], _F64: _io.plain_pass["double"]}
#: The noise-management types as _io.noise_scales numbers them.
_NM_CODE = {NoiseManagementType.NONE: 0, NoiseManagementType.CONSTANT: 1,
            NoiseManagementType.AVERAGE_ABS_MAX: 2, NoiseManagementType.MAX: 3,
            NoiseManagementType.ABS_MAX: 4, NoiseManagementType.ABS_MAX_NP_SUM: 5}

#: Below this many input + output elements a pass runs on one thread.
_SERIAL_WORK = 16384
#: A plain pass of more rows than a product block runs as one compiled call (rows on the OpenMP
#: threads, the blocks' products one after another) when W has at most this many elements; a
#: larger W's blocks run DAC to ADC on the pool's threads (analog_mv). Measured crossover
#: (2 threads, 512 and 4096 rows): n·m = 64² gains 2-14 %, 128² loses 14-30 %, a 9→8
#: convolution's 2.3×.
_SMALL_PRODUCT = 4096

_POS_NEG_MODE = {AnalogMVType.POS_NEG_SEPARATE: 1, AnalogMVType.POS_NEG_SEPARATE_DIGITAL_SUM: 2}


def _parallel(one: Callable[[slice], None], blocks: List[slice]) -> None:
    """The row blocks of a matrix product (refsim.stages.io.product) on ``num_threads`` Python
    threads (refsim_fast.pool), each product on one BLAS thread (the caller holds
    ``one_blas_thread``; numpy releases the GIL in it): the blocks are fixed by the shape, so
    the numbers are the reference's for any thread count."""
    parallel(one, blocks, num_threads)


def _settings(io: IOParameters, direction: str, dt: np.dtype = _F64) -> Tuple[dict, dict]:
    """The scalar arguments of the DAC and ADC kernels for one config and direction; the
    Python-float expressions are the reference's (cast to the working type in the kernels)."""
    sids = _SIDS[direction]
    pos_neg = io.mv_type in _ref.POS_NEG
    dac = dict(pos_neg=int(pos_neg), step=_ref.resolution_step(io.inp_res, io.inp_bound, dt),
               sto_round=int(bool(io.inp_sto_round)), bound=float(io.inp_bound),
               noise=float(io.inp_noise), neg_factor=1.0 - io.inp_asymmetry,
               sid_sto_round=sids["inp_sto_round"], sid_noise=sids["inp_noise"])
    w_noise_on = io.w_noise > 0 and io.w_noise_type != WeightNoiseType.NONE
    adc = dict(
        mode=_POS_NEG_MODE.get(io.mv_type, 0),  # every other mv_type: one pass (as the reference)
        ir=int(io.ir_drop > 0), ir_drop=float(io.ir_drop), ir_scale=0.0,
        voff=0, neg_w_min=-io.v_offset_w_min, rho=float(io.r_series),
        w_noise_on=int(w_noise_on), w_noise=float(io.w_noise), sid_w_noise=sids["w_noise"],
        neg_out_factor=1.0 - io.out_asymmetry,
        nonlinearity=0, slope=1.0,
        out_noise=float(io.out_noise), noise_std=0, sid_out_noise=sids["out_noise"],
        step=_ref.resolution_step(io.out_res, io.out_bound, dt),
        sto_round=int(bool(io.out_sto_round)), sid_sto_round=sids["out_sto_round"],
        bound=float(io.out_bound), bm_neg=int(bool(io.bm_test_negative_bound)),
    )
    return dac, adc


class _Setup:
    """What the passes of one config need in one direction and dtype, derived once: the DAC and
    ADC arguments (``dac``, ``adc``), their converted copy for plain passes (``plain``: None
    when the config has IR drop or weight noise; see _io.PlainPass), and the scalars of the
    driver (refsim.stages.io.mvm) and of noise management."""

    def __init__(self, io: IOParameters, direction: str, dt: np.dtype) -> None:
        R = real(dt)
        self.dac, self.adc = _settings(io, direction, dt)
        plain = io.ir_drop <= 0 and not self.adc["w_noise_on"]
        self.plain = _io.PlainPass(self.dac, self.adc) if plain else None
        self.step_in = _ref.resolution_step(io.inp_res, io.inp_bound, dt)
        self.bm_res_limit = float(R(io.max_bm_res) / R(self.step_in)) if self.step_in > 0 \
            else None
        self.out_scale = float(R(io.out_scale))
        self.nm_args = (float(io.nm_thres), float(R(io.out_bound)) if io.out_bound > 0 else 1.0,
                        self.step_in, float(R(io.max_bm_res)), float(R(_ref.NM_ASSUMED_WMAX)),
                        float(R(_ref.NM_DECAY)))


#: _Setup per (config, direction, dtype), for read-only configs only (a tile's; a config that
#: may still change is derived at every call). Keyed by id, the config kept for an identity test.
_SETUPS: dict = {}


def _setup(io: IOParameters, direction: str, dt: np.dtype) -> _Setup:
    key = (id(io), direction, dt)
    hit = _SETUPS.get(key)
    if hit is not None and hit[0] is io:
        return hit[1]
    setup = _Setup(io, direction, dt)
    if io.is_frozen:
        if len(_SETUPS) >= 512:
            _SETUPS.clear()
        _SETUPS[key] = (io, setup)
    return setup


def _int_in(value: Any, name: str, lo: int, hi: int) -> int:
    if type(value) is int and lo <= value <= hi:  # (the common case first)
        return value
    if type(value) is not int and (isinstance(value, bool) or
                                   not isinstance(value, numbers.Integral)):
        raise ValueError(f"{name}: expected an integer in [{lo}, {hi}], got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name}: expected an integer in [{lo}, {hi}], got {value!r}")
    return int(value)


def _address(draws: Any, pass_index: Any, rows: np.ndarray, width: int) -> dict:
    """The draws' address, checked: every number the pass draws has a valid index."""
    if rows.size:
        return _address_of_rows(draws, pass_index, int(rows.min()), int(rows.max()), width)
    return _address_of_rows(draws, pass_index, 0, -1, width)


def _address_of_rows(draws: Any, pass_index: Any, lo: int, hi: int, width: int) -> dict:
    """:func:`_address` for batch rows ``lo`` .. ``hi`` (none when ``hi < lo``)."""
    if not isinstance(draws, _ref.Draws):
        raise TypeError(f"draws: expected refsim.stages.io.Draws, got {type(draws).__name__}")
    if draws.direction not in _SIDS:
        raise ValueError(f"draws.direction: expected one of {_ref.DIRECTIONS}, got "
                         f"{draws.direction!r}")
    seed = _int_in(draws.seed, "draws.seed", 0, _rng_ref.MAX_SEED)
    call = _int_in(draws.call, "draws.call", 0, _rng_ref.MAX_CALL)
    batch = _int_in(draws.batch, "draws.batch", 0, _rng_ref.MAX_INDEX)
    halves = _int_in(draws.halves, "draws.halves", 0, _rng_ref.MAX_INDEX)
    pass_index = _int_in(pass_index, "pass_index", 0, _rng_ref.MAX_INDEX)
    row_calls = bool(getattr(draws, "row_calls", False))
    if hi >= lo:
        if lo < 0:
            raise ValueError("rows: expected non-negative batch-row indices")
        if row_calls:
            last = (pass_index * halves + halves) * width
            if call + hi > _rng_ref.MAX_CALL:
                raise ValueError(f"rows: call {call} + row {hi} exceeds {_rng_ref.MAX_CALL}")
        else:
            last = ((pass_index * batch + hi) * halves + halves) * width
        if last > _rng_ref.MAX_INDEX:
            raise ValueError(f"rows: random-number index {last} exceeds {_rng_ref.MAX_INDEX}")
    return dict(seed=seed, call=call, batch=batch, halves=halves, pass_index=pass_index,
                row_calls=int(row_calls))


def _c_array(a: Any, dt: Any) -> np.ndarray:
    """``a`` converted once for the compiled boundary: C-contiguous, aligned, native ``dt``
    (Fortran order, transposes, strides, broadcast views and byte-swapped or unaligned buffers
    are accepted, as the reference accepts them)."""
    return np.require(a, dtype=dt, requirements=("C", "A"))


def _vector(a: Any, name: str, size: int, dt: np.dtype) -> np.ndarray:
    if a is None:
        return _EMPTY[dt][0]
    a = np.asarray(a)
    if a.shape != (size,):
        raise ValueError(f"periphery.{name}: expected shape ({size},), got {a.shape}")
    return _c_array(a, dt)


def analog_mv(xp: Any, x: Any, scale: Any, weights: Any, io: IOParameters, periphery: Any,
              draws: Any, pass_index: int, rows: Any, *,
              num_threads: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """One bound-management pass for the rows ``rows`` (spec/io.md §S7), as
    :func:`refsim.stages.io.analog_mv`: returns the outputs (R, m) in the dtype of ``x`` and the
    per-row bound test (R,) bool. ``x`` is (R, n) float32/float64, ``scale`` (R,), ``weights``
    (m, n), ``rows`` (R,) the batch-row indices (they address the random numbers). ``xp`` is
    ignored (numpy arrays only); ``num_threads`` (at most that many threads; small passes run on
    one) defaults to the module attribute :data:`num_threads`."""
    threads = resolve_threads(globals()["num_threads"] if num_threads is None else num_threads)
    if not isinstance(x, np.ndarray) or not isinstance(weights, np.ndarray):
        raise TypeError("x, weights: the fast backend takes numpy arrays only")
    if x.dtype.type not in (np.float32, np.float64):
        raise TypeError(f"x: expected a float32 or float64 array, got {x.dtype}")
    if weights.dtype.type not in (np.float32, np.float64):
        raise TypeError(f"weights: expected a float32 or float64 array, got {weights.dtype}")
    dt = _F32 if x.dtype.type is np.float32 else _F64  # native byte order
    if x.ndim != 2 or weights.ndim != 2:
        raise ValueError(f"x, weights: expected 2-D arrays, got shapes {x.shape}, {weights.shape}")
    R, n = x.shape
    m = weights.shape[0]
    if weights.shape[1] != n:
        raise ValueError(f"weights: expected shape (m, {n}), got {weights.shape}")
    scale = np.asarray(scale)
    if scale.shape != (R,) or scale.dtype.kind != "f":
        raise ValueError(f"scale: expected a real array of shape ({R},), got {scale.dtype} "
                         f"{scale.shape}")
    rows = np.asarray(rows)
    if rows.shape != (R,) or rows.dtype.kind not in "iu":
        raise ValueError(f"rows: expected an integer array of shape ({R},), got {rows.dtype} "
                         f"{rows.shape}")
    rows = _c_array(rows, np.int64)
    address = _address(draws, pass_index, rows, max(n, m))
    if R * (n + m) < _SERIAL_WORK:  # too little work to wake a team (same numbers either way)
        threads = 1
    threads = min(threads, max(R, 1))
    if periphery is None:
        periphery = _ref.Periphery()
    e1, e2 = _EMPTY[dt]

    x = _c_array(x, dt)
    scale = _c_array(scale, dt)
    if weights.dtype != dt:
        weights = weights.astype(dt)
    v_offset = _vector(periphery.v_offset, "v_offset", m, dt)
    nonlinearity = _vector(periphery.nonlinearity, "nonlinearity", m, dt)
    noise_std = _vector(periphery.noise_std, "noise_std", m, dt)
    read_asymmetry = periphery.read_asymmetry
    if read_asymmetry is not None:
        read_asymmetry = np.asarray(read_asymmetry)
        if read_asymmetry.shape != (m, n):
            raise ValueError(f"periphery.read_asymmetry: expected shape ({m}, {n}), got "
                             f"{read_asymmetry.shape}")
        read_asymmetry = read_asymmetry.astype(dt, copy=False)
    setup = _setup(io, draws.direction, dt)
    dac, adc = setup.dac, setup.adc
    pos_neg = bool(dac["pos_neg"])
    w_noise_type = io.w_noise_type if adc["w_noise_on"] else None
    row_sums = periphery.v_offset is not None and io.v_offset_w_min != 0.0
    call_adc = _adc_call(adc, io, periphery, nonlinearity, n, m, dt)
    # |W| of the IR-drop and PCMRead products, formed once (the blocks below share it)
    abs_w = {}
    if io.ir_drop > 0 or w_noise_type not in (None, WeightNoiseType.ADDITIVE_CONSTANT):
        abs_w["w"] = np.abs(weights)
        if pos_neg and read_asymmetry is not None:
            abs_w["neg"] = np.abs(weights * (1.0 - read_asymmetry))
    position = 1.0 - ((np.arange(n, dtype=dt) + 1.0) / n) ** 2 if io.ir_drop > 0 else None

    def products(inp: np.ndarray, w: np.ndarray, key: str, run_blocks: Any) -> tuple:
        """The matrix products and row sums of analog_product / ir_drop / voltage_offsets."""
        y = _ref.product(inp, w.T, run_blocks)
        ir_a = ir_g = spread = e2
        row_sum = e1
        if io.ir_drop > 0:
            ir_a = _ref.product(np.abs(inp), abs_w[key].T, run_blocks)
            ir_g = _ref.product(inp * position, w.T, run_blocks)
        if row_sums:
            row_sum = np.sum(inp, axis=1)
        if w_noise_type == WeightNoiseType.ADDITIVE_CONSTANT:
            spread = np.sqrt(np.sum(inp * inp, axis=1, keepdims=True))
        elif w_noise_type is not None:  # PCMRead
            spread = np.sqrt(_ref.product(inp * inp, abs_w[key].T, run_blocks))
        return tuple(np.ascontiguousarray(a) for a in (y, ir_a, ir_g, row_sum, spread))

    neg_weights = weights * (1.0 - read_asymmetry) if pos_neg and read_asymmetry is not None \
        else weights
    out = np.empty((R, m), dtype=dt)
    ok = np.empty((R,), dtype=np.bool_)
    if pos_neg:
        xt, neg, pos = e2, np.empty((R, n), dtype=dt), np.empty((R, n), dtype=dt)
    else:
        xt, neg, pos = np.empty((R, n), dtype=dt), e2, e2

    def rows_of(b: slice, threads: int, run_blocks: Any) -> None:
        """The DAC, the products, the analog terms and the ADC of the rows ``b``."""
        def part(a: np.ndarray) -> np.ndarray:
            return a[b] if a.size else a
        _PREPARE[dt](x[b], scale[b], rows[b], part(xt), part(neg), part(pos), dac, address,
                     threads)
        if pos_neg:
            part0 = products(neg[b], neg_weights, "neg" if read_asymmetry is not None else "w",
                             run_blocks)
            part1 = products(pos[b], weights, "w", run_blocks)
        else:
            part0 = products(xt[b], weights, "w", run_blocks)
            part1 = (e2, e2, e2, e1, e2)
        _FINALIZE[dt](*part0, *part1, v_offset, nonlinearity, noise_std, rows[b], out[b],
                      ok.view(np.uint8)[b], call_adc, address, threads)

    with _ref.one_blas_thread:  # on one BLAS thread, as the reference (spec/agreement.md rule 5)
        if R > _ref.PRODUCT_ROWS and threads > 1 and R != n:
            # the products' own row blocks, each block's rows start to end on one Python thread
            # (numpy and the kernels release the GIL): the numbers of the whole-batch order. (A
            # square x may be the drift readout's eye(n), whose product is taken as a diagonal,
            # refsim.stages.io.product: whole.)
            blocks = [slice(i, min(i + _ref.PRODUCT_ROWS, R))
                      for i in range(0, R, _ref.PRODUCT_ROWS)]
            parallel(lambda b: rows_of(b, 1, None), blocks, threads)
        else:
            rows_of(slice(0, R), threads, _parallel)
    return out, ok


def mvm(xp: Any, x: Any, weights: Any, io: IOParameters, periphery: Any, draws: Any, *,
        backward: bool = False, nm_running: Optional[float] = None,
        impl: Any = None) -> Tuple[np.ndarray, Optional[float]]:
    """:func:`refsim.stages.io.mvm` for numpy arrays: the same passes, rows and numbers (spec/io.md
    §S3, §S7), with less Python around them. The per-row scales of noise management are one
    compiled call (``_io.noise_scales``), and so is a pass of a plain configuration (no IR drop,
    weight noise or periphery variation: ``_io.plain_pass``, the reference's product inside) of
    at most ``PRODUCT_ROWS`` rows, of any number on one thread, or of any number with a small W
    (``_SMALL_PRODUCT``); other passes are :func:`analog_mv`'s (whose row blocks run on the
    threads). Everything else (other
    arrays, perfect and ideal passes, inputs with a non-finite element or no columns) is the
    reference driver's, with :func:`analog_mv`. ``impl``: an object whose ``analog_mv`` takes every
    pass (a test's recorder, say).

    Examples
    --------
    >>> import numpy as np
    >>> from refsim.configs import IOParameters
    >>> from refsim.stages import io as ref
    >>> import refsim_fast.io as fast_io
    >>> io = IOParameters().validate()
    >>> x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    >>> w = np.full((3, 4), 0.25, dtype=np.float32)
    >>> draws = ref.Draws(seed=1, call=0, direction="forward", batch=2)
    >>> y, _ = fast_io.mvm(np, x, w, io, ref.Periphery(), draws)
    >>> y_ref, _ = ref.mvm(np, x, w, io, ref.Periphery(), draws, impl=fast_io)
    >>> bool(np.array_equal(y, y_ref))
    True
    """
    dt = getattr(x, "dtype", None)
    if type(x) is not np.ndarray or type(weights) is not np.ndarray or dt not in _NOISE_SCALES \
            or x.ndim != 2 or weights.ndim != 2 or weights.shape[1] != x.shape[1] \
            or io.is_perfect or io.mv_type == AnalogMVType.IDEAL \
            or not isinstance(draws, _ref.Draws) or draws.direction not in _SIDS:
        return _reference_mvm(xp, x, weights, io, periphery, draws, backward, nm_running, impl)
    setup = _setup(io, draws.direction, dt)
    batch, n = x.shape
    m = weights.shape[0]
    x = np.ascontiguousarray(x)
    nm_type = io.noise_management
    bm_type = BoundManagementType.NONE if backward else io.bound_management
    managed = nm_type != NoiseManagementType.NONE
    bounded = bm_type != BoundManagementType.NONE
    found = _NOISE_SCALES[dt](x, _NM_CODE[nm_type], *setup.nm_args, nm_running)
    if found is None:  # no columns, or a non-finite input
        return _reference_mvm(xp, x, weights, io, periphery, draws, backward, nm_running, impl)
    alpha, new_running, positive = found
    every_row = np.arange(batch, dtype=np.int64)
    address = _address_of_rows(draws, 0, 0, batch - 1, max(n, m))  # (later passes: _io checks)
    if weights.dtype != dt:
        weights = weights.astype(dt)
    plain = setup.plain if impl is None and _no_variation(periphery) else None
    weights_t = weights.T
    threads = resolve_threads(globals()["num_threads"])
    active = None  # (every row)
    if managed and (backward or io.inp_noise <= 0) and positive < batch:
        active = alpha > 0  # the other rows are exactly zero, and draw nothing
    y = None
    red, pass_index = 1.0, 0
    with _ref.one_blas_thread:
        while True:
            rows = every_row if active is None else np.flatnonzero(active)
            R = rows.shape[0]
            if R == 0:
                break
            every = R == batch
            xr = x if every else x[rows]
            a = alpha if every else alpha[rows]
            reduction = red if bounded else 1.0
            if plain is not None and (R <= _ref.PRODUCT_ROWS or threads == 1 or
                                      n * m <= _SMALL_PRODUCT):
                # (numpy's matmul is refsim.stages.io.product for a few rows not square: those
                # may be a diagonal eye(n) after the DAC, more than PRODUCT_ROWS are blocks)
                product = np.matmul if R <= _ref.PRODUCT_ROWS and R != n else _ref.product
                out, ok = _PLAIN_PASS[dt](
                    plain, xr, a, rows, weights_t, product, managed, backward, reduction,
                    setup.out_scale,
                    address["seed"], address["call"], address["batch"], address["halves"],
                    pass_index, address["row_calls"],
                    1 if R * (n + m) < _SERIAL_WORK else min(threads, R))
            else:
                scale, rescale = _PASS_SCALES[dt](a, managed, backward, reduction,
                                                  setup.out_scale)
                out, ok = (impl or _THIS).analog_mv(xp, xr, scale, weights, io, periphery, draws,
                                                    pass_index, rows)
                out *= rescale.reshape(-1, 1)
            if every:
                y = out
            else:
                if y is None:
                    y = np.zeros((batch, m), dtype=dt)
                y[rows] = out
            step = _ref.next_reduction(io, bm_type, managed, pass_index, red,
                                       setup.bm_res_limit) if bounded else None
            if step is None:
                break
            red, worst_case = step
            if worst_case:  # (x is finite)
                alpha = _NOISE_SCALES[dt](x, _NM_CODE[NoiseManagementType.ABS_MAX_NP_SUM],
                                          *setup.nm_args, None)[0]
            if every:  # the rows whose outputs left the bound go again
                active = np.logical_not(ok)
            else:
                active = np.zeros((batch,), dtype=np.bool_)
                active[rows] = np.logical_not(ok)
            pass_index += 1
    if y is None:  # no active row: every output is 0
        y = np.zeros((batch, m), dtype=dt)
    return y, new_running


def _reference_mvm(xp: Any, x: Any, weights: Any, io: IOParameters, periphery: Any, draws: Any,
                   backward: bool, nm_running: Optional[float], impl: Any) -> tuple:
    return _ref.mvm(xp, x, weights, io, periphery, draws, backward=backward,
                    nm_running=nm_running, impl=impl or _THIS)


def _no_variation(periphery: Any) -> bool:
    return periphery is None or (periphery.v_offset is None and periphery.nonlinearity is None
                                 and periphery.noise_std is None
                                 and periphery.read_asymmetry is None)


def _adc_call(adc: dict, io: IOParameters, periphery: Any, nonlinearity: np.ndarray, n: int,
              m: int, dt: np.dtype) -> dict:
    """The ADC kernel's arguments for this pass: ``adc`` with the periphery's effects."""
    if periphery.v_offset is None and periphery.nonlinearity is None and \
            periphery.noise_std is None and io.ir_drop <= 0:
        return adc
    call_adc = dict(adc)
    if io.ir_drop > 0:
        call_adc["ir_scale"] = _ref.ir_drop_scale(n, io, dt)
    if periphery.v_offset is not None:
        call_adc["voff"] = 1 if io.v_offset_w_min == 0.0 else (2 if io.r_series <= 0 else 3)
    if periphery.nonlinearity is not None:
        call_adc["nonlinearity"] = 1
        if m:  # (the reference's mean of an empty array would warn)
            call_adc["slope"] = float(_ref._slope_factor(
                np, io, _ref.Periphery(nonlinearity=nonlinearity)))
    call_adc["noise_std"] = int(periphery.noise_std is not None)
    return call_adc


import sys as _sys  # noqa: E402

_THIS = _sys.modules[__name__]

"""Fast pulsed update: the cycles of :mod:`refsim.stages.pulses` and
:func:`refsim.stages.devices.apply_pulses` for a whole batch, in compiled loops (numpy only).

:func:`pulsed_update` is what ``AnalogTile.update`` runs for numpy arrays unless
``backend="reference"``. The per-cycle plans (A, B, BL) and the pulse probabilities are the
reference's own NumPy expressions on the whole batch at once (the same numbers); the pulse trains
are drawn and packed into uint64 words by ``_update.pulse_trains``; then ``_update.pulsed_update``
goes over the rows of the tile in parallel, each row through all cycles in order: coincidences by
popcount, the pulses of each element one after another with the device rule, its 16-bit normal
and the clamp. Nothing of size batch × out × in is formed: the extra memory is the packed trains
(batch·(in + out)·⌈BL/64⌉ words) and the probabilities.

:func:`normal` and :func:`uniform` are refsim.rng's draws with its signature, computed by the
compiled streams: the tile passes them (as ``draws``) to the device operations of
refsim/stages/devices.py and drift.py (diffusion, reset, drift), whose remaining element-wise
work is a few NumPy expressions.

Agreement (spec/agreement.md, "Update stage"): bit-identical to the reference for every pulse
type and for the ConstantStep, LinearStep, SoftBounds(Pmax), SoftBoundsReference and
PiecewiseStep rules; ExpStep and PowStep(Reference) use the C library's exp / pow, which may differ
from numpy's in the last bit. Independent of the thread count.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from refsim import rng as _rng_ref
from refsim.configs import PulsedDevice, PulseType, UpdateParameters
from refsim.stages import devices as _dev
from refsim.stages import pulses as _pulses

from . import _update
from . import rng as _fast_rng
from .rng import resolve_threads

__all__ = ["MODELS", "normal", "num_threads", "outer_accumulate", "pulsed_update", "uniform",
           "uniform_calls"]

#: Threads of the kernels when ``pulsed_update`` gets no ``num_threads`` (OpenMP's default). Set
#: this attribute to change it for the tile's updates. Results do not depend on it.
num_threads: int = resolve_threads(None)

#: The row kernel's rule per device class (codes of _update.h's RefsimModel).
MODELS = {
    "ConstantStepDevice": 0,
    "LinearStepDevice": 1, "SoftBoundsDevice": 1, "SoftBoundsPmaxDevice": 1,
    "SoftBoundsReferenceDevice": 2,
    "ExpStepDevice": 3,
    "PowStepDevice": 4, "PowStepReferenceDevice": 4,
    "PiecewiseStepDevice": 5,
}
_TRAINS, _PRODUCTS = 0, 1
#: Below this many element-cycles (batch·m·n) a call without ``num_threads`` runs on one thread:
#: waking the sleeping OpenMP threads (OMP_WAIT_POLICY=PASSIVE, refsim_fast/__init__.py) costs
#: more than it saves (measured: one row of a 512² tile, 1.8 ms on one thread, 3.0 ms on two).
_SERIAL_WORK = 1 << 19
_SIDS = {name: _rng_ref.stream_id(name) for name in _pulses.stream_names()
         + tuple(_pulses.c2c_stream(p) for p in _pulses.PREFIXES)}
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


def _plans(xs: np.ndarray, ds: np.ndarray, lr: float, granularity: float,
           up: UpdateParameters, dtype: np.dtype) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A, B (in ``dtype``, the tile's) and BL (int32) of every cycle
    (refsim.stages.pulses.pulse_plans)."""
    x_max = np.max(np.abs(xs), axis=1) if xs.shape[1] else np.zeros(xs.shape[0], xs.dtype)
    d_max = np.max(np.abs(ds), axis=1) if ds.shape[1] else np.zeros(ds.shape[0], ds.dtype)
    return _pulses.pulse_plans(lr, x_max, d_max, granularity, up, dtype)


def _probabilities(values: np.ndarray, scale: np.ndarray, step: float, sto: bool, seed: int,
                   stream: str, calls: np.ndarray, threads: int) -> np.ndarray:
    """(batch, size) pulse probabilities of every cycle in the dtype of ``values`` (refsim.stages
    .pulses.probabilities with each cycle's scale and stochastic-rounding uniforms)."""
    uniforms = None
    if sto:
        size = values.shape[1]
        uniforms = np.empty(values.shape, dtype=values.dtype)
        for r, call in enumerate(calls.tolist()):
            uniforms[r] = _fast_rng.uniform(seed, stream, call, size, num_threads=threads)
    return _pulses.probabilities(np, values, scale[:, None], step, uniforms)


_TABLES: Dict[np.dtype, np.ndarray] = {}


def _table(dtype: np.dtype) -> np.ndarray:
    """The 16-bit normals (refsim.rng.normal16_table) in ``dtype``, made once."""
    if dtype not in _TABLES:
        _TABLES[dtype] = np.ascontiguousarray(_rng_ref.normal16_table(), dtype=dtype)
    return _TABLES[dtype]


def _device_arrays(params: _dev.DeviceParams, cfg: PulsedDevice, dtype: np.dtype
                   ) -> Dict[str, Optional[np.ndarray]]:
    def arr(a: Any) -> Optional[np.ndarray]:
        return None if a is None else np.require(a, dtype=dtype, requirements=("C", "A"))

    name = type(cfg).__name__
    extra = params.extra
    if MODELS[name] == 1:
        p_up, p_down = extra["slope_up"], extra["slope_down"]
    elif MODELS[name] == 4:
        p_up, p_down = extra["gamma_up"], extra["gamma_down"]
    else:
        p_up = p_down = None
    nodes_up = nodes_down = None
    if name == "PiecewiseStepDevice":
        nodes_up = np.array([float(v) for v in cfg.piecewise_up], dtype=dtype).reshape(-1)
        nodes_down = np.array([float(v) for v in cfg.piecewise_down], dtype=dtype).reshape(-1)
        if nodes_up.size < 1 or nodes_down.size != nodes_up.size:
            raise ValueError(f"device.piecewise_up, piecewise_down: expected two non-empty node "
                             f"lists of one length, got {nodes_up.size} and {nodes_down.size}")
    return dict(b_min=arr(params.b_min), b_max=arr(params.b_max), dw_up=arr(params.dw_up),
                dw_down=arr(params.dw_down), p_up=arr(p_up), p_down=arr(p_down),
                ref=arr(extra.get("reference")), nodes_up=nodes_up, nodes_down=nodes_down)


def _scalars(cfg: PulsedDevice) -> Dict[str, Any]:
    """The per-config scalars of the device rule (Python floats; the kernel rounds them to the
    weight type as numpy does in the reference's expressions)."""
    sigma = float(cfg.dw_min_std)
    exp_step = type(cfg).__name__ == "ExpStepDevice"

    def get(field: str) -> float:
        return float(getattr(cfg, field)) if exp_step else 0.0

    return dict(
        sigma=sigma, noisy=int(sigma > 0.0), mult_noise=int(bool(getattr(cfg, "mult_noise", True))),
        extended=int(exp_step and sigma > 0.0 and (cfg.dw_min_std_add != 0.0
                                                   or cfg.dw_min_std_slope != 0.0)),
        es_a=get("a"), b=get("b"), A_up=get("A_up"), A_down=get("A_down"),
        gamma_up=get("gamma_up"), neg_gamma_down=-get("gamma_down"),
        std_add=get("dw_min_std_add"), std_slope=get("dw_min_std_slope"))


def _real_rows(a: Any, name: str) -> np.ndarray:
    """``a`` as a C-contiguous, aligned, native-order float32 / float64 array, converted once here
    at the compiled boundary (Fortran order, transposes, strides, broadcast views, byte-swapped
    and unaligned buffers are accepted, as the reference accepts them); other real dtypes become
    float64, the type of the pulse arithmetic."""
    a = np.asarray(a)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{name}: expected a real array, got {a.dtype}")
    dtype = a.dtype.newbyteorder("=") if a.dtype.kind == "f" else a.dtype
    return np.require(a, dtype=dtype if dtype in (_F32, _F64) else _F64, requirements=("C", "A"))


def pulsed_update(w: np.ndarray, xs: np.ndarray, ds: np.ndarray, lr: float, cfg: PulsedDevice,
                  up: UpdateParameters, params: _dev.DeviceParams, granularity: float, seed: int,
                  first_call: int, *, device_index: int = 0,
                  last_touch: Optional[np.ndarray] = None,
                  pulse_counters: Optional[Tuple[np.ndarray, np.ndarray]] = None,
                  prefix: str = "update", num_threads: Optional[int] = None,
                  in_place: bool = False, snapshots: Optional[tuple] = None) -> np.ndarray:
    """The weights after the pulsed update cycles of ``xs`` (batch, n) and ``ds`` (batch, m),
    cycle ``b`` taking call ``first_call + b``; the same result as the reference's cycle loop
    (``AnalogTile._pulsed_update``). ``w`` is not modified (unless ``in_place``, below).

    ``last_touch`` (m, n) int64, when given, receives for every element the call of the last
    cycle that sent it a pulse (untouched elements keep their value); ``pulse_counters``
    (up, down), two (m, n) int64 arrays, accumulate the pulses sent. ``prefix`` names the
    streams (refsim.stages.pulses.PREFIXES). With ``in_place`` the weights are updated in ``w``
    itself when it is a C-contiguous, writable array of its dtype (else a copy, as without).
    ``lr`` is one learning rate, or an array of one per cycle. ``snapshots`` = ``(slot, line,
    out, columns)``: after cycle b with ``slot[b] >= 0``, line ``line[b]`` of the weights (a
    column when ``columns``, else a row) is copied into row ``slot[b]`` of ``out`` (S, ℓ), a
    C-contiguous array of the weights' dtype (refsim.stages.update.pulsed_cycles_reading).
    """
    if prefix not in _pulses.PREFIXES:
        raise ValueError(f"prefix: expected one of {_pulses.PREFIXES}, got {prefix!r}")
    if up.pulse_type not in _pulses.PULSED:
        raise ValueError(f"update.pulse_type: {up.pulse_type.value!r} is not a pulsed type")
    name = type(cfg).__name__
    if name not in MODELS:
        raise ValueError(f"device: no compiled rule for {name}")
    w = np.asarray(w)
    dtype = w.dtype.newbyteorder("=") if w.dtype.kind == "f" else w.dtype
    if dtype not in (_F32, _F64):
        raise TypeError(f"w: expected float32 or float64, got {w.dtype}")
    if w.ndim != 2:
        raise ValueError(f"w: expected a 2-D array, got shape {w.shape}")
    m, n = w.shape
    xs, ds = _real_rows(xs, "xs"), _real_rows(ds, "ds")
    if xs.ndim != 2 or ds.ndim != 2 or xs.shape != (xs.shape[0], n) or \
            ds.shape != (xs.shape[0], m):
        raise ValueError(f"xs, ds: expected (batch, {n}) and (batch, {m}), got "
                         f"{xs.shape} and {ds.shape}")
    batch = xs.shape[0]
    if num_threads is None:  # the module's setting, one thread for small calls
        threads = 1 if batch * m * n < _SERIAL_WORK else globals()["num_threads"]
    else:
        threads = resolve_threads(num_threads)
    # in place when asked and possible (a compound's device, whose state the tile snapshots as
    # copies): every check above and in the kernel comes before the first write
    reuse = in_place and w.dtype == dtype and w.flags.c_contiguous and w.flags.writeable and \
        w.flags.aligned
    out = w if reuse else np.array(w, dtype=dtype, order="C", copy=True)
    if batch == 0:
        return out
    xs, ds = xs.astype(dtype, copy=False), ds.astype(dtype, copy=False)
    a, b, bl = _plans(xs, ds, lr, granularity, up, dtype)
    if n * int(bl.max()) >= 2**31:
        raise ValueError(f"xs: in_size × BL = {n} × {int(bl.max())} pulse slots per row exceed "
                         f"the kernel's int32 range")
    calls = np.arange(first_call, first_call + batch, dtype=np.uint64)
    implicit = up.pulse_type == PulseType.DETERMINISTIC_IMPLICIT
    steps = (_pulses.resolution_implicit(up.x_res_implicit, dtype),
             _pulses.resolution_implicit(up.d_res_implicit, dtype)) if implicit else \
        (_pulses.resolution(up.res, dtype),) * 2
    p_x = _probabilities(xs, b, steps[0], bool(up.sto_round) and steps[0] > 0.0, seed,
                         f"{prefix}.x_sto_round", calls, threads)
    p_d = _probabilities(ds, a, steps[1], bool(up.sto_round) and steps[1] > 0.0, seed,
                         f"{prefix}.d_sto_round", calls, threads)
    xbits = dbits = ax = ad = None
    if up.pulse_type in (PulseType.STOCHASTIC_COMPRESSED, PulseType.STOCHASTIC):
        mode = _TRAINS
        nw = max(1, (int(bl.max()) + 63) // 64)
        xbits = np.zeros((batch, n, nw), dtype=np.uint64)
        dbits = np.zeros((batch, m, nw), dtype=np.uint64)
        # the uniforms are multiples of 2⁻²⁴: a float32 probability compares the same widened
        _update.pulse_trains(seed, _SIDS[f"{prefix}.x_bits"], calls, bl,
                             np.ascontiguousarray(p_x, dtype=np.float64), xbits, threads)
        _update.pulse_trains(seed, _SIDS[f"{prefix}.d_bits"], calls, bl,
                             np.ascontiguousarray(p_d, dtype=np.float64), dbits, threads)
    else:
        mode = _PRODUCTS
        # a cycle without pulses (BL = 0) is skipped by the kernel; BL 1 there avoids 0/0
        blt = np.where(bl > 0, bl, 1).astype(dtype)[:, None]
        ax, ad = _pulses.count_factors(np, p_x, p_d, blt, implicit)
        # float64 holds the products of two float32 factors exactly; the kernel rounds each
        # product to the weight type before rint (spec/pulses.md §U4)
        ax = np.ascontiguousarray(ax, dtype=np.float64)
        ad = np.ascontiguousarray(np.where(bl[:, None] > 0, ad, 0), dtype=np.float64)
    xneg = np.ascontiguousarray(xs < 0, dtype=np.uint8)
    lr_neg = np.asarray(lr) < 0
    if lr_neg.ndim:
        if lr_neg.shape != (batch,):
            raise ValueError(f"lr: expected one learning rate or one per cycle ({batch}), got "
                             f"shape {lr_neg.shape}")
        lr_neg = lr_neg[:, None]
    dneg = np.ascontiguousarray((ds < 0) != lr_neg, dtype=np.uint8)
    dev = _device_arrays(params, cfg, dtype)
    for key in ("b_min", "b_max", "dw_up", "dw_down", "p_up", "p_down", "ref"):
        if dev[key] is not None and dev[key].shape != (m, n):
            raise ValueError(f"params.{key}: expected shape {(m, n)}, got {dev[key].shape}")
    for name_, arr in (("last_touch", last_touch),) + (
            (("pulse_counters[0]", pulse_counters[0]), ("pulse_counters[1]", pulse_counters[1]))
            if pulse_counters is not None else ()):
        if arr is not None and (arr.shape != (m, n) or arr.dtype != np.int64 or
                                not arr.flags.c_contiguous or not arr.flags.writeable):
            raise ValueError(f"{name_}: expected a writable C-contiguous int64 array of shape "
                             f"{(m, n)}")
    table = _table(dtype)
    counters = (None, None) if pulse_counters is None else pulse_counters
    _update.pulsed_update(
        out, mode, xbits, dbits, ax, ad, xneg, dneg, bl, calls, MODELS[name],
        dev["b_min"], dev["b_max"], dev["dw_up"], dev["dw_down"], dev["p_up"], dev["p_down"],
        dev["ref"], dev["nodes_up"], dev["nodes_down"], table, _scalars(cfg),
        seed, _SIDS[_pulses.c2c_stream(prefix)], device_index * m * n, last_touch, counters[0],
        counters[1],
        threads, *_snapshot_args(snapshots, dtype))
    return out


def _snapshot_args(snapshots: Optional[tuple], dtype: np.dtype) -> tuple:
    """The kernel's (snap_slot, snap_line, snap, snap_columns) from ``snapshots`` (checked
    there against the shapes)."""
    if snapshots is None:
        return (None, None, None, True)
    slot, line, out, columns = snapshots
    if not isinstance(out, np.ndarray) or out.dtype != dtype or not out.flags.c_contiguous or \
            not out.flags.writeable or out.ndim != 2:
        raise ValueError(f"snapshots: expected a writable C-contiguous 2-D {dtype} output array")
    return (np.ascontiguousarray(slot, dtype=np.int64), np.ascontiguousarray(line, dtype=np.int64),
            out, bool(columns))


def outer_accumulate(chi: np.ndarray, a: Any, b: Any, *,
                     num_threads: Optional[int] = None) -> np.ndarray:
    """``chi + a[k, :, None] * b[k, None, :]`` for every row k in order, each product and sum
    rounded to chi's dtype (the mixed-precision compound's accumulation, spec/unit_cells.md):
    the numbers of that numpy loop. Returns chi itself, updated in place, when it is a writable
    C-contiguous array, else an updated C-contiguous copy. ``chi`` (m, n) is float32/float64;
    ``a`` (B, m) and ``b`` (B, n) are converted to its dtype (as numpy's multiplication with it
    would)."""
    if not isinstance(chi, np.ndarray) or chi.dtype.type not in (np.float32, np.float64) or \
            chi.ndim != 2:
        raise ValueError("chi: expected a 2-D float32/float64 numpy array")
    if not (chi.flags.c_contiguous and chi.flags.writeable and chi.flags.aligned and
            chi.dtype.isnative):
        chi = np.array(chi, dtype=chi.dtype.newbyteorder("="), order="C")
    a = np.require(np.asarray(a), dtype=chi.dtype, requirements=("C", "A"))
    b = np.require(np.asarray(b), dtype=chi.dtype, requirements=("C", "A"))
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"a, b: expected 2-D arrays, got shapes {a.shape}, {b.shape}")
    threads = globals()["num_threads"] if num_threads is None else resolve_threads(num_threads)
    _update.outer_accumulate(chi, a, b, threads)
    return chi


def normal(seed: int, stream: str, call: int, shape: Any, *, start: int = 0, xp: Any = None,
           dtype: Any = None, device: Any = None) -> np.ndarray:
    """:func:`refsim.rng.normal` (numpy arrays on the CPU), by the compiled streams."""
    return _fast_rng.normal(seed, stream, call, shape, start=start, dtype=dtype,
                            num_threads=num_threads)


def uniform(seed: int, stream: str, call: int, shape: Any, *, start: int = 0, xp: Any = None,
            dtype: Any = None, device: Any = None) -> np.ndarray:
    """:func:`refsim.rng.uniform` (numpy arrays on the CPU), by the compiled streams."""
    return _fast_rng.uniform(seed, stream, call, shape, start=start, dtype=dtype,
                             num_threads=num_threads)


def uniform_calls(seed: int, stream: str, calls: Any, *, start: int = 0, xp: Any = None,
                  device: Any = None) -> np.ndarray:
    """:func:`refsim.rng.uniform_calls` (numpy arrays on the CPU), by the compiled streams."""
    return _fast_rng.uniform_calls(seed, stream, calls, start=start)

"""The analog matrix-vector product: forward and backward pass of one tile (spec/io.md, "Stage
semantics").

Every function is pure and written against the array API: arrays and parameters in, arrays out,
random numbers drawn from explicitly addressed streams (:class:`Draws`). A mini-batch row is the
unit of semantics: each row has its own noise management, bound management and noise; rows are
processed together wherever that gives the same result.

The pipeline of one pass (spec/io.md §S3-§S7):
``noise_management`` -> ``prepare_input`` (scale, DAC, clip, input noise) -> ``analog_product``
(MVM, IR drop, voltage offsets / series resistance, weight noise) -> ``finalize_output``
(nonlinearity, output noise, ADC, clip), repeated by bound management for the rows that clip.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from typing import Any, Callable, List, Optional, Tuple

import array_api_compat
import numpy as np

from refsim import rng
from refsim.precision import real
from refsim.configs import (
    AnalogMVType,
    BoundManagementType,
    ConfigError,
    IOParameters,
    NoiseManagementType,
    WeightNoiseType,
)

#: Constants of aihwkit's C++ core that no config field sets (spec/io.md §S1).
NM_ASSUMED_WMAX = 0.6
NM_DECAY = 1e-3

#: The random quantities of one direction; stream name = f"io.{direction}.{quantity}".
PER_CALL_QUANTITIES = ("inp_sto_round", "inp_noise", "w_noise", "out_noise", "out_sto_round")
PERIPHERY_QUANTITIES = ("v_offset", "out_nonlinearity", "w_read_asymmetry", "out_noise_std")
DIRECTIONS = ("forward", "backward", "transfer", "refresh")  # the last two: compound reads

POS_NEG = (AnalogMVType.POS_NEG_SEPARATE, AnalogMVType.POS_NEG_SEPARATE_DIGITAL_SUM)


# -- parameters derived once per config (spec/io.md §S1) -----------------------------------------


def resolution_step(res: float, bound: float, dtype: Any = None) -> float:
    """Quantization step of a DAC/ADC: ``res'·(2·bound)`` with ``res' = 1/res`` for ``res > 1``,
    computed in ``dtype`` (default float64; spec/agreement.md rule 7); 0 (quantization off) when
    ``res <= 0`` or ``bound <= 0``."""
    R = real(dtype)
    r = R(res)
    if r <= 0 or bound <= 0.0:
        return 0.0
    if r > 1:
        r = R(1) / r
    return float(r * (R(2) * R(bound)))


def check_supported(io: IOParameters, path: str, backward: bool = False) -> None:
    """Raise ConfigError for settings the IO stage does not implement (spec/io.md §S1). The
    backward pass never uses bound management, so its ``bound_management`` is not checked."""
    if io.is_perfect or io.mv_type == AnalogMVType.IDEAL:
        return
    if io.mv_type in (AnalogMVType.SPLIT_MODE, AnalogMVType.BIT_WISE):
        raise ConfigError(
            f"{path}.mv_type: {io.mv_type.value!r} needs the time-stepped IR-drop model, which "
            f"refsim does not implement yet; use 'OnePass', 'PosNegSeparate' or "
            f"'PosNegSeparateDigitalSum'"
        )
    if io.bound_management == BoundManagementType.SHIFT and not backward:
        raise ConfigError(
            f"{path}.bound_management: 'Shift' is implemented by none of aihwkit's simulators "
            f"and has no defined semantics; use 'None', 'Iterative' or 'IterativeWorstCase'"
        )


@dataclasses.dataclass(frozen=True)
class Periphery:
    """Fixed per-output variation of one direction, drawn once at tile creation (spec/io.md §S2).

    ``v_offset``, ``nonlinearity`` and ``noise_std`` have one entry per output line of the
    direction; ``read_asymmetry`` is shaped like the weights as the direction reads them (out, in).
    None means the effect is off.
    """

    v_offset: Any = None
    nonlinearity: Any = None
    noise_std: Any = None
    read_asymmetry: Any = None


def draw_periphery(xp: Any, io: IOParameters, out_size: int, in_size: int, seed: int,
                   direction: str, dtype: Any, device: Any = None) -> Periphery:
    """The fixed periphery variation of one direction (spec/io.md §S2): each quantity is call 0 of
    its stream ``io.<direction>.<quantity>`` under the tile's construction seed."""

    def normal(quantity: str, shape: Tuple[int, ...]) -> Any:
        return rng.normal(seed, f"io.{direction}.{quantity}", 0, shape, xp=xp, dtype=dtype,
                          device=device)

    if io.is_perfect or io.mv_type == AnalogMVType.IDEAL:
        return Periphery()
    bound = io.out_bound if io.out_bound > 0 else 1.0
    v_offset = nonlinearity = noise_std = read_asymmetry = None
    if io.v_offset_std > 0 or io.r_series > 0:
        v_offset = xp.clip(io.v_offset_std * normal("v_offset", (out_size,)), min=0.0)
    if io.out_nonlinearity > 0 or io.r_series > 0:
        spread = 1.0 + io.out_nonlinearity_std * normal("out_nonlinearity", (out_size,))
        nonlinearity = xp.abs(io.out_nonlinearity / bound * spread)
    if io.out_noise_std > 0:
        noise_std = xp.abs(io.out_noise * (1.0 + io.out_noise_std * normal("out_noise_std",
                                                                          (out_size,))))
    if io.w_read_asymmetry_dtod > 0 and io.mv_type in POS_NEG:
        read_asymmetry = io.w_read_asymmetry_dtod * normal("w_read_asymmetry", (out_size, in_size))
    return Periphery(v_offset, nonlinearity, noise_std, read_asymmetry)


# -- random draws of one call (spec/io.md §S8) --------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Draws:
    """Addresses the per-call random numbers of one forward or backward call.

    The number for (quantity q, bound-management pass p, batch row b, half h of a pos/neg pass,
    element k of width L) is number ``((p·B + b)·H + h)·L + k`` of call ``call`` of stream
    ``io.<direction>.<q>`` under ``seed``; ``B`` is the batch size and ``H`` is 2 for the pos/neg
    modes, 1 otherwise. A row that is not computed in a pass draws nothing.

    With ``row_calls`` every batch row is a call of its own: row ``b`` draws number
    ``(p·H + h)·L + k`` of call ``call + b``, the numbers of a one-row call ``call + b``; a batch
    of one-row reads (a compound's transfer reads, spec/transfer.md) is then one call of the stage.
    """

    seed: int
    call: int
    direction: str
    batch: int
    halves: int = 1
    row_calls: bool = False

    def _words(self, xp: Any, quantity: str, pass_index: int, rows: Any, half: int,
               width: int) -> Any:
        """(R, width) words: row r starts at number ((p·B + rows[r])·H + half)·width (with
        ``row_calls``: number (p·H + half)·width of call ``call + rows[r]``)."""
        stream = f"io.{self.direction}.{quantity}"
        if self.row_calls:
            start = (pass_index * self.halves + half) * width
            return rng.random_words_rows(self.seed, stream, self.call, rows * 0 + start, width,
                                         xp=xp, calls=rows + self.call)
        starts = ((pass_index * self.batch + rows) * self.halves + half) * width
        return rng.random_words_rows(self.seed, stream, self.call, starts, width, xp=xp)

    def normal(self, xp: Any, quantity: str, pass_index: int, rows: Any, width: int,
               dtype: Any, half: int = 0) -> Any:
        words = self._words(xp, quantity, pass_index, rows, half, width)
        return xp.astype(rng.normal_from_words(xp, words), dtype)

    def uniform(self, xp: Any, quantity: str, pass_index: int, rows: Any, width: int,
                dtype: Any, half: int = 0) -> Any:
        words = self._words(xp, quantity, pass_index, rows, half, width)
        return xp.astype(rng.uniform_from_words(xp, words), dtype)


def stream_names() -> Tuple[str, ...]:
    """Every stream name the IO stage draws from."""
    return tuple(f"io.{d}.{q}" for d in DIRECTIONS for q in PER_CALL_QUANTITIES +
                 PERIPHERY_QUANTITIES)



# -- matrix products: one BLAS thread (spec/agreement.md rule 5) ---------------------------------


def _blas_controllers() -> list:
    """threadpoolctl's controllers of the loaded BLAS libraries; none (the products then run with
    the process's BLAS threads) when the optional extra ``threads`` (threadpoolctl) is missing."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return []
    return ThreadpoolController().select(user_api="blas").lib_controllers


def blas_threads_held() -> bool:
    """Whether matrix products run on one BLAS thread (threadpoolctl installed), which makes
    results independent of the thread count (spec/agreement.md rule 5)."""
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return False
    return True


class _OneThread:
    """Context manager that holds the BLAS (through threadpoolctl) and, for torch tensors, torch's
    intra-op pool at one thread: a threaded GEMM splits its work by the thread count and so sums
    in a different order (float32 results differed in the last bit between OMP_NUM_THREADS=1
    and 2). Re-entrant and shared by Python threads: the first to enter sets the counts, the last
    to leave restores them; the library's own setting is left alone when it is already 1."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._blas: Any = None  # threadpoolctl's controllers of the loaded BLAS libraries
        self._restore: list = []
        self._torch = False

    def enter(self, torch: bool = False) -> None:
        with self._lock:
            if self._depth == 0:
                if self._blas is None:
                    self._blas = _blas_controllers()
                for lib in self._blas:
                    self._hold(lib.get_num_threads, lib.set_num_threads)
            if torch and not self._torch:
                import torch as _torch

                self._hold(_torch.get_num_threads, _torch.set_num_threads)
                self._torch = True
            self._depth += 1

    def _hold(self, get: Any, set_: Any) -> None:
        n = get()
        if n != 1:
            set_(1)
            self._restore.append((set_, n))

    def exit(self) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                for set_, n in reversed(self._restore):
                    set_(n)
                self._restore.clear()
                self._torch = False

    def __enter__(self) -> None:
        self.enter()

    def __exit__(self, *exc: Any) -> None:
        self.exit()


#: ``with one_blas_thread:`` runs the products inside on one BLAS thread (numpy, array-api-strict;
#: :func:`matmul` also holds torch's pool for torch tensors).
one_blas_thread = _OneThread()


def matmul(a: Any, b: Any) -> Any:
    """``a @ b``, computed on one thread, so that the result does not depend on OMP_NUM_THREADS,
    OPENBLAS_NUM_THREADS, MKL_NUM_THREADS or torch.set_num_threads (spec/agreement.md rule 5).
    Every floating-point matrix product of the simulation goes through here (or
    ``one_blas_thread``); the pulsed update's 0/1 coincidence counts are exact in any order."""
    one_blas_thread.enter(torch=type(a).__module__.startswith("torch"))
    try:
        return product(a, b)
    finally:
        one_blas_thread.exit()


#: A matrix product of numpy arrays with more rows than this is formed in blocks of this many
#: rows of ``a`` (spec/agreement.md rule 5): a split that depends on nothing but the shape, so the
#: numbers do not depend on threads, and the fast backend forms the blocks in parallel.
PRODUCT_ROWS = 128


def _serially(one: Callable[[slice], None], blocks: List[slice]) -> None:
    for block in blocks:
        one(block)


def product(a: Any, b: Any, run_blocks: Optional[Callable] = None) -> Any:
    """``a @ b``. For numpy arrays: with more than PRODUCT_ROWS rows, in blocks of PRODUCT_ROWS
    rows of ``a`` (``run_blocks(one, blocks)`` runs ``one(block)`` for every block, in any order
    and on any threads; serially by default); a square ``a`` that is diagonal (the
    drift-compensation readout's eye(n), spec/inference.md §I4, after the DAC) times a finite
    ``b`` row by row as ``a[i, i]·b[i, :]``: every other term of each sum is an exact zero, so
    the numbers are the GEMM's (``+ 0.0`` gives its +0 where the product is a zero), without its
    O(n·n·m) work (spec/io.md §S5)."""
    diagonal = _diagonal_of(a)
    if diagonal is None or not np.isfinite(b).all():
        if type(a) is not np.ndarray or a.ndim != 2 or getattr(b, "ndim", 0) != 2 or \
                a.shape[0] <= PRODUCT_ROWS:
            return a @ b
        out = np.empty((a.shape[0], b.shape[-1]), dtype=np.result_type(a, b))

        def one(block: slice) -> None:
            np.matmul(a[block], b, out=out[block])

        (run_blocks or _serially)(one, [slice(i, i + PRODUCT_ROWS)
                                        for i in range(0, a.shape[0], PRODUCT_ROWS)])
        return out
    out = np.multiply(diagonal[:, None], b, order="C")  # C order, as the GEMM's
    out += a.dtype.type(0)
    return out


def _diagonal_of(a: Any) -> Any:
    """The diagonal of ``a`` when ``a`` is a square numpy matrix (n ≥ 2) whose other entries are
    all 0, else None."""
    if type(a) is not np.ndarray or a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 2:
        return None
    if a.dtype.kind != "f" or a[0, 1] != 0 or a[1, 0] != 0:  # a dense batch: no full scan
        return None
    diagonal = np.diagonal(a)
    if np.count_nonzero(a) != np.count_nonzero(diagonal):
        return None
    return diagonal


# -- the stage functions ------------------------------------------------------------------------


def noise_management(xp: Any, x: Any, io: IOParameters, nm_type: NoiseManagementType,
                     running: Optional[float] = None) -> Tuple[Any, Optional[float]]:
    """Per-row input scale α (spec/io.md §S3) and the new AverageAbsMax running value.

    ``x`` is (B, n). Returns α of shape (B,) in the dtype of ``x``; tiny scales count as 0
    (:func:`flush_tiny`).
    """
    alpha, running = _scale(xp, x, io, nm_type, running)
    return flush_tiny(xp, alpha), running


def _scale(xp: Any, x: Any, io: IOParameters, nm_type: NoiseManagementType,
           running: Optional[float]) -> Tuple[Any, Optional[float]]:
    """α of the table of spec/io.md §S3, before the tiny-scale rule."""
    theta = io.nm_thres
    abs_max = xp.max(xp.abs(x), axis=1)
    if nm_type == NoiseManagementType.NONE:
        return xp.ones_like(abs_max), running
    if nm_type == NoiseManagementType.CONSTANT:
        return xp.full_like(abs_max, theta if theta > 0 else 1.0), running
    if nm_type == NoiseManagementType.AVERAGE_ABS_MAX:
        R = real(x.dtype)
        values = []
        for a in (R(v) for v in _to_list(xp, abs_max)):
            running = a if running is None else \
                R(running) * (R(1) - R(NM_DECAY)) + R(NM_DECAY) * a
            values.append(float(running))
        running = None if running is None else float(running)
        return xp.asarray(values, dtype=x.dtype, device=rng.device_of(x)), running
    if nm_type == NoiseManagementType.MAX:
        alpha = xp.max(x, axis=1)
    else:  # AbsMax and AbsMaxNPSum start from the abs-max
        alpha = abs_max
    if theta > 0:
        alpha = xp.clip(alpha, max=theta)
    if nm_type == NoiseManagementType.ABS_MAX_NP_SUM:
        alpha = np_sum_scale(xp, x, alpha, io)
    return alpha, running


def flush_tiny(xp: Any, alpha: Any) -> Any:
    """Scales with 0 < α < the dtype's smallest normal number count as 0 (spec/io.md §S3,
    "Tiny scales"): 1/α would overflow to infinity."""
    tiny = xp.finfo(alpha.dtype).smallest_normal
    return xp.where((alpha > 0) & (alpha < tiny), xp.zeros_like(alpha), alpha)


def np_sum_scale(xp: Any, x: Any, alpha: Any, io: IOParameters) -> Any:
    """The AbsMaxNPSum rule (spec/io.md §S3): ``max(a, q)`` with
    ``q = (max(P, −N)·0.6)/out_bound``, capped at ``(a/step_in)·max_bm_res`` when the DAC
    quantizes (in this order, in the dtype of ``x``)."""
    R = real(x.dtype)
    positive = sequential_sum(xp, xp.clip(x, min=0.0))
    negative = sequential_sum(xp, xp.clip(x, max=0.0))
    bound = float(R(io.out_bound)) if io.out_bound > 0 else 1.0
    q = xp.maximum(positive, -negative) * float(R(NM_ASSUMED_WMAX)) / bound
    step_in = resolution_step(io.inp_res, io.inp_bound, x.dtype)
    if step_in > 0:
        q = xp.minimum(q, alpha / step_in * float(R(io.max_bm_res)))
    return xp.maximum(alpha, q)


def sequential_sum(xp: Any, a: Any) -> Any:
    """Row sums of ``a`` (B, n) added left to right, element by element, in the dtype of ``a``
    (aihwkit's loop; a pairwise sum rounds differently from 8 elements on)."""
    if a.shape[1] == 0:
        return xp.zeros((a.shape[0],), dtype=a.dtype, device=rng.device_of(a))
    return xp.cumulative_sum(a, axis=1)[:, -1]


def quantize(xp: Any, v: Any, step: float, uniforms: Any = None) -> Any:
    """``rint(v/step)·step`` (half to even), or ``rint(v/step + u − ½)·step`` with uniforms
    ``u`` (stochastic rounding); unchanged when ``step <= 0`` (spec/io.md §S4)."""
    if step <= 0:
        return v
    scaled = v / step
    if uniforms is not None:
        scaled = scaled + (uniforms - 0.5)
    return xp.round(scaled) * step


def prepare_input(xp: Any, x: Any, scale: Any, io: IOParameters, draws: Draws, pass_index: int,
                  rows: Any) -> Any:
    """The DAC stage (spec/io.md §S4): ``v = x·s`` per row, quantize, clip to ±inp_bound, add
    input noise. ``x`` is (R, n) for the rows ``rows``; ``scale`` is (R,)."""
    n = x.shape[1]
    v = x * xp.reshape(scale, (-1, 1))
    step = resolution_step(io.inp_res, io.inp_bound, x.dtype)
    if step > 0:
        u = draws.uniform(xp, "inp_sto_round", pass_index, rows, n, x.dtype) \
            if io.inp_sto_round else None
        v = quantize(xp, v, step, u)
    if io.inp_bound > 0:
        v = xp.clip(v, min=-io.inp_bound, max=io.inp_bound)
    if io.inp_noise > 0:
        v = v + io.inp_noise * draws.normal(xp, "inp_noise", pass_index, rows, n, x.dtype)
    return v


def ir_drop(xp: Any, xt: Any, weights: Any, io: IOParameters) -> Any:
    """The IR-drop correction of one pass (spec/io.md §S5): returns the amount to subtract,
    ``ir_drop·π_i·Σ_j W_ij·x_j·(1 − ((j+1)/n)²)`` with
    ``a_i = (n/ir_drop_g_ratio)·Σ_j abs(W_ij)·abs(x_j)``, ``π = 0.05a³ − 0.2a² + 0.5a``."""
    n = xt.shape[1]
    position = 1.0 - ((xp.arange(n, dtype=xt.dtype, device=rng.device_of(xt)) + 1.0) / n) ** 2
    a = ir_drop_scale(n, io, xt.dtype) * matmul(xp.abs(xt), xp.matrix_transpose(xp.abs(weights)))
    pi = ((0.05 * a - 0.2) * a + 0.5) * a
    return pi * (io.ir_drop * matmul(xt * position, xp.matrix_transpose(weights)))


def ir_drop_scale(n: int, io: IOParameters, dtype: Any) -> float:
    """``n/ir_drop_g_ratio`` of the IR-drop model, in ``dtype`` (spec/agreement.md rule 7)."""
    R = real(dtype)
    return float(R(n) / R(io.ir_drop_g_ratio))


def analog_product(xp: Any, xt: Any, weights: Any, io: IOParameters, periphery: Periphery,
                   draws: Draws, pass_index: int, rows: Any, half: int = 0) -> Any:
    """One analog pass through the array (spec/io.md §S5): MVM, IR drop, voltage offsets and
    series resistance, output-referred weight noise. ``xt`` is (R, n), ``weights`` (m, n)."""
    y = matmul(xt, xp.matrix_transpose(weights))
    if io.ir_drop > 0:
        y = y - ir_drop(xp, xt, weights, io)
    if periphery.v_offset is not None:
        y = voltage_offsets(xp, y, xt, io, periphery.v_offset)
    if io.w_noise > 0 and io.w_noise_type != WeightNoiseType.NONE:
        if io.w_noise_type == WeightNoiseType.ADDITIVE_CONSTANT:
            spread = xp.sqrt(xp.sum(xt * xt, axis=1, keepdims=True))
        else:  # PCMRead
            spread = xp.sqrt(matmul(xt * xt, xp.matrix_transpose(xp.abs(weights))))
        m = weights.shape[0]
        noise = draws.normal(xp, "w_noise", pass_index, rows, m, xt.dtype, half)
        y = y + io.w_noise * spread * noise
    return y


def voltage_offsets(xp: Any, y: Any, xt: Any, io: IOParameters, v: Any) -> Any:
    """Per-output voltage offsets ``v_i`` and series resistance (spec/io.md §S5)."""
    rho = io.r_series
    if io.v_offset_w_min == 0.0:
        return (1.0 - v) * y / (1.0 + rho * xp.abs(y)) if rho > 0 else (1.0 - v) * y
    ref = -io.v_offset_w_min * xp.sum(xt, axis=1, keepdims=True)
    if rho <= 0:
        return (1.0 - v) * y - 2.0 * v * ref
    coded = y + ref
    return ((1.0 - v) * coded / (1.0 + rho * xp.abs(coded))
            - (1.0 + v) * ref / (1.0 + rho * xp.abs(ref)))


def finalize_output(xp: Any, y: Any, io: IOParameters, periphery: Periphery, draws: Draws,
                    pass_index: int, rows: Any, half: int = 0) -> Tuple[Any, Any]:
    """The ADC stage (spec/io.md §S6): nonlinearity, output noise, quantization, clipping.

    Returns the digital outputs (R, m) and, per row, whether the bound test passed.
    """
    m = y.shape[1]
    if periphery.nonlinearity is not None:
        y = _slope_factor(xp, io, periphery) * y / (1.0 + xp.abs(periphery.nonlinearity * y))
    sigma = periphery.noise_std if periphery.noise_std is not None else io.out_noise
    if io.out_noise > 0:
        y = y + sigma * draws.normal(xp, "out_noise", pass_index, rows, m, y.dtype, half)
    step = resolution_step(io.out_res, io.out_bound, y.dtype)
    if step > 0:
        u = draws.uniform(xp, "out_sto_round", pass_index, rows, m, y.dtype, half) \
            if io.out_sto_round else None
        y = quantize(xp, y, step, u)
    if io.out_bound > 0:
        over = xp.any(y > io.out_bound, axis=1)
        if io.bm_test_negative_bound:
            over = over | xp.any(y < -io.out_bound, axis=1)
        y = xp.clip(y, min=-io.out_bound, max=io.out_bound)
        return y, xp.logical_not(over)
    return y, xp.ones((y.shape[0],), dtype=xp.bool, device=rng.device_of(y))


def _slope_factor(xp: Any, io: IOParameters, periphery: Periphery) -> float:
    if io.slope_calibration <= 0:
        return 1.0
    bound = io.out_bound if io.out_bound > 0 else 1.0
    mean_nl = float(xp.mean(xp.abs(periphery.nonlinearity)))
    return (1.0 + (mean_nl + io.r_series) * io.slope_calibration * bound) ** 2


def analog_mv(xp: Any, x: Any, scale: Any, weights: Any, io: IOParameters, periphery: Periphery,
              draws: Draws, pass_index: int, rows: Any) -> Tuple[Any, Any]:
    """One bound-management pass for the rows ``rows`` (spec/io.md §S7): prepare, the analog
    product(s) of ``mv_type``, finalize. Returns outputs (R, m) and the per-row bound test."""
    xt = prepare_input(xp, x, scale, io, draws, pass_index, rows)
    if io.mv_type not in POS_NEG:
        y = analog_product(xp, xt, weights, io, periphery, draws, pass_index, rows)
        return finalize_output(xp, y, io, periphery, draws, pass_index, rows)
    negative = xp.clip(xt, max=0.0) * (1.0 - io.inp_asymmetry)
    positive = xp.clip(xt, min=0.0)
    w_neg = weights if periphery.read_asymmetry is None else \
        weights * (1.0 - periphery.read_asymmetry)
    y_neg = analog_product(xp, negative, w_neg, io, periphery, draws, pass_index, rows, 0)
    y_neg = y_neg * (1.0 - io.out_asymmetry)
    y_pos = analog_product(xp, positive, weights, io, periphery, draws, pass_index, rows, 1)
    if io.mv_type == AnalogMVType.POS_NEG_SEPARATE:
        return finalize_output(xp, y_neg + y_pos, io, periphery, draws, pass_index, rows)
    out_neg, ok_neg = finalize_output(xp, y_neg, io, periphery, draws, pass_index, rows, 0)
    out_pos, ok_pos = finalize_output(xp, y_pos, io, periphery, draws, pass_index, rows, 1)
    return out_neg + out_pos, ok_neg & ok_pos


def _to_list(xp: Any, a: Any) -> list:
    import numpy as np

    if type(a).__module__.startswith("torch"):
        return a.detach().cpu().tolist()
    if hasattr(a, "get"):
        return a.get().tolist()
    return np.from_dlpack(a).tolist() if not isinstance(a, np.ndarray) else a.tolist()


# -- the driver: noise and bound management over a batch (spec/io.md §S3, §S7) -------------------


def mvm(xp: Any, x: Any, weights: Any, io: IOParameters, periphery: Periphery, draws: Draws, *,
        backward: bool = False, nm_running: Optional[float] = None,
        impl: Any = None) -> Tuple[Any, Optional[float]]:
    """The analog product of a batch: ``y = f(W x)`` per row (forward; ``weights`` is (m, n) and
    ``x`` (B, n)), or ``z = f(Wᵀ d)`` (backward; pass the transposed weights). Returns the outputs
    (B, m) and the new AverageAbsMax running value.

    ``impl`` supplies ``analog_mv`` with this module's signature (default: this module); the tile
    passes ``refsim_fast.io`` for the fast backend.
    """
    impl = impl or _THIS
    batch, m = x.shape[0], weights.shape[0]
    if io.is_perfect or io.mv_type == AnalogMVType.IDEAL:
        return matmul(x, xp.matrix_transpose(weights)) * io.out_scale, nm_running
    nm_type = io.noise_management
    bm_type = BoundManagementType.NONE if backward else io.bound_management
    managed = nm_type != NoiseManagementType.NONE
    bounded = bm_type != BoundManagementType.NONE
    alpha, nm_running = noise_management(xp, x, io, nm_type, nm_running)
    y = None  # the outputs: the first pass's when it computes every row, else zeros
    if managed and (backward or io.inp_noise <= 0):
        active = alpha > 0  # the other rows are exactly zero, and draw nothing
    else:
        active = xp.ones((batch,), dtype=xp.bool, device=rng.device_of(x))
    R = real(x.dtype)
    step_in = resolution_step(io.inp_res, io.inp_bound, x.dtype)
    bm_res_limit = float(R(io.max_bm_res) / R(step_in)) if step_in > 0 else None
    out_scale = float(R(io.out_scale))
    red, pass_index = 1.0, 0
    while bool(xp.any(active)):
        rows = xp.nonzero(active)[0]
        every = rows.shape[0] == batch  # all rows: no gather / scatter needed
        a = alpha if every else xp.take(alpha, rows, axis=0)
        scale, rescale = input_output_scales(xp, a, managed, red if bounded else 1.0,
                                             out_scale, backward)
        out, ok = impl.analog_mv(xp, x if every else xp.take(x, rows, axis=0), scale,
                                 weights, io, periphery, draws, pass_index, rows)
        out *= xp.reshape(rescale, (-1, 1))  # (out is this call's own array)
        if every:
            y = out
        else:
            if y is None:
                y = xp.zeros((batch, m), dtype=x.dtype, device=rng.device_of(x))
            y = replace_rows(xp, y, rows, out)
        step = next_reduction(io, bm_type, managed, pass_index, red, bm_res_limit) \
            if bounded else None
        if step is None:
            break
        red, worst_case = step
        if worst_case:  # the second and last pass: the worst-case (AbsMaxNPSum) scale
            alpha, _ = noise_management(xp, x, io, NoiseManagementType.ABS_MAX_NP_SUM)
        # the rows whose outputs left the bound go again (all rows computed: ok's own order)
        active = xp.logical_not(ok) if every else \
            scatter_rows(xp, xp.zeros_like(active), active, xp.logical_not(ok))
        pass_index += 1
    if y is None:  # no active row: every output is 0
        y = xp.zeros((batch, m), dtype=x.dtype, device=rng.device_of(x))
    return y, nm_running


def next_reduction(io: IOParameters, bm_type: BoundManagementType, managed: bool,
                   pass_index: int, red: float,
                   bm_res_limit: Optional[float]) -> Optional[Tuple[float, bool]]:
    """Bound management after pass ``pass_index`` with reduction ``red`` (spec/io.md §S7, step
    4): None to stop, else the next pass's reduction and whether α is first recomputed by the
    AbsMaxNPSum rule. ``bm_res_limit`` is max_bm_res/step_in in the call's dtype, None without
    input quantization."""
    if bm_type == BoundManagementType.ITERATIVE_WORST_CASE:
        if pass_index == 1:
            return None
        if managed and io.noise_management != NoiseManagementType.ABS_MAX_NP_SUM:
            return red, True
        return 2.0, False  # already the worst-case scale, or no scale at all: halve the inputs
    if int(red) > io.max_bm_factor or (bm_res_limit is not None and red > bm_res_limit):
        return None
    return 2.0 * red, False


def driver(impl: Any) -> Callable[..., Tuple[Any, Optional[float]]]:
    """The driver for the passes of ``impl`` (a module or object with :func:`analog_mv`'s
    signature, or None): its own ``mvm`` when it has one (refsim_fast.io's compiled twin of
    :func:`mvm`, same signature and numbers), else :func:`mvm` with ``impl`` for the passes."""
    own = getattr(impl, "mvm", None)
    return own if own is not None else functools.partial(mvm, impl=impl)


def input_output_scales(xp: Any, alpha: Any, managed: bool, reduction: float, out_scale: float,
                        backward: bool) -> Tuple[Any, Any]:
    """Per row, the input scale ``s`` of a pass and the factor that rescales its outputs
    (spec/io.md §S7), in the dtype of ``alpha`` and aihwkit's order: ``s = (1/α)/red`` (a row with
    α = 0, or without noise management, has ``s = 1/red``), the outputs are multiplied by
    ``out_scale/s`` in the forward pass and by ``out_scale·α`` in the backward pass (which has
    ``red = 1``)."""
    one = xp.ones_like(alpha)
    scale = xp.where(alpha > 0, one / xp.where(alpha > 0, alpha, one), one) if managed else one
    if reduction != 1.0:
        scale = scale / reduction
    if backward and managed:
        return scale, out_scale * xp.where(alpha > 0, alpha, one)
    return scale, out_scale / scale


def replace_rows(xp: Any, target: Any, rows: Any, values: Any) -> Any:
    """``target`` (an array the caller owns) with its rows ``rows`` (distinct, any order)
    replaced by the rows of ``values``: in place for numpy, torch and cupy arrays (an indexed
    assignment, O(len(rows)) rows), else by :func:`scatter_rows` (the array API has no
    in-place scatter)."""
    if array_api_compat.is_numpy_namespace(xp) or array_api_compat.is_torch_namespace(xp) or \
            array_api_compat.is_cupy_namespace(xp):
        target[rows] = values
        return target
    order = xp.argsort(rows)
    ordered = xp.take(rows, order, axis=0)
    index = xp.arange(target.shape[0], dtype=ordered.dtype, device=rng.device_of(target))
    found = xp.searchsorted(ordered, index)
    mask = xp.take(ordered, xp.clip(found, max=max(ordered.shape[0] - 1, 0)), axis=0) == index \
        if ordered.shape[0] else xp.zeros(index.shape, dtype=xp.bool, device=rng.device_of(target))
    return scatter_rows(xp, target, mask, xp.take(values, order, axis=0))


def scatter_rows(xp: Any, target: Any, mask: Any, values: Any) -> Any:
    """``target`` with the rows where ``mask`` is set replaced, in order, by the rows of
    ``values`` (the array API has no in-place scatter)."""
    position = xp.cumulative_sum(xp.astype(mask, xp.int64)) - 1
    gathered = xp.take(values, xp.where(mask, position, xp.zeros_like(position)), axis=0) \
        if values.shape[0] else xp.zeros_like(target)
    return xp.where(xp.reshape(mask, (-1,) + (1,) * (target.ndim - 1)), gathered, target)


import sys as _sys  # noqa: E402

_THIS = _sys.modules[__name__]

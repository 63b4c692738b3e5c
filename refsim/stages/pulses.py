"""Pulse trains of the pulsed update: A, B, BL and the signed coincidence counts of one update
cycle (spec/update.md, "Stage semantics", §U1-§U5).

One batch row is one update cycle. For a cycle with input row ``x`` (n,), error row ``d`` (m,),
learning rate ``lr`` and device granularity ``g`` this stage returns the signed pulse counts
``counts`` (m, n): ``counts[i, j] > 0`` means that many *up* pulses on device (i, j), ``< 0`` that
many *down* pulses, so that ``E[counts]·g ≈ −lr·d_i·x_j`` (W ← W − lr·d xᵀ). Applying the pulses to
the devices is the device stage's job (refsim/stages/devices.py).

Random numbers: each cycle is one call (the tile's counter ``update``) of the streams
``update.x_bits``, ``update.d_bits`` (number ``j·BL + k`` for slot k of input j) and
``update.x_sto_round``, ``update.d_sto_round`` (number j).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Tuple

import numpy as np

from refsim import rng
from refsim.configs import PulseType, UpdateParameters
from refsim.precision import dtype_name, real

#: Pulse types handled by this stage (None and NoneWithDevice are floating-point updates).
PULSED = (
    PulseType.STOCHASTIC_COMPRESSED,
    PulseType.STOCHASTIC,
    PulseType.MEAN_COUNT,
    PulseType.DETERMINISTIC_IMPLICIT,
)


#: Stream prefixes of pulse trains: the gradient update and the compounds' internal writes.
PREFIXES = ("update", "transfer")

#: The longest pulse train of a cycle (spec/pulses.md §U2): longer ones raise a ValueError
#: instead of allocating trains without bound.
MAX_BL = 1 << 16


@dataclasses.dataclass(frozen=True)
class PulsePlan:
    """The pulse-train parameters of one cycle (spec/update.md §U1-§U2): probabilities
    ``p_x = B·abs(x)`` and ``p_d = A·abs(d)``, train length ``bl`` (0: no pulses)."""

    a: float
    b: float
    bl: int


def resolution(res: float, dtype: Any = None) -> float:
    """Probability quantization step: ``res`` in (0, 1], ``1/res`` for ``res > 1``, 0 (off) for
    ``res <= 0``, in ``dtype`` (spec/pulses.md §U3; aihwkit drops every update for ``res > 1``)."""
    R = real(dtype)
    r = R(res)
    if r <= 0:
        return 0.0
    return float(R(1) / r if r > 1 else r)


def pulse_plan(lr: float, x_max: float, d_max: float, granularity: float,
               up: UpdateParameters, dtype: Any = None) -> PulsePlan:
    """A, B and BL of one cycle (spec/pulses.md §U2), computed in the tile's ``dtype`` (default
    float64) in aihwkit's order (spec/agreement.md rule 7).

    ``lr`` is the pulse-count learning rate (its sign is handled by :func:`coincidences`),
    ``x_max``/``d_max`` the abs-max of the cycle's rows, ``granularity`` the device's weight
    granularity ``g > 0``. The one-cycle case of :func:`pulse_plans`.
    """
    a, b, bl = pulse_plans(lr, np.array([x_max]), np.array([d_max]), granularity, up, dtype)
    return PulsePlan(float(a[0]), float(b[0]), int(bl[0]))


def pulse_plans(lr: Any, x_max: Any, d_max: Any, granularity: float, up: UpdateParameters,
                dtype: Any = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A, B (numpy, in ``dtype``) and BL (int32) of a batch of cycles with the abs-maxima
    ``x_max``, ``d_max`` (one per cycle), every cycle as :func:`pulse_plan` computes it: the same
    operations element-wise, so the same numbers (spec/pulses.md §U2). ``lr`` is one learning
    rate for every cycle or one per cycle. A cycle whose plan is undefined (§U2.4) raises the
    ValueError of the first such cycle."""
    R = real(dtype)
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        x_max, d_max = np.asarray(x_max, dtype=R), np.asarray(d_max, dtype=R)
        eta = np.abs(np.asarray(lr, dtype=R))
        if eta.ndim and eta.shape != x_max.shape:
            raise ValueError(f"lr: expected one learning rate or one per cycle "
                             f"({x_max.shape[0]}), got shape {eta.shape}")
        return _plans(R, np.broadcast_to(eta, x_max.shape), x_max, d_max, R(granularity), up)


def _plans(R: type, eta: np.ndarray, x_max: np.ndarray, d_max: np.ndarray, g: Any,
           up: UpdateParameters) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The plans of :func:`pulse_plans` for the per-cycle learning rates ``eta`` (>= 0)."""
    count = x_max.shape[0]
    bl_max = up.desired_bl
    still = eta == 0  # a cycle with lr 0 sends nothing: A = B = 0, BL 0
    ratio = eta / g
    bad = ~still & ~np.isfinite(ratio)
    if bad.any():  # §U2.4
        r = int(np.argmax(bad))
        raise ValueError(f"lr: abs(lr)/granularity = {float(eta[r])!r}/{float(g)!r} overflows "
                         f"{dtype_name(R)}; the pulse trains are undefined (spec/pulses.md §U2.4)")
    blm = up.update_bl_management
    managed = up.update_management or blm  # BL management implies update management
    full = np.full(count, bool(up.fixed_bl or blm)) | ~(g * R(bl_max) < eta)
    bl0 = np.where(full | still, bl_max, np.maximum(np.ceil(np.where(full, 0, ratio)), 1))
    if (bl0 > MAX_BL).any():
        r = int(np.argmax(bl0 > MAX_BL))
        raise ValueError(f"update: a pulse train of {int(bl0[r])} slots exceeds MAX_BL = {MAX_BL} "
                         f"(desired_bl = {bl_max}, abs(lr)/granularity = {float(ratio[r])!r})")
    bl0 = bl0.astype(np.int64)
    a0 = np.where(full, np.sqrt(eta / (g * R(bl_max))), R(1)).astype(R)

    def finish(a: Any, b: Any, bl: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        zero = np.zeros((), dtype=R)
        return (np.where(still, zero, a).astype(R), np.where(still, zero, b).astype(R),
                np.where(still, 0, bl).astype(np.int32))

    if not managed:
        return finish(a0, a0, bl0)
    # update management, per cycle; cycles without x or d send nothing (bl 0, A = B = a0)
    live = (x_max > 0) & (d_max > 0) & ~still
    d_v = R(up.um_grad_scale) * d_max
    k = eta * x_max * d_v / g
    bad_k = live & ~np.isfinite(k)
    bl = np.where(live, bl0, 0)
    a = a0
    if blm:
        bl = np.where(live & ~bad_k, np.minimum(np.ceil(np.where(bad_k, 0, k)), bl_max), 0)
        bl = bl.astype(np.int64)
        a = np.where(bl > 0, np.sqrt(eta / (g * bl.astype(R))), a).astype(R)
    d_v = np.where(k > R(bl_max), d_v * (R(bl_max) / k), d_v)
    a_m, b_m = a * np.sqrt(x_max / d_v), a * np.sqrt(d_v / x_max)
    sending = bl > 0
    bad_ab = sending & ~(np.isfinite(a_m) & np.isfinite(b_m) & (a_m > 0) & (b_m > 0))
    bad = bad_k | bad_ab
    if bad.any():
        r = int(np.argmax(bad))
        if bad_k[r]:
            raise ValueError(f"x, d, lr: abs(lr)·max|x|·um_grad_scale·max|d|/g = "
                             f"{float(eta[r])!r}·{float(x_max[r])!r}·{up.um_grad_scale!r}·"
                             f"{float(d_max[r])!r}/{float(g)!r} overflows {dtype_name(R)} "
                             f"(spec/pulses.md §U2.4)")
        raise ValueError(f"x, d: max|x| = {float(x_max[r])!r} and max|d| = {float(d_max[r])!r} "
                         f"are too far apart: the update-management scales A = "
                         f"{float(a_m[r])!r}, B = {float(b_m[r])!r} leave {dtype_name(R)} "
                         f"(spec/pulses.md §U2.4); rescale x or d")
    return finish(np.where(sending, a_m, a0), np.where(sending, b_m, a0), bl)


def probabilities(xp: Any, values: Any, scale: float, step: float, uniforms: Any = None) -> Any:
    """Pulse probabilities ``scale·abs(values)``, quantized to ``step`` (stochastically with
    ``uniforms``), in the dtype of ``values`` (spec/pulses.md §U3). Values above 1 act as 1."""
    p = scale * xp.abs(values)
    if step > 0.0:
        scaled = p / step
        if uniforms is not None:
            scaled = scaled + (xp.astype(uniforms, p.dtype) - 0.5)
        p = xp.round(scaled) * step
    return p


def _signs(xp: Any, values: Any) -> Any:
    """+1 for values >= 0, −1 below (as an int32 array)."""
    return xp.where(values < 0, xp.asarray(-1, dtype=xp.int32), xp.asarray(1, dtype=xp.int32))


def coincidences(xp: Any, x: Any, d: Any, lr: float, granularity: float, up: UpdateParameters,
                 seed: int, call: int, prefix: str = "update") -> Tuple[Any, PulsePlan]:
    """Signed pulse counts (m, n) int32 of one update cycle and its plan (spec/update.md §U4).

    ``x`` (n,) and ``d`` (m,) are one batch row of the tile's input and error; ``call`` is the
    cycle's number (the tile's ``update`` counter). ``prefix`` names the streams: ``update`` for
    the gradient update, ``transfer`` for the compounds' internal writes (spec/compounds.md).
    """
    lo, block, plan = coincidence_rows(xp, x, d, lr, granularity, up, seed, call, prefix)
    m, n = d.shape[0], x.shape[0]
    hi = lo + block.shape[0]
    if (lo, hi) == (0, m):
        return block, plan
    device = rng.device_of(x)
    return xp.concat([xp.zeros((lo, n), dtype=xp.int32, device=device), block,
                      xp.zeros((m - hi, n), dtype=xp.int32, device=device)], axis=0), plan


def coincidence_rows(xp: Any, x: Any, d: Any, lr: float, granularity: float,
                     up: UpdateParameters, seed: int, call: int,
                     prefix: str = "update") -> Tuple[int, Any, PulsePlan]:
    """:func:`coincidences` as ``(lo, block, plan)``: the counts of rows ``lo .. lo +
    len(block) − 1`` (the rows between the first and the last one that can pulse), every other
    row's counts being 0 (an empty block when none can pulse)."""
    if prefix not in PREFIXES:
        raise ValueError(f"prefix: expected one of {PREFIXES}, got {prefix!r}")
    if up.pulse_type not in PULSED:
        raise ValueError(f"update.pulse_type: {up.pulse_type.value!r} is not a pulsed type")
    n, m = x.shape[0], d.shape[0]
    device = rng.device_of(x)
    x_max = float(xp.max(xp.abs(x))) if n else 0.0
    d_max = float(xp.max(xp.abs(d))) if m else 0.0
    plan = pulse_plan(lr, x_max, d_max, granularity, up, x.dtype)
    if plan.bl == 0:
        return 0, xp.zeros((0, n), dtype=xp.int32, device=device), plan
    implicit = up.pulse_type == PulseType.DETERMINISTIC_IMPLICIT
    steps = (resolution_implicit(up.x_res_implicit, x.dtype),
             resolution_implicit(up.d_res_implicit, x.dtype)) if implicit else \
        (resolution(up.res, x.dtype),) * 2

    def quantized(values: Any, scale: float, step: float, name: str) -> Any:
        u = rng.uniform(seed, f"{prefix}.{name}_sto_round", call, values.shape[0], xp=xp,
                        device=device) if up.sto_round and step > 0.0 else None
        return probabilities(xp, values, scale, step, u)

    p_x = quantized(x, plan.b, steps[0], "x")
    p_d = quantized(d, plan.a, steps[1], "d")
    # only the rows lo..hi−1 whose probability is positive can pulse (a compound's transfer
    # writes one row): the counts are formed for them, each row with its own random numbers
    live = xp.nonzero(p_d > 0)[0]
    if live.shape[0] == 0:
        return 0, xp.zeros((0, n), dtype=xp.int32, device=device), plan
    lo, hi = int(live[0]), int(live[-1]) + 1
    d, p_d = d[lo:hi], p_d[lo:hi]
    # direction: s = sign(x)·sign(d)·sign(lr) > 0 is a down pulse, so counts carry −s
    sign_d = _signs(xp, d) if lr < 0 else -_signs(xp, d)
    sign_x = _signs(xp, x)
    bl = plan.bl
    if up.pulse_type in (PulseType.STOCHASTIC_COMPRESSED, PulseType.STOCHASTIC):
        # the signs ride on the bits: −s_ij·n_ij = Σ_k (−sign(d_i)·d_bits[i, k])·(sign(x_j)·
        # x_bits[j, k]), exact in float64 (at most BL terms of one sign), without (m, n) sign
        # matrices
        x_bits = _bits(xp, p_x, bl, seed, f"{prefix}.x_bits", call, device) * \
            xp.astype(xp.reshape(sign_x, (-1, 1)), xp.float64)
        d_bits = _bits(xp, p_d, bl, seed, f"{prefix}.d_bits", call, device, first=lo) * \
            xp.astype(xp.reshape(sign_d, (-1, 1)), xp.float64)
        counts = xp.astype(d_bits @ xp.matrix_transpose(x_bits), xp.int32)
    else:
        a_x, a_d = count_factors(xp, p_x, p_d, bl, implicit)
        n_ij = xp.astype(xp.round(xp.reshape(a_d, (-1, 1)) * xp.reshape(a_x, (1, -1))), xp.int32)
        counts = xp.reshape(sign_d, (-1, 1)) * xp.reshape(sign_x, (1, -1)) * n_ij
    return lo, counts, plan


def resolution_implicit(res: float, dtype: Any = None) -> float:
    """Bin width of 'DeterministicImplicit''s x_res_implicit / d_res_implicit quantization:
    the value itself, in ``dtype``, never a number of steps; 0 (off) for ``res <= 0``
    (spec/pulses.md §U4)."""
    r = real(dtype)(res)
    return float(r) if r > 0 else 0.0


def count_factors(xp: Any, p_x: Any, p_d: Any, bl: Any, implicit: bool) -> Tuple[Any, Any]:
    """The per-input and per-error factors ``a_x``, ``a_d`` of the deterministic pulse types,
    whose count is ``rint(a_d,i·a_x,j)`` in the dtype of the probabilities (spec/pulses.md §U4):
    MeanCount ``a_x = clip(rint(BL·p_x), 0, BL)``, ``a_d = clip(rint(BL·p_d), 0, BL)/BL``;
    DeterministicImplicit ``a_x = clip(p_x, 0, 1)``, ``a_d = BL·clip(p_d, 0, 1)``. ``bl`` is
    the train length: a number, or an array that broadcasts against the rows (one per cycle)."""
    if implicit:
        return xp.clip(p_x, min=0.0, max=1.0), bl * xp.clip(p_d, min=0.0, max=1.0)
    top = float(bl) if isinstance(bl, int) else bl
    n_x = xp.clip(xp.round(bl * p_x), min=0.0, max=top)
    n_d = xp.clip(xp.round(bl * p_d), min=0.0, max=top)
    return n_x, n_d / bl


def _bits(xp: Any, p: Any, bl: int, seed: int, stream: str, call: int, device: Any,
          first: int = 0) -> Any:
    """(len(p), BL) float64 0/1: slot k of value j (value ``first + j`` of the cycle) is set
    when ``p_j > u((first + j)·BL + k)``."""
    u = rng.uniform(seed, stream, call, (p.shape[0], bl), start=first * bl, xp=xp,
                    dtype=p.dtype, device=device)
    return xp.astype(xp.reshape(p, (-1, 1)) > u, xp.float64)



def stream_names() -> Tuple[str, ...]:
    """Every stream name this stage draws from."""
    return tuple(f"{p}{q}" for p in PREFIXES
                 for q in ("", ".x_bits", ".d_bits", ".x_sto_round", ".d_sto_round"))


def c2c_stream(prefix: str) -> str:
    """The per-pulse device noise stream of pulses sent under ``prefix``."""
    return "device.c2c" if prefix == "update" else f"{prefix}.c2c"

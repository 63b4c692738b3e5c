"""Pulsed device models: device-to-device parameters, per-pulse rules and the other device
operations (spec/devices.md, "Stage semantics", §V1-§V9; write noise §V8, pulse counts §V9).

Pure array-API functions: :func:`draw_device` draws the per-element parameters once (a frozen
:class:`DeviceParams`), :func:`apply_pulses` applies one update cycle's signed pulse counts
(refsim/stages/pulses.py) to the weights, and :func:`clip_weights`, :func:`decay_weights`,
:func:`diffuse_weights`, :func:`reset_weights` are the other operations. None of them mutates its
inputs.

Random numbers (spec/devices.md §V6): every device-to-device quantity is its own stream
``device.<quantity>``, call ``device_index``, number ``i·n + j``, under the construction seed;
per-pulse noise is stream ``device.c2c`` (16-bit normals), call = the update cycle's number,
number ``(device_index·m + i)·n·BL + Σ_{j' < j} abs(c_ij') + t`` for pulse t of element (i, j)
(consecutive numbers for the pulses of a row, in element order).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional, Tuple

import array_api_compat

from refsim import rng
from refsim.configs import ConfigError, PulsedDevice
from refsim.stages import io as io_stage

#: Device classes whose stored weight is ``w = u − ref`` (pulses act on the conductance u).
REFERENCE_DEVICES = ("SoftBoundsReferenceDevice", "PowStepReferenceDevice")

#: Models whose pulses do nothing at all (not even the clamp) on a device with b⁺ − b⁻ <= 0.
FROZEN_WITHOUT_RANGE = ("ExpStepDevice", "PowStepDevice", "PowStepReferenceDevice")

#: Every pulsed device class implemented here.
IMPLEMENTED = ("ConstantStepDevice", "LinearStepDevice", "SoftBoundsDevice",
               "SoftBoundsPmaxDevice", "SoftBoundsReferenceDevice", "ExpStepDevice",
               "PowStepDevice", "PowStepReferenceDevice", "PiecewiseStepDevice")


@dataclasses.dataclass(frozen=True)
class DeviceParams:
    """The per-element (m, n) parameters of a pulsed device, drawn once (spec/devices.md §V1):
    bounds ``b_min``/``b_max``, step sizes ``dw_up``/``dw_down`` (Δ⁺, Δ⁻), reset bias
    ``reset_bias`` (β), decay factor ``kappa`` (κ, 1 = no decay), diffusion rate ``rho`` (ρ), and
    the model-specific arrays in ``extra`` (§V2)."""

    b_min: Any
    b_max: Any
    dw_up: Any
    dw_down: Any
    reset_bias: Any
    kappa: Any
    rho: Any
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)


def _name(cfg: Any) -> str:
    return type(cfg).__name__


def is_pulsed(cfg: Any) -> bool:
    """True for the pulsed device models (subclasses of PulsedDevice)."""
    return isinstance(cfg, PulsedDevice)


def effective(cfg: PulsedDevice) -> Dict[str, float]:
    """The mean ``w_min``, ``w_max``, ``dw_min`` and ``up_down`` a device uses: its own fields,
    or for SoftBoundsPmaxDevice the derived values (spec/devices.md, SoftBoundsPmaxDevice):
    B = (range_max − range_min)/(1 − exp(−p_max·alpha)), w_min = range_min, w_max = range_min + B,
    dw_min = B·alpha, up_down = 1 + 2·range_min/B."""
    if _name(cfg) == "SoftBoundsPmaxDevice":
        big = (cfg.range_max - cfg.range_min) / (1.0 - math.exp(-cfg.p_max * cfg.alpha))
        return {"w_min": cfg.range_min, "w_max": cfg.range_min + big, "dw_min": big * cfg.alpha,
                "up_down": 1.0 + 2.0 * cfg.range_min / big}
    return {"w_min": cfg.w_min, "w_max": cfg.w_max, "dw_min": cfg.dw_min, "up_down": cfg.up_down}


def check_supported(cfg: Any, prefix: str = "device.") -> None:
    """Raise ConfigError (naming the field) for what the device stage does not implement, and
    for a device whose mean bounds do not contain 0 (spec/devices.md §V7)."""
    if not is_pulsed(cfg):
        return
    name = _name(cfg)
    if name not in IMPLEMENTED:
        raise ConfigError(f"{prefix[:-1]}: the device model {name} is not implemented")
    if (getattr(cfg, "reverse_up", False) or getattr(cfg, "reverse_down", False)) and \
            not cfg.mult_noise:
        raise ConfigError(f"{prefix}mult_noise: reverse_up / reverse_down require "
                          f"mult_noise = True")
    eff = effective(cfg)
    if not eff["w_min"] <= 0.0 <= eff["w_max"]:
        raise ConfigError(f"{prefix}w_max: the interval [w_min, w_max] = [{eff['w_min']!r}, "
                          f"{eff['w_max']!r}] must contain 0")
    g = granularity(cfg)
    if not (g > 0.0 and math.isfinite(g)):  # spec/devices.md §V5
        fields = {"PowStepDevice": "dw_min, pow_gamma", "PowStepReferenceDevice":
                  "dw_min, pow_gamma", "PiecewiseStepDevice": "dw_min, piecewise_up"}
        raise ConfigError(f"{prefix}dw_min: the weight granularity is {g!r}, not a positive "
                          f"finite number (from {fields.get(name, 'dw_min')}); pulse trains "
                          f"need g > 0")


def granularity(cfg: Any) -> float:
    """The weight granularity g of a device (spec/devices.md §V5, aihwkit's
    ``calcWeightGranularity``): dw_min for ConstantStep, LinearStep, SoftBounds(Pmax) and
    SoftBoundsReference; dw_min·0.5^pow_gamma for PowStep(Reference); dw_min·u_{⌊(K+1)/2⌋}
    for PiecewiseStep; the mean device's noise-free down step at w = 0 for ExpStep (dw_min if that
    is not positive)."""
    if not is_pulsed(cfg):
        raise TypeError(f"device: {_name(cfg)} is not a pulsed device (no granularity)")
    eff = effective(cfg)
    dw_min = eff["dw_min"]
    name = _name(cfg)
    if name in ("PowStepDevice", "PowStepReferenceDevice"):
        return dw_min * 0.5 ** cfg.pow_gamma
    if name == "PiecewiseStepDevice":
        return dw_min * cfg.piecewise_up[len(cfg.piecewise_up) // 2]
    if name == "ExpStepDevice":
        down = (1.0 - max(eff["up_down"], 0.0)) * dw_min * \
            max(1.0 - cfg.A_down * math.exp(-cfg.gamma_down * cfg.b), 0.0)
        return down if down > 0.0 else dw_min
    return dw_min


# -- device-to-device draws -----------------------------------------------------------------------

#: The streams of the device-to-device draws (spec/devices.md §V6).
DTOD_STREAMS = ("device.w_max", "device.w_min", "device.dw_min", "device.up_down",
                "device.corrupt", "device.corrupt_value", "device.diffusion", "device.reset",
                "device.lifetime", "device.gamma_up", "device.gamma_down", "device.slope_up",
                "device.slope_down", "device.reference", "device.pow_gamma",
                "device.pow_up_down")
#: The streams of the per-call noise and their call counters (the tile's).
CALL_STREAMS = ("device.c2c", "device.diffusion_noise", "device.reset_noise",
                "device.reset_prob", "device.write_noise", "device.write_noise_all")


def stream_names() -> Tuple[str, ...]:
    """Every stream name this stage draws from."""
    return DTOD_STREAMS + CALL_STREAMS


def draw_device(xp: Any, cfg: PulsedDevice, shape: Tuple[int, int], seed: int,
                device_index: int = 0, dtype: Any = None, device: Any = None,
                draws: Any = rng) -> DeviceParams:
    """Draw the per-element parameters of a pulsed device (spec/devices.md §V1-§V2).

    ``shape`` is the tile's (out_size, in_size) = (m, n); ``seed`` the construction seed;
    ``device_index`` the call number of every ``device.<quantity>`` stream (0 for a single
    device). Each standard normal / uniform is number ``i·n + j`` of its stream, and a stream is
    only evaluated when its quantity varies (skipping a stream shifts no other number).
    ``draws`` provides ``normal``/``uniform`` with refsim.rng's signature (the fast backend
    passes its compiled streams: the same numbers).
    """
    dtype = xp.float64 if dtype is None else dtype
    n = shape[1]
    check_supported(cfg)
    eff = effective(cfg)

    # computed in the tile's dtype, as aihwkit's populate does (spec/agreement.md rule 7); the means
    # of `effective` are the Python floats aihwkit's Python layer hands its C++ core
    def full(value: float) -> Any:
        return xp.full(shape, float(value), dtype=dtype, device=device)

    def normal(stream: str) -> Any:
        return draws.normal(seed, stream, device_index, shape, xp=xp, dtype=dtype, device=device)

    def uniform(stream: str) -> Any:
        return draws.uniform(seed, stream, device_index, shape, xp=xp, dtype=dtype,
                             device=device)

    def varied(mean: float, spread: float, stream: str) -> Any:
        """mean·(1 + spread·ξ), drawn only when both are non-zero."""
        if spread == 0.0 or mean == 0.0:
            return full(mean)
        return mean * (1.0 + spread * normal(stream))

    b_max = varied(eff["w_max"], cfg.w_max_dtod, "device.w_max")
    b_min = varied(eff["w_min"], cfg.w_min_dtod, "device.w_min")
    if cfg.dw_min_dtod == 0.0:
        gain = full(1.0)
    elif cfg.dw_min_dtod_log_normal:
        gain = xp.exp(cfg.dw_min_dtod * normal("device.dw_min"))
    else:
        gain = 1.0 + cfg.dw_min_dtod * normal("device.dw_min")
    r = cfg.up_down_dtod * normal("device.up_down") if cfg.up_down_dtod > 0 else full(0.0)
    up_down = eff["up_down"]
    dw_up = (min(up_down, 0.0) + gain + r) * eff["dw_min"]
    dw_down = (-max(up_down, 0.0) + gain - r) * eff["dw_min"]
    if cfg.enforce_consistency:
        dw_up, dw_down = xp.abs(dw_up), xp.abs(dw_down)
        swap = b_min > b_max
        b_min, b_max = xp.where(swap, b_max, b_min), xp.where(swap, b_min, b_max)
        b_max, b_min = xp.abs(b_max), -xp.abs(b_min)
    else:
        stuck = b_min > b_max
        mid = (b_min + b_max) / 2.0
        b_min, b_max = xp.where(stuck, mid, b_min), xp.where(stuck, mid, b_max)
    if cfg.corrupt_devices_prob > 0.0:
        corrupt = cfg.corrupt_devices_prob > uniform("device.corrupt")
        big_r = cfg.corrupt_devices_range
        lo = xp.clip(xp.minimum(b_min, b_max), min=-big_r)
        hi = xp.clip(xp.maximum(b_min, b_max), max=big_r)
        value = lo + (hi - lo) * uniform("device.corrupt_value")
        b_min, b_max = xp.where(corrupt, value, b_min), xp.where(corrupt, value, b_max)
        zero = full(0.0)
        dw_up, dw_down = xp.where(corrupt, zero, dw_up), xp.where(corrupt, zero, dw_down)
    if cfg.perfect_bias:
        last = xp.reshape(xp.arange(n, device=device) == n - 1, (1, n))
        last = xp.broadcast_to(last, shape)
        dw = full(eff["dw_min"])
        dw_up, dw_down = xp.where(last, dw, dw_up), xp.where(last, dw, dw_down)
        b_min = xp.where(last, full(100.0 * eff["w_min"]), b_min)
        b_max = xp.where(last, full(100.0 * eff["w_max"]), b_max)
    if cfg.diffusion > 0.0 and cfg.diffusion_dtod > 0.0:
        rho = xp.abs(cfg.diffusion * (1.0 + cfg.diffusion_dtod * normal("device.diffusion")))
    else:
        rho = full(abs(cfg.diffusion))
    if cfg.reset_dtod > 0.0:
        beta = cfg.reset + cfg.reset_dtod * normal("device.reset")
    else:
        beta = full(cfg.reset)
    if cfg.lifetime > 0.0:
        t = varied(cfg.lifetime, cfg.lifetime_dtod, "device.lifetime")
        safe = xp.where(t > 1.0, t, full(2.0))
        kappa = xp.where(t > 1.0, 1.0 - 1.0 / safe, full(0.0))
    else:
        kappa = full(1.0)

    extra: Dict[str, Any] = {}
    name = _name(cfg)
    if name in ("LinearStepDevice", "SoftBoundsDevice", "SoftBoundsPmaxDevice"):
        if name == "LinearStepDevice":
            g_up = cfg.gamma_up + (cfg.gamma_up_dtod * normal("device.gamma_up")
                                   if cfg.gamma_up_dtod > 0 else full(0.0))
            g_down = cfg.gamma_down + (cfg.gamma_down_dtod * normal("device.gamma_down")
                                       if cfg.gamma_down_dtod > 0 else full(0.0))
            if not cfg.allow_increasing:
                g_up, g_down = xp.abs(g_up), xp.abs(g_down)
            mean_ref = cfg.mean_bound_reference
        else:
            g_up = g_down = full(1.0)
            mean_ref = False
        top = full(eff["w_max"]) if mean_ref else b_max
        bottom = full(eff["w_min"]) if mean_ref else b_min
        ref_up = bottom - cfg.reverse_offset if cfg.reverse_up else top
        ref_down = top + cfg.reverse_offset if cfg.reverse_down else bottom
        extra["slope_up"] = _slope(xp, g_up, dw_up, ref_up)
        extra["slope_down"] = _slope(xp, g_down, dw_down, ref_down)
    elif name == "SoftBoundsReferenceDevice":
        # the bounds pass through the slopes Δ/b (aihwkit's order, also without a slope spread)
        inside = (b_max > 0.0) & (b_min < 0.0)
        b_min = _through_slope(xp, -dw_down, b_min, inside, cfg.slope_down_dtod,
                               lambda: normal("device.slope_down"))
        b_max = _through_slope(xp, dw_up, b_max, inside, cfg.slope_up_dtod,
                               lambda: normal("device.slope_up"))
        ref = _reference(xp, cfg, normal, full)
        if cfg.subtract_symmetry_point:
            inside = (b_max > 0.0) & (b_min < 0.0)
            one = full(1.0)
            denom = dw_up / xp.where(inside, b_max, one) - dw_down / xp.where(inside, b_min, one)
            ok = inside & (denom != 0.0)
            sp = xp.where(ok, (dw_up - dw_down) / xp.where(ok, denom, one), full(0.0))
            ref, beta = ref + sp, beta + sp
        extra["reference"] = ref
    elif name in ("PowStepDevice", "PowStepReferenceDevice"):
        g = 1.0 + cfg.pow_gamma_dtod * normal("device.pow_gamma") if cfg.pow_gamma_dtod > 0 \
            else full(1.0)
        rr = cfg.pow_up_down_dtod * normal("device.pow_up_down") if cfg.pow_up_down_dtod > 0 \
            else full(0.0)
        gamma_up = (min(cfg.pow_up_down, 0.0) + g + rr) * cfg.pow_gamma
        gamma_down = (-max(cfg.pow_up_down, 0.0) + g - rr) * cfg.pow_gamma
        if cfg.enforce_consistency:
            gamma_up, gamma_down = xp.abs(gamma_up), xp.abs(gamma_down)
        extra["gamma_up"], extra["gamma_down"] = gamma_up, gamma_down
        if name == "PowStepReferenceDevice":
            ref = _reference(xp, cfg, normal, full)
            if cfg.subtract_symmetry_point:
                sp = _pow_symmetry_point(xp, cfg, b_min, b_max, dw_up, dw_down, gamma_up,
                                         gamma_down, full)
                ref, beta = ref + sp, beta + sp
            extra["reference"] = ref

    def cast(a: Any) -> Any:  # no copy when already in dtype (the stage never writes in place)
        return xp.astype(a, dtype, copy=False)

    return DeviceParams(b_min=cast(b_min), b_max=cast(b_max), dw_up=cast(dw_up),
                        dw_down=cast(dw_down), reset_bias=cast(beta), kappa=cast(kappa),
                        rho=cast(rho), extra={k: cast(v) for k, v in extra.items()})


def _through_slope(xp: Any, step: Any, bound: Any, inside: Any, spread: float,
                   draw: Any) -> Any:
    """A SoftBoundsReference bound after its slope spread (spec/devices.md §V2): with the slope
    s = step/bound, s ← s·abs(1 + spread·ξ) (ξ drawn only when spread > 0), bound ← step/s, where
    ``inside`` and the step is not 0; elsewhere the bound is kept."""
    ones = xp.ones_like(bound)
    use = inside & (step != 0.0)
    slope = step / xp.where(use, bound, ones)
    if spread > 0.0:
        slope = slope * xp.abs(1.0 + spread * draw())
    return xp.where(use, step / xp.where(use, slope, ones), bound)


def _slope(xp: Any, gamma: Any, step: Any, reference: Any) -> Any:
    """S = −γ·Δ/r, 0 where r = 0."""
    zero = reference == 0.0
    safe = xp.where(zero, xp.ones_like(reference), reference)
    return xp.where(zero, xp.zeros_like(reference), -gamma * step / safe)


def _reference(xp: Any, cfg: Any, normal: Any, full: Any) -> Any:
    if cfg.reference_std > 0.0:
        return cfg.reference_mean + cfg.reference_std * normal("device.reference")
    return full(cfg.reference_mean)


def _pow_symmetry_point(xp: Any, cfg: Any, b_min: Any, b_max: Any, su: Any, sd: Any, gu: Any,
                        gd: Any, full: Any) -> Any:
    """The numerical symmetry point of a PowStepReference device (spec/devices.md §V2): from
    sp = 0, n steps of sp ← sp − Δ⁻·((sp − b⁻)/R)^γ⁻ + Δ⁺·((b⁺ − sp)/R)^γ⁺ (float64), for devices
    with b⁺ > 0 > b⁻; 0 elsewhere."""
    inside = (b_max > 0.0) & (b_min < 0.0)
    one = full(1.0)
    span = xp.where(inside, b_max - b_min, one)
    if cfg.n_estimation_steps > 0:
        steps = full(float(cfg.n_estimation_steps))
    else:
        small = xp.minimum(xp.abs(sd), xp.abs(su))
        ratio = 10.0 * span / xp.where(small > 0.0, small, one)
        steps = xp.where(small > 0.0, xp.minimum(xp.round(ratio), full(10000.0)), full(10000.0))
    steps = xp.where(inside, steps, full(0.0))
    sp = full(0.0)
    total = int(xp.max(steps)) if math.prod(steps.shape) else 0
    for k in range(total):
        down = sd * xp.clip((sp - b_min) / span, min=0.0) ** gd
        up = su * xp.clip((b_max - sp) / span, min=0.0) ** gu
        sp = xp.where(steps > k, sp - down + up, sp)
    return sp


# -- per-pulse rules ------------------------------------------------------------------------------


def weight_bounds(params: DeviceParams) -> Tuple[Any, Any]:
    """The interval pulses keep the stored weight in: [b⁻, b⁺], shifted by −ref for the
    reference devices (pulses clamp u = w + ref to [b⁻, b⁺], §V3)."""
    ref = params.extra.get("reference")
    if ref is None:
        return params.b_min, params.b_max
    return params.b_min - ref, params.b_max - ref


def _step(xp: Any, cfg: Any, name: str, w: Any, params: DeviceParams, xi: Optional[Any],
          sigma: float) -> Tuple[Any, Any]:
    """The up and down candidates (w after one up pulse, w after one down pulse), before the
    clamp; ``xi`` is the pulse's noise (None when σ = 0)."""
    p = params
    noise = 1.0 if xi is None else 1.0 + sigma * xi
    if name == "ConstantStepDevice":
        return w + p.dw_up * noise, w - p.dw_down * noise
    if name in ("LinearStepDevice", "SoftBoundsDevice", "SoftBoundsPmaxDevice"):
        s_up, s_down = p.extra["slope_up"], p.extra["slope_down"]
        if cfg.mult_noise:
            return w + (s_up * w + p.dw_up) * noise, w - (s_down * w + p.dw_down) * noise
        return w + s_up * w + p.dw_up * noise, w - (s_down * w + p.dw_down * noise)
    if name == "SoftBoundsReferenceDevice":
        ones = xp.ones_like(w)
        f_up = xp.where(p.b_max > 0.0, 1.0 - w / xp.where(p.b_max > 0.0, p.b_max, ones), ones)
        f_down = xp.where(p.b_min < 0.0, 1.0 - w / xp.where(p.b_min < 0.0, p.b_min, ones), ones)
        if cfg.mult_noise:
            return w + p.dw_up * f_up * noise, w - p.dw_down * f_down * noise
        add = 0.0 if xi is None else sigma * xi
        return w + p.dw_up * (f_up + add), w - p.dw_down * (f_down + add)
    if name == "ExpStepDevice":
        span = p.b_max - p.b_min
        ok = span > 0.0
        z = 2.0 * w / xp.where(ok, span, xp.ones_like(span)) * cfg.a + cfg.b  # aihwkit's order
        y_up = xp.clip(1.0 - cfg.A_up * xp.exp(cfg.gamma_up * z), min=0.0)
        y_down = xp.clip(1.0 - cfg.A_down * xp.exp(-cfg.gamma_down * z), min=0.0)
        extended = xi is not None and (cfg.dw_min_std_add != 0.0 or cfg.dw_min_std_slope != 0.0)
        if extended:
            d_up, d_down = y_up * p.dw_up, -y_down * p.dw_down
            base = cfg.dw_min_std_add + cfg.dw_min_std_slope * xp.abs(w)
            up = w + d_up + sigma * (xp.abs(d_up) + base) * xi
            down = w + d_down + sigma * (xp.abs(d_down) + base) * xi
        else:
            up, down = w + y_up * noise * p.dw_up, w - y_down * noise * p.dw_down
        return xp.where(ok, up, w), xp.where(ok, down, w)
    if name in ("PowStepDevice", "PowStepReferenceDevice"):
        span = p.b_max - p.b_min
        ok = span != 0.0
        safe = xp.where(ok, span, xp.ones_like(span))
        f_up = _power(xp, xp.clip((p.b_max - w) / safe, min=0.0), p.extra["gamma_up"])
        f_down = _power(xp, xp.clip((w - p.b_min) / safe, min=0.0), p.extra["gamma_down"])
        up, down = w + p.dw_up * f_up * noise, w - p.dw_down * f_down * noise
        return xp.where(ok, up, w), xp.where(ok, down, w)
    if name == "PiecewiseStepDevice":
        return (w + p.dw_up * _piecewise(xp, cfg.piecewise_up, w, p) * noise,
                w - p.dw_down * _piecewise(xp, cfg.piecewise_down, w, p) * noise)
    raise NotImplementedError(f"device: the per-pulse rule of {name} is not implemented")


def _power(xp: Any, base: Any, exponent: Any) -> Any:
    """``base ** exponent`` computed in float64 and rounded once to the dtype of ``base``
    (numpy's float32 power is not correctly rounded; the compiled kernel does the same)."""
    wide = xp.astype(base, xp.float64) ** xp.astype(exponent, xp.float64)
    return wide if base.dtype == xp.float64 else xp.astype(wide, base.dtype)


def _piecewise(xp: Any, nodes: Any, w: Any, p: DeviceParams) -> Any:
    """Linear interpolation of the node factors at w (spec/devices.md, PiecewiseStepDevice)."""
    k_max = len(nodes) - 1
    if k_max == 0:
        return xp.full_like(w, float(nodes[0]))
    span = p.b_max - p.b_min
    ok = span > 0.0
    t = xp.clip((w - p.b_min) / xp.where(ok, span, xp.ones_like(span)) * k_max, min=0.0)
    k = xp.clip(xp.floor(t), max=float(k_max - 1))
    f = xp.clip(t - k, max=1.0)
    table = xp.asarray([float(v) for v in nodes], dtype=w.dtype, device=rng.device_of(w))
    ki = xp.astype(k, xp.int64)
    lo = xp.reshape(xp.take(table, xp.reshape(ki, (-1,)), axis=0), w.shape)
    hi = xp.reshape(xp.take(table, xp.reshape(ki + 1, (-1,)), axis=0), w.shape)
    return xp.where(ok, (1.0 - f) * lo + f * hi, xp.full_like(w, float(nodes[0])))


def apply_pulses(xp: Any, w: Any, counts: Any, params: DeviceParams, cfg: PulsedDevice, bl: int,
                 seed: int, call: int, device_index: int = 0, stream: str = "device.c2c") -> Any:
    """The weights after one update cycle's pulses (spec/devices.md §V3).

    ``counts`` (m, n) int: ``> 0`` that many up pulses, ``< 0`` down pulses, ``abs(counts) <= bl``.
    Pulse t (t < abs(counts[i, j])) of element (i, j) uses the 16-bit normal number
    ``(device_index·m + i)·n·bl + Σ_{j' < j} abs(counts[i, j']) + t`` of stream ``device.c2c``,
    call ``call`` (when dw_min_std > 0): the pulses of a row take consecutive numbers in element
    order. ``stream`` is ``transfer.c2c`` for the compounds' internal writes. The pulses of an
    element are applied one after another, each followed by the clamp to the bounds.
    """
    m = w.shape[0]
    return apply_pulses_rows(xp, w, xp.arange(m, dtype=xp.int64, device=rng.device_of(w)),
                             counts, params, cfg, bl, seed, call, device_index, stream)


def apply_pulses_rows(xp: Any, w: Any, rows: Any, counts: Any, params: DeviceParams,
                      cfg: PulsedDevice, bl: Any, seed: int, call: Any, device_index: int = 0,
                      stream: str = "device.c2c") -> Any:
    """:func:`apply_pulses` on the rows ``rows`` (distinct) of ``w``: row ``rows[r]`` gets the
    counts ``counts[r, :]``; the other rows are unchanged. ``bl`` and ``call`` are the cycle's
    train length and call, or arrays of one per row: the rows of several cycles that pulse
    different rows, applied at once, with each element's pulses and random numbers those of its
    own cycle, so the cycles' result applied one after another (spec/devices.md §V3: no pulse
    reads another row).

    Only the rows that receive pulses are computed (a transfer of a compound pulses one row, a
    one-pulse cycle a fraction of them), the rows with the most pulses first, so that pulse t
    touches a leading block of them (the rows with more than t pulses); row i keeps its random
    numbers (addressed by its global row number device_index·m + i)."""
    m = w.shape[0]
    if rows.shape[0] == 0 or counts.shape[1] == 0:
        return w
    row_max = xp.max(xp.abs(counts), axis=1)
    if bool(xp.any(row_max > bl)):
        raise ValueError(f"counts: abs(counts) <= bl = {bl} expected, got "
                         f"{int(xp.max(row_max))}")
    order = xp.argsort(-row_max, stable=True)
    live = int(xp.sum(xp.astype(row_max > 0, xp.int64)))
    if live == 0:
        return w
    picked = order[:live]
    target = xp.take(rows, picked, axis=0)
    per_row = getattr(call, "ndim", 0) > 0

    def each(a: Any) -> Any:
        return xp.take(a, picked, axis=0) if per_row else a

    new = _pulse_rows(xp, xp.take(w, target, axis=0), xp.take(counts, picked, axis=0),
                      _param_rows(xp, params, target), cfg, each(bl),
                      xp.take(row_max, picked, axis=0), seed, each(call),
                      device_index * m + target, stream)
    return io_stage.replace_rows(xp, xp.asarray(w, copy=True), target, new)


def _param_rows(xp: Any, params: DeviceParams, rows: Any) -> DeviceParams:
    """The parameters of some rows: a slice, or an index array (taken)."""
    def pick(a: Any) -> Any:
        return a[rows, :] if isinstance(rows, slice) else xp.take(a, rows, axis=0)

    return DeviceParams(pick(params.b_min), pick(params.b_max), pick(params.dw_up),
                        pick(params.dw_down), pick(params.reset_bias), pick(params.kappa),
                        pick(params.rho), {k: pick(v) for k, v in params.extra.items()})


def _clip(xp: Any, x: Any, lo: Any = None, hi: Any = None) -> Any:
    """``xp.clip(x, min=lo, max=hi)``: for numpy arrays numpy's own clip with the bounds cast to
    x's dtype, which is what array-api-compat's wrapper ends in (the same values, without its
    20 µs of checks per call: two calls per pulse)."""
    if array_api_compat.is_numpy_namespace(xp):
        import numpy

        def bound(b: Any) -> Any:  # cast to x's dtype, as the wrapper does (no copy if it is)
            return None if b is None else numpy.asarray(b, dtype=x.dtype)

        return numpy.clip(x, bound(lo), bound(hi))
    return xp.clip(x, min=lo, max=hi)


def _pulse_rows(xp: Any, w: Any, counts: Any, params: DeviceParams, cfg: PulsedDevice, bl: Any,
                row_max: Any, seed: int, call: Any, row_numbers: Any, stream: str) -> Any:
    """:func:`apply_pulses` on some rows whose global row numbers (device_index·m + i, which
    address their random numbers) are ``row_numbers`` and whose largest pulse counts
    ``row_max`` do not increase from row to row. ``bl`` and ``call`` are the cycle's train
    length and call, or arrays of one per row (:func:`apply_pulses_rows`)."""
    m, n = w.shape
    name = _name(cfg)
    sigma = float(cfg.dw_min_std)
    size = xp.abs(counts)
    run = first = None
    if sigma > 0.0:  # row i's numbers, pulses in element order: first[i, j] + t
        wide = xp.astype(size, xp.int64)
        first = xp.cumulative_sum(wide, axis=1) - wide
        # each row's run starts at its row number times n·BL; only the numbers its pulses use
        # (as many as the largest row total) are drawn
        width = max(int(xp.max(xp.sum(wide, axis=1))), 1)
        per_row = getattr(call, "ndim", 0) > 0
        starts = xp.astype(row_numbers, xp.int64) * (n * (xp.astype(bl, xp.int64) if per_row
                                                          else bl))
        run = rng.normal16_rows(seed, stream, 0 if per_row else call, starts, width, xp=xp,
                                dtype=w.dtype, device=rng.device_of(w),
                                calls=call if per_row else None)
    ref = params.extra.get("reference")
    up = counts > 0
    if name in FROZEN_WITHOUT_RANGE:  # these models leave a device without range untouched
        span = params.b_max - params.b_min
        size = xp.where(span > 0.0, size, xp.zeros_like(size))
    for t in range(int(row_max[0]) if m else 0):
        k = int(xp.sum(xp.astype(row_max > t, xp.int64)))  # the rows with a pulse t: rows :k
        p = params if k == m else _param_rows(xp, params, slice(0, k))
        xi = None
        if run is not None:
            xi = xp.take_along_axis(run[:k, :], _clip(xp, first[:k, :] + t, hi=width - 1), axis=1)
        # a reference device pulses u = w + ref and keeps u − ref, at every pulse
        wk, rk = w[:k, :], None if ref is None else ref[:k, :]
        u = wk if rk is None else wk + rk
        w_up, w_down = _step(xp, cfg, name, u, p, xi, sigma)
        new = _clip(xp, xp.where(up[:k, :], w_up, w_down), p.b_min, p.b_max)
        wk = xp.where(size[:k, :] > t, new if rk is None else new - rk, wk)
        w = wk if k == m else xp.concat([wk, w[k:, :]], axis=0)
    return w


# -- other operations -----------------------------------------------------------------------------


def clip_weights(xp: Any, w: Any, params: DeviceParams) -> Any:
    """Clamp every weight to its device's bounds [b⁻, b⁺] (set_weights, §V4)."""
    return xp.clip(w, min=params.b_min, max=params.b_max)


def decay_weights(xp: Any, w: Any, params: DeviceParams) -> Any:
    """One decay step: w ← β + (w − β)·κ, then the clamp (§V4)."""
    beta = params.reset_bias
    return clip_weights(xp, beta + (w - beta) * params.kappa, params)


def diffuse_weights(xp: Any, w: Any, params: DeviceParams, seed: int, call: int,
                    draws: Any = rng) -> Any:
    """One diffusion step: w ← w + ρ·ξ (stream ``device.diffusion_noise``, call ``call``, number
    i·n + j), then the clamp (§V4). ``draws`` provides ``normal``/``uniform`` with the signature
    of refsim.rng's (refsim_fast.update passes its compiled ones: the same numbers)."""
    xi = draws.normal(seed, "device.diffusion_noise", call, tuple(w.shape), xp=xp, dtype=w.dtype,
                      device=rng.device_of(w))
    return clip_weights(xp, w + params.rho * xi, params)


def reset_weights(xp: Any, w: Any, params: DeviceParams, reset_std: float, prob: float,
                  seed: int, call: int, draws: Any = rng) -> Any:
    """Reset: each element with probability ``prob`` (selected when the uniform number i·n + j of
    stream ``device.reset_prob`` is below ``prob``; all when ``prob >= 1``) becomes
    β + reset_std·ξ (stream ``device.reset_noise``, number i·n + j), then the clamp (§V4)."""
    shape = tuple(w.shape)
    if prob <= 0.0:
        return w
    new = params.reset_bias
    if reset_std > 0.0:
        new = new + reset_std * draws.normal(seed, "device.reset_noise", call, shape, xp=xp,
                                             dtype=w.dtype, device=rng.device_of(w))
    new = clip_weights(xp, new, params)
    if prob >= 1.0:
        return new
    chosen = draws.uniform(seed, "device.reset_prob", call, shape, xp=xp,
                           device=rng.device_of(w)) < prob
    return xp.where(chosen, new, w)


# -- write noise and pulse counting (§V8, §V9) ----------------------------------------------------


def write_noise_scale(cfg: Any) -> float:
    """The standard deviation ω·dw_min of the write noise in weight units (spec/devices.md §V8):
    ``write_noise_std`` times the device's *mean* dw_min (the derived one for SoftBoundsPmax);
    0.0 for a device without the field or with ``write_noise_std = 0``."""
    omega = float(getattr(cfg, "write_noise_std", 0.0))
    if omega <= 0.0 or not is_pulsed(cfg):
        return 0.0
    return omega * float(effective(cfg)["dw_min"])


def responsive_touch(xp: Any, last_touch: Any, params: DeviceParams, cfg: Any) -> Any:
    """``last_touch`` with −1 where the device ignores pulses altogether (ExpStep, PowStep,
    PowStepReference with b⁺ − b⁻ <= 0, §V3): such an element is not redrawn by its pulses."""
    if _name(cfg) not in FROZEN_WITHOUT_RANGE:
        return last_touch
    frozen = (params.b_max - params.b_min) <= 0.0
    return xp.where(frozen, xp.full_like(last_touch, -1), last_touch)


def _check_same_shape(xp: Any, persistent: Any, others: dict) -> None:
    for name, a in others.items():
        if tuple(a.shape) != tuple(persistent.shape):
            raise ValueError(f"{name}: expected shape {tuple(persistent.shape)} (the weights'), "
                             f"got {tuple(a.shape)}")


def _check_scale(omega_dw_min: Any) -> float:
    if isinstance(omega_dw_min, bool) or not isinstance(omega_dw_min, (int, float)) or \
            not math.isfinite(omega_dw_min) or omega_dw_min < 0.0:
        raise ValueError(f"omega_dw_min: expected a finite number >= 0, got {omega_dw_min!r}")
    return float(omega_dw_min)


def write_noise(xp: Any, persistent: Any, apparent: Any, last_touch: Any, omega_dw_min: float,
                seed: int) -> Any:
    """The apparent weights after a batch of update cycles (spec/devices.md §V8).

    ``persistent`` (m, n) are the persistent weights after the batch, ``apparent`` (m, n) the
    apparent weights before it, ``last_touch`` (m, n) integer: the call number (the tile's
    ``update`` counter) of the last cycle of the batch that pulsed the element, −1 if none.
    Every element with ``last_touch = c >= 0`` becomes ``persistent + omega_dw_min·ξ``, ξ the
    normal number ``i·n + j`` of stream ``device.write_noise``, call c; the others keep their
    apparent value. Computed in one pass over the touched elements, whatever their calls."""
    omega_dw_min = _check_scale(omega_dw_min)
    if persistent.ndim != 2:
        raise ValueError(f"persistent: expected a 2-D array, got shape {tuple(persistent.shape)}")
    _check_same_shape(xp, persistent, {"apparent": apparent, "last_touch": last_touch})
    if not xp.isdtype(last_touch.dtype, "integral"):
        raise TypeError(f"last_touch: expected an integer array, got {last_touch.dtype}")
    size = math.prod(persistent.shape)
    if size == 0:
        return apparent
    flat = xp.reshape(xp.astype(last_touch, xp.int64), (-1,))
    if int(xp.min(flat)) < -1:
        raise ValueError("last_touch: expected call numbers >= 0, or -1 for untouched elements")
    touched = flat >= 0
    count = int(xp.sum(xp.astype(touched, xp.int64)))
    if count == 0:
        return apparent
    where = xp.nonzero(touched)[0]
    xi = rng.normal_at_calls(seed, "device.write_noise", xp.take(flat, where, axis=0), where,
                             xp=xp)
    position = xp.cumulative_sum(xp.astype(touched, xp.int64)) - 1
    xi_all = xp.take(xi, xp.where(touched, position, xp.zeros_like(position)), axis=0)
    noise = xp.astype(xp.reshape(xi_all, tuple(persistent.shape)), persistent.dtype)
    new = persistent + omega_dw_min * noise
    return xp.where(xp.reshape(touched, tuple(persistent.shape)), new, apparent)


def write_noise_all(xp: Any, persistent: Any, omega_dw_min: float, seed: int, call: int) -> Any:
    """Fresh write noise on every element (after decay, diffusion, drift, reset, set_weights;
    §V8): ``persistent + omega_dw_min·ξ``, ξ number ``i·n + j`` of stream
    ``device.write_noise_all``, call ``call``."""
    omega_dw_min = _check_scale(omega_dw_min)
    xi = rng.normal(seed, "device.write_noise_all", call, tuple(persistent.shape), xp=xp,
                    dtype=persistent.dtype, device=rng.device_of(persistent))
    return persistent + omega_dw_min * xi


def pulse_counts(xp: Any, counts: Any) -> Any:
    """The pulses of one update cycle's signed counts (m, n) as an int64 array (2, m, n):
    ``[0]`` the down pulses (counts < 0, weight-decreasing), ``[1]`` the up pulses (counts > 0)
    (spec/devices.md §V9)."""
    c = xp.astype(counts, xp.int64)
    zero = xp.zeros_like(c)
    return xp.stack((xp.where(c < 0, -c, zero), xp.where(c > 0, c, zero)), axis=0)


__all__ = ["DeviceParams", "apply_pulses", "check_supported", "clip_weights", "decay_weights",
           "diffuse_weights", "draw_device", "effective", "granularity", "is_pulsed",
           "pulse_counts", "reset_weights", "responsive_touch", "stream_names", "weight_bounds",
           "write_noise", "write_noise_all", "write_noise_scale"]

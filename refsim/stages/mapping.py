"""The digital periphery around a tile's analog passes: output scales from weight scaling
(``MappingParameter.weight_scaling_omega``) and weight remapping (``WeightRemapParameter``), and the
learned input range (``InputRangeParameter``) with the output-bound gradient mask (spec/mapping.md
and spec/modifiers.md, "Stage semantics": §P1-§P3 and §P5-§P6 of mapping.md, §M5 of modifiers.md).

A tile with output scales α (one per output row) stores W_s with W = α·W_s (row-wise): the
forward output is multiplied by α after the analog pass, the backward input d by α before it, and
the update's d is divided by α. Pure functions on arrays of any namespace, in the weights' dtype.

Examples
--------
>>> import numpy as np
>>> from refsim.stages import mapping
>>> w = np.array([[0.5, -2.0], [0.25, 1.0]])
>>> mapping.weight_scales(np, w, omega=1.0, columnwise=False)
array([2., 2.])
>>> mapping.weight_scales(np, w, omega=1.0, columnwise=True)
array([2., 1.])
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Tuple

from refsim import rng
from refsim.configs import InputRangeParameter, WeightRemapParameter, WeightRemapType


def _row_max(xp: Any, w: Any) -> Any:
    if w.shape[1] == 0:
        return xp.zeros((w.shape[0],), dtype=w.dtype, device=rng.device_of(w))
    return xp.max(xp.abs(w), axis=1)


def weight_scales(xp: Any, w: Any, omega: float, columnwise: bool) -> Any:
    """α (m,) of ``w`` (m, n) for weight scaling ω > 0 (spec/mapping.md §P1): α = max abs(W)/ω,
    one value for the tile, or per output row when ``columnwise``; 1 where that max is 0."""
    top = _row_max(xp, w)
    if not columnwise:
        top = xp.full_like(top, float(xp.max(top)) if top.shape[0] else 0.0)
    one = xp.ones_like(top)
    return xp.where(top > 0, top / omega, one)


def remap(xp: Any, w: Any, scales: Any, remap: WeightRemapParameter) -> Tuple[Any, Any]:
    """The stored weights and scales after one remapping step (spec/modifiers.md §M5): the
    weights are divided by a factor a (per tile or per row) and the scales multiplied by it, so
    α·W_s stays the same up to rounding; 'ChannelwiseSymmetric' with max_scale_range > 0 caps the
    new scales at min_scale·max_scale_range."""
    if remap.type == WeightRemapType.NONE:
        return w, scales
    target = float(remap.remapped_wmax)
    top = _row_max(xp, w)
    one = xp.ones_like(top)
    if remap.type == WeightRemapType.LAYERWISE_SYMMETRIC:
        peak = float(xp.max(top)) if top.shape[0] else 0.0
        if peak <= 0:
            return w, scales
        a = xp.full_like(top, peak / target)
    else:  # ChannelwiseSymmetric
        a = xp.where(top > 0, top / target, one)
        if remap.max_scale_range > 0:
            old_min = max(float(xp.min(scales)) if scales.shape[0] else 0.0,
                          float(remap.max_scale_ref))
            if old_min > 0:
                new = xp.clip(a * scales, max=old_min * float(remap.max_scale_range))
                a = new / scales
    return w / xp.reshape(a, (-1, 1)), scales * a


def scaled_update(xp: Any, ds: Any, lr: float, scales: Any, mapping: Any) -> Tuple[Any, float]:
    """The errors and learning rate of the update of W_s (spec/mapping.md §P2): d/α with lr
    unchanged, or with weight_scaling_lr_compensation d/(α/mean(α)) and lr/mean(α) — the same
    product, another split between lr and d (and so other pulse trains)."""
    if not mapping.weight_scaling_lr_compensation:
        return ds / scales, lr
    mean = float(xp.mean(scales))
    return ds / (scales / mean), lr / mean


# -- the learned input range (§P5) and the output-bound gradient mask (§P6) ----------------------


@dataclasses.dataclass(frozen=True)
class InputRange:
    """The state of a tile's learned input range (§P5): ρ (shape (1,), the tile's dtype), the
    number of batches the data initialisation has used, and the gradient accumulated by the
    backward passes since the last update (None while there is none)."""

    value: Any
    count: int = 0
    grad: Any = None


@dataclasses.dataclass
class PassContext:
    """What a forward pass leaves for the backward pass of the same batch, as aihwkit's autograd
    context does (§P5, §P6): the forward input x as given (before the input range) and the mask of
    the outputs at the output bound (None when forward.out_bound ≤ 0). Filled by
    ``AnalogTile.forward(x, context=...)``, read by ``AnalogTile.backward(d, context=...)``."""

    x: Any = None
    out_mask: Any = None


def initial_input_range(xp: Any, params: InputRangeParameter, dtype: Any,
                        device: Any = None) -> InputRange:
    """ρ = init_value, no batch used yet (§P5)."""
    return InputRange(xp.full((1,), float(params.init_value), dtype=dtype, device=device))


def init_from_data(xp: Any, state: InputRange, x: Any,
                   params: InputRangeParameter) -> InputRange:
    """One step of the data initialisation of a training forward pass (§P5): while fewer than
    init_from_data batches were used and the batch has std(x) > 0 (unbiased, over all entries),
    ρ ← (ρ·i + init_std_alpha·std(x))/(i + 1) and i ← i + 1, std computed in float64 and
    rounded once to ρ's dtype."""
    if state.count >= params.init_from_data or x.shape[0] * (x.shape[1] if x.ndim > 1 else 1) < 2:
        return state
    # in float64, rounded once to ρ's dtype (as torch's float32 std, which accumulates in double)
    std = xp.astype(xp.std(xp.astype(x, xp.float64), correction=1), state.value.dtype)
    if not float(std) > 0:
        return state
    i = state.count
    value = (state.value * float(i) + float(params.init_std_alpha) * std) / float(i + 1)
    return dataclasses.replace(state, value=xp.abs(value), count=i + 1)


def apply_input_range(xp: Any, x: Any, rho: Any) -> Any:
    """x̂ = clip(x, −ρ, ρ)/ρ, the tile input under the input range ρ (§P5)."""
    bound = abs(float(rho[0]))
    return xp.clip(x, min=-bound, max=bound) / rho


def output_bound(io: Any) -> Optional[float]:
    """The bound of the output-bound gradient mask (§P6): out_scale·out_bound·0.999, or None when
    out_bound ≤ 0 (or for a config without an analog forward pass)."""
    if io is None or io.out_bound <= 0:
        return None
    return float(io.out_scale) * float(io.out_bound) * 0.999


def output_clip_mask(xp: Any, y: Any, bound: Optional[float]) -> Any:
    """Where the analog forward output y (before the digital scales) is at or beyond ±bound
    (§P6); None without a bound."""
    if bound is None:
        return None
    return (y >= bound) | (y <= -bound)


def range_gradient(xp: Any, x: Any, z: Any, rho: Any, params: InputRangeParameter,
                   out_mask: Any = None) -> Any:
    """The gradient g of ρ from one backward pass (§P5): x the forward input, z the backward
    output, ``out_mask`` the output-bound mask of the forward pass (used by
    manage_output_clipping). g = Σ_{x ≥ ρ} min(z, 0) − Σ_{x ≤ −ρ} max(z, 0), times
    ρ·gradient_scale if gradient_relative; minus (1 − P_out)·ρ if manage_output_clipping and
    P_out < output_min_percentage; plus decay·ρ if the share of abs(x) < ρ exceeds
    input_min_percentage."""
    zero = xp.zeros_like(z)
    upper = xp.where(x >= rho, xp.minimum(z, zero), zero)
    lower = xp.where(x <= -rho, xp.maximum(z, zero), zero)
    g = xp.reshape(xp.sum(upper) - xp.sum(lower), (1,))
    g = xp.astype(g, rho.dtype)
    if params.gradient_relative:
        g = g * rho
        g = g * float(params.gradient_scale)
    if params.manage_output_clipping and out_mask is not None:
        total = 1
        for size in out_mask.shape:
            total *= int(size)
        share = 1.0 - int(xp.sum(xp.astype(out_mask, xp.int64))) / total
        if share < params.output_min_percentage:
            g = g - (1.0 - share) * rho
    if params.decay > 0:
        inside = float(xp.mean(xp.astype(xp.abs(x) < rho, xp.float64)))
        if inside > params.input_min_percentage:
            g = g + float(params.decay) * rho
    return g


def step_input_range(xp: Any, state: InputRange, lr: float) -> InputRange:
    """The optimizer step of ρ (§P5): ρ ← ρ − lr·g with the accumulated gradient, which is
    cleared; nothing without a gradient. A ρ that is no longer a positive finite number is a
    ValueError naming the field."""
    if state.grad is None:
        return state
    value = state.value - lr * state.grad
    rho = float(value[0])
    if not (math.isfinite(rho) and rho > 0):
        raise ValueError(f"pre_post.input_range: the learned input range collapses to {rho!r} "
                         f"(ρ = {float(state.value[0])!r}, gradient {float(state.grad[0])!r}, "
                         f"lr = {lr!r}); lower lr or gradient_scale")
    return dataclasses.replace(state, value=value, grad=None)


def input_range_to_dict(xp: Any, state: Optional[InputRange]) -> Optional[dict]:
    """The input range's part of a tile's state_dict (copies), None without one (§P5)."""
    if state is None:
        return None
    return {"value": xp.asarray(state.value, copy=True), "count": state.count,
            "grad": None if state.grad is None else xp.asarray(state.grad, copy=True)}


def input_range_from_dict(xp: Any, saved: Any, expected: bool, dtype: Any) -> Optional[InputRange]:
    """The :class:`InputRange` of a saved state, checked: present exactly when the tile has an
    input range, ρ a positive finite (1,) array, count a non-negative integer."""
    name = "state['input_range']"
    if (saved is None) != (not expected):
        raise ValueError(f"{name}: expected an input range exactly when the config enables "
                         f"pre_post.input_range")
    if saved is None:
        return None
    if not isinstance(saved, dict):
        raise ValueError(f"{name}: expected a dict with 'value', 'count' and 'grad'")

    def vector(key: str) -> Any:
        a = saved.get(key)
        ok = hasattr(a, "shape") and tuple(a.shape) == (1,) and xp.isdtype(a.dtype, "real floating")
        if not ok or not bool(xp.all(xp.isfinite(a))):
            raise ValueError(f"{name}['{key}']: expected a finite float array of shape (1,)")
        return xp.astype(a, dtype, copy=True)

    value = vector("value")
    if not float(value[0]) > 0:
        raise ValueError(f"{name}['value']: expected a positive input range")
    count = saved.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"{name}['count']: expected a non-negative integer")
    grad = None if saved.get("grad") is None else vector("grad")
    return InputRange(value, count, grad)

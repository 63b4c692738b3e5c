"""Digital output scales of a tile: weight scaling (``MappingParameter.weight_scaling_omega``) and
weight remapping (``WeightRemapParameter``) (spec/mapping.md and spec/modifiers.md, "Stage
semantics": §P1-§P3 of mapping.md, §M5 of modifiers.md).

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

from typing import Any, Tuple

from refsim import rng
from refsim.configs import WeightRemapParameter, WeightRemapType


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

"""Hardware-aware training: weight clipping and the weight modifier of an InferenceRPUConfig tile,
applied once per optimizer step after the update (spec/modifiers.md, "Stage semantics", §M1-§M4).

Pure functions on arrays of any array-API namespace, in the weights' dtype (spec/agreement.md rule
7). Random numbers of the modifier come from addressed streams, call = the tile's counter
``modifier`` (advanced once per step that modifies): ``modifier.noise`` (normals),
``modifier.sto_round`` (uniforms of stochastic rounding), ``modifier.drop`` (uniforms of drop
connect), number ``i·n + j``.

Examples
--------
>>> import numpy as np
>>> from refsim.configs import WeightClipParameter, WeightModifierParameter
>>> from refsim.stages import modifiers
>>> w = np.array([[0.5, -2.0], [0.25, 1.0]])
>>> modifiers.clip_weights(np, w, WeightClipParameter(type="FixedValue", fixed_value=1.0))
array([[ 0.5 , -1.  ],
       [ 0.25,  1.  ]])
>>> mod = WeightModifierParameter(type="Discretize", res=0.25)
>>> modifiers.modify(np, w, mod, seed=0, call=0)  # steps of 2·0.25·A = 1, ties away from 0
array([[ 1., -2.],
       [ 0.,  1.]])
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from refsim import rng
from refsim.configs import (
    ConfigError,
    WeightClipParameter,
    WeightClipType,
    WeightModifierParameter,
    WeightModifierType,
)

M = WeightModifierType
#: Types that leave the weights as they are before drop connect.
COPIES = (M.COPY, M.DROP_CONNECT)
#: Types that quantize.
DISCRETIZING = (M.DISCRETIZE, M.DISCRETIZE_ADD_NORMAL, M.DOREFA)

STREAMS = ("modifier", "modifier.noise", "modifier.sto_round", "modifier.drop")


def stream_names() -> Tuple[str, ...]:
    """Every stream name this stage draws from or counts with."""
    return STREAMS


# -- clipping (§M1) -------------------------------------------------------------------------------


def clip_bound(xp: Any, w: Any, clip: WeightClipParameter) -> Optional[float]:
    """The bound c of ``clip`` for the weights ``w`` (m, n), or None for no clipping (§M1):
    'FixedValue' c = fixed_value; 'LayerGaussian' c = sigma·std(W) (divided by count − 1);
    'AverageChannelMax' c = mean over rows of max abs(W_i); the last two capped by a positive
    fixed_value. A bound ≤ 0 clips nothing."""
    if clip.type == WeightClipType.NONE:
        return None
    if clip.type == WeightClipType.FIXED_VALUE:
        bound = float(clip.fixed_value)
    else:
        if clip.type == WeightClipType.LAYER_GAUSSIAN:
            count = w.shape[0] * w.shape[1]
            if count < 2 or float(xp.max(w)) == float(xp.min(w)):
                return None  # std 0 (the mean's rounding would give a tiny bound that zeroes W)
            bound = float(clip.sigma) * float(xp.std(w, correction=1))
        else:  # AverageChannelMax
            bound = float(xp.mean(xp.max(xp.abs(w), axis=1)))
        if clip.fixed_value > 0:
            bound = min(bound, float(clip.fixed_value))
    return bound if bound > 0 else None


def clip_weights(xp: Any, w: Any, clip: WeightClipParameter) -> Any:
    """``w`` clipped to [−c, c] with the bound of :func:`clip_bound` (unchanged without one)."""
    bound = clip_bound(xp, w, clip)
    return w if bound is None else xp.clip(w, min=-bound, max=bound)


# -- the modifier (§M2-§M3) ----------------------------------------------------------------------


def check_supported(mod: WeightModifierParameter, path: str = "modifier") -> None:
    """ConfigError for a modifier refsim does not implement (§M3): 'PCMNoise'."""
    if mod.type == M.PCM_NOISE:
        raise ConfigError(f"{path}.type: 'PCMNoise' is not implemented yet (aihwkit has it on "
                          f"CUDA only); use 'ProgNoise', 'Poly' or 'AddNormal'")


def is_active(mod: WeightModifierParameter) -> bool:
    """Whether ``mod`` changes the weights at all (Ŵ = W otherwise, and nothing is drawn)."""
    if mod.type == M.NONE:
        return False
    if mod.type in COPIES:
        return mod.pdrop > 0
    return True


def amplitude(xp: Any, w: Any, mod: WeightModifierParameter) -> float:
    """A (§M2): max abs(W) (without the last column with copy_last_column; 1 if that is 0) when
    rel_to_actual_wmax, else assumed_wmax."""
    if not mod.rel_to_actual_wmax:
        return float(mod.assumed_wmax)
    part = w[:, :-1] if mod.copy_last_column and w.shape[1] > 1 else w
    top = float(xp.max(xp.abs(part))) if part.shape[0] * part.shape[1] else 0.0
    return top if top > 0 else 1.0


def resolution(res: float) -> float:
    """The quantization step fraction res' (§M2): res for 0 < res ≤ 1, 1/res above, 0 (off)
    for res ≤ 0."""
    if res <= 0:
        return 0.0
    return 1.0 / res if res > 1 else float(res)


def _round(xp: Any, v: Any, uniforms: Any) -> Any:
    """Round to nearest, ties away from zero; with ``uniforms`` u ∈ [0, 1), round(v + u − ½)."""
    if uniforms is not None:
        v = v + (uniforms - 0.5)
    return xp.sign(v) * xp.floor(xp.abs(v) + 0.5)


def _draws(xp: Any, w: Any, stream: str, seed: int, call: int, kind: str) -> Any:
    shape = tuple(w.shape)
    draw = rng.normal if kind == "normal" else rng.uniform
    return draw(seed, stream, call, shape, xp=xp, dtype=w.dtype, device=rng.device_of(w))


def _polynomial(xp: Any, w: Any, coeffs: Any, a: float) -> Any:
    """Σ_k c_k·(abs(W)/A)^k, the powers by repeated multiplication (0 for no coefficients)."""
    if not coeffs:
        return xp.zeros_like(w)
    ratio = xp.abs(w) / a
    power = xp.ones_like(w)
    total = xp.full_like(w, float(coeffs[0]))
    for c in coeffs[1:]:
        power = power * ratio
        total = total + power * float(c)
    return total


def modify(xp: Any, w: Any, mod: WeightModifierParameter, seed: int, call: int) -> Any:
    """The modified weights Ŵ of one step (§M3): the type's modification of ``w`` (m, n), then
    drop connect, the last column restored with copy_last_column."""
    check_supported(mod)
    if not is_active(mod):
        return w
    a = amplitude(xp, w, mod)
    step = resolution(mod.res)

    def sto() -> Any:
        return _draws(xp, w, "modifier.sto_round", seed, call, "uniform") if mod.sto_round \
            else None

    def noise() -> Any:
        return _draws(xp, w, "modifier.noise", seed, call, "normal")

    out = w
    t = mod.type
    if t in (M.DISCRETIZE, M.DISCRETIZE_ADD_NORMAL) and step > 0:
        width = 2.0 * step * a
        out = _round(xp, w / width, sto()) * width
    if t == M.DOREFA and step > 0:
        import math

        s = abs(float(mod.dorefa_clip) / math.tanh(a))
        out = _round(xp, xp.tanh(w) * s / step, sto()) * step
    if t == M.MULT_NORMAL and mod.std_dev > 0:
        out = w * (1.0 + mod.std_dev * noise())
    if t in (M.ADD_NORMAL, M.DISCRETIZE_ADD_NORMAL) and mod.std_dev > 0:
        out = out + (mod.std_dev * a) * noise()
    if t in (M.POLY, M.PROG_NOISE) and mod.std_dev > 0:
        prefactor = mod.std_dev * a / (mod.g_max if t == M.PROG_NOISE else 1.0)
        out = w + prefactor * _polynomial(xp, w, list(mod.coeffs), a) * noise()
        if t == M.PROG_NOISE:  # keeps the sign of W (0 counts as positive)
            sign = xp.where(w < 0, -xp.ones_like(w), xp.ones_like(w))
            out = sign * xp.abs(out)
    if mod.pdrop > 0:
        kept = _draws(xp, w, "modifier.drop", seed, call, "uniform") >= mod.pdrop
        out = xp.where(kept, out, xp.zeros_like(out))
    if mod.copy_last_column and w.shape[1] > 0:
        n = w.shape[1]
        last = xp.reshape(xp.arange(n, device=rng.device_of(w)) == n - 1, (1, n))
        out = xp.where(last, w, out)
    return out

"""Hardware-aware training: weight clipping and the weight modifier of an InferenceRPUConfig tile,
applied once per optimizer step after the update (spec/modifiers.md, "Stage semantics", §M1-§M4).

Pure functions on arrays of any array-API namespace, in the weights' dtype (spec/agreement.md rule
7). Random numbers of the modifier come from addressed streams, call = the tile's counter
``modifier`` (advanced once per step that modifies): ``modifier.noise`` (normals),
``modifier.sto_round`` (uniforms of stochastic rounding), ``modifier.drop`` (uniforms of drop
connect), and the eight streams ``modifier.pcm_*`` of 'PCMNoise' (:data:`PCM_STREAMS`), number
``i·n + j``.

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

import math
from typing import Any, Optional, Tuple

from refsim import rng
from refsim.configs import (
    WeightClipParameter,
    WeightClipType,
    WeightModifierParameter,
    WeightModifierType,
)
from refsim.configs.utils import PCM_T_READ

M = WeightModifierType
#: Types that leave the weights as they are before drop connect.
COPIES = (M.COPY, M.DROP_CONNECT)
#: Types that quantize.
DISCRETIZING = (M.DISCRETIZE, M.DISCRETIZE_ADD_NORMAL, M.DOREFA)

#: The draws of 'PCMNoise' (§M3), one stream per random quantity: stuck-at-reset hits, stuck-at-g_max
#: hits and their direction, stuck-at-random hits and their value, programming noise, drift
#: exponent, read noise.
PCM_STREAMS = tuple(f"modifier.pcm_{q}" for q in ("reset", "gmax", "gmax_sign", "random",
                                                    "random_value", "prog", "drift", "read"))
STREAMS = ("modifier", "modifier.noise", "modifier.sto_round", "modifier.drop", *PCM_STREAMS)

#: 'PCMNoise': the programming-noise fit σ_p(r) = P0 + P1·r + P2·r² (µS, r = abs(g)/g_max) of
#: aihwkit's CUDA kernel; the zero threshold is in units of std_dev·P0.
PCM_P0, PCM_P1, PCM_P2 = 0.26348, 1.9650, -1.1731


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


def pcm_noise(xp: Any, w: Any, mod: WeightModifierParameter, a: float, seed: int,
              call: int) -> Any:
    """The 'PCMNoise' modification of ``w`` (m, n) with amplitude A = ``a`` (§M3, steps a-i),
    before drop connect: aihwkit's CUDA model of programming a PCM device to the target
    conductance g = W·g_max/A and reading it back at time pcm_t_inference, in its order of
    operations. Each random quantity has its own stream (:data:`PCM_STREAMS`), number i·n + j,
    drawn only when it can act."""
    g_max, scale = float(mod.g_max), float(mod.std_dev)
    zero = xp.zeros_like(w)

    def draw(quantity: str, kind: str) -> Any:
        return _draws(xp, w, f"modifier.pcm_{quantity}", seed, call, kind)

    # a. target conductance in [-g_max, g_max]; b. too small to program: left at exactly 0
    g = xp.clip(w, min=-a, max=a) * g_max / a
    g = xp.where(xp.abs(g) > float(mod.pcm_zero_thres) * scale * PCM_P0, g, zero)
    negative = g < 0  # the sign Ŵ gets in the end
    # c. stuck at reset, d. displaced by g_max in a random direction, e. stuck at a random value
    if mod.pcm_prob_at_reset > 0:
        g = xp.where(draw("reset", "uniform") < mod.pcm_prob_at_reset, zero, g)
    if mod.pcm_prob_at_gmax > 0:
        hit = draw("gmax", "uniform") < mod.pcm_prob_at_gmax
        shifted = xp.where(draw("gmax_sign", "uniform") > 0.5, g - g_max, g + g_max)
        g = xp.where(hit, shifted, g)
    if mod.pcm_prob_at_random > 0:
        hit = draw("random", "uniform") < mod.pcm_prob_at_random
        value = draw("random_value", "uniform") * g_max
        g = xp.where(hit, xp.where(g > 0, value, -value), g)
    # f. the target clipped to ±g_max, then programming noise
    g = xp.clip(g, min=-g_max, max=g_max)
    g_prog = g
    if scale > 0:
        rel = xp.abs(g / g_max)
        sigma = PCM_P0 + rel * PCM_P1 + rel * rel * PCM_P2
        g_prog = g + scale * sigma * draw("prog", "normal")
    rel_prog = xp.abs(g_prog / g_max)
    # g. drift variation (no mean drift) after pcm_t_inference
    t0 = float(mod.pcm_t0)
    t = float(mod.pcm_t_inference) + t0
    g_drift = g_prog
    if t > t0:
        log_rel = xp.log(xp.clip(rel_prog, min=1e-6))
        sigma_nu = xp.clip(-0.0125 * log_rel - 0.0059, min=0.008, max=0.045)
        nu = xp.abs(draw("drift", "normal") * sigma_nu)
        g_drift = g_prog * (t / t0) ** (-nu)
    # h. 1/f read noise accumulated up to t
    g_final = g_drift
    if scale > 0:
        q_s = xp.clip(0.0088 / xp.clip(rel_prog ** 0.65, min=1e-3), max=0.2)
        sigma_r = q_s * math.sqrt(math.log((t + PCM_T_READ) / (2.0 * PCM_T_READ)))
        g_final = g_drift + scale * xp.abs(g_drift) * sigma_r * draw("read", "normal")
    # i. back to weights with the sign of the target; an unprogrammed device reads exactly 0
    out = g_final / g_max * a
    out = xp.where(negative, -xp.abs(out), xp.abs(out))
    return xp.where(xp.abs(g) > 0, out, zero)


def modify(xp: Any, w: Any, mod: WeightModifierParameter, seed: int, call: int) -> Any:
    """The modified weights Ŵ of one step (§M3): the type's modification of ``w`` (m, n), then
    drop connect, the last column restored with copy_last_column."""
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
    if t == M.PCM_NOISE:
        out = pcm_noise(xp, w, mod, a, seed, call)
    if mod.pdrop > 0:
        kept = _draws(xp, w, "modifier.drop", seed, call, "uniform") >= mod.pdrop
        out = xp.where(kept, out, xp.zeros_like(out))
    if mod.copy_last_column and w.shape[1] > 0:
        n = w.shape[1]
        last = xp.reshape(xp.arange(n, device=rng.device_of(w)) == n - 1, (1, n))
        out = xp.where(last, w, out)
    return out

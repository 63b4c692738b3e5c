"""Inference: program a tile's weights onto PCM-like conductance pairs, drift them to an inference
time, and compensate the drift globally (spec/inference.md, "Stage semantics", §I1-§I5).

Pure functions on arrays of any array-API namespace. The order of operations is aihwkit's
(``aihwkit.inference``: ``SinglePairConductanceConverter``, ``PCMLikeNoiseModel``,
``GlobalDriftCompensation``), every operation in the weights' dtype (spec/agreement.md rule 7);
the random numbers come from refsim's addressed streams instead of torch's generator:

* ``inference.prog_noise`` and ``inference.drift_nu``: call = the programming's number (the tile's
  counter ``inference.program``), number ``k·m·n + i·n + j`` for slice k (0: G⁺, 1: G⁻);
* ``inference.read_noise``: call = the drift's number (counter ``inference.drift``), same numbers.

Examples
--------
>>> import numpy as np
>>> from refsim.configs import PCMLikeNoiseModel
>>> from refsim.stages import inference
>>> w = np.array([[0.5, -0.25], [0.0, 1.0]])
>>> model = PCMLikeNoiseModel(prog_noise_scale=0.0, drift_scale=0.0, read_noise_scale=0.0)
>>> programmed = inference.program(np, w, model, seed=1, call=0)
>>> bool(np.allclose(programmed.weights, w))
True
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, List, Tuple

from refsim import rng
from refsim.configs import PCMLikeNoiseModel
from refsim.precision import real

#: Floor of max abs(W) in the conversion and of G/g_max in the drift-coefficient fit (aihwkit's
#: ``_ZERO_CLIP``).
ZERO_CLIP = 1e-7
#: The default programming-noise fit and the g_max it was made at (µS).
DEFAULT_PROG_COEFF = (0.26348, 1.9650, -1.1731)
DEFAULT_PROG_REFERENCE = 25.0
#: Floor of the drift-compensation readout (aihwkit's ``GlobalDriftCompensation.readout``).
READOUT_FLOOR = 1e-4

STREAMS = ("inference.prog_noise", "inference.drift_nu", "inference.read_noise")
COUNTERS = ("inference.program", "inference.drift")


def stream_names() -> Tuple[str, ...]:
    """Every stream name this stage draws from or counts with."""
    return STREAMS + COUNTERS


@dataclasses.dataclass(frozen=True)
class Ranges:
    """The conductance ranges a model uses (spec/inference.md §I1): the converter's
    ``g_min`` and ``g_max`` (the model's ``g_max`` replaces the converter's when set), the g_max
    that normalises the noise formulas, and the reference g_max of the programming-noise fit."""

    g_min: float
    g_max: float
    prog_reference: float


def ranges(model: PCMLikeNoiseModel) -> Ranges:
    """The effective ranges of ``model`` (spec/inference.md §I1)."""
    g_max = float(model.g_max) if model.g_max is not None else float(model.g_converter.g_max)
    if model.prog_coeff_g_max_reference is not None:
        reference = float(model.prog_coeff_g_max_reference)
    elif tuple(float(c) for c in model.prog_coeff) == DEFAULT_PROG_COEFF:
        reference = DEFAULT_PROG_REFERENCE
    else:
        reference = g_max
    return Ranges(float(model.g_converter.g_min), g_max, reference)


def conversion_scale(xp: Any, w: Any, r: Ranges) -> float:
    """The scale s = (g_max − g_min)/max(max abs(W), 1e-7) of a weight matrix (§I1), a value of
    the dtype of ``w`` (as a Python float)."""
    R = real(w.dtype)
    top = max(float(xp.max(xp.abs(w))) if w.shape[0] * w.shape[1] else 0.0, ZERO_CLIP)
    # aihwkit's (g_max − g_min)/a: a Python float over a tensor, which torch evaluates as the
    # reciprocal of a times the (float64) difference, each rounded in the dtype
    return float(R(1) / R(top) * R(r.g_max - r.g_min))


def to_conductances(xp: Any, w: Any, r: Ranges) -> Tuple[Any, Any, float]:
    """G⁺, G⁻ and the scale s of a weight matrix (§I1): s = (g_max − g_min)/max(max abs(W),
    1e-7), G± = clip(±W·s, 0, g_max) + g_min."""
    scale = conversion_scale(xp, w, r)
    v = w * scale
    g_plus = xp.clip(v, min=0.0, max=r.g_max) + r.g_min
    g_minus = xp.clip(-v, min=0.0, max=r.g_max) + r.g_min
    return g_plus, g_minus, scale


def to_weights(g_plus: Any, g_minus: Any, scale: float, r: Ranges) -> Any:
    """W = ((G⁺ − g_min) − (G⁻ − g_min))/s (§I1)."""
    return ((g_plus - r.g_min) - (g_minus - r.g_min)) / scale


def _normals(xp: Any, stream: str, seed: int, call: int, slice_index: int, g: Any,
             draws: Any = rng) -> Any:
    m, n = g.shape
    return draws.normal(seed, stream, call, (m, n), start=slice_index * m * n, xp=xp,
                        dtype=g.dtype, device=rng.device_of(g))


def programming_noise(xp: Any, g: Any, model: PCMLikeNoiseModel, r: Ranges, seed: int, call: int,
                      slice_index: int, draws: Any = rng) -> Any:
    """G_p = max(G + prog_noise_scale·σ_p(G)·ξ, 0) with σ_p(G) = (c₀ + c₁·(G/g_max) + c₂·(G/g_max)²
    + …)·(g_max/g_ref), the powers formed by repeated multiplication (§I2)."""
    if model.prog_noise_scale == 0.0:
        return g
    ratio = g / r.g_max
    power = xp.ones_like(g)
    sigma = xp.full_like(g, float(model.prog_coeff[0]))
    for coeff in model.prog_coeff[1:]:
        power = power * ratio
        sigma = sigma + power * float(coeff)
    sigma = sigma * (r.g_max / r.prog_reference)
    xi = _normals(xp, "inference.prog_noise", seed, call, slice_index, g, draws)
    return xp.clip(g + model.prog_noise_scale * sigma * xi, min=0.0)


def drift_coefficients(xp: Any, g: Any, model: PCMLikeNoiseModel, r: Ranges, seed: int,
                       call: int, slice_index: int, draws: Any = rng) -> Any:
    """ν = drift_scale·abs(μ + s·ξ') with G_rel = max(abs(G/g_max), 1e-7),
    μ = clip(−0.0155·ln(G_rel) + 0.0244, 0.049, 0.1), s = clip(−0.0125·ln(G_rel) − 0.0059,
    0.008, 0.045) (§I2); all zero (nothing drawn) when drift_scale = 0."""
    if model.drift_scale == 0.0:
        return xp.zeros_like(g)
    log_rel = xp.log(xp.clip(xp.abs(g / r.g_max), min=ZERO_CLIP))
    mu = xp.clip(-0.0155 * log_rel + 0.0244, min=0.049, max=0.1)
    sd = xp.clip(-0.0125 * log_rel - 0.0059, min=0.008, max=0.045)
    xi = _normals(xp, "inference.drift_nu", seed, call, slice_index, g, draws)
    return xp.abs(mu + sd * xi) * model.drift_scale


def drift_conductance(xp: Any, g: Any, nu: Any, t_inference: float, model: PCMLikeNoiseModel,
                      r: Ranges, seed: int, call: int, slice_index: int,
                      draws: Any = rng) -> Any:
    """The conductance at ``t_inference`` (§I3): t = t_inference + t_0; G_d = G·(t/t_0)^(−ν)
    when t > t_0; G = max(G_d + abs(G_d)·read_noise_scale·σ_r·ξ'', 0) with
    σ_r = q·sqrt(ln((t + t_read)/(2·t_read))), q = min(0.0088/max((abs(G)/g_max)^0.65, 1e-3),
    0.2) (read noise skipped, nothing drawn, when read_noise_scale = 0)."""
    t = t_inference + model.t_0
    drifted = g * (t / model.t_0) ** (-nu) if t > model.t_0 else g
    if model.read_noise_scale == 0.0:
        return xp.clip(drifted, min=0.0)
    # 0.0088/x as torch evaluates a Python float over a tensor: the reciprocal, times 0.0088
    q = xp.clip((1.0 / xp.clip((xp.abs(g) / r.g_max) ** 0.65, min=1e-3)) * 0.0088, max=0.2)
    spread = read_spread(t, model)
    xi = _normals(xp, "inference.read_noise", seed, call, slice_index, g, draws)
    return xp.clip(drifted + xp.abs(drifted) * model.read_noise_scale * (q * spread) * xi,
                   min=0.0)


@dataclasses.dataclass
class Programmed:
    """A programmed weight matrix: the weights read back after programming and the drift
    coefficients ν of its two conductance slices (2, m, n)."""

    weights: Any
    nu: List[Any]


def program(xp: Any, w: Any, model: PCMLikeNoiseModel, seed: int, call: int,
            draws: Any = rng) -> Programmed:
    """Program ``w`` (m, n) (§I2): convert, add programming noise to each slice, draw each
    slice's drift coefficients from its target conductance, convert back with the same scale.
    ``draws`` provides ``normal`` with refsim.rng's signature (refsim_fast.update passes its
    compiled one: the same numbers)."""
    r = ranges(model)
    slices = to_conductances(xp, w, r)
    noisy, nus = [], []
    for k, g in enumerate(slices[:2]):
        noisy.append(programming_noise(xp, g, model, r, seed, call, k, draws))
        nus.append(drift_coefficients(xp, g, model, r, seed, call, k, draws))
    return Programmed(to_weights(noisy[0], noisy[1], slices[2], r), nus)


def drift(xp: Any, programmed: Programmed, t_inference: float, model: PCMLikeNoiseModel,
          seed: int, call: int, draws: Any = rng) -> Any:
    """The weights at ``t_inference`` seconds after programming (§I3): the programmed weights are
    converted again (with the scale of their own abs-max, as aihwkit does), each slice drifts with
    its ν and gets read noise, and the result is converted back."""
    check_total_time(t_inference, model)
    r = ranges(model)
    g_plus, g_minus, scale = to_conductances(xp, programmed.weights, r)
    out = [drift_conductance(xp, g, nu, t_inference, model, r, seed, call, k, draws)
           for k, (g, nu) in enumerate(zip((g_plus, g_minus), programmed.nu))]
    return to_weights(out[0], out[1], scale, r)


def check_total_time(t_inference: float, model: PCMLikeNoiseModel) -> float:
    """t = t_inference + t₀ (§I3), or a ValueError naming ``t_inference`` when it is beyond
    float64."""
    t = t_inference + model.t_0
    if not math.isfinite(t):
        raise ValueError(f"t_inference: {t_inference!r} s plus t_0 = {model.t_0!r} s is beyond "
                         f"float64")
    return t


def read_spread(t: float, model: PCMLikeNoiseModel) -> float:
    """σ_r/q = sqrt(ln(t + t_read) − ln(2·t_read)) of the read noise at t = t_inference + t₀
    (§I3), a Python float."""
    return math.sqrt(math.log(t + model.t_read) - math.log(2.0 * model.t_read))


def readout(xp: Any, y: Any) -> float:
    """λ = max(mean abs(Y), 1e-4) of the outputs Y of the one-hot reads (§I4), the floor in the
    dtype of Y."""
    return max(float(xp.mean(xp.abs(y))), float(real(y.dtype)(READOUT_FLOOR)))


def with_noise_model(rpu_config: Any, noise_model: Any) -> Any:
    """A frozen copy of ``rpu_config`` with ``noise_model`` in place of its own (§I5), checked:
    a TypeError for anything but a PCMLikeNoiseModel, a ConfigError for a bad one."""
    import copy

    if not isinstance(noise_model, PCMLikeNoiseModel):
        raise TypeError(f"noise_model: expected a PCMLikeNoiseModel, got "
                        f"{type(noise_model).__name__}")
    config = copy.deepcopy(rpu_config)
    config.noise_model = copy.deepcopy(noise_model)
    config.validate()
    return config.frozen()


def check_time(t_inference: Any) -> float:
    """``t_inference`` as a float ≥ 0, or a ValueError naming it."""
    import numbers

    if isinstance(t_inference, bool) or not isinstance(t_inference, numbers.Real):
        raise TypeError(f"t_inference: expected a real number of seconds, got "
                        f"{type(t_inference).__name__}")
    try:
        t = float(t_inference)
    except OverflowError:  # an int beyond float64
        t = math.inf
    if not math.isfinite(t) or t < 0.0:
        raise ValueError(f"t_inference: expected a finite time ≥ 0 s after programming, "
                         f"got {t_inference!r}")
    return t


@dataclasses.dataclass
class InferenceState:
    """What a tile keeps between programming and drifts (§I5): the weights programming starts
    from (``reference``), the programmed weights with their ν, the drift-compensation baseline
    λ₀ (None without compensation) and the current output factor α = λ₀/λ_t (1 until a drift)."""

    reference: Any
    programmed: Programmed
    baseline: Any = None
    factor: float = 1.0


def state_to_dict(xp: Any, state: Any) -> Any:
    """An :class:`InferenceState` as plain data for a tile's state_dict (None stays None)."""
    if state is None:
        return None
    return {"reference": xp.asarray(state.reference, copy=True),
            "programmed": xp.asarray(state.programmed.weights, copy=True),
            "nu": [xp.asarray(nu, copy=True) for nu in state.programmed.nu],
            "baseline": None if state.baseline is None else float(state.baseline),
            "factor": float(state.factor)}


def state_from_dict(xp: Any, data: Any, shape: Tuple[int, int], dtype: Any) -> Any:
    """The :class:`InferenceState` of :func:`state_to_dict`'s output, checked (a ValueError
    naming ``state['inference']`` otherwise); None stays None."""
    if data is None:
        return None
    where = "state['inference']"
    if not isinstance(data, dict) or set(data) != {"reference", "programmed", "nu", "baseline",
                                                   "factor"}:
        raise ValueError(f"{where}: expected the dict of a tile's state_dict, or None")

    def matrix(a: Any, name: str) -> Any:
        if not hasattr(a, "shape") or tuple(a.shape) != shape:
            raise ValueError(f"{where}['{name}']: expected an array of shape {shape}")
        a = xp.astype(xp.asarray(a), dtype, copy=True)
        if not bool(xp.all(xp.isfinite(a))):
            raise ValueError(f"{where}['{name}']: contains NaN or infinity")
        return a

    nus = data["nu"]
    if not isinstance(nus, (list, tuple)) or len(nus) != 2:
        raise ValueError(f"{where}['nu']: expected the two slices' drift coefficients")
    baseline, factor = data["baseline"], data["factor"]
    for name, value in (("baseline", baseline), ("factor", factor)):
        if value is None and name == "baseline":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value) or value <= 0:
            raise ValueError(f"{where}['{name}']: expected a positive finite number")
    programmed = Programmed(matrix(data["programmed"], "programmed"),
                            [matrix(nu, "nu") for nu in nus])
    return InferenceState(matrix(data["reference"], "reference"), programmed,
                          None if baseline is None else float(baseline), float(factor))

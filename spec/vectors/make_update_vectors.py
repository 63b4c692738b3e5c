"""Golden vectors of the update stage (spec/pulses.md, spec/devices.md §V1-§V7, spec/drift.md):
writes spec/vectors/update/*.json.

Regenerate (from the repository root):

    /work/venv/bin/python spec/vectors/make_update_vectors.py

Each case builds an ``AnalogTile`` (SingleRPUConfig with a pulsed device, reference backend,
float64), sets initial weights and runs a sequence of operations on it: pulsed updates
(``tile.update(x, d, lr)``), ``decay_weights``, ``diffuse_weights``, ``reset(prob)`` and
``drift_weights(delta_t)``. It stores the config, the seed, the initial weights, every operation
with its arguments and the weights after it, and, for debugging another implementation, the
drawn device parameters and the signed pulse counts of every update cycle. The format is described
in spec/vectors/README.md; tests/test_update_golden.py replays the files on the reference and the
fast backend and checks that this builder reproduces them.

The weights and inputs are ``(2u − 1)·c`` with ``u`` refsim uniforms (stream ``test.a`` for the
initial weights, ``test.b`` for x and d), so they are exact binary fractions and the same on every
machine. The initial weights are clamped to the device's weight bounds here, before they are
stored, so that a replay sets them with ``set_weights(w)`` (no clip) and starts inside the bounds.

The weights after each operation come from the public tile API alone. The pulse counts of each
cycle are recomputed beside it with the pure stage function ``refsim.stages.pulses.coincidences``
(call number = the tile's ``update`` counter), and the builder checks that applying them with
``refsim.stages.devices.apply_pulses`` gives the tile's weights bit for bit, so the stored counts are
the ones the tile used.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from refsim import rng

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from vector_json import file_text, write_vectors  # noqa: E402,F401  (file_text: used by the tests)
from refsim.configs import (
    ConstantStepDevice,
    DriftParameter,
    ExpStepDevice,
    LinearStepDevice,
    PiecewiseStepDevice,
    PowStepDevice,
    PowStepReferenceDevice,
    SingleRPUConfig,
    SoftBoundsDevice,
    SoftBoundsPmaxDevice,
    SoftBoundsReferenceDevice,
    UpdateParameters,
)
from refsim.stages import devices as device_stage
from refsim.stages import drift as drift_stage
from refsim.stages import pulses as pulse_stage
from refsim.tile import AnalogTile

HERE = pathlib.Path(__file__).resolve().parent
OUT_DIR = HERE / "update"

FORMAT = "refsim-update-vectors"
VERSION = 1

#: Device models whose per-pulse rule uses only +, −, ·, / and clamps (bit-equality is expected
#: between implementations without fused multiply-add); the others use exp/pow (and drift uses
#: pow/log), which may differ in the last bits between math libraries.
EXACT_MODELS = ("ConstantStepDevice", "LinearStepDevice", "SoftBoundsDevice",
                "SoftBoundsReferenceDevice", "PiecewiseStepDevice")


# -- deterministic data -----------------------------------------------------------------------------


def uniform_matrix(seed: int, stream: str, call: int, shape: tuple[int, int], scale: float) -> Any:
    """``(2u − 1)·scale`` with ``u`` refsim uniforms (exact multiples of 2⁻²⁴)."""
    u = rng.uniform(seed, stream, call, shape, xp=np)
    return (2.0 * u - 1.0) * scale


@dataclasses.dataclass(frozen=True)
class Op:
    """One tile operation. ``update``: a batch of ``batch`` rows, x = (2u − 1)·x_scale (stream
    ``test.b``, call 2k), d = (2u − 1)·d_scale (call 2k + 1), k the number of this update in the
    case; rows listed in ``zero_x`` / ``zero_d`` are set to zero, and so are the columns
    ``zero_x_cols`` of every x row (those weights get no pulses). ``reset``: ``value`` is the
    probability; ``drift``: ``value`` is Δt."""

    kind: str
    lr: float = 0.0
    batch: int = 2
    x_scale: float = 1.0
    d_scale: float = 1.0
    zero_x: tuple[int, ...] = ()
    zero_d: tuple[int, ...] = ()
    zero_x_cols: tuple[int, ...] = ()
    value: float = 0.0


def U(lr: float, batch: int = 2, x_scale: float = 1.0, d_scale: float = 1.0, **kw: Any) -> Op:
    return Op("update", lr=lr, batch=batch, x_scale=x_scale, d_scale=d_scale, **kw)


DECAY, DIFFUSE = Op("decay"), Op("diffuse")


def RESET(prob: float) -> Op:
    return Op("reset", value=prob)


def DRIFT(delta_t: float) -> Op:
    return Op("drift", value=delta_t)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    description: str
    config: Callable[[], Any]
    ops: tuple[Op, ...]
    shape: tuple[int, int] = (4, 5)
    seed: int = 20240611
    data_seed: int = 11
    weight_scale: float = 0.25
    hits_bounds: bool = False  # the builder checks that an update moves some weight onto a bound


def single(device: Any = None, **update: Any) -> Callable[[], Any]:
    def make() -> Any:
        return SingleRPUConfig(device=ConstantStepDevice() if device is None else device,
                               update=UpdateParameters(**update))

    return make


def dev(cls: Any, **fields: Any) -> Callable[[], Any]:
    """A config factory for ``cls(**fields)`` with the default update parameters."""
    def make() -> Any:
        return SingleRPUConfig(device=cls(**fields))

    return make


SMALL = {"w_max": 0.05, "w_min": -0.05, "dw_min": 0.01}  # bounds reached within one update
SC, ST, MC, DI = "StochasticCompressed", "Stochastic", "MeanCount", "DeterministicImplicit"

CASES: tuple[Case, ...] = (
    # -- pulse types, ConstantStepDevice ------------------------------------------------------------
    Case("pulse_stochastic_compressed",
         "Default SingleRPUConfig (ConstantStepDevice, StochasticCompressed, update and BL "
         "management, desired_bl 31): two updates, batch 3 then 1.",
         single(), (U(0.02, batch=3), U(0.05, batch=1)), shape=(5, 6)),
    Case("pulse_stochastic",
         "pulse_type Stochastic (the same counts as StochasticCompressed in refsim), batch 4.",
         single(pulse_type=ST), (U(0.02, batch=4),), shape=(4, 6)),
    Case("pulse_mean_count",
         "pulse_type MeanCount (no random bits; the c2c noise of the device is still drawn), "
         "batch 3.",
         single(pulse_type=MC), (U(0.03, batch=3),), shape=(5, 4)),
    Case("pulse_deterministic_implicit",
         "pulse_type DeterministicImplicit, no implicit quantization, batch 2 twice.",
         single(pulse_type=DI), (U(0.03), U(0.01)), shape=(3, 5)),
    Case("pulse_deterministic_implicit_res",
         "pulse_type DeterministicImplicit with x_res_implicit 0.1 and d_res_implicit 0.25.",
         single(pulse_type=DI, x_res_implicit=0.1, d_res_implicit=0.25), (U(0.03, batch=3),),
         shape=(4, 4)),
    Case("pulse_mean_count_bounds",
         "MeanCount on a ConstantStepDevice with bounds ±0.05 and dw_min 0.01: weights reach "
         "both bounds.",
         single(ConstantStepDevice(**SMALL), pulse_type=MC), (U(1.0, batch=2),), shape=(4, 5),
         weight_scale=0.03125, hits_bounds=True),
    # -- device models, default pulse type, c2c noise on --------------------------------------------
    Case("constant_step_bounds",
         "ConstantStepDevice with bounds ±0.05 (dtod 0.3), dw_min 0.01, dw_min_std 0.3: clamps at "
         "both bounds; second update with negative lr.",
         dev(ConstantStepDevice, **SMALL), (U(1.0, batch=2), U(-0.5, batch=1)), shape=(4, 6),
         weight_scale=0.03125, hits_bounds=True),
    Case("constant_step_pulsed_fields",
         "ConstantStepDevice with up_down 0.2, up_down_dtod 0.05, log-normal dw_min_dtod 0.2, "
         "dw_min_std 0.5, construction_seed 4242 (the device draws do not use the tile seed).",
         dev(ConstantStepDevice, up_down=0.2, up_down_dtod=0.05, dw_min_dtod=0.2,
             dw_min_dtod_log_normal=True, dw_min_std=0.5, construction_seed=4242),
         (U(0.02, batch=3),), shape=(4, 5)),
    Case("constant_step_corrupt_perfect_bias",
         "ConstantStepDevice with corrupt_devices_prob 0.3 (range 0.05: stuck devices), "
         "perfect_bias (last column: exact dw_min, bounds ×100) and enforce_consistency False.",
         dev(ConstantStepDevice, corrupt_devices_prob=0.3, corrupt_devices_range=0.05,
             perfect_bias=True, enforce_consistency=False),
         (U(0.03, batch=3),), shape=(5, 5)),
    Case("linear_step",
         "LinearStepDevice gamma_up 0.5, gamma_down 0.3 (dtod 0.05), mean_bound_reference False, "
         "mult_noise False (additive c2c noise), dw_min 0.005; updates with both signs of lr.",
         dev(LinearStepDevice, gamma_up=0.5, gamma_down=0.3, mean_bound_reference=False,
             mult_noise=False, dw_min=0.005),
         (U(0.1, batch=2), U(-0.1, batch=2)), shape=(4, 5), weight_scale=0.5),
    Case("linear_step_reverse",
         "LinearStepDevice gamma_up 0.8, gamma_down -0.2 with allow_increasing, reverse_up "
         "(reverse_offset 0.05), mean bound references, dw_min 0.005.",
         dev(LinearStepDevice, gamma_up=0.8, gamma_down=-0.2, allow_increasing=True,
             reverse_up=True, reverse_offset=0.05, dw_min=0.005),
         (U(0.1, batch=3),), shape=(3, 6), weight_scale=0.5),
    Case("soft_bounds",
         "SoftBoundsDevice, default fields except dw_min 0.01, w_max 0.3, w_min -0.3: weights "
         "approach the bounds.",
         dev(SoftBoundsDevice, dw_min=0.01, w_max=0.3, w_min=-0.3),
         (U(1.0, batch=2), U(1.0, batch=2)), shape=(4, 5)),
    Case("soft_bounds_additive",
         "SoftBoundsDevice with mult_noise False (noise inside the bound factor), dw_min_std 0.6, "
         "dw_min 0.01, bounds ±0.2.",
         dev(SoftBoundsDevice, mult_noise=False, dw_min_std=0.6, dw_min=0.01, w_max=0.2,
             w_min=-0.2),
         (U(0.5, batch=3),), shape=(4, 4), weight_scale=0.125),
    Case("soft_bounds_reverse",
         "SoftBoundsDevice with reverse_up and reverse_down (reverse_offset 0.02), dw_min 0.01.",
         dev(SoftBoundsDevice, reverse_up=True, reverse_down=True, reverse_offset=0.02,
             dw_min=0.01),
         (U(0.3, batch=2),), shape=(5, 4), weight_scale=0.5),
    Case("soft_bounds_pmax",
         "SoftBoundsPmaxDevice p_max 100, alpha 0.01, range [-0.5, 0.5] (derived w_min, w_max, "
         "dw_min, up_down), dw_min_std 0.2.",
         dev(SoftBoundsPmaxDevice, p_max=100, alpha=0.01, range_min=-0.5, range_max=0.5,
             dw_min_std=0.2),
         (U(0.5, batch=2), U(-0.5, batch=2)), shape=(4, 6)),
    Case("soft_bounds_reference",
         "SoftBoundsReferenceDevice (additive noise, its default) with reference_mean 0.1, "
         "reference_std 0.05, slope_up_dtod 0.1, slope_down_dtod 0.2, dw_min 0.01.",
         dev(SoftBoundsReferenceDevice, reference_mean=0.1, reference_std=0.05,
             slope_up_dtod=0.1, slope_down_dtod=0.2, dw_min=0.01),
         (U(0.3, batch=3),), shape=(4, 5)),
    Case("soft_bounds_reference_symmetry_point",
         "SoftBoundsReferenceDevice with mult_noise True, subtract_symmetry_point, up_down 0.3, "
         "dw_min 0.01.",
         dev(SoftBoundsReferenceDevice, mult_noise=True, subtract_symmetry_point=True,
             up_down=0.3, dw_min=0.01),
         (U(0.3, batch=2), U(0.3, batch=2)), shape=(3, 4)),
    Case("exp_step",
         "ExpStepDevice with default exponential fields, dw_min 0.01 (granularity from the mean "
         "down step at w = 0).",
         dev(ExpStepDevice, dw_min=0.01),
         (U(0.5, batch=2), U(0.5, batch=2)), shape=(4, 5), weight_scale=0.5),
    Case("exp_step_extended_noise",
         "ExpStepDevice with dw_min_std_add 0.002 and dw_min_std_slope 0.1 (extended c2c noise), "
         "A_up 0.01, A_down 0.2, dw_min 0.01.",
         dev(ExpStepDevice, dw_min_std_add=0.002, dw_min_std_slope=0.1, A_up=0.01, A_down=0.2,
             dw_min=0.01),
         (U(0.5, batch=3),), shape=(5, 5), weight_scale=0.5),
    Case("pow_step",
         "PowStepDevice pow_gamma 2, pow_gamma_dtod 0.2, pow_up_down 0.2, pow_up_down_dtod 0.05, "
         "dw_min 0.02 (granularity dw_min·0.5^2).",
         dev(PowStepDevice, pow_gamma=2.0, pow_gamma_dtod=0.2, pow_up_down=0.2,
             pow_up_down_dtod=0.05, dw_min=0.02),
         (U(0.2, batch=2), U(-0.2, batch=2)), shape=(4, 5), weight_scale=0.5),
    Case("pow_step_reference",
         "PowStepReferenceDevice pow_gamma 1.5, reference_mean 0.05, reference_std 0.02, "
         "dw_min 0.01.",
         dev(PowStepReferenceDevice, pow_gamma=1.5, reference_mean=0.05, reference_std=0.02,
             dw_min=0.01),
         (U(0.2, batch=3),), shape=(4, 4)),
    Case("pow_step_reference_symmetry_point",
         "PowStepReferenceDevice with subtract_symmetry_point (default n_estimation_steps: "
         "min(rint(10·R/min Δ), 10000) steps per device), pow_up_down -0.3, dw_min 0.01.",
         dev(PowStepReferenceDevice, subtract_symmetry_point=True, pow_up_down=-0.3,
             dw_min=0.01),
         (U(0.2, batch=2),), shape=(3, 5)),
    Case("piecewise_step",
         "PiecewiseStepDevice with 5 nodes (up 1.5 … 0.25, down 0.25 … 1.5), dw_min 0.01, "
         "bounds ±0.3: clamps at the bounds.",
         dev(PiecewiseStepDevice, piecewise_up=[1.5, 1.2, 1.0, 0.6, 0.25],
             piecewise_down=[0.25, 0.6, 1.0, 1.2, 1.5], dw_min=0.01, w_max=0.3, w_min=-0.3),
         (U(2.0, batch=2), U(-2.0, batch=2)), shape=(4, 6), hits_bounds=True),
    # -- UpdateParameters variants (ConstantStepDevice) ---------------------------------------------
    Case("um_off",
         "update_management and update_bl_management off: BL = desired_bl, A = B = "
         "sqrt(η/(g·BL)) without rebalancing; x and d scaled differently.",
         single(update_management=False, update_bl_management=False),
         (U(0.02, batch=2, x_scale=0.5, d_scale=2.0),), shape=(4, 5)),
    Case("ubl_management_off",
         "update_bl_management off, update_management on: BL = desired_bl with rebalanced A, B.",
         single(update_bl_management=False), (U(0.02, batch=2, x_scale=0.5, d_scale=2.0),),
         shape=(4, 5)),
    Case("fixed_bl_false",
         "fixed_bl False with both managements off and η > g·desired_bl: A = B = 1 and "
         "BL = ceil(η/g) = 50 (longer than desired_bl).",
         single(fixed_bl=False, update_management=False, update_bl_management=False),
         (U(0.05, batch=2, x_scale=0.5, d_scale=0.5),), shape=(3, 4)),
    Case("res_steps",
         "res 16 (> 1: 16 steps, bin width 1/16) on the probabilities.",
         single(res=16.0), (U(0.02, batch=3),), shape=(4, 5)),
    Case("res_fraction",
         "res 0.05 (bin width) on the probabilities.",
         single(res=0.05), (U(0.02, batch=3),), shape=(4, 5)),
    Case("sto_round",
         "res 0.1 with sto_round (one uniform per quantized probability).",
         single(res=0.1, sto_round=True), (U(0.02, batch=3),), shape=(5, 4)),
    Case("desired_bl_1",
         "desired_bl 1: at most one pulse per element and cycle.",
         single(desired_bl=1), (U(0.01, batch=4),), shape=(4, 5)),
    Case("desired_bl_100",
         "desired_bl 100 with a large lr (k > 100): long trains, many pulses.",
         single(desired_bl=100), (U(0.2, batch=2),), shape=(3, 4)),
    Case("um_grad_scale",
         "um_grad_scale 0.5 (d saturates first).",
         single(um_grad_scale=0.5), (U(0.05, batch=2),), shape=(4, 5)),
    Case("negative_lr_zero_rows",
         "Negative lr (-0.03, pulses in the direction of +d xᵀ); row 1 of x and row 2 of d are "
         "zero: those cycles send no pulses but still take a call number.",
         single(), (U(-0.03, batch=4, zero_x=(1,), zero_d=(2,)),), shape=(4, 5)),
    # -- device operations --------------------------------------------------------------------------
    Case("decay",
         "ConstantStepDevice with lifetime 5, lifetime_dtod 0.3, reset 0.02, reset_dtod 0.01: "
         "update, decay, update, decay (w ← β + (w − β)·κ, clamped).",
         dev(ConstantStepDevice, lifetime=5.0, lifetime_dtod=0.3, reset=0.02, reset_dtod=0.01),
         (U(0.05), DECAY, U(0.05), DECAY), shape=(4, 5)),
    Case("diffusion",
         "SoftBoundsDevice with diffusion 0.01, diffusion_dtod 0.3: update, diffuse, diffuse, "
         "update.",
         dev(SoftBoundsDevice, diffusion=0.01, diffusion_dtod=0.3),
         (U(0.05), DIFFUSE, DIFFUSE, U(0.05)), shape=(4, 5)),
    Case("reset_prob_1",
         "ConstantStepDevice with reset 0.01, reset_dtod 0.02, reset_std 0.03: update, reset(1), "
         "update.",
         dev(ConstantStepDevice, reset=0.01, reset_dtod=0.02, reset_std=0.03),
         (U(0.05), RESET(1.0), U(0.05)), shape=(4, 5)),
    Case("reset_prob_half",
         "ConstantStepDevice with reset_std 0.02: update, reset(0.5) (each element with "
         "probability 0.5), reset(0.5), update.",
         dev(ConstantStepDevice, reset_std=0.02),
         (U(0.05), RESET(0.5), RESET(0.5), U(0.05)), shape=(5, 6)),
    Case("drift",
         "ConstantStepDevice with drift nu 0.1, nu_dtod 0.2: update, drift(5), drift(20), update "
         "with x columns 0 and 3 zero (the pulsed elements restart, the others keep drifting), "
         "drift(10), drift(10); clamped to the bounds.",
         dev(ConstantStepDevice, drift=DriftParameter(nu=0.1, nu_dtod=0.2)),
         (U(0.05), DRIFT(5.0), DRIFT(20.0), U(0.05, zero_x_cols=(0, 3)), DRIFT(10.0),
          DRIFT(10.0)), shape=(4, 5)),
    Case("drift_full",
         "SoftBoundsDevice with drift nu 0.05, nu_dtod 0.1, nu_std 0.1, nu_k 0.05, log_g0 0.1, "
         "g_offset 1, wg_ratio 2, w_offset 0.1, w_noise_std 0.001, t_0 2, reset_tol 1e-6: "
         "update, drift(8), update (x column 1 zero), drift(8), drift(8).",
         dev(SoftBoundsDevice, dw_min=0.01,
             drift=DriftParameter(nu=0.05, nu_dtod=0.1, nu_std=0.1, nu_k=0.05, log_g0=0.1,
                                  g_offset=1.0, wg_ratio=2.0, w_offset=0.1, w_noise_std=0.001,
                                  t_0=2.0, reset_tol=1e-6)),
         (U(0.2), DRIFT(8.0), U(0.2, zero_x_cols=(1,)), DRIFT(8.0), DRIFT(8.0)), shape=(3, 4)),
    Case("all_operations",
         "PiecewiseStepDevice (3 nodes) with diffusion 0.005, lifetime 20, reset_std 0.01 and "
         "drift nu 0.05: update, diffuse, decay, reset(0.5), drift(4), update (x columns 2 and 5 "
         "zero), drift(4).",
         dev(PiecewiseStepDevice, piecewise_up=[1.2, 1.0, 0.8], piecewise_down=[0.8, 1.0, 1.2],
             diffusion=0.005, lifetime=20.0, reset_std=0.01, drift=DriftParameter(nu=0.05)),
         (U(0.05), DIFFUSE, DECAY, RESET(0.5), DRIFT(4.0), U(0.05, zero_x_cols=(2, 5)),
          DRIFT(4.0)), shape=(6, 7)),
)


# -- running a case -------------------------------------------------------------------------------


def _matrix(a: Any) -> list[list[float]]:
    return [[float(v) for v in row] for row in np.asarray(a, dtype=np.float64)]


def _ints(a: Any) -> list[list[int]]:
    return [[int(v) for v in row] for row in np.asarray(a)]


def device_record(tile: AnalogTile) -> dict[str, Any]:
    """The drawn per-element parameters (spec/devices.md §V1-§V2, spec/drift.md §D1): always
    b_min, b_max, dw_up, dw_down; the reset bias, decay factor and diffusion rate when they are not
    inert (β ≠ 0, κ ≠ 1, ρ ≠ 0); the model-specific arrays of §V2; the drift exponents ν_ij when
    drift is active."""
    p = tile.device_params
    out = {"b_min": _matrix(p.b_min), "b_max": _matrix(p.b_max), "dw_up": _matrix(p.dw_up),
           "dw_down": _matrix(p.dw_down)}
    for key, inert in (("reset_bias", 0.0), ("kappa", 1.0), ("rho", 0.0)):
        value = getattr(p, key)
        if bool(np.any(value != inert)):
            out[key] = _matrix(value)
    for key in sorted(p.extra):
        out[key] = _matrix(p.extra[key])
    drift = tile.rpu_config.device.drift
    if drift_stage.is_active(drift):
        out["drift_nu"] = _matrix(drift_stage.drift_nu(np, drift, (tile.out_size, tile.in_size),
                                                       tile.construction_seed))
    return out


def update_data(case: Case, op: Op, k: int) -> tuple[Any, Any]:
    m, n = case.shape
    x = uniform_matrix(case.data_seed, "test.b", 2 * k, (op.batch, n), op.x_scale)
    d = uniform_matrix(case.data_seed, "test.b", 2 * k + 1, (op.batch, m), op.d_scale)
    for row in op.zero_x:
        x[row] = 0.0
    for row in op.zero_d:
        d[row] = 0.0
    for col in op.zero_x_cols:
        x[:, col] = 0.0
    return x, d


def _calls(tile: AnalogTile) -> dict[str, int]:
    return dict(tile.streams.state_dict()["calls"])


def _run_update(tile: AnalogTile, x: Any, d: Any, lr: float) -> list[dict[str, Any]]:
    """``tile.update(x, d, lr)``; returns the cycles' BL and signed counts, recomputed with the
    stage functions and checked against the tile's result (see the module docstring)."""
    cfg = tile.rpu_config
    g = device_stage.granularity(cfg.device)
    first = _calls(tile).get("update", 0)
    w = tile.get_weights()
    cycles = []
    for r in range(x.shape[0]):
        counts, plan = pulse_stage.coincidences(np, x[r], d[r], lr, g, cfg.update,
                                                tile.streams.seed, first + r)
        if plan.bl > 0:
            w = device_stage.apply_pulses(np, w, counts, tile.device_params, cfg.device, plan.bl,
                                          tile.streams.seed, first + r)
        cycles.append({"bl": int(plan.bl), "counts": _ints(counts)})
    tile.update(x, d, lr)
    assert np.array_equal(w, tile.get_weights()), "the recomputed pulses differ from the tile's"
    return cycles


def run_case(case: Case) -> dict[str, Any]:
    """Build the tile of ``case``, run its operations, return the vector record (JSON-able)."""
    config = case.config()
    m, n = case.shape
    tile = AnalogTile(m, n, config, seed=case.seed, backend="reference")
    lo, hi = device_stage.weight_bounds(tile.device_params)
    weights = np.clip(uniform_matrix(case.data_seed, "test.a", 0, case.shape, case.weight_scale),
                      np.asarray(lo), np.asarray(hi))
    tile.set_weights(weights)
    steps = []
    updates = 0
    at_bound = False
    for op in case.ops:
        before = tile.get_weights()
        step: dict[str, Any]
        if op.kind == "update":
            x, d = update_data(case, op, updates)
            updates += 1
            cycles = _run_update(tile, x, d, op.lr)
            step = {"operation": ["update", {"x": _matrix(x), "d": _matrix(d), "lr": op.lr}],
                    "cycles": cycles}
        elif op.kind == "decay":
            tile.decay_weights()
            step = {"operation": ["decay"]}
        elif op.kind == "diffuse":
            tile.diffuse_weights()
            step = {"operation": ["diffuse"]}
        elif op.kind == "reset":
            tile.reset(op.value)
            step = {"operation": ["reset", op.value]}
        elif op.kind == "drift":
            tile.drift_weights(op.value)
            step = {"operation": ["drift", op.value]}
        else:
            raise ValueError(op.kind)
        after = tile.get_weights()
        assert not np.array_equal(before, after), (case.name, op, "changes no weight")
        if op.kind == "update":
            assert any(any(v for v in row) for c in step["cycles"] for row in c["counts"]), \
                (case.name, "no pulses")
            reached = ((after == lo) & (before != lo)) | ((after == hi) & (before != hi))
            at_bound = at_bound or bool(np.any(reached))
        step["weights"] = _matrix(after)
        step["rng_calls"] = _calls(tile)
        steps.append(step)
    if case.hits_bounds:
        assert at_bound, (case.name, "no weight reached a bound")
    model = type(config.device).__name__
    drift = any(op.kind == "drift" for op in case.ops)
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": case.name,
        "description": case.description,
        "seed": case.seed,
        "construction_seed": tile.construction_seed,
        "shape": {"out_size": m, "in_size": n},
        "dtype": "float64",
        "exact": model in EXACT_MODELS and not drift and not config.device.dw_min_dtod_log_normal,
        "rpu_config": config.to_dict(),
        "granularity": device_stage.granularity(config.device),
        "device_params": device_record(tile),
        "weights": _matrix(weights),
        "steps": steps,
    }


# -- a stable, diff-friendly JSON layout ----------------------------------------------------------


def main(argv: Sequence[str] = ()) -> int:
    return write_vectors(OUT_DIR, CASES, run_case)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The device stage (spec/devices.md §V1-§V7) and the tile's update, decay, diffusion and reset."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import OTHER_NAMESPACES, to_numpy
from refsim import rng
from refsim.configs import (
    ConfigError,
    ConstantStepDevice,
    ExpStepDevice,
    FloatingPointRPUConfig,
    IdealDevice,
    InferenceRPUConfig,
    LinearStepDevice,
    PiecewiseStepDevice,
    PowStepDevice,
    PowStepReferenceDevice,
    SingleRPUConfig,
    SoftBoundsDevice,
    SoftBoundsPmaxDevice,
    SoftBoundsReferenceDevice,
    UnitCellRPUConfig,
    UpdateParameters,
)
from refsim.stages import devices as D
from refsim.tile import AnalogTile

NP = rng._namespace(None)

#: Statistical bounds are Z standard errors wide (a false alarm about once in 150 000 checks).
Z = 4.5

#: Every device-to-device spread switched off, and no cycle-to-cycle noise.
QUIET = dict(w_max_dtod=0.0, w_min_dtod=0.0, dw_min_dtod=0.0, up_down_dtod=0.0, dw_min_std=0.0)

DEVICES = [ConstantStepDevice, LinearStepDevice, SoftBoundsDevice, SoftBoundsPmaxDevice,
           SoftBoundsReferenceDevice, ExpStepDevice, PowStepDevice, PowStepReferenceDevice,
           PiecewiseStepDevice]


def quiet(cls, **kw):
    extra = dict(QUIET)
    if cls is LinearStepDevice:
        extra.update(gamma_up_dtod=0.0, gamma_down_dtod=0.0)
    if cls in (PowStepDevice, PowStepReferenceDevice):
        extra.update(pow_gamma_dtod=0.0)
    extra.update(kw)
    return cls(**extra)


def one_pulse(cfg, w, sign, params=None):
    """w after one pulse of direction ``sign`` on every element (numpy, float64)."""
    w = np.asarray(w, dtype=np.float64)
    if params is None:
        params = D.draw_device(NP, cfg, w.shape, 5)
    counts = np.full(w.shape, sign, dtype=np.int32)
    return D.apply_pulses(NP, w, counts, params, cfg, 1, 5, 0), params


W_GRID = np.linspace(-0.55, 0.55, 12).reshape(3, 4)


def test_streams_are_registered():
    assert set(D.stream_names()) <= set(rng.STREAMS)
    ids = [rng.stream_id(s) for s in rng.STREAMS]
    assert len(ids) == len(set(ids))


# -- single-pulse formulas (dw_min_std = 0, no dtod) --------------------------------------------


@pytest.mark.parametrize("up_down", [0.0, 0.2, -0.3])
def test_constant_step(up_down):
    cfg = quiet(ConstantStepDevice, up_down=up_down, w_max=10.0, w_min=-10.0)
    w = W_GRID
    up, _ = one_pulse(cfg, w, +1)
    down, _ = one_pulse(cfg, w, -1)
    # one-sided asymmetry (aihwkit's code)
    np.testing.assert_allclose(up - w, 0.001 * (1 + min(up_down, 0)), rtol=1e-12)
    np.testing.assert_allclose(w - down, 0.001 * (1 - max(up_down, 0)), rtol=1e-12)


@pytest.mark.parametrize("mult", [True, False])
@pytest.mark.parametrize("mean_ref", [True, False])
def test_linear_step(mult, mean_ref):
    cfg = quiet(LinearStepDevice, gamma_up=0.4, gamma_down=0.7, mult_noise=mult,
                mean_bound_reference=mean_ref, w_max=0.8, w_min=-0.6, dw_min=0.01)
    up, _ = one_pulse(cfg, W_GRID, +1)
    down, _ = one_pulse(cfg, W_GRID, -1)
    w = W_GRID
    exp_up = np.clip(w + 0.01 * (1 - 0.4 * w / 0.8), -0.6, 0.8)
    exp_down = np.clip(w - 0.01 * (1 - 0.7 * w / -0.6), -0.6, 0.8)
    np.testing.assert_allclose(up, exp_up, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(down, exp_down, rtol=1e-12, atol=1e-15)


def test_linear_step_reverse():
    cfg = quiet(LinearStepDevice, gamma_up=1.0, gamma_down=1.0, reverse_up=True,
                reverse_down=True, dw_min=0.01)
    up, _ = one_pulse(cfg, W_GRID, +1)
    down, _ = one_pulse(cfg, W_GRID, -1)
    w = W_GRID
    np.testing.assert_allclose(up, np.clip(w + 0.01 * (1 - w / (-0.6 - 0.01)), -0.6, 0.6),
                               rtol=1e-12)
    np.testing.assert_allclose(down, np.clip(w - 0.01 * (1 - w / (0.6 + 0.01)), -0.6, 0.6),
                               rtol=1e-12)


def test_soft_bounds():
    cfg = quiet(SoftBoundsDevice, w_max=0.7, w_min=-0.5, dw_min=0.02)
    w = W_GRID
    up, _ = one_pulse(cfg, w, +1)
    down, _ = one_pulse(cfg, w, -1)
    np.testing.assert_allclose(up, np.clip(w + 0.02 * (1 - w / 0.7), -0.5, 0.7), rtol=1e-12)
    np.testing.assert_allclose(down, np.clip(w - 0.02 * (1 - w / -0.5), -0.5, 0.7), rtol=1e-12)


def test_soft_bounds_pmax_derived():
    cfg = quiet(SoftBoundsPmaxDevice)
    big = 2.0 / (1 - math.exp(-1000 * 0.0005))
    eff = D.effective(cfg)
    assert eff["w_min"] == -1.0 and math.isclose(eff["w_max"], -1.0 + big)
    assert math.isclose(eff["dw_min"], big * 0.0005) and math.isclose(eff["up_down"],
                                                                     1 - 2.0 / big)
    assert math.isclose(D.granularity(cfg), big * 0.0005)
    w = np.zeros((1, 1))
    up, p = one_pulse(cfg, w, +1)
    down, _ = one_pulse(cfg, w, -1)
    dw = big * 0.0005
    assert math.isclose(float(up[0, 0]), dw, rel_tol=1e-12)
    assert math.isclose(float(-down[0, 0]), dw * (1 - eff["up_down"]), rel_tol=1e-12)
    assert math.isclose(float(p.b_max[0, 0]), -1.0 + big)


@pytest.mark.parametrize("mult", [True, False])
def test_soft_bounds_reference(mult):
    cfg = quiet(SoftBoundsReferenceDevice, reference_mean=0.1, mult_noise=mult, dw_min=0.02)
    w = W_GRID
    up, _ = one_pulse(cfg, w, +1)
    down, _ = one_pulse(cfg, w, -1)
    u = w + 0.1
    np.testing.assert_allclose(up, np.clip(u + 0.02 * (1 - u / 0.6), -0.6, 0.6) - 0.1,
                               rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(down, np.clip(u - 0.02 * (1 - u / -0.6), -0.6, 0.6) - 0.1,
                               rtol=1e-12, atol=1e-15)


def test_soft_bounds_reference_symmetry_point():
    cfg = quiet(SoftBoundsReferenceDevice, up_down=0.3, subtract_symmetry_point=True)
    p = D.draw_device(NP, cfg, (2, 2), 1)
    su, sd = 0.001, 0.001 * 0.7
    sp = (su - sd) / (su / 0.6 - sd / -0.6)
    np.testing.assert_allclose(to_numpy(p.extra["reference"]), sp, rtol=1e-12)
    np.testing.assert_allclose(to_numpy(p.reset_bias), sp, rtol=1e-12)
    # at w = 0 (u = sp) the noise-free up and down steps are equal
    w = np.zeros((2, 2))
    up, _ = one_pulse(cfg, w, +1, p)
    down, _ = one_pulse(cfg, w, -1, p)
    np.testing.assert_allclose(up, -down, rtol=1e-9)


def test_exp_step():
    cfg = quiet(ExpStepDevice, dw_min=0.01)
    w = W_GRID
    up, _ = one_pulse(cfg, w, +1)
    down, _ = one_pulse(cfg, w, -1)
    z = 2 * 0.244 * w / 1.2 + 0.2425
    y_up = np.maximum(1 - 0.00081 * np.exp(12.44625 * z), 0)
    y_down = np.maximum(1 - 0.36833 * np.exp(-12.78785 * z), 0)
    np.testing.assert_allclose(up, np.clip(w + 0.01 * y_up, -0.6, 0.6), rtol=1e-12)
    np.testing.assert_allclose(down, np.clip(w - 0.01 * y_down, -0.6, 0.6), rtol=1e-12)
    assert math.isclose(D.granularity(cfg), 0.01 * (1 - 0.36833 * math.exp(-12.78785 * 0.2425)))


def test_exp_step_extended_noise():
    cfg = quiet(ExpStepDevice, dw_min=0.01, dw_min_std=0.5, dw_min_std_add=0.002,
                dw_min_std_slope=0.1)
    w = W_GRID
    p = D.draw_device(NP, cfg, w.shape, 5)
    up = D.apply_pulses(NP, w, np.ones(w.shape, dtype=np.int32), p, cfg, 1, 5, 0)
    xi = to_numpy(rng.normal16(5, "device.c2c", 0, w.shape))
    z = 2 * 0.244 * w / 1.2 + 0.2425
    dw = 0.01 * np.maximum(1 - 0.00081 * np.exp(12.44625 * z), 0)
    expect = w + dw + 0.5 * (np.abs(dw) + 0.002 + 0.1 * np.abs(w)) * xi
    np.testing.assert_allclose(up, np.clip(expect, -0.6, 0.6), rtol=1e-12)


@pytest.mark.parametrize("cls", [PowStepDevice, PowStepReferenceDevice])
def test_pow_step(cls):
    cfg = quiet(cls, pow_gamma=1.7, pow_up_down=0.2, dw_min=0.01)
    w = W_GRID
    up, _ = one_pulse(cfg, w, +1)
    down, _ = one_pulse(cfg, w, -1)
    g_up, g_down = 1.7, 1.7 * 0.8
    np.testing.assert_allclose(up, np.clip(w + 0.01 * ((0.6 - w) / 1.2) ** g_up, -0.6, 0.6),
                               rtol=1e-12)
    np.testing.assert_allclose(down, np.clip(w - 0.01 * ((w + 0.6) / 1.2) ** g_down, -0.6, 0.6),
                               rtol=1e-12)
    assert D.granularity(cfg) == 0.01 * 0.5 ** 1.7


def test_pow_step_reference_symmetry_point():
    cfg = quiet(PowStepReferenceDevice, pow_up_down=0.3, subtract_symmetry_point=True,
                dw_min=0.01)
    p = D.draw_device(NP, cfg, (1, 2), 1)
    sp = float(to_numpy(p.extra["reference"])[0, 0])
    assert sp != 0.0
    # at u = sp the two noise-free steps (nearly) balance
    up = 0.01 * ((0.6 - sp) / 1.2) ** 1.0
    down = 0.01 * ((sp + 0.6) / 1.2) ** 0.7
    assert abs(up - down) < 1e-4
    assert float(to_numpy(p.reset_bias)[0, 0]) == sp


@pytest.mark.parametrize("cls", [ExpStepDevice, PowStepDevice, PowStepReferenceDevice,
                                 ConstantStepDevice])
def test_device_without_range(cls):
    """ExpStep and PowStep(Reference) leave a device with b+ = b- untouched (no clamp either);
    the other models clamp it to its stuck value."""
    cfg = quiet(cls, corrupt_devices_prob=1.0)
    p = D.draw_device(NP, cfg, (2, 3), 1)
    assert (np.asarray(p.b_min) == np.asarray(p.b_max)).all()
    w = np.full((2, 3), 0.5)
    up, _ = one_pulse(cfg, w, +1, p)
    if cls is ConstantStepDevice:
        np.testing.assert_array_equal(up, p.b_max)
    else:
        np.testing.assert_array_equal(up, w)


def test_piecewise_step():
    nodes_up, nodes_down = [0.5, 1.0, 2.0], [2.0, 1.0, 0.25]
    cfg = quiet(PiecewiseStepDevice, piecewise_up=nodes_up, piecewise_down=nodes_down)
    w = W_GRID
    up, _ = one_pulse(cfg, w, +1)
    down, _ = one_pulse(cfg, w, -1)
    grid = np.linspace(-0.6, 0.6, 3)
    np.testing.assert_allclose(up, np.clip(w + 0.001 * np.interp(w, grid, nodes_up), -.6, .6),
                               rtol=1e-12)
    np.testing.assert_allclose(down, np.clip(w - 0.001 * np.interp(w, grid, nodes_down), -.6, .6),
                               rtol=1e-12)
    assert D.granularity(cfg) == 0.001 * 1.0


def test_multiplicative_noise_uses_c2c_numbers():
    """Pulse t of element (i, j) uses number (device_index·m + i)·n·BL + Σ_{j' < j} abs(c_ij') + t
    of device.c2c: a row's pulses take consecutive numbers in element order."""
    cfg = quiet(ConstantStepDevice, dw_min_std=0.3, w_max=10.0, w_min=-10.0)
    m, n, bl = 2, 3, 4
    p = D.draw_device(NP, cfg, (m, n), 1)
    counts = np.array([[4, -2, 0], [1, 3, -4]], dtype=np.int32)
    w = D.apply_pulses(NP, np.zeros((m, n)), counts, p, cfg, bl, 9, 7, device_index=2)
    run = to_numpy(rng.normal16(9, "device.c2c", 7, (m, n * bl), start=2 * m * n * bl))
    expect = np.zeros((m, n))
    for i in range(m):
        number = 0
        for j in range(n):
            for _ in range(abs(counts[i, j])):
                expect[i, j] += np.sign(counts[i, j]) * 0.001 * (1 + 0.3 * run[i, number])
                number += 1
    np.testing.assert_allclose(w, expect, rtol=1e-12, atol=1e-18)


# -- device-to-device draws -----------------------------------------------------------------------


def test_draws_are_deterministic_and_spread_as_configured():
    cfg = LinearStepDevice(w_max_dtod=0.2, w_min_dtod=0.1, dw_min_dtod=0.3, up_down_dtod=0.05,
                           reset=0.05, reset_dtod=0.02, lifetime=100.0, lifetime_dtod=0.1,
                           diffusion=0.01, diffusion_dtod=0.2)
    shape = (150, 200)
    a = D.draw_device(NP, cfg, shape, 42)
    b = D.draw_device(NP, cfg, shape, 42)
    c = D.draw_device(NP, cfg, shape, 43)
    d = D.draw_device(NP, cfg, shape, 42, device_index=1)
    for f in ("b_min", "b_max", "dw_up", "dw_down", "reset_bias", "kappa", "rho"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
        assert not np.array_equal(getattr(a, f), getattr(c, f))
        assert not np.array_equal(getattr(a, f), getattr(d, f))

    def mean_std(v, mean, std):
        """Sample mean and std of ``v.size`` Gaussian draws within Z standard errors: std/√N for
        the mean, std/√(2N) for the standard deviation (30 000 draws: ±0.026·std, ±1.8 %)."""
        v = np.asarray(v)
        assert abs(v.mean() - mean) < Z * abs(std) / math.sqrt(v.size), (v.mean(), mean)
        assert abs(v.std() / std - 1) < Z / math.sqrt(2 * v.size), (v.std(), std)

    mean_std(a.b_max, 0.6, 0.6 * 0.2)
    mean_std(a.b_min, -0.6, 0.6 * 0.1)
    mean_std((a.dw_up + a.dw_down) / 2, 0.001, 0.001 * 0.3)
    mean_std((a.dw_up - a.dw_down) / 2, 0.0, 0.001 * 0.05)
    mean_std(a.reset_bias, 0.05, 0.02)
    mean_std(a.rho, 0.01, 0.01 * 0.2)
    mean_std(1 / (1 - np.asarray(a.kappa)), 100.0, 10.0)
    # exact formula of one quantity
    xi = to_numpy(rng.normal(42, "device.w_max", 0, shape))
    np.testing.assert_allclose(a.b_max, 0.6 * (1 + 0.2 * xi), rtol=1e-15)


def test_consistency_and_corruption_and_perfect_bias():
    cfg = ConstantStepDevice(w_max_dtod=3.0, w_min_dtod=3.0, dw_min_dtod=3.0,
                             corrupt_devices_prob=0.3, perfect_bias=True)
    shape = (200, 200)
    p = D.draw_device(NP, cfg, shape, 3)
    b_min, b_max = np.asarray(p.b_min), np.asarray(p.b_max)
    assert (np.asarray(p.dw_up) >= 0).all() and (np.asarray(p.dw_down) >= 0).all()
    stuck = (np.asarray(p.dw_up) == 0)[:, :-1]
    live = ~stuck  # a corrupt device is stuck at a value in [-R, R] within its bounds
    assert (b_max[:, :-1][live] >= 0).all() and (b_min[:, :-1][live] <= 0).all()
    # 39 800 elements: the fraction within Z binomial standard errors (±0.010 around 0.3) ...
    assert abs(stuck.mean() - 0.3) < Z * math.sqrt(0.3 * 0.7 / stuck.size), stuck.mean()
    # ... and exactly the elements whose number of device.corrupt is < 0.3 (devices.md §V1)
    u = to_numpy(rng.uniform(3, "device.corrupt", 0, shape))
    np.testing.assert_array_equal(stuck, (u < 0.3)[:, :-1])
    assert (b_min[:, :-1][stuck] == b_max[:, :-1][stuck]).all()
    assert (np.abs(b_max[:, :-1][stuck]) <= 0.1).all()
    assert (b_max[:, -1] == 60.0).all() and (b_min[:, -1] == -60.0).all()
    assert (np.asarray(p.dw_up)[:, -1] == 0.001).all()
    # without enforce_consistency, crossed bounds collapse to their midpoint
    cfg = ConstantStepDevice(w_max_dtod=3.0, w_min_dtod=3.0, enforce_consistency=False)
    p = D.draw_device(NP, cfg, (60, 50), 3)
    assert (np.asarray(p.b_min) <= np.asarray(p.b_max)).all()
    assert (np.asarray(p.b_min) == np.asarray(p.b_max)).any()


def test_unsupported_fields_are_config_errors():
    # write noise and pulse counting are implemented (tests/test_write_noise.py)
    AnalogTile(2, 2, SingleRPUConfig(device=SoftBoundsDevice(write_noise_std=0.1)))
    AnalogTile(2, 2, SingleRPUConfig(device=ConstantStepDevice(count_pulses=True)))
    with pytest.raises(ConfigError, match="contain 0"):
        AnalogTile(2, 2, SingleRPUConfig(device=ConstantStepDevice(w_min=0.1, w_max=0.6)))


# -- tile ---------------------------------------------------------------------------------------


def test_set_weights_clamps_to_the_device_bounds():
    t = AnalogTile(3, 4, SingleRPUConfig(device=ConstantStepDevice()), seed=2)
    t.set_weights(np.full((3, 4), 5.0), clip=True)
    np.testing.assert_array_equal(t.get_weights(), t.device_params.b_max)
    t.set_weights(np.full((3, 4), 5.0))  # default: stored unchanged (forward goldens)
    assert (t.get_weights() == 5.0).all()
    with pytest.raises(TypeError, match="clip"):
        t.set_weights(np.zeros((3, 4)), clip=1)
    # pulse type 'None': a floating-point device without bounds
    t = AnalogTile(3, 4, SingleRPUConfig(update=UpdateParameters(pulse_type="None")))
    t.set_weights(np.full((3, 4), 5.0), clip=True)
    assert (t.get_weights() == 5.0).all()


@given(st.sampled_from(DEVICES), st.integers(0, 2**32 - 1), st.floats(0.001, 2.0),
       st.floats(0.0, 0.6), st.floats(0.0, 2.0), st.booleans(), st.integers(1, 4))
def test_weights_never_leave_their_bounds(cls, seed, lr, dtod, std, consistent, batch):
    kw = dict(w_max_dtod=dtod, w_min_dtod=dtod, dw_min_std=std, enforce_consistency=consistent,
              diffusion=0.01, lifetime=20.0, reset=0.1)
    if cls is SoftBoundsPmaxDevice:
        kw["alpha"] = 0.05
    else:
        kw["dw_min"] = 0.05
    if cls in (SoftBoundsReferenceDevice, PowStepReferenceDevice):
        kw["reference_std"] = 0.2
    t = AnalogTile(3, 5, SingleRPUConfig(device=cls(**kw)), seed=seed)
    lo, hi = (np.asarray(b) for b in D.weight_bounds(t.device_params))
    g = np.random.default_rng(seed)
    t.set_weights(g.normal(size=(3, 5)), clip=True)
    for _ in range(3):
        before = np.asarray(t.get_weights())
        t.update(g.normal(size=(batch, 5)), g.normal(size=(batch, 3)), lr)
        w = np.asarray(t.get_weights())
        assert np.isfinite(w).all()
        if cls in (SoftBoundsReferenceDevice, PowStepReferenceDevice):
            # pulses keep u = w + ref in [b-, b+]; set_weights, decay, diffusion and reset clamp
            # w itself to [b-, b+] (aihwkit's base clip), so an unpulsed element may lie outside
            pulsed = w != before
            assert (w[pulsed] >= lo[pulsed]).all() and (w[pulsed] <= hi[pulsed]).all()
            assert (w >= np.minimum(lo, before)).all() and (w <= np.maximum(hi, before)).all()
        else:
            assert (w >= np.asarray(t.device_params.b_min)).all()
            assert (w <= np.asarray(t.device_params.b_max)).all()
    t.post_update_step()
    t.reset(0.5)
    w = np.asarray(t.get_weights())
    assert (w >= np.asarray(t.device_params.b_min)).all()
    assert (w <= np.asarray(t.device_params.b_max)).all()


@pytest.mark.parametrize("backend", ["reference", "fast"])
def test_expected_update_of_constant_step(backend):
    """E[ΔW] = −lr·d xᵀ for ConstantStep without saturation (spec/devices.md §V3), on the
    reference cycle loop and on the compiled kernel alike."""
    if backend == "fast":
        pytest.importorskip("refsim_fast")
    x = np.array([0.8, -0.3, 0.5, 0.0])
    d = np.array([0.6, -0.9, 0.2])
    lr, rows, seeds = 0.01, 40, 25
    cfg = ConstantStepDevice(w_max=10.0, w_min=-10.0, dw_min_dtod=0.0, up_down_dtod=0.0,
                             w_max_dtod=0.0, w_min_dtod=0.0, dw_min_std=0.3)
    total = []
    for seed in range(seeds):
        t = AnalogTile(3, 4, SingleRPUConfig(device=cfg), seed=seed, backend=backend)
        t.update(np.tile(x, (rows, 1)), np.tile(d, (rows, 1)), lr)
        total.append(np.asarray(t.get_weights()))
    total = np.array(total)
    expect = -lr * rows * np.outer(d, x)
    se = total.std(axis=0) / math.sqrt(seeds) + 1e-12
    assert (np.abs(total.mean(axis=0) - expect) < 5 * se + 1e-12).all()
    assert (total[:, :, 3] == 0).all()  # x = 0: no pulses
    assert np.abs(total.mean(axis=0) - expect).max() < 0.1 * np.abs(expect).max()


@pytest.mark.parametrize("pulse_type", ["StochasticCompressed", "MeanCount"])
def test_checkpoint_resume(pulse_type):
    cfg = SingleRPUConfig(device=SoftBoundsDevice(diffusion=0.001, lifetime=50.0),
                          update=UpdateParameters(pulse_type=pulse_type))
    g = np.random.default_rng(0)
    xs, ds = g.normal(size=(6, 2, 4)), g.normal(size=(6, 2, 3))

    def step(tile, k):
        tile.update(xs[k], ds[k], 0.05)
        tile.post_update_step()

    full = AnalogTile(3, 4, cfg, seed=11)
    for k in range(6):
        step(full, k)
    first = AnalogTile(3, 4, cfg, seed=11)
    for k in range(4):
        step(first, k)
    state = first.state_dict()
    fresh = AnalogTile(3, 4, cfg, seed=99)  # other seed: device parameters are redrawn
    fresh.load_state_dict(state)
    for k in range(4, 6):
        step(fresh, k)
    np.testing.assert_array_equal(fresh.get_weights(), full.get_weights())


@pytest.mark.parametrize("xp", OTHER_NAMESPACES)
@pytest.mark.parametrize("cls", DEVICES)
def test_namespaces_agree(xp, cls):
    if xp is None:
        pytest.skip("namespace missing")
    ns = rng._namespace(xp)
    kw = dict(dw_min_std=0.2, diffusion=0.01, lifetime=30.0)
    if cls in (SoftBoundsReferenceDevice, PowStepReferenceDevice):
        kw["reference_std"] = 0.1
    cfg = SingleRPUConfig(device=cls(**kw))
    g = np.random.default_rng(1)
    w0, xs, ds = g.uniform(-0.3, 0.3, (3, 4)), g.normal(size=(3, 4)), g.normal(size=(3, 3))
    results = []
    for space, module in ((NP, None), (ns, xp)):
        t = AnalogTile(3, 4, cfg, seed=5, xp=module)
        t.set_weights(space.asarray(w0))
        t.update(space.asarray(xs), space.asarray(ds), 0.1)
        t.post_update_step()
        t.reset(0.5)
        results.append(to_numpy(t.get_weights()))
    np.testing.assert_allclose(results[1], results[0], rtol=1e-12, atol=1e-15)


def test_float_updates():
    g = np.random.default_rng(2)
    x, d, w0 = g.normal(size=(5, 4)), g.normal(size=(5, 3)), g.normal(size=(3, 4))
    exact = w0 - 0.1 * d.T @ x
    for cfg in (FloatingPointRPUConfig(), InferenceRPUConfig(),
                SingleRPUConfig(device=IdealDevice()),
                SingleRPUConfig(update=UpdateParameters(pulse_type="None"))):
        t = AnalogTile(3, 4, cfg)
        t.set_weights(w0)
        t.update(x, d, 0.1)
        np.testing.assert_allclose(t.get_weights(), exact, rtol=1e-12)
    t = AnalogTile(3, 4, SingleRPUConfig(update=UpdateParameters(pulse_type="NoneWithDevice")))
    t.set_weights(w0, clip=True)
    start = np.asarray(t.get_weights())
    t.update(x, d, 0.1)
    w = start
    for k in range(5):
        w = np.clip(w - 0.1 * np.outer(d[k], x[k]), t.device_params.b_min, t.device_params.b_max)
    np.testing.assert_allclose(t.get_weights(), w, rtol=1e-12)


def test_decay_diffusion_reset():
    cfg = ConstantStepDevice(lifetime=10.0, lifetime_dtod=0.0, reset=0.05, diffusion=0.02,
                             reset_std=0.01, w_max_dtod=0.0, w_min_dtod=0.0)
    t = AnalogTile(3, 4, SingleRPUConfig(device=cfg), seed=4)
    w0 = np.full((3, 4), 0.3)
    t.set_weights(w0)
    t.decay_weights()
    np.testing.assert_allclose(t.get_weights(), 0.05 + 0.25 * 0.9, rtol=1e-12)
    before = np.asarray(t.get_weights())
    t.diffuse_weights()
    xi = rng.normal(4, "device.diffusion_noise", 0, (3, 4))
    np.testing.assert_allclose(t.get_weights(), before + 0.02 * xi, rtol=1e-12)
    t.reset()
    xi = rng.normal(4, "device.reset_noise", 0, (3, 4))
    np.testing.assert_allclose(t.get_weights(), 0.05 + 0.01 * xi, rtol=1e-12)
    t.set_weights(w0)
    t.reset(0.5)
    u = rng.uniform(4, "device.reset_prob", 1, (3, 4))
    xi = rng.normal(4, "device.reset_noise", 1, (3, 4))
    np.testing.assert_allclose(t.get_weights(), np.where(u < 0.5, 0.05 + 0.01 * xi, 0.3),
                               rtol=1e-12)
    # simple rules (FloatingPointRPUConfig): no bounds, decay only for lifetime > 1
    from refsim.configs import FloatingPointDevice

    t = AnalogTile(2, 2, FloatingPointRPUConfig(device=FloatingPointDevice(lifetime=4.0)))
    t.set_weights(np.full((2, 2), 2.0))
    t.decay_weights()
    np.testing.assert_allclose(t.get_weights(), 1.5)


def test_bad_inputs():
    t = AnalogTile(3, 4, SingleRPUConfig(), seed=1)
    ok_x, ok_d = np.zeros((2, 4)), np.zeros((2, 3))
    with pytest.raises(ValueError, match="x: expected shape"):
        t.update(np.zeros((2, 3)), ok_d, 0.1)
    with pytest.raises(ValueError, match="d: expected shape"):
        t.update(ok_x, np.zeros((2, 4)), 0.1)
    with pytest.raises(ValueError, match="batch sizes differ"):
        t.update(ok_x, np.zeros((3, 3)), 0.1)
    with pytest.raises(ValueError, match="x: contains NaN"):
        t.update(np.full((2, 4), np.nan), ok_d, 0.1)
    with pytest.raises(ValueError, match="d: contains NaN"):
        t.update(ok_x, np.full((2, 3), np.inf), 0.1)
    for lr in (float("nan"), float("inf"), True, "0.1", None):
        with pytest.raises(ValueError, match="lr:"):
            t.update(ok_x, ok_d, lr)
    with pytest.raises(ValueError, match="prob:"):
        t.reset(1.5)
    with pytest.raises(NotImplementedError, match="UnitCellRPUConfig"):
        AnalogTile(3, 4, UnitCellRPUConfig()).update(ok_x, ok_d, 0.1)
    # a 1-D row is a batch of one
    t.update(np.ones(4), np.ones(3), 0.1)
    assert t.streams.calls["update"] == 1

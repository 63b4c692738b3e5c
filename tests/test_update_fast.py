"""The compiled pulsed update (refsim_fast.update) against the reference cycle loop
(spec/agreement.md, "Update stage"): every device rule and pulse type, both dtypes, the
UpdateParameters that shape the trains, thread-count independence, the optional outputs, and
bad input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refsim import configs as C
from refsim import rng
from refsim.stages import devices as device_stage
from refsim.stages import pulses as pulse_stage
from refsim.tile import AnalogTile

DEVICES = ["ConstantStepDevice", "LinearStepDevice", "SoftBoundsDevice", "SoftBoundsPmaxDevice",
           "SoftBoundsReferenceDevice", "ExpStepDevice", "PowStepDevice", "PowStepReferenceDevice",
           "PiecewiseStepDevice"]
#: Rules that call the C library's exp / pow: last-bit differences from numpy are allowed.
LIBM = ("ExpStepDevice", "PowStepDevice", "PowStepReferenceDevice")
PULSE_TYPES = ["StochasticCompressed", "Stochastic", "MeanCount", "DeterministicImplicit"]


@pytest.fixture(autouse=True)
def _needs_fast(fast):
    return fast


def _inputs(seed, batch, m, n, dtype, scale_x=1.0, scale_d=1.0):
    x = scale_x * rng.normal(seed, "test.a", 0, (batch, n))
    d = scale_d * rng.normal(seed, "test.b", 0, (batch, m))
    return x.astype(dtype), d.astype(dtype)


def _run(cfg, backend, w0, x, d, lr, dtype, seed=3, steps=2):
    m, n = w0.shape
    tile = AnalogTile(m, n, cfg, seed=seed, dtype=dtype, backend=backend)
    if backend == "fast":
        assert tile._fast_update_module() is not None
    tile.set_weights(w0.astype(dtype))
    for _ in range(steps):
        tile.update(x, d, lr)
    return np.asarray(tile.get_weights()), tile


def _assert_agree(ref, fast, device, dtype):
    if device in LIBM:
        tol = 1e-12 if dtype == np.float64 else 1e-5
        np.testing.assert_allclose(fast, ref, rtol=tol, atol=tol)
    else:
        np.testing.assert_array_equal(fast, ref)


def _device(name, **fields):
    return getattr(C, name)(dw_min_std=0.3, **fields)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("pulse_type", PULSE_TYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_fast_equals_reference(device, pulse_type, dtype):
    cfg = C.SingleRPUConfig(device=_device(device),
                            update=C.UpdateParameters(pulse_type=pulse_type))
    m, n = 7, 9
    w0 = 0.3 * (2 * rng.uniform(1, "test.w", 0, (m, n)) - 1)
    x, d = _inputs(1, 5, m, n, dtype)
    ref, _ = _run(cfg, "reference", w0, x, d, 0.1, dtype)
    fast, tile = _run(cfg, "fast", w0, x, d, 0.1, dtype)
    assert not np.array_equal(ref, w0.astype(dtype))  # pulses happened
    _assert_agree(ref, fast, device, dtype)
    assert tile.streams.calls["update"] == 10


VARIANTS = {
    "no_management": dict(update_management=False, update_bl_management=False),
    "um_only": dict(update_bl_management=False),
    "not_fixed_bl": dict(update_management=False, update_bl_management=False, fixed_bl=False),
    "long_trains": dict(desired_bl=100, update_bl_management=False),  # two words per train
    "train_of_64": dict(desired_bl=64, update_bl_management=False),
    "train_of_65": dict(desired_bl=65, update_bl_management=False),
    "res_steps": dict(res=16),
    "res_fraction_sto_round": dict(res=0.05, sto_round=True),
    "um_grad_scale": dict(um_grad_scale=0.3),
    "implicit_res": dict(pulse_type="DeterministicImplicit", x_res_implicit=0.1,
                         d_res_implicit=0.25),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("device", ["ConstantStepDevice", "SoftBoundsReferenceDevice",
                                    "PiecewiseStepDevice"])
def test_update_parameters_agree(variant, device):
    cfg = C.SingleRPUConfig(device=_device(device), update=C.UpdateParameters(**VARIANTS[variant]))
    m, n = 6, 8
    w0 = 0.2 * (2 * rng.uniform(2, "test.w", 0, (m, n)) - 1)
    x, d = _inputs(2, 4, m, n, np.float64)
    for lr in (0.05, -0.2):
        ref, _ = _run(cfg, "reference", w0, x, d, lr, np.float64)
        fast, _ = _run(cfg, "fast", w0, x, d, lr, np.float64)
        assert not np.array_equal(ref, w0)
        np.testing.assert_array_equal(fast, ref)


@pytest.mark.parametrize("device", DEVICES)
def test_device_fields_agree(device):
    """Non-default rule fields: additive noise, reverse references, extended ExpStep noise,
    symmetry points, corrupt devices and perfect bias, no cycle-to-cycle noise."""
    fields = {
        "LinearStepDevice": dict(mult_noise=False, gamma_up=0.3, gamma_down=0.2,
                                 mean_bound_reference=False),
        "SoftBoundsDevice": dict(mult_noise=True, reverse_up=True, reverse_offset=0.01),
        "SoftBoundsReferenceDevice": dict(mult_noise=True, subtract_symmetry_point=True,
                                          reference_std=0.05),
        "ExpStepDevice": dict(dw_min_std_add=0.001, dw_min_std_slope=0.01),
        "PowStepReferenceDevice": dict(subtract_symmetry_point=True, n_estimation_steps=20),
        "PiecewiseStepDevice": dict(piecewise_up=[1.5, 1.0, 0.4], piecewise_down=[0.4, 1.0, 1.5]),
        "ConstantStepDevice": dict(corrupt_devices_prob=0.3, perfect_bias=True),
    }.get(device, {})
    for std in (0.0, 0.5):
        cfg = C.SingleRPUConfig(device=getattr(C, device)(dw_min_std=std, **fields))
        m, n = 5, 6
        w0 = 0.4 * (2 * rng.uniform(4, "test.w", 0, (m, n)) - 1)
        x, d = _inputs(4, 3, m, n, np.float64, 2.0, 2.0)
        ref, _ = _run(cfg, "reference", w0, x, d, 0.5, np.float64, steps=3)
        fast, _ = _run(cfg, "fast", w0, x, d, 0.5, np.float64, steps=3)
        _assert_agree(ref, fast, device, np.float64)


@given(st.sampled_from(DEVICES), st.sampled_from(PULSE_TYPES), st.integers(1, 9),
       st.integers(1, 9), st.integers(1, 4), st.floats(-1.0, 1.0), st.integers(0, 2**32 - 1),
       st.booleans())
def test_agreement_property(device, pulse_type, m, n, batch, lr, seed, float32):
    dtype = np.float32 if float32 else np.float64
    cfg = C.SingleRPUConfig(device=_device(device),
                            update=C.UpdateParameters(pulse_type=pulse_type))
    w0 = 0.3 * (2 * rng.uniform(seed, "test.w", 0, (m, n)) - 1)
    x, d = _inputs(seed, batch, m, n, dtype)
    ref, _ = _run(cfg, "reference", w0, x, d, lr, dtype, seed=seed, steps=1)
    fast, _ = _run(cfg, "fast", w0, x, d, lr, dtype, seed=seed, steps=1)
    _assert_agree(ref, fast, device, dtype)


def _direct(cfg, w, x, d, lr, seed=5, **kwargs):
    import refsim_fast.update as fu

    params = device_stage.draw_device(np, cfg.device, w.shape, 11, dtype=w.dtype)
    return fu.pulsed_update(w, x, d, lr, cfg.device, cfg.update, params,
                            device_stage.granularity(cfg.device), seed, 7, **kwargs), params


@pytest.mark.parametrize("pulse_type", PULSE_TYPES)
def test_threads_do_not_change_the_result(pulse_type):
    cfg = C.SingleRPUConfig(device=_device("SoftBoundsReferenceDevice"),
                            update=C.UpdateParameters(pulse_type=pulse_type))
    m, n = 67, 45
    w = 0.2 * (2 * rng.uniform(6, "test.w", 0, (m, n)) - 1)
    x, d = _inputs(6, 9, m, n, np.float64)
    results = [_direct(cfg, w, x, d, 0.3, num_threads=t)[0] for t in (1, 2, 3, 4)]
    assert not np.array_equal(results[0], w)
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def test_last_touch_and_pulse_counters_match_the_counts():
    cfg = C.SingleRPUConfig(device=_device("ConstantStepDevice"))
    m, n, batch, seed = 6, 7, 4, 5
    w = np.zeros((m, n))
    x, d = _inputs(8, batch, m, n, np.float64, 0.5, 0.5)
    touch = np.full((m, n), -1, dtype=np.int64)
    ups, downs = np.zeros((m, n), np.int64), np.zeros((m, n), np.int64)
    out, params = _direct(cfg, w, x, d, 0.2, seed=seed, last_touch=touch,
                          pulse_counters=(ups, downs))
    want_touch = np.full((m, n), -1)
    want_up, want_down = np.zeros((m, n), int), np.zeros((m, n), int)
    g = device_stage.granularity(cfg.device)
    for b in range(batch):
        counts, _ = pulse_stage.coincidences(np, x[b], d[b], 0.2, g, cfg.update, seed, 7 + b)
        want_touch[counts != 0] = 7 + b
        want_up += np.where(counts > 0, counts, 0)
        want_down += np.where(counts < 0, -counts, 0)
    assert (want_touch >= 0).any()
    np.testing.assert_array_equal(touch, want_touch)
    np.testing.assert_array_equal(ups, want_up)
    np.testing.assert_array_equal(downs, want_down)


def test_memory_is_not_batch_times_tile():
    """The packed trains are batch·(m + n)·⌈BL/64⌉ words: a 64 × 1024 × 1024 batch would need
    512 MiB as float64 counts; the update runs without such an array (tracemalloc peak)."""
    import tracemalloc

    cfg = C.SingleRPUConfig(device=C.ConstantStepDevice())
    m = n = 256
    batch = 64
    w = np.zeros((m, n), np.float32)
    x, d = _inputs(9, batch, m, n, np.float32)
    import refsim_fast.update as fu

    params = device_stage.draw_device(np, cfg.device, w.shape, 11, dtype=w.dtype)
    g = device_stage.granularity(cfg.device)
    fu.pulsed_update(w, x, d, 0.1, cfg.device, cfg.update, params, g, 5, 0)  # warm caches
    tracemalloc.start()
    out = fu.pulsed_update(w, x, d, 0.1, cfg.device, cfg.update, params, g, 5, 0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert not np.array_equal(out, w)
    # trains, probabilities, signs and the device arrays: O(batch·(m + n) + m·n)
    assert peak < 24 * batch * (m + n) + 16 * m * n + 2**20, peak
    assert peak < batch * m * n, peak  # one byte per batch × m × n element would not fit


def test_bad_input():
    import refsim_fast.update as fu

    cfg = C.SingleRPUConfig(device=_device("ConstantStepDevice"))
    w = np.zeros((3, 4))
    x, d = _inputs(1, 2, 3, 4, np.float64)
    params = device_stage.draw_device(np, cfg.device, (3, 4), 1)
    g = device_stage.granularity(cfg.device)
    with pytest.raises(ValueError, match="xs, ds"):
        fu.pulsed_update(w, x[:, :3], d, 0.1, cfg.device, cfg.update, params, g, 1, 0)
    with pytest.raises(ValueError, match="xs, ds"):
        fu.pulsed_update(w, x, d[:1], 0.1, cfg.device, cfg.update, params, g, 1, 0)
    with pytest.raises(ValueError, match="pulse_type"):
        fu.pulsed_update(w, x, d, 0.1, cfg.device, C.UpdateParameters(pulse_type="None"),
                         params, g, 1, 0)
    with pytest.raises(ValueError, match="last_touch"):
        fu.pulsed_update(w, x, d, 0.1, cfg.device, cfg.update, params, g, 1, 0,
                         last_touch=np.zeros((3, 4), np.int32))
    with pytest.raises(ValueError, match="params.b_min"):
        small = device_stage.draw_device(np, cfg.device, (2, 4), 1)
        fu.pulsed_update(w, x, d, 0.1, cfg.device, cfg.update, small, g, 1, 0)
    with pytest.raises(TypeError, match="w: expected float32 or float64"):
        fu.pulsed_update(w.astype(np.float16), x, d, 0.1, cfg.device, cfg.update, params, g, 1, 0)
    # the tile's own checks come first on both backends
    tile = AnalogTile(3, 4, cfg, backend="fast")
    with pytest.raises(ValueError, match="lr"):
        tile.update(x, d, float("nan"))
    with pytest.raises(ValueError, match="d: contains NaN"):
        tile.update(x, np.full((2, 3), np.nan), 0.1)
    with pytest.raises(ValueError, match="batch sizes differ"):
        tile.update(x, d[:1], 0.1)


@pytest.mark.parametrize("device", ["SoftBoundsDevice", "ExpStepDevice", "PiecewiseStepDevice"])
def test_write_noise_and_pulse_counters_agree(device):
    """The fast path feeds the tile's write noise (last touch) and pulse counters
    (spec/devices.md §V8, §V9) exactly as the reference loop does."""
    dev = getattr(C, device)(dw_min_std=0.2, write_noise_std=0.5, count_pulses=True)
    cfg = C.SingleRPUConfig(device=dev)
    m, n = 6, 7
    w0 = 0.2 * (2 * rng.uniform(12, "test.w", 0, (m, n)) - 1)
    x, d = _inputs(12, 3, m, n, np.float64, 0.7, 0.7)
    ref, t_ref = _run(cfg, "reference", w0, x, d, 0.3, np.float64)
    fast, t_fast = _run(cfg, "fast", w0, x, d, 0.3, np.float64)
    _assert_agree(ref, fast, device, np.float64)
    _assert_agree(np.asarray(t_ref.get_persistent_weights()),
                  np.asarray(t_fast.get_persistent_weights()), device, np.float64)
    assert not np.array_equal(ref, t_ref.get_persistent_weights())
    counters = np.asarray(t_fast.get_pulse_counters())
    assert counters.sum() > 0
    np.testing.assert_array_equal(counters, np.asarray(t_ref.get_pulse_counters()))
    assert t_ref.streams == t_fast.streams


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_device_operations_agree(dtype):
    """Diffusion, decay, reset and drift draw their numbers from the compiled streams on the fast
    backend (refsim_fast.update.normal / uniform): the same weights as the reference."""
    dev = C.SoftBoundsReferenceDevice(diffusion=0.01, lifetime=50.0, reset_std=0.05,
                                      drift=C.DriftParameter(nu=0.1, nu_dtod=0.2, nu_std=0.1,
                                                             w_noise_std=0.01))
    cfg = C.SingleRPUConfig(device=dev)
    m, n = 9, 11
    w0 = 0.2 * (2 * rng.uniform(13, "test.w", 0, (m, n)) - 1)
    x, d = _inputs(13, 2, m, n, dtype)
    out = {}
    for backend in ("reference", "fast"):
        tile = AnalogTile(m, n, cfg, seed=4, dtype=dtype, backend=backend)
        assert (tile._draws() is rng) == (backend == "reference")
        tile.set_weights(w0.astype(dtype))
        tile.update(x, d, 0.1)
        tile.post_update_step()
        tile.drift_weights(1.0)
        tile.drift_weights(10.0)
        tile.reset(0.3)
        tile.post_update_step()
        out[backend] = np.asarray(tile.get_weights())
    assert not np.array_equal(out["reference"], w0.astype(dtype))
    tol = 1e-12 if dtype == np.float64 else 1e-6  # drift's pow/log: numpy vs numpy, same calls
    np.testing.assert_allclose(out["fast"], out["reference"], rtol=tol, atol=tol)

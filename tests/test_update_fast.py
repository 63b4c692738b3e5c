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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_in_place_updates_write_the_same_weights_into_w(dtype):
    """``in_place``: the result is ``w`` itself with the copy's numbers; a Fortran-ordered or
    read-only ``w`` is left alone (a copy is updated instead)."""
    cfg = C.SingleRPUConfig(device=_device("SoftBoundsReferenceDevice"))
    m, n = 23, 19
    w = (0.2 * (2 * rng.uniform(6, "test.w", 0, (m, n)) - 1)).astype(dtype)
    x, d = _inputs(6, 5, m, n, dtype)
    want, _ = _direct(cfg, w, x, d, 0.3)
    mine = w.copy()
    got, _ = _direct(cfg, mine, x, d, 0.3, in_place=True)
    assert got is mine and got.tobytes() == want.tobytes()
    for other in (np.asfortranarray(w), w.copy()):
        other.flags.writeable = other.flags.f_contiguous  # read-only when C-ordered
        before = other.copy()
        got, _ = _direct(cfg, other, x, d, 0.3, in_place=True)
        assert got is not other and np.array_equal(other, before)
        np.testing.assert_array_equal(got, want)


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


# -- the compiled boundary (spec/pulses.md, "Compiled kernels"): adversarial arguments to
#    refsim_fast._update / refsim_fast.update end in a ValueError or a defined, clamped result,
#    never in a read or write out of bounds (CI runs these under ASan/UBSan: .ci/sanitize) ------

_SCALARS = dict(sigma=0.0, noisy=0, mult_noise=1, extended=0, es_a=0.0, b=0.0, A_up=0.0,
                A_down=0.0, gamma_up=0.0, neg_gamma_down=0.0, std_add=0.0, std_slope=0.0)


def _kernel_args(m=3, n=4, batch=2, *, mode=1, model=0, dtype=np.float64, bl=5, nw=1):
    """Valid arguments of _update.pulsed_update: no pulses, unit steps, wide bounds (a down
    pulse subtracts exactly 1), every optional output off."""
    import refsim_fast.update as fu

    def full(v):
        return np.full((m, n), v, dtype)

    return dict(
        w=np.zeros((m, n), dtype), mode=mode,
        xbits=np.zeros((batch, n, nw), np.uint64) if mode == 0 else None,
        dbits=np.zeros((batch, m, nw), np.uint64) if mode == 0 else None,
        ax=np.zeros((batch, n)) if mode == 1 else None,
        ad=np.zeros((batch, m)) if mode == 1 else None,
        xneg=np.zeros((batch, n), np.uint8), dneg=np.zeros((batch, m), np.uint8),
        bl=np.full(batch, bl, np.int32), calls=np.arange(10, 10 + batch, dtype=np.uint64),
        model=model, b_min=full(-1e6), b_max=full(1e6), dw_up=full(1.0), dw_down=full(1.0),
        p_up=full(0.0) if model in (1, 4) else None, p_down=full(0.0) if model in (1, 4) else None,
        ref=None, nodes_up=np.ones(3, dtype) if model == 5 else None,
        nodes_down=np.ones(3, dtype) if model == 5 else None,
        table=fu._table(np.dtype(dtype)), scalars=dict(_SCALARS), seed=1, sid=2, offset=0,
        last_touch=None, pulses_up=None, pulses_down=None, num_threads=1)


def _kernel(**args):
    from refsim_fast import _update

    _update.pulsed_update(**args)
    return args["w"]


def _with_counters(args):
    m, n = args["w"].shape
    args.update(last_touch=np.full((m, n), -1, np.int64), pulses_up=np.zeros((m, n), np.int64),
                pulses_down=np.zeros((m, n), np.int64))
    return args


def _clamped_counts(ad, ax, bl):
    """The kernel's count rule for the products: rint(ad_i·ax_j) clamped to [0, BL]; NaN → 0."""
    with np.errstate(invalid="ignore", over="ignore"):
        v = ad[:, None] * ax[None, :]
        return np.where(v > 0, np.where(v < bl, np.rint(np.where(v > 0, v, 0.0)), bl), 0.0)


@pytest.mark.parametrize("noisy", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernel_clamps_nan_inf_and_huge_products(dtype, noisy):
    """MeanCount / DeterministicImplicit products that are NaN (inf·0, issue 9's heap overflow),
    infinite, negative or beyond BL give counts in [0, BL], NaN giving none; with per-pulse
    noise every pulse's normal comes from the row's scratch, sized for n·BL pulses."""
    ax = np.array([[np.nan, np.inf, -np.inf, -3.0, 0.4, 1e300, 2.5, 3.0, 2**40, 0.0]])
    ad = np.array([[1.0, np.nan, np.inf, 1e300, -np.inf, 0.5]])
    bl = 5
    args = _with_counters(_kernel_args(6, 10, 1, dtype=dtype, bl=bl))
    args.update(ax=ax, ad=ad)
    if noisy:
        args["scalars"].update(sigma=0.1, noisy=1)
    w = _kernel(**args)
    want = _clamped_counts(ad[0], ax[0], bl)
    assert want.max() == bl and (want == 0).any()
    np.testing.assert_array_equal(args["pulses_down"], want)
    np.testing.assert_array_equal(args["pulses_up"], 0)
    np.testing.assert_array_equal(args["last_touch"], np.where(want > 0, 10, -1))
    if noisy:
        assert np.all(np.isfinite(w)) and np.all((w < 0) == (want > 0))
    else:
        np.testing.assert_array_equal(w, -want.astype(dtype))


def test_kernel_clamps_train_coincidences_to_the_train_length():
    """Bits past slot BL (never set by pulse_trains) cannot push a count past BL; cycles with
    BL <= 0 send nothing."""
    ones = np.uint64(2**64 - 1)
    args = _with_counters(_kernel_args(3, 4, 4, mode=0, nw=2))
    args["xbits"][:] = ones
    args["dbits"][:] = ones
    args["bl"] = np.array([10, 0, 200, -7], np.int32)
    w = _kernel(**args)
    np.testing.assert_array_equal(args["pulses_down"], 10 + 128)
    np.testing.assert_array_equal(w, -138.0)


def test_kernel_with_a_nan_weight_on_piecewise_nodes_stays_in_the_table():
    """A NaN weight makes the node position NaN: it takes node 0 instead of an undefined index."""
    args = _kernel_args(2, 3, 1, model=5)
    args["w"][0, 0] = np.nan
    args.update(ax=np.ones((1, 3)), ad=np.full((1, 2), 2.0), nodes_up=np.array([1.0, 2.0, 3.0]),
                nodes_down=np.array([1.0, 1.0, 1.0]))
    w = _kernel(**args)
    assert np.isnan(w[0, 0])
    np.testing.assert_array_equal(w.reshape(-1)[1:], -2.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernel_piecewise_node_at_the_bounds(dtype):
    """At w = b_max the node position is the last node exactly (t = k_max): the interpolation
    uses nodes k_max − 1 and k_max with weight 1 on the last, never a node past the table; at
    w = b_min node 0. One pulse each way from each bound (down pulses, then up pulses)."""
    nodes_up = np.array([0.5, 2.0, 4.0], dtype)
    nodes_down = np.array([1.0, 2.0, 3.0], dtype)
    for up in (False, True):
        args = _kernel_args(2, 1, 1, model=5, dtype=dtype)
        args["b_min"][:] = -1.0
        args["b_max"][:] = 1.0
        args["dw_up"][:] = 0.125
        args["dw_down"][:] = 0.125
        args["w"][:, 0] = [1.0, -1.0]  # row 0 at b_max, row 1 at b_min
        args.update(ax=np.ones((1, 1)), ad=np.ones((1, 2)), nodes_up=nodes_up,
                    nodes_down=nodes_down, bl=np.ones(1, np.int32))
        args["xneg"][:] = up  # up pulses where xneg != dneg
        w = _kernel(**args)
        if up:  # b_max stays (clamped); b_min goes up by dw·nodes_up[0]
            np.testing.assert_array_equal(w[:, 0], np.array([1.0, -1.0 + 0.125 * 0.5], dtype))
        else:  # b_max goes down by dw·nodes_down[-1]; b_min stays
            np.testing.assert_array_equal(w[:, 0], np.array([1.0 - 0.125 * 3.0, -1.0], dtype))


def _bad(**changes):
    def make(args):
        args.update(changes)
    return make


KERNEL_BAD = {
    # node tables (issue 9: 200 up nodes, 1 down node read past the end)
    "nodes_down_short": (dict(model=5), _bad(nodes_down=np.ones(1)), "nodes_down"),
    "nodes_down_long": (dict(model=5), _bad(nodes_down=np.ones(9)), "nodes_down"),
    "nodes_empty": (dict(model=5), _bad(nodes_up=np.ones(0), nodes_down=np.ones(0)), "node"),
    "nodes_missing": (dict(model=5), _bad(nodes_up=None), "nodes_up"),
    "nodes_down_missing": (dict(model=5), _bad(nodes_down=None), "nodes_down"),
    # device arrays
    "b_min_short": ({}, _bad(b_min=np.zeros((2, 4))), "b_min"),
    "dw_down_missing": ({}, _bad(dw_down=None), "dw_down"),
    "slopes_missing": (dict(model=1), _bad(p_down=None), "p_down"),
    "ref_wrong": ({}, _bad(ref=np.zeros((3, 5))), "ref"),
    "table_short": ({}, _bad(table=np.zeros(65535)), "table"),
    # cycles
    "ax_short": ({}, _bad(ax=np.zeros((2, 3))), "ax"),
    "ad_missing": ({}, _bad(ad=None), "ad"),
    "xneg_short": ({}, _bad(xneg=np.zeros((1, 4), np.uint8)), "xneg"),
    "dneg_short": ({}, _bad(dneg=np.zeros((2, 2), np.uint8)), "dneg"),
    "calls_short": ({}, _bad(calls=np.zeros(1, np.uint64)), "calls"),
    "xbits_missing": (dict(mode=0), _bad(xbits=None), "xbits"),
    "dbits_words": (dict(mode=0), _bad(dbits=np.zeros((2, 3, 2), np.uint64)), "dbits"),
    "no_words": (dict(mode=0), _bad(xbits=np.zeros((2, 4, 0), np.uint64),
                                    dbits=np.zeros((2, 3, 0), np.uint64)), "word"),
    "mode": ({}, _bad(mode=2), "mode"),
    "model": ({}, _bad(model=6), "model"),
    "model_negative": ({}, _bad(model=-1), "model"),
    # outputs
    "last_touch_short": ({}, _bad(last_touch=np.zeros((3, 3), np.int64)), "last_touch"),
    "one_counter": ({}, _bad(pulses_up=np.zeros((3, 4), np.int64)), "pulses_up, pulses_down"),
    # ranges: int32 pulse slots per row, random-number indices
    "row_slots": ({}, _bad(bl=np.array([1, 2**30], np.int32)), "int32"),
    "offset": ({}, _bad(offset=2**62), "offset"),
    # line snapshots (spec/transfer.md §T11)
    "snap_partial": ({}, _bad(snap_slot=np.zeros(2, np.int64)), "give all three"),
    "snap_slot_short": ({}, _bad(snap_slot=np.zeros(1, np.int64), snap_line=np.zeros(2, np.int64),
                                 snap=np.zeros((1, 3))), "snap_slot"),
    "snap_slot_past_end": ({}, _bad(snap_slot=np.array([0, 1], np.int64),
                                    snap_line=np.zeros(2, np.int64), snap=np.zeros((1, 3))),
                           "snap_slot"),
    "snap_slot_below": ({}, _bad(snap_slot=np.array([-2, 0], np.int64),
                                 snap_line=np.zeros(2, np.int64), snap=np.zeros((1, 3))),
                        "snap_slot"),
    "snap_column_outside": ({}, _bad(snap_slot=np.array([0, -1], np.int64),
                                     snap_line=np.array([4, 0], np.int64),
                                     snap=np.zeros((1, 3))), "snap_line"),
    "snap_row_outside": ({}, _bad(snap_slot=np.array([0, -1], np.int64),
                                  snap_line=np.array([3, 0], np.int64), snap=np.zeros((1, 4)),
                                  snap_columns=False), "snap_line"),
    "snap_width": ({}, _bad(snap_slot=np.array([0, -1], np.int64),
                            snap_line=np.zeros(2, np.int64), snap=np.zeros((1, 4))), "snap"),
}


@pytest.mark.parametrize("case", sorted(KERNEL_BAD))
def test_kernel_rejects_inconsistent_arguments(case):
    kwargs, change, word = KERNEL_BAD[case]
    args = _kernel_args(**kwargs)
    change(args)
    w0 = args["w"].copy()
    with pytest.raises(ValueError, match=word):
        _kernel(**args)
    np.testing.assert_array_equal(args["w"], w0)


@pytest.mark.parametrize("name", ["w", "ax", "ad", "xneg", "dneg", "bl", "calls", "b_min", "table"])
def test_kernel_refuses_non_contiguous_arrays(name):
    args = _kernel_args()
    a = args[name]
    args[name] = np.repeat(a, 2)[::2] if a.ndim == 1 else np.asfortranarray(a)
    with pytest.raises(ValueError, match="contiguous"):
        _kernel(**args)


def test_pulse_trains_check_their_words_and_clamp_nan_and_inf():
    from refsim_fast import _update

    calls = np.arange(2, dtype=np.uint64)
    p = np.array([[np.nan, np.inf, -np.inf, 0.0, 2.0], [0.5, np.nan, 1.0, 1e300, -1.0]])
    out = np.zeros((2, 5, 2), np.uint64)
    _update.pulse_trains(3, 4, calls, np.array([70, 128], np.int32), p, out, 2)
    bits = np.unpackbits(out.view(np.uint8), axis=-1, bitorder="little").sum(axis=-1)
    np.testing.assert_array_equal(bits[0], [0, 70, 0, 0, 70])
    assert bits[1, 1] == bits[1, 4] == 0 and bits[1, 2] == bits[1, 3] == 128
    # no bit past slot BL
    assert not (out[0, :, 1] >> np.uint64(6)).any()
    for bad, word in [(dict(bl=np.array([129, 1], np.int32)), "out"),
                      (dict(bl=np.array([1], np.int32)), "bl"),
                      (dict(calls=calls[:1]), "calls"),
                      (dict(out=np.zeros((2, 4, 2), np.uint64)), "out"),
                      (dict(out=np.zeros((1, 5, 2), np.uint64)), "out")]:
        args = dict(seed=3, sid=4, calls=calls, bl=np.array([70, 128], np.int32), p=p,
                    out=np.zeros((2, 5, 2), np.uint64), num_threads=1)
        args.update(bad)
        with pytest.raises(ValueError, match=word):
            _update.pulse_trains(**args)


@pytest.mark.parametrize("bl", [1, 5, 63, 64, 65, 200, 4097, 9000])
def test_pulse_trains_equal_the_uniform_comparison_bit_for_bit(bl):
    """Bit k of train j is p_j > uniform number j·BL + k of the call (spec/pulses.md §U4), for
    trains shorter and longer than a word and than the kernel's draw chunk, runs of zero,
    negative, NaN and saturated probabilities, and probabilities next to the uniforms' grid."""
    from refsim_fast import _update

    n = 37
    p = rng.uniform(2, "test.a", bl, n)
    p[[0, 1, 7, 8, 9, 20]] = [0.0, -0.5, np.nan, 0.0, 1.5, 1.0]
    p[10] = 3 * 2.0**-24  # on the grid: uniforms equal to p set no bit
    p[11] = np.nextafter(3 * 2.0**-24, 1.0)
    nw = (bl + 63) // 64
    out = np.zeros((1, n, nw), np.uint64)
    sid = rng.stream_id("update.x_bits")
    _update.pulse_trains(5, sid, np.array([4], np.uint64), np.array([bl], np.int32), p[None, :],
                         out, 2)
    got = np.unpackbits(out[0].view(np.uint8), axis=-1, bitorder="little")[:, :bl].astype(bool)
    want = np.stack([p[j] > rng.uniform(5, "update.x_bits", 4, bl, start=j * bl)
                     for j in range(n)])
    assert got[12:].any() and not got[:2].any() and got[9].all()
    np.testing.assert_array_equal(got, want)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("pulse_type", PULSE_TYPES)
def test_wrapper_with_nan_probabilities_never_crashes(pulse_type):
    """Issue 9: x = 4e-156 beside zeros and d = 1e153 make B = inf and p_x = inf·0 = NaN. The
    tile refuses such input (ValueError); called directly, the compiled update gives a defined
    result (NaN probabilities send no pulse) or a ValueError, and never writes out of bounds."""
    cfg = C.SingleRPUConfig(update=C.UpdateParameters(pulse_type=pulse_type))
    w = np.zeros((4, 6))
    x = np.array([[4e-156, 0, 0, 0, 0, 0]])
    d = np.full((1, 4), 1e153)
    try:
        out, params = _direct(cfg, w, x, d, 0.1)
    except ValueError:
        pass
    else:
        assert np.all(np.isfinite(out))
        assert np.all(out >= params.b_min) and np.all(out <= params.b_max)
        np.testing.assert_array_equal(out[:, 1:], 0.0)  # the NaN probabilities: no pulse
    tile = AnalogTile(4, 6, cfg, backend="fast")
    try:
        tile.update(x, d, 0.1)
    except ValueError:
        pass
    assert np.all(np.isfinite(np.asarray(tile.get_weights())))


def test_wrapper_rejects_node_tables_of_different_lengths():
    """Issue 9: a PiecewiseStep config whose down table was shortened after validation."""
    import copy

    import refsim_fast.update as fu

    cfg = C.SingleRPUConfig(device=C.PiecewiseStepDevice(piecewise_up=[1.0] * 200,
                                                         piecewise_down=[1.0] * 200))
    params = device_stage.draw_device(np, cfg.device, (4, 6), 1)
    x, d = _inputs(1, 2, 4, 6, np.float64)
    g = device_stage.granularity(cfg.device)
    for down in ([1.0], []):
        dev = copy.deepcopy(cfg.device)
        object.__setattr__(dev, "piecewise_down", down)  # past any read-only guard
        with pytest.raises(ValueError, match="piecewise_down"):
            fu.pulsed_update(np.zeros((4, 6)), x, d, 0.1, dev, cfg.update, params, g, 1, 0)


def _unaligned(a):
    """A C-contiguous copy of ``a`` at an odd address (numpy allows it; C does not)."""
    buf = np.zeros(a.nbytes + 1, np.uint8)
    out = np.frombuffer(buf.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned and out.flags.c_contiguous
    return out


LAYOUTS = {
    "unaligned": _unaligned,
    "fortran": lambda a: np.asfortranarray(a),
    "transposed": lambda a: np.ascontiguousarray(a.T).T,
    "strided": lambda a: np.repeat(a, 2, axis=1)[:, ::2],
    "reversed": lambda a: a[::-1][::-1],
    "big_endian": lambda a: a.astype(a.dtype.newbyteorder(">")),
}


@pytest.mark.parametrize("pulse_type", PULSE_TYPES)
@pytest.mark.parametrize("layout", sorted(LAYOUTS) + ["broadcast"])
def test_any_layout_of_x_and_d_agrees_with_the_reference(layout, pulse_type):
    """Issue 9: Fortran-ordered, transposed and broadcast (stride-0) x / d raised 'ndarray is not
    C-contiguous' on the fast backend; they (and byte-swapped or unaligned buffers) are converted
    once at the compiled boundary."""
    cfg = C.SingleRPUConfig(device=_device("SoftBoundsReferenceDevice"),
                            update=C.UpdateParameters(pulse_type=pulse_type))
    m, n = 5, 7
    w0 = 0.2 * (2 * rng.uniform(14, "test.w", 0, (m, n)) - 1)
    x, d = _inputs(14, 3, m, n, np.float64)
    if layout == "broadcast":
        x, d = np.broadcast_to(x[0], x.shape), np.broadcast_to(d[:1], d.shape)
        assert x.strides[0] == 0 and d.strides[0] == 0
    else:
        x, d = LAYOUTS[layout](x), LAYOUTS[layout](d)
    contiguous = (np.ascontiguousarray(x, np.float64), np.ascontiguousarray(d, np.float64))
    direct, _ = _direct(cfg, w0, x, d, 0.1)
    np.testing.assert_array_equal(direct, _direct(cfg, w0, *contiguous, 0.1)[0])
    if layout == "big_endian":  # (the tile's own dtype rule decides on these; not this test)
        return
    ref, _ = _run(cfg, "reference", w0, *contiguous, 0.1, np.float64)
    fast, _ = _run(cfg, "fast", w0, x, d, 0.1, np.float64)
    assert not np.array_equal(ref, w0)
    np.testing.assert_array_equal(fast, ref)


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("columns", [True, False])
def test_per_cycle_learning_rates_and_line_copies_equal_the_cycles_one_by_one(columns, fast):
    """spec/pulses.md §U1: a batch with one learning rate per cycle (one negative, one 0) equals
    its cycles sent one by one, and the line copies are the lines right after their cycles."""
    import refsim_fast.update as fu
    from refsim.stages import update as update_stage

    m, n, batch = 7, 6, 8
    cfg = C.SoftBoundsReferenceDevice()
    up = C.UpdateParameters(desired_bl=5, update_bl_management=True, update_management=True)
    params = device_stage.draw_device(np, cfg, (m, n), 1, 0, dtype=np.float32)
    xs = (2 * rng.uniform(1, "test.a", 0, (batch, n)) - 1).astype(np.float32)
    ds = (0.3 * rng.normal(1, "test.b", 0, (batch, m))).astype(np.float32)
    lrs = [0.05 * (k + 1) for k in range(batch)]
    lrs[2], lrs[5] = -0.1, 0.0
    lines = [1, -1, 4, 4, -1, 0, 2, -1]
    w0 = (0.2 * rng.uniform(1, "test.a", 1, (m, n)) - 0.1).astype(np.float32)
    kw = dict(fast=fu if fast else None)
    w, copies = update_stage.pulsed_cycles_reading(np, w0.copy(), xs, ds, lrs, cfg, up, params,
                                                   4, 10, lines, columns=columns, **kw)
    one, want = w0.copy(), []
    for k in range(batch):
        one, _, _ = update_stage.pulsed_cycles(np, one, xs[k:k + 1], ds[k:k + 1], lrs[k], cfg, up,
                                               params, 4, 10 + k, **kw)
        if lines[k] >= 0:
            want.append((one[:, lines[k]] if columns else one[lines[k], :]).copy())
    np.testing.assert_array_equal(w, one)
    np.testing.assert_array_equal(copies, np.stack(want))
    assert not np.array_equal(copies[1], copies[2])  # cycle 3 moved line 4
    with pytest.raises(ValueError, match="lines"):
        update_stage.pulsed_cycles_reading(np, w0, xs, ds, lrs, cfg, up, params, 4, 10,
                                           [n + m] * batch, columns=columns, **kw)
    with pytest.raises(ValueError, match="lr"):
        update_stage.pulsed_cycles(np, w0, xs, ds, lrs[:3], cfg, up, params, 4, 10, **kw)


@pytest.mark.parametrize("layout", ["C", "F", "readonly"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_outer_accumulate_equals_the_row_by_row_numpy_sum(dtype, layout):
    """refsim_fast.update.outer_accumulate: chi + a_k b_kᵀ row after row, each product and sum
    rounded to the dtype (the mixed-precision accumulation), in place for a writable C array."""
    import refsim_fast.update as fu

    r = np.random.default_rng(3)
    chi0 = r.normal(size=(33, 70)).astype(dtype)
    a, b = r.normal(size=(9, 33)).astype(dtype), r.normal(size=(9, 70)).astype(dtype)
    want = chi0.copy()
    for k in range(9):
        want = want + np.reshape(a[k], (-1, 1)) * np.reshape(b[k], (1, -1))
    chi = np.asfortranarray(chi0) if layout == "F" else chi0.copy()
    if layout == "readonly":
        chi.flags.writeable = False
    got = fu.outer_accumulate(chi, a, b, num_threads=2)
    np.testing.assert_array_equal(got, want)
    assert (got is chi) == (layout == "C")
    with pytest.raises(ValueError, match="a"):
        fu.outer_accumulate(chi0.copy(), a[:, :5], b)
    with pytest.raises(ValueError, match="chi"):
        fu.outer_accumulate(chi0.astype(np.int32), a, b)

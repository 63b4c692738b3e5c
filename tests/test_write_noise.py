"""Write noise (spec/devices.md §V8) and pulse counting (§V9) of pulsed devices."""

import numpy as np
import pytest
from conftest import OTHER_NAMESPACES, to_numpy

from refsim import rng
from refsim.configs import (
    ConstantStepDevice,
    DriftParameter,
    ExpStepDevice,
    IOParameters,
    LinearStepDevice,
    PiecewiseStepDevice,
    PowStepDevice,
    SingleRPUConfig,
    SoftBoundsDevice,
    SoftBoundsPmaxDevice,
    SoftBoundsReferenceDevice,
    UpdateParameters,
)
from refsim.stages import devices as D
from refsim.stages import pulses as P
from refsim.tile import AnalogTile

NP = rng._namespace(None)

#: The device classes with write_noise_std (aihwkit: implementsWriteNoise).
NOISY = [LinearStepDevice, SoftBoundsDevice, SoftBoundsPmaxDevice, SoftBoundsReferenceDevice,
         ExpStepDevice, PowStepDevice, PiecewiseStepDevice]


def noisy_cfg(cls=SoftBoundsDevice, pulse_type="StochasticCompressed", **kw):
    kw.setdefault("write_noise_std", 2.0)
    return SingleRPUConfig(device=cls(**kw), update=UpdateParameters(pulse_type=pulse_type))


def batch(seed, b, m=3, n=4):
    g = np.random.default_rng(seed)
    return g.normal(size=(b, n)), g.normal(size=(b, m))


def scale(tile):
    return D.write_noise_scale(tile.rpu_config.device)


# -- the stage functions --------------------------------------------------------------------------


def test_normal_at_calls_equals_normal_at_per_element():
    calls = np.array([[0, 5, 5], [2**40 + 3, 0, 7]], dtype=np.int64)
    index = np.array([[0, 1, 2], [3, 17, 4]], dtype=np.int64)
    got = rng.normal_at_calls(9, "device.write_noise", calls, index)
    for k in range(calls.size):
        c, i = int(calls.flat[k]), int(index.flat[k])
        want = rng.normal_at(9, "device.write_noise", c, np.array([i]))[0]
        assert got.flat[k] == want
    with pytest.raises(ValueError, match="shapes differ"):
        rng.normal_at_calls(9, "device.write_noise", calls, index[:, :2])
    with pytest.raises(TypeError, match="calls"):
        rng.normal_at_calls(9, "device.write_noise", calls * 1.0, index)
    with pytest.raises(ValueError, match=">= 0"):
        rng.normal_at_calls(9, "device.write_noise", -calls - 1, index)


def test_write_noise_function():
    g = np.random.default_rng(0)
    p, a = g.normal(size=(3, 4)), g.normal(size=(3, 4))
    last = np.array([[-1, 0, 3, 3], [7, -1, -1, 0], [2, 2, 2, -1]], dtype=np.int64)
    out = D.write_noise(NP, p, a, last, 0.25, 11)
    for i in range(3):
        for j in range(4):
            c = last[i, j]
            if c < 0:
                assert out[i, j] == a[i, j]
            else:
                xi = rng.normal(11, "device.write_noise", int(c), (3, 4))[i, j]
                assert out[i, j] == p[i, j] + 0.25 * xi
    # nothing touched: the apparent weights come back unchanged; float32 stays float32
    none = np.full((3, 4), -1, dtype=np.int64)
    np.testing.assert_array_equal(D.write_noise(NP, p, a, none, 0.25, 11), a)
    out32 = D.write_noise(NP, p.astype(np.float32), a.astype(np.float32), last, 0.25, 11)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out, rtol=1e-6, atol=1e-7)
    # write_noise_all
    full = D.write_noise_all(NP, p, 0.5, 11, 4)
    np.testing.assert_array_equal(full, p + 0.5 * rng.normal(11, "device.write_noise_all", 4,
                                                             (3, 4)))


def test_write_noise_bad_input():
    p = np.zeros((3, 4))
    last = np.zeros((3, 4), dtype=np.int64)
    with pytest.raises(ValueError, match="last_touch: expected shape"):
        D.write_noise(NP, p, p, last[:, :3], 0.1, 1)
    with pytest.raises(ValueError, match="apparent: expected shape"):
        D.write_noise(NP, p, p[:2], last, 0.1, 1)
    with pytest.raises(TypeError, match="last_touch: expected an integer"):
        D.write_noise(NP, p, p, last * 1.0, 0.1, 1)
    with pytest.raises(ValueError, match="last_touch: expected call numbers"):
        D.write_noise(NP, p, p, last - 2, 0.1, 1)
    for bad in (-0.1, float("nan"), True, "0.1"):
        with pytest.raises(ValueError, match="omega_dw_min"):
            D.write_noise(NP, p, p, last, bad, 1)
        with pytest.raises(ValueError, match="omega_dw_min"):
            D.write_noise_all(NP, p, bad, 1, 0)
    with pytest.raises(ValueError, match="persistent: expected a 2-D"):
        D.write_noise(NP, p[0], p[0], last[0], 0.1, 1)


def test_scale_uses_the_mean_dw_min():
    assert D.write_noise_scale(SoftBoundsDevice(write_noise_std=2.0, dw_min=0.01)) == 0.02
    assert D.write_noise_scale(SoftBoundsDevice()) == 0.0
    assert D.write_noise_scale(ConstantStepDevice()) == 0.0
    pmax = SoftBoundsPmaxDevice(write_noise_std=0.5)
    assert D.write_noise_scale(pmax) == 0.5 * D.effective(pmax)["dw_min"]


def test_pulse_counts():
    c = np.array([[3, -2, 0]], dtype=np.int32)
    out = D.pulse_counts(NP, c)
    assert out.dtype == np.int64 and out.shape == (2, 1, 3)
    np.testing.assert_array_equal(out, [[[0, 2, 0]], [[3, 0, 0]]])


# -- the tile: state, set_weights, reads ----------------------------------------------------------


@pytest.mark.parametrize("cls", NOISY)
def test_tiles_with_write_noise_and_counters_are_created(cls):
    t = AnalogTile(2, 3, SingleRPUConfig(device=cls(write_noise_std=0.5, count_pulses=True)))
    assert t.persistent is not None and t.persistent.shape == (2, 3)
    np.testing.assert_array_equal(t.get_pulse_counters(), np.zeros((2, 2, 3), dtype=np.int64))
    plain = AnalogTile(2, 3, SingleRPUConfig(device=cls()))
    assert plain.persistent is None and plain.get_persistent_weights() is None
    assert plain.get_pulse_counters().shape == (0,)
    # pulse type 'None' replaces the device by a floating-point one: no write noise, no counters
    fp = AnalogTile(2, 3, noisy_cfg(cls, pulse_type="None", count_pulses=True))
    assert fp.persistent is None and fp.get_pulse_counters().shape == (0,)


@pytest.mark.parametrize("on_set", [True, False])
def test_set_weights(on_set):
    t = AnalogTile(3, 4, noisy_cfg(apply_write_noise_on_set=on_set), seed=6)
    w0 = np.linspace(-0.9, 0.9, 12).reshape(3, 4)
    t.set_weights(w0)
    np.testing.assert_array_equal(t.get_persistent_weights(), w0)
    if on_set:
        xi = rng.normal(6, "device.write_noise_all", 0, (3, 4))
        np.testing.assert_array_equal(t.get_weights(), w0 + scale(t) * xi)
        assert t.streams.calls["device.write_noise_all"] == 1
    else:
        np.testing.assert_array_equal(t.get_weights(), w0)
        assert "device.write_noise_all" not in t.streams.calls
    # clip=True clamps the persistent weights to the bounds; the noise goes on top
    t.set_weights(w0, clip=True)
    clamped = np.clip(w0, t.device_params.b_min, t.device_params.b_max)
    np.testing.assert_array_equal(t.get_persistent_weights(), clamped)
    if on_set:
        xi = rng.normal(6, "device.write_noise_all", 1, (3, 4))
        np.testing.assert_array_equal(t.get_weights(), clamped + scale(t) * xi)
        assert (t.get_weights() != clamped).all()


def test_forward_and_backward_read_the_apparent_weights():
    cfg = noisy_cfg(write_noise_std=5.0)
    cfg.forward = IOParameters(is_perfect=True)
    cfg.backward = IOParameters(is_perfect=True)
    t = AnalogTile(3, 4, cfg, seed=2)
    t.set_weights(np.full((3, 4), 0.1))
    a, p = np.asarray(t.get_weights()), np.asarray(t.get_persistent_weights())
    assert not np.allclose(a, p)
    x, d = np.arange(1.0, 5.0), np.arange(1.0, 4.0)
    np.testing.assert_allclose(t.forward(x), a @ x, rtol=1e-12)
    np.testing.assert_allclose(t.backward(d), a.T @ d, rtol=1e-12)


def test_noise_std_and_mean():
    """The apparent weights scatter around the persistent ones with std ω·dw_min, after
    set_weights and after pulses (statistical check, 6400 elements each)."""
    t = AnalogTile(80, 80, noisy_cfg(write_noise_std=3.0, dw_min=0.002), seed=12)
    s = scale(t)
    assert s == pytest.approx(0.006)
    t.set_weights(np.zeros((80, 80)))
    e = np.asarray(t.get_weights()) / s
    assert abs(e.mean()) < 4 / 80 and abs(e.std() - 1.0) < 0.05
    g = np.random.default_rng(3)
    t.update(g.uniform(0.5, 1.0, (2, 80)), g.uniform(0.5, 1.0, (2, 80)), 0.05)
    last = np.asarray(t.get_weights()) - np.asarray(t.get_persistent_weights())
    assert (np.asarray(t.get_persistent_weights()) != 0).mean() > 0.9
    e = last / s
    assert abs(e.mean()) < 4 / 80 and abs(e.std() - 1.0) < 0.05


# -- pulses: last-touch semantics -----------------------------------------------------------------


def per_cycle(tile0, xs, ds, lr):
    """A per-cycle loop over the stage functions that redraws the apparent weight of every pulsed
    element after each cycle (the rule of §V8 written naively)."""
    cfg = tile0.rpu_config.device
    params = tile0.device_params
    seed = tile0.streams.seed
    g = D.granularity(cfg)
    pw, a = np.array(tile0.get_persistent_weights()), np.array(tile0.get_weights())
    call0 = tile0.streams.calls.get("update", 0)
    span = np.asarray(params.b_max - params.b_min)
    frozen = span <= 0 if type(cfg).__name__ in D.FROZEN_WITHOUT_RANGE else np.zeros_like(span,
                                                                                          bool)
    pulses = np.zeros((2,) + pw.shape, dtype=np.int64)
    for k in range(xs.shape[0]):
        call = call0 + k
        counts, plan = P.coincidences(NP, xs[k], ds[k], lr, g, tile0.rpu_config.update, seed, call)
        if plan.bl == 0:
            continue
        pw = D.apply_pulses(NP, pw, counts, params, cfg, plan.bl, seed, call)
        xi = rng.normal(seed, "device.write_noise", call, pw.shape)
        hit = (np.asarray(counts) != 0) & ~frozen
        a = np.where(hit, pw + D.write_noise_scale(cfg) * xi, a)
        pulses += np.asarray(D.pulse_counts(NP, counts))
    return pw, a, pulses


@pytest.mark.parametrize("cls", NOISY)
@pytest.mark.parametrize("pulse_type", ["StochasticCompressed", "DeterministicImplicit"])
def test_last_touch_equals_a_per_cycle_redraw(cls, pulse_type):
    kw = {"write_noise_std": 1.5, "count_pulses": True, "dw_min_std": 0.1}
    if cls in (ExpStepDevice, PowStepDevice):
        kw["corrupt_devices_prob"] = 0.3  # range-less devices ignore pulses: never redrawn
    t = AnalogTile(3, 5, noisy_cfg(cls, pulse_type, **kw), seed=21)
    t.set_weights(np.linspace(-0.3, 0.3, 15).reshape(3, 5))
    xs, ds = batch(4, 6, 3, 5)
    xs[:, 1] = 0.0  # column 1 is never pulsed: keeps its apparent values bit for bit
    xs[2:, 3] = 0.0  # column 3 only in the first two cycles
    before = np.array(t.get_weights())
    pw, a, pulses = per_cycle(t, xs, ds, 0.05)
    t.update(xs, ds, 0.05)
    np.testing.assert_array_equal(t.get_persistent_weights(), pw)
    np.testing.assert_array_equal(t.get_weights(), a)
    np.testing.assert_array_equal(t.get_pulse_counters(), pulses)
    np.testing.assert_array_equal(np.asarray(t.get_weights())[:, 1], before[:, 1])
    assert pulses.sum() > 0


def test_range_less_devices_keep_their_apparent_weights():
    cfg = noisy_cfg(ExpStepDevice, corrupt_devices_prob=0.5, write_noise_std=3.0)
    t = AnalogTile(6, 6, cfg, seed=8)
    t.set_weights(np.zeros((6, 6)))
    before = np.array(t.get_weights())
    frozen = np.asarray(t.device_params.b_max - t.device_params.b_min) <= 0
    assert frozen.any() and not frozen.all()
    xs, ds = batch(1, 3, 6, 6)
    t.update(np.abs(xs) + 0.5, np.abs(ds) + 0.5, 0.05)
    after = np.asarray(t.get_weights())
    np.testing.assert_array_equal(after[frozen], before[frozen])
    assert (after[~frozen] != before[~frozen]).all()


def test_persistent_weights_do_not_depend_on_write_noise():
    """Write noise has its own streams: the persistent weights of a noisy tile follow exactly
    the weights of the same tile without write noise, through every operation."""
    kw = {"diffusion": 0.01, "lifetime": 20.0, "reset": 0.02, "drift": DriftParameter(nu=0.1)}
    noisy = AnalogTile(3, 4, noisy_cfg(**kw), seed=5)
    plain = AnalogTile(3, 4, noisy_cfg(write_noise_std=0.0, **kw), seed=5)
    xs, ds = batch(2, 4)
    for t in (noisy, plain):
        t.set_weights(np.full((3, 4), 0.2))
        t.drift_weights(1.0)
        t.update(xs, ds, 0.1)
        t.post_update_step()
        t.drift_weights(5.0)
        t.reset(0.5)
        t.update(xs[:2], ds[:2], 0.1)
    np.testing.assert_array_equal(noisy.get_persistent_weights(), plain.get_weights())
    assert not np.allclose(noisy.get_weights(), plain.get_weights())


@pytest.mark.parametrize("op", ["decay", "diffuse", "reset", "drift", "none_with_device"])
def test_operations_redraw_every_apparent_value(op):
    kw = {"lifetime": 10.0, "diffusion": 0.01, "reset": 0.05, "drift": DriftParameter(nu=0.2)}
    pulse_type = "NoneWithDevice" if op == "none_with_device" else "StochasticCompressed"
    t = AnalogTile(3, 4, noisy_cfg(pulse_type=pulse_type, **kw), seed=9)
    t.set_weights(np.full((3, 4), 0.3))
    if op == "drift":
        t.drift_weights(1.0)  # starts the drift clock (and redraws once)
    calls = t.streams.calls["device.write_noise_all"]
    p0 = np.array(t.get_persistent_weights())
    if op == "decay":
        t.decay_weights()
    elif op == "diffuse":
        t.diffuse_weights()
    elif op == "reset":
        t.reset(1.0)
    elif op == "drift":
        t.drift_weights(10.0)
    else:
        x, d = batch(0, 2)
        t.update(x, d, 0.1)
        w = p0
        for k in range(2):
            w = np.clip(w - 0.1 * np.outer(d[k], x[k]), t.device_params.b_min,
                        t.device_params.b_max)
        np.testing.assert_allclose(t.get_persistent_weights(), w, rtol=1e-12)
    p1 = np.asarray(t.get_persistent_weights())
    assert not np.array_equal(p1, p0)
    assert t.streams.calls["device.write_noise_all"] == calls + 1
    xi = rng.normal(9, "device.write_noise_all", calls, (3, 4))
    np.testing.assert_array_equal(t.get_weights(), p1 + scale(t) * xi)


def test_no_redraw_when_nothing_happens():
    t = AnalogTile(3, 4, noisy_cfg(pulse_type="NoneWithDevice"), seed=9)
    t.set_weights(np.full((3, 4), 0.3))
    before = np.array(t.get_weights())
    t.decay_weights()  # lifetime 0
    t.diffuse_weights()  # diffusion 0
    t.reset(0.0)
    t.drift_weights(1.0)  # nu 0
    t.update(np.ones(4), np.ones(3), 0.0)  # lr 0
    np.testing.assert_array_equal(t.get_weights(), before)
    assert t.streams.calls["device.write_noise_all"] == 1


# -- pulse counting -------------------------------------------------------------------------------


def test_counters_direction_and_inertness():
    cfg = SingleRPUConfig(device=ConstantStepDevice(count_pulses=True))
    plain_cfg = SingleRPUConfig(device=ConstantStepDevice())
    t, plain = AnalogTile(2, 3, cfg, seed=1), AnalogTile(2, 3, plain_cfg, seed=1)
    x, d = np.ones((4, 3)), np.ones((4, 2))  # x·d > 0 with lr > 0: down pulses
    for tile in (t, plain):
        tile.update(x, d, 0.01)
    c = np.asarray(t.get_pulse_counters())
    assert c[0].sum() > 0 and c[1].sum() == 0
    np.testing.assert_array_equal(t.get_weights(), plain.get_weights())
    for tile in (t, plain):
        tile.update(x, -d, 0.01)  # up pulses
    c2 = np.asarray(t.get_pulse_counters())
    np.testing.assert_array_equal(c2[0], c[0])
    assert c2[1].sum() > 0
    np.testing.assert_array_equal(t.get_weights(), plain.get_weights())
    assert t.streams == plain.streams
    # other operations do not count; the getter returns a copy
    t.set_weights(np.zeros((2, 3)))
    t.reset()
    got = t.get_pulse_counters()
    got[0, 0, 0] = 10**6
    np.testing.assert_array_equal(t.get_pulse_counters(), c2)


def test_none_with_device_counts_nothing():
    cfg = SingleRPUConfig(device=ConstantStepDevice(count_pulses=True),
                          update=UpdateParameters(pulse_type="NoneWithDevice"))
    t = AnalogTile(2, 3, cfg)
    t.update(np.ones(3), np.ones(2), 0.1)
    np.testing.assert_array_equal(t.get_pulse_counters(), np.zeros((2, 2, 3), dtype=np.int64))


# -- checkpoints and bad states -------------------------------------------------------------------


@pytest.mark.parametrize("on_set", [True, False])
def test_checkpoint_resume(on_set):
    cfg = noisy_cfg(diffusion=0.002, lifetime=40.0, count_pulses=True,
                    apply_write_noise_on_set=on_set)
    xs, ds = batch(7, 12)
    xs, ds = xs.reshape(6, 2, 4), ds.reshape(6, 2, 3)

    def step(tile, k):
        tile.update(xs[k], ds[k], 0.05)
        tile.post_update_step()

    full = AnalogTile(3, 4, cfg, seed=11)
    full.set_weights(np.full((3, 4), 0.1))
    for k in range(6):
        step(full, k)
    first = AnalogTile(3, 4, cfg, seed=11)
    first.set_weights(np.full((3, 4), 0.1))
    for k in range(4):
        step(first, k)
    state = first.state_dict()
    fresh = AnalogTile(3, 4, cfg, seed=99)
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(fresh.get_weights(), first.get_weights())
    np.testing.assert_array_equal(fresh.get_persistent_weights(), first.get_persistent_weights())
    for k in range(4, 6):
        step(fresh, k)
    np.testing.assert_array_equal(fresh.get_weights(), full.get_weights())
    np.testing.assert_array_equal(fresh.get_persistent_weights(), full.get_persistent_weights())
    np.testing.assert_array_equal(fresh.get_pulse_counters(), full.get_pulse_counters())
    assert fresh.streams == full.streams


def test_bad_states():
    cfg = noisy_cfg(count_pulses=True)
    t = AnalogTile(3, 4, cfg, seed=1)
    good = t.state_dict()
    for key, value, match in (
            ("persistent", None, "state\\['persistent'\\]"),
            ("persistent", np.zeros((4, 3)), "state\\['persistent'\\]: expected shape"),
            ("pulse_counters", None, "state\\['pulse_counters'\\]"),
            ("pulse_counters", np.zeros((2, 3, 4)), "state\\['pulse_counters'\\]"),
            ("pulse_counters", -np.ones((2, 3, 4), dtype=np.int64), "state\\['pulse_counters'\\]"),
            ("pulse_counters", np.zeros((3, 4), dtype=np.int64), "state\\['pulse_counters'\\]")):
        state = dict(good)
        state[key] = value
        with pytest.raises(ValueError, match=match):
            t.load_state_dict(state)
    plain = AnalogTile(3, 4, SingleRPUConfig(device=SoftBoundsDevice()))
    state = plain.state_dict()
    assert state["persistent"] is None and state["pulse_counters"] is None
    state["persistent"] = np.zeros((3, 4))
    with pytest.raises(ValueError, match="state\\['persistent'\\]"):
        plain.load_state_dict(state)
    with pytest.raises(ValueError, match="last_touch"):
        t._after_pulses(None, np.zeros((2, 3, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="pulse_counts"):
        t._after_pulses(np.full((3, 4), -1, dtype=np.int64), None)


# -- namespaces and dtypes ------------------------------------------------------------------------


@pytest.mark.parametrize("xp", OTHER_NAMESPACES)
def test_namespaces_agree(xp):
    if xp is None:
        pytest.skip("namespace missing")
    ns = rng._namespace(xp)
    cfg = noisy_cfg(LinearStepDevice, count_pulses=True, diffusion=0.01, gamma_up=0.2)
    g = np.random.default_rng(1)
    w0, xs, ds = g.uniform(-0.3, 0.3, (3, 4)), g.normal(size=(3, 4)), g.normal(size=(3, 3))
    results = []
    for space, module in ((NP, None), (ns, xp)):
        t = AnalogTile(3, 4, cfg, seed=5, xp=module)
        t.set_weights(space.asarray(w0))
        t.update(space.asarray(xs), space.asarray(ds), 0.1)
        first = to_numpy(t.get_weights())
        t.post_update_step()
        results.append((first, to_numpy(t.get_weights()), to_numpy(t.get_persistent_weights()),
                        to_numpy(t.get_pulse_counters())))
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-15)


def test_float32_tile():
    t = AnalogTile(3, 4, noisy_cfg(count_pulses=True), seed=3, dtype=np.float32)
    t.set_weights(np.full((3, 4), 0.1, dtype=np.float32))
    xs, ds = batch(5, 3)
    t.update(xs.astype(np.float32), ds.astype(np.float32), 0.05)
    assert t.get_weights().dtype == np.float32
    assert t.get_persistent_weights().dtype == np.float32
    assert t.get_pulse_counters().dtype == np.int64

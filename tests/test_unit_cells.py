"""VectorUnitCell, OneSidedUnitCell and MixedPrecisionCompound (refsim/stages/unit_cells.py,
spec/unit_cells.md): schedules, weight
formulas, bookkeeping, every field acting, backends, namespaces, checkpoints, bad configs."""

import math

import numpy as np
import pytest
from conftest import NAMESPACES, to_numpy

from refsim import configs as C
from refsim import rng
from refsim.configs import ConfigError, VectorUnitCellUpdatePolicy as Policy
from refsim.stages import devices as device_stage
from refsim.stages import pulses as pulse_stage
from refsim.stages import update as update_stage
from refsim.tile import AnalogTile

M, N = 3, 4
SEED = 5


def cs(**kw):
    """ConstantStep without variations or noise unless given."""
    base = dict(w_max_dtod=0.0, w_min_dtod=0.0, dw_min_dtod=0.0, up_down_dtod=0.0,
                dw_min_std=0.0)
    base.update(kw)
    return C.ConstantStepDevice(**base)


def vector(policy=Policy.ALL, devs=None, k=2, up=None, **kw):
    devs = devs if devs is not None else [cs() for _ in range(k)]
    return C.UnitCellRPUConfig(
        device=C.VectorUnitCell(unit_cell_devices=devs, update_policy=policy, **kw),
        update=up or C.UpdateParameters())


def onesided(dev=None, up=None, **kw):
    return C.UnitCellRPUConfig(
        device=C.OneSidedUnitCell(unit_cell_devices=[dev or cs()], **kw),
        update=up or C.UpdateParameters())


def mixed(dev=None, up=None, **kw):
    return C.DigitalRankUpdateRPUConfig(
        device=C.MixedPrecisionCompound(device=dev or cs(), **kw),
        update=up or C.UpdateParameters())


def data(seed, batch, m=M, n=N, scale_d=0.5):
    x = rng.normal(seed, "test.a", 0, (batch, n))
    d = scale_d * rng.normal(seed, "test.b", 0, (batch, m))
    return x, d


def tile(cfg, m=M, n=N, **kw):
    kw.setdefault("seed", SEED)
    kw.setdefault("backend", "reference")
    return AnalogTile(m, n, cfg, **kw)


def dev_weights(t):
    return [np.array(to_numpy(d.w)) for d in t.compound.devices()]


# -- VectorUnitCell ---------------------------------------------------------------------------


def test_vector_weight_formula_and_set_weights():
    devs = [cs(w_max=0.3, w_min=-0.3), cs(w_max=0.6, w_min=-0.6), cs(w_max=1.0, w_min=-1.0)]
    gamma = [0.5, 0.3, 0.2]
    t = tile(vector(devs=devs, gamma_vec=gamma))
    w = np.linspace(-0.9, 0.9, M * N).reshape(M, N)
    t.set_weights(w)
    held = dev_weights(t)
    for dev, h in zip(devs, held):
        np.testing.assert_array_equal(h, np.clip(w, dev.w_min, dev.w_max))
    np.testing.assert_allclose(t.get_weights(), sum(g * h for g, h in zip(gamma, held)),
                               rtol=0, atol=1e-15)
    # default gamma: the mean
    t2 = tile(vector(devs=devs))
    t2.set_weights(w)
    np.testing.assert_allclose(t2.get_weights(), sum(dev_weights(t2)) / 3, atol=1e-15)


def test_vector_single_fixed_set_weights_writes_one_device():
    t = tile(vector(Policy.SINGLE_FIXED, k=3, first_update_idx=1))
    w = np.full((M, N), 0.2)
    t.set_weights(w)
    held = dev_weights(t)
    assert np.all(held[0] == 0) and np.all(held[2] == 0)
    np.testing.assert_array_equal(held[1], w)


def test_vector_all_same_trains_own_noise():
    x, d = data(1, 3)
    t = tile(vector(Policy.ALL))
    t.update(x, d, 0.05)
    w0, w1 = dev_weights(t)
    assert np.any(w0 != 0)
    np.testing.assert_array_equal(w0, w1)  # same trains, no noise: identical devices agree
    t1 = tile(vector(Policy.ALL))
    t1.update(x[:1], d[:1], 0.05)  # one row: an element changes iff it is pulsed
    tn = tile(vector(Policy.ALL, devs=[cs(dw_min_std=0.3), cs(dw_min_std=0.3)]))
    tn.update(x[:1], d[:1], 0.05)
    n0, n1 = dev_weights(tn)
    pulsed = dev_weights(t1)[0] != 0
    np.testing.assert_array_equal(n0 != 0, pulsed)  # the same elements are pulsed
    np.testing.assert_array_equal(n1 != 0, pulsed)
    assert np.any(n0 != n1)  # with their own c2c noise


def test_vector_mean_granularity_and_calls():
    """Each device's pulses are those of pulsed_cycles with the cell's mean g, the tile's update
    calls and its device index."""
    devs = [cs(dw_min=0.01), cs(dw_min=0.03, dw_min_std=0.2)]
    cfg = vector(Policy.ALL, devs=devs)
    x, d = data(2, 3)
    t = tile(cfg)
    t.update(x[:1], d[:1], 0.1)
    t.update(x[1:], d[1:], 0.1)
    assert t.streams.calls["update"] == 3
    for k, (spec, got) in enumerate(zip(devs, dev_weights(t))):
        params = t.compound.devices()[k].params
        want, _, _ = update_stage.pulsed_cycles(
            np, np.zeros((M, N)), x, d, 0.1, spec, cfg.update, params, SEED, 0, device_index=k,
            granularity=0.02)
        np.testing.assert_array_equal(got, want)


def _changed(before, after):
    return [k for k, (b, a) in enumerate(zip(before, after)) if np.any(b != a)]


@pytest.mark.parametrize("policy", [Policy.SINGLE_FIXED, Policy.SINGLE_SEQUENTIAL,
                                    Policy.SINGLE_RANDOM])
def test_vector_single_policies_pick_one_device_per_call(policy):
    k, batch = 3, 2
    t = tile(vector(policy, k=k, first_update_idx=1))
    x, d = data(3, batch)
    picked = []
    for call in range(8):
        before = dev_weights(t)
        t.update(x, 4 * d, 0.1)
        changed = _changed(before, dev_weights(t))
        assert len(changed) == 1  # one device for the whole mini-batch
        picked.append(changed[0])
    if policy == Policy.SINGLE_FIXED:
        assert picked == [1] * 8
    elif policy == Policy.SINGLE_SEQUENTIAL:
        assert picked == [(2 + i) % k for i in range(8)]  # advances before each call
    else:
        want = [int(math.floor(float(rng.uniform(SEED, "compound.select", i * batch, 1)[0]) * k))
                for i in range(8)]
        assert picked == want and len(set(picked)) > 1


# -- OneSidedUnitCell -------------------------------------------------------------------------


def test_onesided_weight_formula_and_set_weights():
    t = tile(onesided(cs(w_max=0.5, w_min=-0.5)))
    w = np.linspace(-0.8, 0.8, M * N).reshape(M, N)
    t.set_weights(w)
    minus, plus = dev_weights(t)
    np.testing.assert_array_equal(plus, np.clip(np.maximum(w, 0), -0.5, 0.5))
    np.testing.assert_array_equal(minus, np.clip(np.maximum(-w, 0), -0.5, 0.5))
    np.testing.assert_array_equal(t.get_weights(), plus - minus)


def test_onesided_routes_one_train_as_up_pulses():
    up = C.UpdateParameters(pulse_type=C.PulseType.MEAN_COUNT)
    devs = [cs(dw_min=0.002), cs(dw_min=0.004)]
    t = AnalogTile(M, N, C.UnitCellRPUConfig(device=C.OneSidedUnitCell(unit_cell_devices=devs),
                                             update=up), seed=SEED, backend="reference")
    x, d = data(4, 1)
    t.update(x, d, 0.05)
    counts, _ = pulse_stage.coincidences(np, x[0], d[0], 0.05, 0.003, up, SEED, 0)
    counts = np.asarray(counts)
    minus, plus = dev_weights(t)  # entry 0 -> g-, entry 1 -> g+
    np.testing.assert_allclose(plus, np.maximum(counts, 0) * 0.004, atol=1e-15)
    np.testing.assert_allclose(minus, np.maximum(-counts, 0) * 0.002, atol=1e-15)
    assert np.all(plus >= 0) and np.all(minus >= 0) and np.any(plus > 0) and np.any(minus > 0)
    # the expected direction: W moves against d xᵀ
    assert np.sum(t.get_weights() * np.outer(d[0], x[0])) < 0


def _refresh_tile(**kw):
    kw.setdefault("refresh_forward", C.IOParameters(is_perfect=True))
    kw.setdefault("refresh_update", C.UpdateParameters(
        pulse_type=C.PulseType.MEAN_COUNT, update_management=False, update_bl_management=False,
        fixed_bl=False))
    return tile(onesided(cs(w_max=0.6, w_min=-0.6, reset_std=0.0), **kw), m=2, n=3)


def _preset(t, plus, minus):
    cell = t.compound.cell
    cell.plus.w, cell.minus.w = np.array(plus, float), np.array(minus, float)
    t.weights = t.compound.weights()


PLUS = [[0.50, 0.50, 0.20], [0.30, 0.20, 0.55]]
MINUS = [[0.20, 0.10, 0.50], [0.30, 0.50, 0.50]]
# w_max 0.6: upper 0.45, lower 0.15. Refreshed: (0,0) p>q, (0,2) q>p, (1,1) q>p, (1,2) p>q
REFRESHED = np.array([[1, 0, 1], [0, 1, 1]], bool)


def test_onesided_refresh_resets_and_rewrites():
    t = _refresh_tile(refresh_every=1, units_in_mbatch=False)
    _preset(t, PLUS, MINUS)
    t.update(np.zeros((1, 3)), np.zeros((1, 2)), 0.1)  # a row without pulses, then the refresh
    minus, plus = dev_weights(t)
    p, q = np.array(PLUS), np.array(MINUS)
    diff = p - q
    want_p = np.where(REFRESHED, np.where(diff > 0, np.round(diff / 0.001) * 0.001, 0), p)
    want_q = np.where(REFRESHED, np.where(diff < 0, np.round(-diff / 0.001) * 0.001, 0), q)
    np.testing.assert_allclose(plus, want_p, atol=1e-12)
    np.testing.assert_allclose(minus, want_q, atol=1e-12)
    assert t.compound.cell.refreshed == int(REFRESHED.sum())
    # reads: two io.refresh calls; writes: one transfer call per written column and device
    assert t.streams.calls["io.refresh"] == 2
    assert t.streams.calls["transfer"] == 2 + 2  # g+: columns 0, 2; g-: columns 1, 2


@pytest.mark.parametrize("every, mbatch, batch, calls, fired", [
    (3, False, 1, 2, False), (3, False, 1, 3, True), (3, False, 2, 1, False),
    (3, False, 2, 2, True), (1, True, 2, 1, True), (2, True, 2, 1, False), (2, True, 2, 2, True),
    (0, False, 1, 5, False)])
def test_onesided_refresh_schedule(every, mbatch, batch, calls, fired):
    t = _refresh_tile(refresh_every=every, units_in_mbatch=mbatch)
    _preset(t, PLUS, MINUS)
    for _ in range(calls):
        t.update(np.zeros((batch, 3)), np.zeros((batch, 2)), 0.1)
    assert (t.compound.cell.refreshed > 0) == fired
    assert t.compound.cell.rows == calls * batch


def test_onesided_copy_inverted():
    t = tile(onesided(cs(w_max=0.5, w_min=-0.7, up_down=0.2), copy_inverted=True))
    minus, plus = t.compound.cell.minus.params, t.compound.cell.plus.params
    np.testing.assert_array_equal(plus.b_max, -minus.b_min)
    np.testing.assert_array_equal(plus.b_min, -minus.b_max)
    np.testing.assert_array_equal(plus.dw_up, minus.dw_down)
    np.testing.assert_array_equal(plus.dw_down, minus.dw_up)
    sb = tile(onesided(C.SoftBoundsDevice(w_max_dtod=0.1), copy_inverted=True))
    mi, pl = sb.compound.cell.minus.params, sb.compound.cell.plus.params
    np.testing.assert_array_equal(pl.extra["slope_up"], -mi.extra["slope_down"])
    # an up pulse on the mirror = a down pulse on the original, mirrored
    w = np.full((M, N), 0.3)
    counts = np.ones((M, N), np.int32)
    up_mirror = device_stage.apply_pulses(np, -w, counts, pl, sb.compound.cell.plus.cfg, 1, 0, 0)
    down_orig = device_stage.apply_pulses(np, w, -counts, mi, sb.compound.cell.minus.cfg, 1, 0, 0)
    np.testing.assert_allclose(up_mirror, -down_orig, atol=1e-15)


# -- MixedPrecisionCompound -------------------------------------------------------------------

MEAN = C.UpdateParameters(pulse_type=C.PulseType.MEAN_COUNT, desired_bl=200)


def test_mp_chi_bookkeeping_and_transfer_lag():
    """χ += η·d xᵀ per row; the transfer fires after the first row of the next mini-batch;
    χ_after = χ_before − k·ĝ with k = trunc(χ_before/ĝ); W_r moves by −k·ĝ."""
    t = tile(mixed(up=MEAN))
    g = 0.001
    x, d = data(6, 4, scale_d=2.0)
    lr = 0.01
    t.update(x[:2], d[:2], lr)
    chi = np.zeros((M, N))
    for r in range(2):
        chi = chi + np.outer(lr * d[r], x[r])
    np.testing.assert_array_equal(to_numpy(t.compound.chi), chi)
    assert t.compound.transfers == 0 and np.all(t.get_weights() == 0)
    t.update(x[2:], d[2:], lr)
    before = chi + np.outer(lr * d[2], x[2])
    k = np.trunc(before / g)
    assert np.any(k != 0)
    after = before - k * g + np.outer(lr * d[3], x[3])
    np.testing.assert_array_equal(to_numpy(t.compound.chi), after)
    assert t.compound.transfers == 1
    assert t.streams.calls["transfer"] == M  # one pulsed cycle per transferred row
    # mean-count pulses: k_j pulses up to one pulse of float rounding in BL (aihwkit: random)
    np.testing.assert_allclose(t.get_weights(), -k * g, rtol=0, atol=1.5 * g)
    assert np.sum(np.asarray(t.get_weights()) == 0) < M * N


def test_mp_rows_per_transfer_pointer_and_random_row():
    x, d = data(7, 1, scale_d=3.0)
    t = tile(mixed(n_rows_per_transfer=1))
    moved = []
    for _ in range(5):
        before = np.array(to_numpy(t.compound.chi))
        t.update(x, d, 0.01)
        after = np.array(to_numpy(t.compound.chi)) - np.outer(0.01 * d[0], x[0])
        rows = [r for r in range(M) if np.any(np.abs(after[r] - before[r]) > 1e-15)]
        moved.append(rows)
    assert moved == [[], [0], [1], [2], [0]]  # the first call only accumulates (row 0 of all)
    tr = tile(mixed(n_rows_per_transfer=1, random_row=True))
    for i in range(5):
        first = tr.streams.calls.get("transfer", 0)
        before = np.array(to_numpy(tr.compound.chi))
        tr.update(x, d, 0.01)
        after = np.array(to_numpy(tr.compound.chi)) - np.outer(0.01 * d[0], x[0])
        rows = [r for r in range(M) if np.any(np.abs(after[r] - before[r]) > 1e-15)]
        if i:
            u = float(rng.uniform(SEED, "compound.column", first, 1)[0])
            assert rows == [min(int(u * M), M - 1)]
    assert tr.compound.transfers == 4


def test_mp_quantization_levels():
    x, d = data(8, 1)
    lr = 0.1
    t = tile(mixed(n_x_bins=5, stoc_round_x=False, transfer_every=10))
    t.update(x, d, lr)
    w_x = np.max(np.abs(x[0])) / 2
    qx = np.clip(np.round(x[0] / w_x), -2, 2) * w_x
    np.testing.assert_array_equal(to_numpy(t.compound.chi), np.outer(lr * d[0], qx))
    # only d quantized (aihwkit's CPU code writes the wrong index here): d levels, x exact
    t = tile(mixed(n_d_bins=3, stoc_round_d=False, transfer_every=10))
    t.update(x, d, lr)
    w_d = np.max(np.abs(d[0]))
    qd = np.clip(np.round(d[0] / w_d), -1, 1) * w_d
    np.testing.assert_array_equal(to_numpy(t.compound.chi), np.outer(lr * qd, x[0]))
    # stochastic rounding: the uniforms of compound.x_round, call = the row's update call
    t = tile(mixed(n_x_bins=4, transfer_every=10))
    t.update(x, d, lr)
    u = rng.uniform(SEED, "compound.x_round", 0, N)
    qx = np.clip(np.round(x[0] / w_x + (u - 0.5)), -2, 2) * w_x
    np.testing.assert_array_equal(to_numpy(t.compound.chi), np.outer(lr * d[0], qx))


@pytest.mark.parametrize("every, batch, calls, transfers", [
    (1, 2, 1, 0), (1, 2, 2, 1), (1, 2, 3, 2), (2, 2, 2, 0), (2, 2, 3, 1), (1, 1, 3, 2)])
def test_mp_transfer_schedule(every, batch, calls, transfers):
    t = tile(mixed(transfer_every=every))
    x, d = data(9, batch)
    for _ in range(calls):
        t.update(x, d, 0.01)
    assert t.compound.transfers == transfers
    assert t.compound.rows == calls * batch


def test_mp_granularity_and_transfer_lr():
    """Right after a transfer every remainder of χ is below ĝ; transfer_lr scales the write."""
    x, d = data(10, 1, scale_d=2.0)

    def run(**kw):
        t = tile(mixed(up=MEAN, **kw))
        for _ in range(2):  # the second call transfers after its (only) row
            t.update(x, d, 0.01)
        assert t.compound.transfers == 1
        return t, np.abs(np.asarray(to_numpy(t.compound.chi)))

    (base, chi_b), (_, chi_c), (double, _) = run(), run(granularity=0.004), \
        run(transfer_lr=2.0)
    assert np.all(chi_b < 0.001) and np.all(chi_c < 0.004) and np.any(chi_c >= 0.001)
    np.testing.assert_allclose(double.get_weights(), 2 * np.asarray(base.get_weights()),
                               rtol=0, atol=2.5e-3)
    assert np.any(np.asarray(base.get_weights()) != 0)


# -- every field changes the result -------------------------------------------------------------

_R_IO = C.IOParameters(is_perfect=True)
_R_UP = C.UpdateParameters(pulse_type=C.PulseType.MEAN_COUNT, update_management=False,
                           update_bl_management=False)
_OS = dict(refresh_every=1, units_in_mbatch=False, refresh_forward=_R_IO, refresh_update=_R_UP)

FIELD_CASES = [
    ("vector", dict(), dict(update_policy=Policy.SINGLE_FIXED)),
    ("vector", dict(update_policy=Policy.SINGLE_FIXED, unit_cell_devices=[cs(), cs(dw_min=0.003)]),
     dict(update_policy=Policy.SINGLE_FIXED, unit_cell_devices=[cs(), cs(dw_min=0.003)],
          first_update_idx=1)),
    ("vector", dict(), dict(gamma_vec=[0.8, 0.2])),
    ("vector", dict(), dict(unit_cell_devices=[cs(), cs(dw_min=0.003)])),
    ("vector", dict(unit_cell_devices=[C.ConstantStepDevice()] * 2),
     dict(unit_cell_devices=[C.ConstantStepDevice()] * 2, construction_seed=9)),
    ("onesided", dict(_OS, refresh_every=0), dict(_OS)),
    ("onesided", dict(_OS, refresh_every=2), dict(_OS, refresh_every=2, units_in_mbatch=True)),
    ("onesided", dict(_OS), dict(_OS, refresh_upper_thres=0.9)),
    ("onesided", dict(_OS), dict(_OS, refresh_lower_thres=0.05)),
    ("onesided", dict(_OS), dict(_OS, refresh_forward=C.IOParameters())),
    ("onesided", dict(_OS), dict(_OS, refresh_update=C.UpdateParameters())),
    ("onesided", dict(_OS, unit_cell_devices=[cs(dw_min=0.01, up_down=0.3)]),
     dict(_OS, unit_cell_devices=[cs(dw_min=0.01, up_down=0.3)], copy_inverted=True)),
    ("onesided", dict(unit_cell_devices=[C.ConstantStepDevice()]),
     dict(unit_cell_devices=[C.ConstantStepDevice()], construction_seed=9)),
    ("mp", dict(), dict(transfer_every=2)),
    ("mp", dict(), dict(n_rows_per_transfer=1)),
    ("mp", dict(n_rows_per_transfer=1), dict(n_rows_per_transfer=1, random_row=True)),
    ("mp", dict(), dict(granularity=0.003)),
    ("mp", dict(), dict(transfer_lr=0.5)),
    ("mp", dict(), dict(n_x_bins=3)),
    ("mp", dict(), dict(n_d_bins=3)),
    ("mp", dict(n_x_bins=5), dict(n_x_bins=5, stoc_round_x=False)),
    ("mp", dict(n_d_bins=5), dict(n_d_bins=5, stoc_round_d=False)),
    ("mp", dict(), dict(device=cs(dw_min=0.002))),
    ("mp", dict(device=C.ConstantStepDevice()),
     dict(device=C.ConstantStepDevice(), construction_seed=9)),
]


def _field_run(kind, fields):
    if kind == "vector":
        fields = dict(fields)
        devs = fields.pop("unit_cell_devices", [cs(), cs()])
        cfg = C.UnitCellRPUConfig(device=C.VectorUnitCell(unit_cell_devices=devs, **fields))
    elif kind == "onesided":
        fields = dict(fields)
        devs = fields.pop("unit_cell_devices", [cs(dw_min=0.01)])
        cfg = C.UnitCellRPUConfig(device=C.OneSidedUnitCell(unit_cell_devices=devs, **fields))
    else:
        fields = dict(fields)
        dev = fields.pop("device", cs())
        cfg = C.DigitalRankUpdateRPUConfig(device=C.MixedPrecisionCompound(device=dev, **fields))
    m = 2 if kind == "onesided" else 3
    t = tile(cfg, m=m, n=3)
    if kind == "onesided":
        _preset(t, PLUS, MINUS)
    x, d = data(11, 2, m=m, n=3, scale_d={"onesided": 0.3, "mp": 0.5}.get(kind, 3.0))
    for _ in range(4):
        t.update(x, d, 0.02)
    chi = [to_numpy(t.compound.chi)] if kind == "mp" else []
    return np.concatenate([np.ravel(to_numpy(a)) for a in [t.get_weights()] + chi])


def _case_id(case):
    kind, base, variant = case
    return kind + "-" + "-".join(k for k in variant if k not in base or base[k] != variant[k])


@pytest.mark.parametrize("kind, base, variant", FIELD_CASES, ids=[_case_id(c) for c in FIELD_CASES])
def test_every_field_changes_the_result(kind, base, variant):
    assert np.any(_field_run(kind, base) != _field_run(kind, variant))


# -- backends, checkpoints, namespaces ------------------------------------------------------------

AGREEMENT = {
    "vector-all": lambda dev: vector(Policy.ALL, devs=[dev, dev]),
    "vector-random": lambda dev: vector(Policy.SINGLE_RANDOM, devs=[dev, dev, dev]),
    "vector-sequential": lambda dev: vector(Policy.SINGLE_SEQUENTIAL, devs=[dev, dev]),
    "onesided": lambda dev: onesided(dev, refresh_every=1, refresh_upper_thres=0.3,
                                     refresh_lower_thres=0.05),
    "mp": lambda dev: mixed(dev, n_x_bins=7, n_d_bins=7, n_rows_per_transfer=2, random_row=True),
    "mp-vector": lambda dev: mixed(C.VectorUnitCell(unit_cell_devices=[dev, dev],
                                                    update_policy=Policy.SINGLE_RANDOM)),
}
DEVICES = {"ConstantStep": lambda: C.ConstantStepDevice(dw_min=0.01),
           "SoftBounds": lambda: C.SoftBoundsDevice(dw_min=0.01, w_max=0.3, w_min=-0.3)}


def _train(t, steps, start=0, batch=3):
    for s in range(start, start + steps):
        x, d = data(20 + s, batch, m=t.out_size, n=t.in_size, scale_d=2.0)
        xp = t.xp
        t.update(xp.asarray(x), xp.asarray(d), 0.05)


def _state(t):
    out = [np.array(to_numpy(t.get_weights()))]
    out += [np.array(to_numpy(d.w)) for d in t.compound.devices()]
    if hasattr(t.compound, "chi"):
        out.append(np.array(to_numpy(t.compound.chi)))
    return out


def _fast_tile(cfg):
    try:
        t = tile(cfg, backend="fast")
    except ValueError as err:
        pytest.skip(f"no fast backend here ({err})")
    if t.compound.ctx.fast_update is None:
        pytest.skip("no compiled update (refsim_fast.update) here")
    return t


@pytest.mark.parametrize("device", sorted(DEVICES))
@pytest.mark.parametrize("kind", sorted(AGREEMENT))
def test_reference_and_fast_agree(kind, device):
    cfg = AGREEMENT[kind](DEVICES[device]())
    ref, fst = tile(cfg), _fast_tile(cfg)
    for t in (ref, fst):
        _train(t, 3)
    for a, b in zip(_state(ref), _state(fst)):
        np.testing.assert_array_equal(a, b)
    assert ref.streams.calls == fst.streams.calls


@pytest.mark.parametrize("kind", sorted(AGREEMENT))
def test_checkpoint_resume_equals_uninterrupted(kind):
    cfg = AGREEMENT[kind](DEVICES["SoftBounds"]())
    whole = tile(cfg)
    _train(whole, 4)
    first = tile(cfg)
    _train(first, 2)
    state = first.state_dict()
    resumed = tile(cfg, seed=77)
    resumed.load_state_dict(state)
    _train(resumed, 2, start=2)
    for a, b in zip(_state(whole), _state(resumed)):
        np.testing.assert_array_equal(a, b)
    assert whole.streams.calls == resumed.streams.calls


@pytest.mark.parametrize("xp", [p for p in NAMESPACES if p.id in ("array_api_strict", "torch")])
@pytest.mark.parametrize("kind", ["vector-random", "onesided", "mp"])
def test_namespaces_agree(kind, xp):
    cfg = AGREEMENT[kind](DEVICES["SoftBounds"]())
    ref = tile(cfg, m=2, n=3)
    other = tile(cfg, m=2, n=3, xp=xp)
    for t in (ref, other):
        _train(t, 2)
    for a, b in zip(_state(ref), _state(other)):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


def test_bad_state_raises():
    t = tile(mixed())
    state = t.state_dict()
    state["compound"]["chi"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"\['chi'\]"):
        tile(mixed()).load_state_dict(state)
    t = tile(vector(Policy.SINGLE_RANDOM))
    state = t.state_dict()
    state["compound"]["cell"]["current"] = 5
    with pytest.raises(ValueError, match="current"):
        tile(vector(Policy.SINGLE_RANDOM)).load_state_dict(state)


# -- bad configs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("make, field", [
    (lambda: vector(Policy.SINGLE_FIXED, k=2, first_update_idx=2), "device.first_update_idx"),
    (lambda: vector(devs=[]), "device.unit_cell_devices"),
    (lambda: C.UnitCellRPUConfig(device=C.OneSidedUnitCell(unit_cell_devices=[cs()] * 3)),
     "device.unit_cell_devices"),
    (lambda: onesided(C.ExpStepDevice(), copy_inverted=True), "device.copy_inverted"),
    (lambda: onesided(refresh_update=C.UpdateParameters(pulse_type=C.PulseType.NONE)),
     "device.refresh_update.pulse_type"),
    (lambda: onesided(refresh_forward=C.IOParameters(mv_type=C.AnalogMVType.SPLIT_MODE)),
     "device.refresh_forward.mv_type"),
    (lambda: onesided(cs(w_max=0.0), refresh_every=1), "device.unit_cell_devices"),
    (lambda: vector(up=C.UpdateParameters(pulse_type=C.PulseType.NONE)), "update.pulse_type"),
    (lambda: mixed(up=C.UpdateParameters(pulse_type=C.PulseType.NONE_WITH_DEVICE)),
     "update.pulse_type"),
    (lambda: C.DigitalRankUpdateRPUConfig(device=C.MixedPrecisionCompound()),
     "device.device.unit_cell_devices"),
    (lambda: mixed(C.SoftBoundsDevice(write_noise_std=0.1)), "device.device"),
    (lambda: vector(devs=[cs(), C.LinearStepDevice(count_pulses=True)]),
     "device.unit_cell_devices[1]"),
])
def test_bad_config_names_the_field(make, field):
    with pytest.raises(ConfigError, match=r"^" + field.replace("[", r"\[").replace("]", r"\]")
                       + ":"):
        tile(make())


def test_gamma_vec_length_is_checked():
    with pytest.raises(ConfigError, match="gamma_vec"):
        vector(k=2, gamma_vec=[1.0]).validate()


# -- build_config tiles train ---------------------------------------------------------------------


@pytest.mark.parametrize("algorithm, kw", [("sgd", dict(n_devices=3)), ("mp", dict())])
def test_build_config_tiles_train(algorithm, kw):
    cfg = C.build_config(algorithm, C.ConstantStepDevice, **kw)
    target = np.array([[0.3, -0.2, 0.1, 0.25], [-0.1, 0.2, -0.3, 0.05]])
    t = tile(cfg, m=2, n=4, seed=2)
    x_all = rng.uniform(3, "test.a", 0, (64, 4)) * 2 - 1
    y_all = x_all @ target.T

    def loss():
        return float(np.mean((x_all @ np.asarray(t.get_weights()).T - y_all) ** 2))

    start = loss()
    for epoch in range(2):
        for b in range(0, 64, 4):
            x = x_all[b:b + 4]
            t.update(x, x @ np.asarray(t.get_weights()).T - y_all[b:b + 4], 0.1)
    assert loss() < 0.3 * start


@pytest.mark.parametrize("xp", [p for p in NAMESPACES if p.id in ("numpy", "array_api_strict")])
@pytest.mark.parametrize("kind", ["mp-all-rows", "mp-two-rows", "single"])
def test_reference_batches_cycles_on_different_rows(kind, xp, monkeypatch):
    """The reference applies consecutive cycles that pulse different rows (the one-row writes of
    a mixed-precision transfer) in one pass, with each row's own call, train length and noise:
    the weights of applying them one after another (update_stage.BATCH_DISJOINT_ROWS = False),
    bit for bit; dense gradient cycles overlap and go one by one either way."""
    dev = C.SoftBoundsDevice(dw_min=0.01, w_max=0.3, w_min=-0.3, dw_min_std=0.3)
    cfg = {"mp-all-rows": mixed(dev, n_rows_per_transfer=-1),
           "mp-two-rows": mixed(dev, n_x_bins=7, n_d_bins=7, n_rows_per_transfer=2,
                                random_row=True),
           "single": C.SingleRPUConfig(device=dev)}[kind]
    runs = []
    for batched in (True, False):
        monkeypatch.setattr(update_stage, "BATCH_DISJOINT_ROWS", batched)
        t = tile(cfg, m=9, n=7, xp=xp)
        for s in range(3):
            x, d = data(40 + s, 4, m=9, n=7, scale_d=2.0)
            t.update(t.xp.asarray(x), t.xp.asarray(d), 0.05)
        runs.append([np.array(to_numpy(t.get_weights()))] +
                    ([np.array(to_numpy(t.compound.chi))] if t.compound is not None else []))
    for a, b in zip(*runs):
        assert a.tobytes() == b.tobytes()
    assert not np.array_equal(runs[0][0], np.array(to_numpy(tile(cfg, m=9, n=7).get_weights())))

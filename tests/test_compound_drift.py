"""Drift of compound devices (spec/drift.md §D5): every sub-device with its own DriftParameter,
ν, state, stream call and bounds, then the visible-weight reduction; sub-devices without drift
stay put; backends, namespaces, checkpoints, bad input, atomicity, and (when aihwkit is installed
beside refsim) a noise-free side-by-side check with aihwkit 1.1.0."""

import dataclasses
import json
import math

import numpy as np
import pytest

from aihwkit_peer import f32, run_script
from conftest import OTHER_NAMESPACES, to_numpy
from conftest import assert_same_state as _assert_same_state
from refsim import configs as C
from refsim import rng
from refsim.stages import drift as D
from refsim.stages.drift import DriftState
from refsim.tile import AnalogTile

M, N = 3, 4

#: a noisy drifting ConstantStep device (spread ν, per-call ν noise, read noise)
DRIFT_A = C.DriftParameter(nu=0.1, nu_dtod=0.2, nu_std=0.1, w_noise_std=0.01)
#: a drifting SoftBounds device with an offset term and read noise
DRIFT_S = C.DriftParameter(nu=0.05, nu_dtod=0.1, w_noise_std=0.02, g_offset=0.1, wg_ratio=0.5)


def dev_a():
    return C.ConstantStepDevice(drift=DRIFT_A)


def dev_s():
    return C.SoftBoundsDevice(drift=DRIFT_S)


def dev_still():
    return C.SoftBoundsDevice()  # drift.nu = 0: no drift


def _unit(cell):
    return lambda: C.UnitCellRPUConfig(device=cell())


def _transfer_w(tile, ws):
    gam = tile.compound.gamma
    return sum(g * w for g, w in zip(gam, ws))


def _chopped_w(tile, ws):
    comp = tile.compound
    chi = np.outer(to_numpy(comp.chop_elem), to_numpy(comp.chop_line))  # (m, n): columns
    return comp.gamma[1] * ws[1] + comp.gamma[0] * chi * ws[0]


#: name -> (config factory, each sub-device's drift in device order (None: no drift),
#: the visible weight from the sub-device weights)
CASES = {
    "vector": (_unit(lambda: C.VectorUnitCell(unit_cell_devices=[dev_a(), dev_still(), dev_s()],
                                              gamma_vec=[0.5, 0.3, 0.2])),
               [DRIFT_A, None, DRIFT_S],
               lambda t, ws: 0.5 * ws[0] + 0.3 * ws[1] + 0.2 * ws[2]),
    "onesided": (_unit(lambda: C.OneSidedUnitCell(unit_cell_devices=[dev_a(), dev_s()])),
                 [DRIFT_A, DRIFT_S], lambda t, ws: ws[1] - ws[0]),
    "onesided-inverted": (_unit(lambda: C.OneSidedUnitCell(unit_cell_devices=[dev_a()],
                                                           copy_inverted=True)),
                          [DRIFT_A, DRIFT_A], lambda t, ws: ws[1] - ws[0]),
    "transfer": (_unit(lambda: C.TransferCompound(
        unit_cell_devices=[dev_still(), dev_s()], n_reads_per_transfer=1, gamma=0.5)),
        [None, DRIFT_S], _transfer_w),
    "transfer-3": (_unit(lambda: C.TransferCompound(
        unit_cell_devices=[dev_a(), dev_s(), dev_s()], gamma=0.5)),
        [DRIFT_A, DRIFT_S, DRIFT_S], _transfer_w),
    "buffered": (_unit(lambda: C.BufferedTransferCompound(
        unit_cell_devices=[dev_a(), dev_s()], gamma=0.5)), [DRIFT_A, DRIFT_S], _transfer_w),
    "chopped": (_unit(lambda: C.ChoppedTransferCompound(
        unit_cell_devices=[dev_a(), dev_s()], gamma=0.5)), [DRIFT_A, DRIFT_S], _chopped_w),
    "dynamic": (_unit(lambda: C.DynamicTransferCompound(
        unit_cell_devices=[dev_s(), dev_still()], gamma=0.5)), [DRIFT_S, None], _chopped_w),
    "mp-vector": (lambda: C.DigitalRankUpdateRPUConfig(device=C.MixedPrecisionCompound(
        device=C.VectorUnitCell(unit_cell_devices=[dev_a(), dev_still()]))),
        [DRIFT_A, None], lambda t, ws: 0.5 * ws[0] + 0.5 * ws[1]),
    "mp-single": (lambda: C.DigitalRankUpdateRPUConfig(device=C.MixedPrecisionCompound(
        device=dev_s())), [DRIFT_S], lambda t, ws: ws[0]),
}
STEPS = [10.0, 5.0, 20.0]


def _plain(tree):
    """A state tree with its dataclasses (drift states) as dicts."""
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        return {f.name: _plain(getattr(tree, f.name)) for f in dataclasses.fields(tree)}
    if isinstance(tree, dict):
        return {k: _plain(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_plain(v) for v in tree]
    return tree


def assert_same_state(a, b):
    _assert_same_state(_plain(a), _plain(b))


def prepare(name, seed=4, backend="reference", dtype=None, xp=None):
    """A tile of case ``name`` whose sub-devices hold distinct weights inside their bounds (and,
    for the chopped rules, mixed chopper signs)."""
    ns = rng._namespace(xp)
    dtype = ns.float64 if dtype is None else dtype
    tile = AnalogTile(M, N, CASES[name][0](), seed=seed, backend=backend, dtype=dtype, xp=xp)
    g = np.random.default_rng(7)
    for dev in tile.compound.devices():
        w = ns.asarray(g.uniform(-0.45, 0.45, (M, N)), dtype=dtype)
        dev.w = ns.clip(w, min=dev.params.b_min, max=dev.params.b_max)
    if hasattr(tile.compound, "chop_line"):
        tile.compound.chop_line = ns.asarray([1.0, -1.0, -1.0, 1.0], dtype=dtype)
        tile.compound.chop_elem = ns.asarray([-1.0, 1.0, 1.0], dtype=dtype)
    tile.weights = tile.compound.weights()
    return tile


def sub_weights(tile):
    return [to_numpy(d.w).copy() for d in tile.compound.devices()]


def expected_by_stage(tile, drifts, steps):
    """The sub-device weights after each drift call, driving refsim.stages.drift directly:
    device k (in device order) with its case's DriftParameter, ν from drift.nu_dtod call k under
    the construction seed, its own state, the next call of the `drift` counter per drifting
    device, clamped to its own bounds."""
    devs = tile.compound.devices()
    ws = sub_weights(tile)
    states = [None] * len(devs)
    call = 0
    out = []
    for dt in steps:
        for k, (dev, drift) in enumerate(zip(devs, drifts)):
            assert dev.index == k
            if drift is None:
                continue
            nu = D.drift_nu(np, drift, (M, N), tile.construction_seed, k)
            if states[k] is None:
                states[k] = D.initial_state(np, ws[k])
            bounds = (to_numpy(dev.params.b_min), to_numpy(dev.params.b_max))
            ws[k], states[k] = D.drift_weights(np, ws[k], states[k], dt, drift, nu,
                                               tile.streams.seed, call, bounds=bounds)
            call += 1
        out.append([w.copy() for w in ws])
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_sub_device_drifts_with_its_own_parameters(name):
    tile = prepare(name)
    drifts, reduce = CASES[name][1], CASES[name][2]
    expected = expected_by_stage(tile, drifts, STEPS)
    before = sub_weights(tile)
    for k, dt in enumerate(STEPS):
        tile.drift_weights(dt)
        got = sub_weights(tile)
        for j, (w, want, drift) in enumerate(zip(got, expected[k], drifts)):
            np.testing.assert_array_equal(w, want, err_msg=f"device {j}, call {k}")
            if drift is None:  # a device without drift stays put, bit for bit
                np.testing.assert_array_equal(w, before[j], err_msg=f"device {j}")
            else:
                assert not np.array_equal(w, before[j]), f"device {j} did not drift"
        np.testing.assert_allclose(to_numpy(tile.get_weights()), reduce(tile, got), rtol=1e-14,
                                   atol=1e-15)
    # one call of the drift counter per drifting sub-device and drift call
    active = sum(d is not None for d in drifts)
    assert tile.streams.state_dict()["calls"].get("drift", 0) == active * len(STEPS)
    assert tile.drift_state is None  # the tile's own drift state is for single devices


def _still(drift_nu, **kw):
    return C.ConstantStepDevice(w_max_dtod=0.0, w_min_dtod=0.0,
                                drift=C.DriftParameter(nu=drift_nu, **kw))


def test_closed_form_power_law_per_device_and_reduction():
    """Noise-free devices: D_k ← D_k·τ^(−ν_k) (τ the accumulated time, ≥ 1), W = Σ γ_k D_k;
    the device without drift keeps its value."""
    cfg = C.UnitCellRPUConfig(device=C.TransferCompound(
        unit_cell_devices=[_still(0.1), _still(0.3)], gamma=0.5))
    cfg3 = C.UnitCellRPUConfig(device=C.VectorUnitCell(
        unit_cell_devices=[_still(0.1), _still(0.0), _still(0.3)], gamma_vec=[0.2, 0.3, 0.5]))
    a = np.linspace(-0.4, 0.4, M * N).reshape(M, N)
    b = np.linspace(0.3, -0.5, M * N).reshape(M, N)
    tt = AnalogTile(M, N, cfg, seed=1)
    tt.compound.devs[0].w, tt.compound.devs[1].w = a.copy(), b.copy()
    vt = AnalogTile(M, N, cfg3, seed=1)
    vt.set_weights(a)
    tau = 0.0
    for dt in (0.5, 9.5, 30.0):
        tt.drift_weights(dt)
        vt.drift_weights(dt)
        tau += dt
        s = max(tau, 1.0)
        np.testing.assert_allclose(tt.get_weights(), 0.5 * a * s ** -0.1 + b * s ** -0.3,
                                   rtol=1e-13)
        np.testing.assert_allclose(vt.get_weights(),
                                   0.2 * a * s ** -0.1 + 0.3 * a + 0.5 * a * s ** -0.3,
                                   rtol=1e-13)
    assert tau == 40.0 and not np.allclose(tt.get_weights(), 0.5 * a + b)


def test_a_transfer_write_between_drifts_restarts_the_written_elements():
    """An exact transfer write (transfer_update pulse type 'None') changes a line of the slow
    device in place: those elements restart their drift at the next call (keeping the written
    value), the others keep drifting from their start."""
    slow = C.ConstantStepDevice(w_max_dtod=0.0, w_min_dtod=0.0, drift=C.DriftParameter(nu=0.1))
    cfg = C.UnitCellRPUConfig(device=C.TransferCompound(
        unit_cell_devices=[C.ConstantStepDevice(), slow], gamma=0.0, n_reads_per_transfer=1,
        transfer_update=C.UpdateParameters(pulse_type=C.PulseType.NONE)))
    tile = AnalogTile(M, N, cfg, seed=1)
    tile.set_weights(np.full((M, N), 0.3))
    tile.drift_weights(10.0)
    drifted = to_numpy(tile.compound.devs[1].w).copy()
    tile.update(np.ones(N), np.ones(M), 0.5)  # one transfer: column 0 of D_1 is written
    written = to_numpy(tile.compound.devs[1].w).copy()
    changed = written != drifted
    assert changed[:, 0].sum() >= 2 and not changed[:, 1:].any()
    tile.drift_weights(10.0)
    w = to_numpy(tile.get_weights())
    np.testing.assert_array_equal(w[changed], written[changed])
    np.testing.assert_allclose(w[~changed], 0.3 * 20.0 ** -0.1, rtol=1e-14)


def test_each_device_clamps_to_its_own_bounds():
    noisy = C.DriftParameter(nu=0.1, w_noise_std=0.5)
    cfg = C.UnitCellRPUConfig(device=C.VectorUnitCell(unit_cell_devices=[
        C.ConstantStepDevice(w_max=0.3, w_min=-0.2, drift=noisy), dev_still(),
        C.ConstantStepDevice(w_max=0.8, w_min=-0.7, drift=noisy)]))
    tile = AnalogTile(10, 10, cfg, seed=3)
    tile.set_weights(np.full((10, 10), 0.1))
    still = to_numpy(tile.compound.devices()[1].w).copy()
    tile.drift_weights(10.0)
    devs = tile.compound.devices()
    for k in (0, 2):
        w = to_numpy(devs[k].w)
        lo, hi = to_numpy(devs[k].params.b_min), to_numpy(devs[k].params.b_max)
        assert np.all(w <= hi) and np.all(w >= lo)
        assert np.any(w == hi) and np.any(w == lo)
    # device 0's bounds are tighter than device 2's: its clamps are its own
    assert to_numpy(devs[2].w).max() > to_numpy(devs[0].params.b_max).max()
    np.testing.assert_array_equal(to_numpy(devs[1].w), still)


def test_sub_devices_draw_distinct_coefficients_and_noise():
    """Two sub-devices with the same config and weights drift differently (ν call = device
    index; noise from their own calls), and ν comes from the construction seed alone."""
    cfg = C.UnitCellRPUConfig(device=C.TransferCompound(
        unit_cell_devices=[dev_still(), dev_s(), dev_s()], gamma=0.5, construction_seed=17))
    tiles = [AnalogTile(M, N, cfg, seed=s) for s in (1, 2)]
    w = np.full((M, N), 0.2)
    for t in tiles:
        for dev in t.compound.devices():
            dev.w = w.copy()
        t.drift_weights(10.0)
    devs = tiles[0].compound.devices()
    assert not np.array_equal(to_numpy(devs[1].w), to_numpy(devs[2].w))
    for k in (1, 2):
        want = to_numpy(D.drift_nu(np, DRIFT_S, (M, N), 17, k))
        for t in tiles:
            np.testing.assert_array_equal(to_numpy(t.compound.devices()[k].nu), want)
    # the per-call noise follows the tile seed
    assert not np.array_equal(to_numpy(tiles[0].get_weights()), to_numpy(tiles[1].get_weights()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(CASES))
def test_reference_and_fast_backends_agree_bitwise(name, dtype, fast):
    out = []
    for backend in ("reference", "fast"):
        tile = prepare(name, backend=backend, dtype=dtype)
        for dt in STEPS:
            tile.drift_weights(dt)
        out.append((sub_weights(tile), to_numpy(tile.get_weights())))
    for a, b in zip(out[0][0], out[1][0]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(out[0][1], out[1][1])


@pytest.mark.parametrize("xp", OTHER_NAMESPACES)
@pytest.mark.parametrize("name", ["vector", "onesided", "transfer-3", "chopped", "mp-vector"])
def test_namespaces_agree_with_numpy(name, xp):
    """float64 within the general tolerance (agreement.md §1); the devices without drift and
    the stream counters exactly."""
    out = []
    for ns in (None, xp):
        tile = prepare(name, xp=ns)
        for dt in STEPS:
            tile.drift_weights(dt)
        out.append(tile)
    ref, other = out
    for a, b, drift in zip(sub_weights(ref), sub_weights(other), CASES[name][1]):
        if drift is None:
            np.testing.assert_array_equal(b, a)
        else:
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_numpy(other.get_weights()), to_numpy(ref.get_weights()),
                               rtol=1e-12, atol=1e-12)
    assert ref.streams.state_dict() == other.streams.state_dict()


def _run(tile, steps):
    """Drift calls with an update in between (which restarts the changed elements)."""
    for k, dt in enumerate(steps):
        tile.drift_weights(dt)
        if k == 0:
            tile.update(np.linspace(-1, 1, N), np.linspace(0.5, -0.5, M), 0.05)
    return sub_weights(tile), to_numpy(tile.get_weights())


@pytest.mark.parametrize("name", sorted(CASES))
def test_checkpoint_then_drift_again_is_identical(name):
    tile = prepare(name)
    tile.drift_weights(10.0)
    state = tile.state_dict()
    compound = state["compound"]
    saved = (compound.get("cell") or compound)["drift"]
    for s, drift in zip(saved, CASES[name][1]):
        assert (s is None) == (drift is None)
    expected = _run(tile, [5.0, 20.0, 3.0])
    restored = AnalogTile(M, N, CASES[name][0](), seed=9)
    restored.load_state_dict(state)
    got = _run(restored, [5.0, 20.0, 3.0])
    for a, b in zip(expected[0], got[0]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(expected[1], got[1])


def test_checkpoint_file_round_trip(tmp_path):
    tile = prepare("transfer-3", dtype=np.float32)
    tile.drift_weights(10.0)
    tile.save(tmp_path / "t.npz")
    loaded = AnalogTile.load(tmp_path / "t.npz")
    a, b = _run(tile, [5.0, 20.0]), _run(loaded, [5.0, 20.0])
    for x, y in zip(a[0] + [a[1]], b[0] + [b[1]]):
        np.testing.assert_array_equal(x, y)


def test_without_the_saved_drift_state_the_drift_would_differ():
    """The drift state matters: dropping it from a checkpoint (as a state saved before compounds
    drifted) loads as 'not drifted yet', which restarts the clock and changes the result."""
    tile = prepare("vector")
    tile.drift_weights(10.0)
    state = tile.state_dict()
    state["compound"] = dict(state["compound"], cell=dict(state["compound"]["cell"]))
    del state["compound"]["cell"]["drift"]
    restored = AnalogTile(M, N, CASES["vector"][0](), seed=4)
    restored.load_state_dict(state)
    assert all(d.drift_state is None for d in restored.compound.devices())
    tile.drift_weights(5.0)
    restored.drift_weights(5.0)
    assert not np.array_equal(to_numpy(tile.get_weights()), to_numpy(restored.get_weights()))


def test_bad_drift_states_are_rejected():
    tile = prepare("transfer")
    tile.drift_weights(10.0)
    state = tile.state_dict()
    good = state["compound"]["drift"]
    w = np.zeros((M, N))
    bad_cases = [
        ([good[1], good[1]], "drift"),  # a state for device 0, whose drift is inactive
        ([None, DriftState(np.zeros((2, 2)), w, w, 1.0)], "w0"),
        ([None, DriftState(w, w, w, -1.0)], "tau"),
        ([None, DriftState(w, w, w, math.nan)], "tau"),
        ([None, "state"], "DriftState"),
        ([None], "drift"),
    ]
    for drifts, word in bad_cases:
        bad = dict(state, compound=dict(state["compound"], drift=drifts))
        fresh = AnalogTile(M, N, CASES["transfer"][0](), seed=4)
        before = fresh.state_dict()
        with pytest.raises(ValueError, match=word):
            fresh.load_state_dict(bad)
        assert_same_state(fresh.state_dict(), before)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_delta_t_raises_and_changes_nothing(name):
    tile = prepare(name)
    tile.drift_weights(10.0)
    before = tile.state_dict()
    for bad in (-1.0, -1e-300, math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="delta_t"):
            tile.drift_weights(bad)
        assert_same_state(tile.state_dict(), before)


def test_an_error_in_a_later_sub_device_undoes_the_whole_call():
    """Device 1's nu_k drift meets a non-positive conductance after device 0 has drifted: the
    ValueError leaves every device, drift state and counter as before (spec/README.md)."""
    bad = C.ConstantStepDevice(drift=C.DriftParameter(nu=0.1, nu_k=0.5))
    cfg = C.UnitCellRPUConfig(device=C.VectorUnitCell(unit_cell_devices=[dev_a(), bad]))
    tile = AnalogTile(M, N, cfg, seed=2)
    tile.set_weights(np.full((M, N), 0.3))
    tile.drift_weights(2.0)
    tile.compound.devices()[1].w = np.full((M, N), -0.3)
    tile.weights = tile.compound.weights()
    before = tile.state_dict()
    with pytest.raises(ValueError, match="drift.nu_k"):
        tile.drift_weights(5.0)  # the changed elements restart: no error yet
        tile.drift_weights(5.0)
    after_first = tile.state_dict()  # the first call succeeded, the second was undone
    assert after_first["rng"]["calls"]["drift"] == before["rng"]["calls"]["drift"] + 2
    tile2 = AnalogTile(M, N, cfg, seed=2)
    tile2.load_state_dict(before)
    tile2.drift_weights(5.0)
    assert_same_state(tile2.state_dict(), after_first)


def test_abstract_cells_still_refuse_drift():
    tile = AnalogTile(M, N, C.UnitCellRPUConfig(), seed=1)
    assert tile.compound is None
    with pytest.raises(NotImplementedError, match="drift"):
        tile.drift_weights(1.0)


def test_compounds_without_any_drift_are_unchanged():
    tile = AnalogTile(M, N, C.build_config("c-ttv2", C.SoftBoundsReferenceDevice), seed=1)
    tile.set_weights(np.full((M, N), 0.2))
    before = tile.state_dict()
    tile.drift_weights(100.0)
    assert_same_state(tile.state_dict(), before)


# -- side by side with aihwkit 1.1.0 (noise-free) ---------------------------------------------

AIHWKIT_SCRIPT = """
import json, torch
from aihwkit.simulator.configs import (UnitCellRPUConfig, DigitalRankUpdateRPUConfig,
    ConstantStepDevice, VectorUnitCell, OneSidedUnitCell, TransferCompound,
    MixedPrecisionCompound)
from aihwkit.simulator.parameters import DriftParameter
def dev(nu):
    return ConstantStepDevice(dw_min_std=0.0, w_max_dtod=0.0, w_min_dtod=0.0, dw_min_dtod=0.0,
        up_down_dtod=0.0, drift=DriftParameter(nu=nu, nu_dtod=0.0, nu_std=0.0, w_noise_std=0.0))
cases = {
 "vector": UnitCellRPUConfig(device=VectorUnitCell(unit_cell_devices=[dev(0.1), dev(0.0)],
                                                   gamma_vec=[0.75, 0.25])),
 "onesided": UnitCellRPUConfig(device=OneSidedUnitCell(unit_cell_devices=[dev(0.1)])),
 "transfer": UnitCellRPUConfig(device=TransferCompound(unit_cell_devices=[dev(0.0), dev(0.1)],
                                                       gamma=0.0)),
 "mp": DigitalRankUpdateRPUConfig(device=MixedPrecisionCompound(device=dev(0.2))),
}
w = torch.tensor(WEIGHTS)
out = {}
for name, c in cases.items():
    t = c.tile_class(2, 3, c)
    t.set_weights(w)
    trace = []
    for dt in STEPS:
        t.drift_weights(dt)
        trace.append(t.get_weights()[0].tolist())
    out[name] = trace
print(json.dumps(out))
"""
SIDE_WEIGHTS = [[0.25, -0.125, 0.5], [-0.375, 0.0625, -0.5]]
SIDE_STEPS = [10.0, 5.0, 20.0]


def _side_dev(nu):
    return C.ConstantStepDevice(dw_min_std=0.0, w_max_dtod=0.0, w_min_dtod=0.0, dw_min_dtod=0.0,
                                up_down_dtod=0.0, drift=C.DriftParameter(nu=nu))


SIDE_CASES = {
    "vector": lambda: C.UnitCellRPUConfig(device=C.VectorUnitCell(
        unit_cell_devices=[_side_dev(0.1), _side_dev(0.0)], gamma_vec=[0.75, 0.25])),
    "onesided": lambda: C.UnitCellRPUConfig(device=C.OneSidedUnitCell(
        unit_cell_devices=[_side_dev(0.1)])),
    "transfer": lambda: C.UnitCellRPUConfig(device=C.TransferCompound(
        unit_cell_devices=[_side_dev(0.0), _side_dev(0.1)], gamma=0.0)),
    "mp": lambda: C.DigitalRankUpdateRPUConfig(device=C.MixedPrecisionCompound(
        device=_side_dev(0.2))),
}


def test_side_by_side_with_aihwkit_noise_free():
    script = AIHWKIT_SCRIPT.replace("WEIGHTS", json.dumps(SIDE_WEIGHTS)) \
        .replace("STEPS", json.dumps(SIDE_STEPS))
    theirs = run_script(script)
    assert sorted(theirs) == sorted(SIDE_CASES)
    for name, make in SIDE_CASES.items():
        tile = AnalogTile(2, 3, make(), seed=1, dtype=np.float32)
        tile.set_weights(np.asarray(SIDE_WEIGHTS), clip=True)
        for k, dt in enumerate(SIDE_STEPS):
            tile.drift_weights(dt)
            # measured: bit for bit, but for single elements of 'mp' (ν = 0.2) one float32 ulp
            np.testing.assert_allclose(f32(tile.get_weights()), np.asarray(theirs[name][k]),
                                       rtol=3e-7, atol=0.0, err_msg=f"{name}, call {k}")
        assert not np.allclose(np.asarray(theirs[name][-1]), SIDE_WEIGHTS)

"""The drift stage (spec/drift.md §D1-§D4): power law, restart on change, every DriftParameter
field, namespaces, state, bad input."""

import math

import numpy as np
import pytest

from conftest import OTHER_NAMESPACES, to_numpy
from refsim import configs as C
from refsim import rng
from refsim.stages import drift as D
from refsim.tile import AnalogTile

NS = rng._namespace(None)


def run(weights, drift, steps, seed=1, nu=None, bounds=None, xp=None, changes=None):
    """Drift ``weights`` through the time steps ``steps``; ``changes[k]`` (index, value) edits a
    weight before step k."""
    ns = rng._namespace(xp)
    w = ns.asarray(np.asarray(weights, dtype=np.float64))
    nu = D.drift_nu(ns, drift, tuple(w.shape), seed) if nu is None else nu
    state = D.initial_state(ns, w)
    out = []
    for k, dt in enumerate(steps):
        if changes and k in changes:
            arr = to_numpy(w).copy()
            arr[changes[k][0]] = changes[k][1]
            w = ns.asarray(arr)
        w, state = D.drift_weights(ns, w, state, dt, drift, nu, seed, k, bounds=bounds)
        out.append(to_numpy(w).copy())
    return out, state


def test_power_law_and_accumulated_time():
    """aihwkit-semantics §4.1 [V]: nu 0.1 gives 10^-0.1 at tau 10 and 20^-0.1 at tau 20."""
    out, state = run([[1.0, -0.5]], C.SimpleDriftParameter(nu=0.1), [10.0, 10.0])
    np.testing.assert_allclose(out[0], [[10 ** -0.1, -0.5 * 10 ** -0.1]], rtol=1e-14)
    np.testing.assert_allclose(out[1], [[20 ** -0.1, -0.5 * 20 ** -0.1]], rtol=1e-14)
    assert state.tau == 20.0


def test_t0_sets_the_time_unit_and_the_first_unit_does_not_drift():
    out, _ = run([[1.0]], C.SimpleDriftParameter(nu=0.2, t_0=5.0), [2.5, 2.5, 45.0])
    assert out[0][0, 0] == 1.0 and out[1][0, 0] == 1.0  # max(tau - t, 1) = 1
    np.testing.assert_allclose(out[2][0, 0], 10 ** -0.2, rtol=1e-14)


def test_a_changed_weight_restarts_its_drift():
    drift = C.SimpleDriftParameter(nu=0.1)
    out, state = run([[1.0, 1.0]], drift, [10.0, 10.0, 10.0], changes={1: ((0, 0), 0.8)})
    # element 0 was set to 0.8 before step 1: restarts at tau 20 and keeps 0.8 at that call
    assert out[1][0, 0] == 0.8
    np.testing.assert_allclose(out[2][0, 0], 0.8 * 10 ** -0.1, rtol=1e-14)
    # element 1 was untouched and keeps drifting from its start
    np.testing.assert_allclose(out[2][0, 1], 30 ** -0.1, rtol=1e-14)
    assert to_numpy(state.t_start).tolist() == [[20.0, 0.0]]


def test_reset_tol_decides_what_counts_as_a_change():
    tight = C.SimpleDriftParameter(nu=0.1, reset_tol=1e-7)
    loose = C.SimpleDriftParameter(nu=0.1, reset_tol=0.5)
    for drift, restarted in [(tight, True), (loose, False)]:
        out, _ = run([[1.0]], drift, [10.0, 10.0], changes={1: ((0, 0), 0.9)})
        assert (out[1][0, 0] == 0.9) == restarted


def test_nu_dtod_spreads_the_coefficients():
    drift = C.DriftParameter(nu=0.1, nu_dtod=0.3)
    nu = to_numpy(D.drift_nu(NS, drift, (200, 200), seed=4))
    # 40 000 draws: mean and std within 4.5 standard errors (std/√N, std/√(2N))
    assert abs(nu.mean() - 0.1) < 4.5 * 0.03 / 200
    assert abs(nu.std() - 0.03) < 4.5 * 0.03 / math.sqrt(2 * nu.size)
    assert np.array_equal(nu, to_numpy(D.drift_nu(NS, drift, (200, 200), seed=4)))
    assert not np.array_equal(nu, to_numpy(D.drift_nu(NS, drift, (200, 200), seed=5)))
    # a simple drift has no variation
    assert np.all(to_numpy(D.drift_nu(NS, C.SimpleDriftParameter(nu=0.1), (3, 3), 4)) == 0.1)


def test_nu_std_varies_per_call_and_w_noise_does_not_accumulate():
    base = dict(nu=0.1)
    quiet, _ = run(np.ones((50, 50)), C.DriftParameter(**base), [10.0, 10.0])
    shaky, _ = run(np.ones((50, 50)), C.DriftParameter(nu_std=0.5, **base), [10.0, 10.0])
    assert not np.allclose(quiet[0], shaky[0]) and shaky[0].std() > 0
    noisy, _ = run(np.ones((200, 200)), C.DriftParameter(w_noise_std=0.01, **base),
                   [10.0, 10.0])
    # the second call recomputes from w0: the noise of the first call is gone, a fresh one added
    err = noisy[1] - 20 ** -0.1
    # 40 000 draws: std, mean and the correlation with the first call's noise within 4.5
    # standard errors (0.01/√(2N), 0.01/√N, 1/√N)
    assert abs(err.std() - 0.01) < 4.5 * 0.01 / math.sqrt(2 * err.size)
    assert abs(err.mean()) < 4.5 * 0.01 / math.sqrt(err.size)
    corr = np.corrcoef((noisy[0] - 10 ** -0.1).ravel(), err.ravel())[0, 1]
    assert abs(corr) < 4.5 / math.sqrt(err.size)


@pytest.mark.parametrize("backend", ["reference", "fast"])
def test_nu_std_by_hand(backend):
    """§D1, §D3, §D4 written out per element with math.pow: ν_ij = nu·(1 + nu_dtod·ξ) (stream
    drift.nu_dtod, call 0 = the device index, number i·n + j, construction seed), and on drift
    call k each element uses ν = ν_ij + nu_std·ν_ij·ξ_k (stream drift.nu_std, call k, number
    i·n + j, tile seed), w = w0·τ^(−ν) with τ the accumulated time."""
    if backend == "fast":
        pytest.importorskip("refsim_fast")
    m, n, seed = 3, 4, 5
    drift = C.DriftParameter(nu=0.1, nu_dtod=0.2, nu_std=0.3)
    device = C.ConstantStepDevice(drift=drift, w_max_dtod=0.0, w_min_dtod=0.0)
    tile = AnalogTile(m, n, C.SingleRPUConfig(device=device), seed=seed, backend=backend)
    w0 = [[0.5, -0.3, 0.05, 0.2], [-0.45, 0.1, -0.15, 0.35], [0.25, -0.05, 0.4, -0.5]]
    tile.set_weights(np.asarray(w0))
    assert tile.construction_seed == seed
    xi_dtod = to_numpy(rng.normal(seed, "drift.nu_dtod", 0, m * n))
    tau = 0.0
    for call, dt in enumerate([10.0, 15.0]):
        tile.drift_weights(dt)
        tau += dt
        xi = to_numpy(rng.normal(seed, "drift.nu_std", call, m * n))
        expect = np.empty((m, n))
        for i in range(m):
            for j in range(n):
                nu_ij = 0.1 * (1.0 + 0.2 * float(xi_dtod[i * n + j]))
                nu = nu_ij + 0.3 * nu_ij * float(xi[i * n + j])
                expect[i, j] = w0[i][j] * math.pow(tau, -nu)
        np.testing.assert_allclose(to_numpy(tile.get_weights()), expect, rtol=1e-13, atol=0)
    assert tile.streams.calls["drift"] == 2


def test_conductance_dependence():
    drift = C.DriftParameter(nu=0.1, nu_k=0.05, log_g0=0.2, wg_ratio=2.0, g_offset=0.5,
                             w_offset=0.1)
    out, _ = run([[0.7]], drift, [10.0])
    nu = 0.1 - 0.05 * math.log((0.7 - 0.1) / 2.0 + 0.5) + 0.05 * 0.2
    s = 10 ** -nu
    a = 0.5 * 2.0 + 0.1
    np.testing.assert_allclose(out[0][0, 0], 0.7 * s + a * (s - 1), rtol=1e-13)
    with pytest.raises(ValueError, match="nu_k"):
        run([[-5.0]], drift, [10.0])


def test_every_drift_field_changes_the_result():
    """No silent parameter: each field, changed alone from a base that lets it act, changes the
    weights (the conductance fields act through nu_k, which needs a positive conductance)."""
    plain = dict(nu=0.1)
    conductance = dict(nu=0.1, nu_k=0.1, g_offset=1.0)
    variants = [("nu", 0.2, plain), ("t_0", 2.0, plain), ("reset_tol", 0.1, plain),
                ("nu_dtod", 0.3, plain), ("nu_std", 0.3, plain), ("w_noise_std", 0.01, plain),
                ("nu_k", 0.1, dict(nu=0.1, g_offset=1.0)), ("wg_ratio", 3.0, conductance),
                ("g_offset", 0.8, conductance), ("w_offset", 0.2, conductance),
                ("log_g0", 1.0, conductance)]
    for name, value, base in variants:
        before, _ = run([[0.7, -0.3]], C.DriftParameter(**base), [10.0, 10.0],
                        changes={1: ((0, 1), -0.29)})
        after, _ = run([[0.7, -0.3]], C.DriftParameter(**{**base, name: value}), [10.0, 10.0],
                       changes={1: ((0, 1), -0.29)})
        assert not np.array_equal(after[1], before[1]), name


def test_bounds_clamp():
    drift = C.DriftParameter(nu=0.01, w_noise_std=0.5)
    out, state = run(np.full((20, 20), 0.5), drift, [10.0],
                     bounds=(NS.asarray(-0.6), NS.asarray(0.6)))
    assert out[0].max() == 0.6 and out[0].min() == -0.6
    assert np.array_equal(to_numpy(state.previous), out[0])


@pytest.mark.parametrize("xp", OTHER_NAMESPACES)
def test_namespaces_agree(xp):
    drift = C.DriftParameter(nu=0.1, nu_dtod=0.2, nu_std=0.1, w_noise_std=0.01)
    ref, _ = run(np.full((4, 5), 0.5), drift, [3.0, 7.0])
    got, _ = run(np.full((4, 5), 0.5), drift, [3.0, 7.0], xp=xp)
    for a, b in zip(ref, got):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def _fp_tile(nu=0.1, seed=3):
    cfg = C.FloatingPointRPUConfig(device=C.FloatingPointDevice(drift=C.SimpleDriftParameter(nu=nu)))
    tile = AnalogTile(3, 4, cfg, seed=seed)
    tile.set_weights(np.full((3, 4), 0.5))
    return tile


def test_tile_drift_and_resume():
    a = _fp_tile()
    a.drift_weights(5.0)
    state = a.state_dict()
    a.drift_weights(5.0)
    b = _fp_tile(seed=9)
    b.load_state_dict(_fp_tile_state_with(state))
    b.drift_weights(5.0)
    np.testing.assert_array_equal(a.get_weights(), b.get_weights())
    np.testing.assert_allclose(a.get_weights(), 0.5 * 10 ** -0.1, rtol=1e-14)


def _fp_tile_state_with(state):
    return dict(state)


def test_tile_drift_is_inert_without_nu_and_rejects_bad_input():
    tile = _fp_tile(nu=0.0)
    tile.drift_weights(100.0)
    np.testing.assert_array_equal(tile.get_weights(), np.full((3, 4), 0.5))
    for bad in (-1.0, math.nan, math.inf, "1", True):
        with pytest.raises(ValueError, match="delta_t"):
            tile.drift_weights(bad)
    # compounds drift per sub-device (tests/test_compound_drift.py); an abstract cell refuses
    compound = AnalogTile(3, 4, C.UnitCellRPUConfig())
    with pytest.raises(NotImplementedError, match="compound"):
        compound.drift_weights(1.0)


def test_pulsed_tile_drifts_within_its_bounds():
    device = C.ConstantStepDevice(drift=C.DriftParameter(nu=0.1, w_noise_std=0.3))
    tile = AnalogTile(10, 10, C.SingleRPUConfig(device=device), seed=2)
    tile.set_weights(np.full((10, 10), 0.2), clip=True)
    tile.drift_weights(10.0)
    w = to_numpy(tile.get_weights())
    params = tile.device_params
    assert np.all(w <= to_numpy(params.b_max)) and np.all(w >= to_numpy(params.b_min))
    assert np.any(w == to_numpy(params.b_max)) or np.any(w == to_numpy(params.b_min))


def test_streams_are_registered():
    assert set(D.stream_names()) <= set(rng.STREAMS)

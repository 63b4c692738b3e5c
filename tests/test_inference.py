"""The inference stage (spec/inference.md §I1-§I5): conductance conversion, programming noise,
drift law, read noise, repeated drifts, global drift compensation, every noise-model field,
backends and namespaces, bad input, checkpoints, stream registration."""

import copy
import dataclasses
import math
import pickle

import numpy as np
import pytest

from conftest import OTHER_NAMESPACES, assert_same_state, to_numpy
from refsim import configs as C
from refsim import rng
from refsim.stages import inference as I
from refsim.tile import AnalogTile

M, N = 6, 7
#: every noise of the model off: programming, drift and read noise
QUIET = dict(prog_noise_scale=0.0, read_noise_scale=0.0, drift_scale=0.0)


def noise_model(**fields):
    """A PCMLikeNoiseModel; keys ``g_converter.<name>`` set the converter's fields."""
    converter = {k.split(".", 1)[1]: fields.pop(k) for k in list(fields)
                 if k.startswith("g_converter.")}
    return C.PCMLikeNoiseModel(g_converter=C.SinglePairConductanceConverter(**converter),
                               **fields)


def weights(m=M, n=N, seed=0, lo=-1.0, hi=1.0):
    return np.random.default_rng(seed).uniform(lo, hi, (m, n))


def make_tile(w, model=None, *, seed=5, perfect=False, compensation=True, **kwargs):
    """An InferenceRPUConfig tile holding ``w`` (default forward: analog with its noise;
    ``perfect``: an exact forward pass)."""
    extra = {"forward": C.IOParameters(is_perfect=True)} if perfect else {}
    cfg = C.InferenceRPUConfig(noise_model=model or C.PCMLikeNoiseModel(),
                               drift_compensation=C.GlobalDriftCompensation() if compensation
                               else None, **extra)
    tile = AnalogTile(w.shape[0], w.shape[1], cfg, seed=seed, **kwargs)
    xp = tile.xp
    tile.set_weights(xp.asarray(np.asarray(w, dtype=np.float64), dtype=tile.dtype))
    return tile


def sigma_p(g, coeff, g_max, g_ref):
    """σ_p(G) of spec/inference.md, written independently of the module."""
    r = g / g_max
    return sum(c * r ** k for k, c in enumerate(coeff)) * (g_max / g_ref)


# -- §I1 conversion ------------------------------------------------------------------------------


@pytest.mark.parametrize("g_min", [0.0, 3.0])
def test_conductance_ranges(g_min):
    w = weights()
    w[2, 3] = -1.5  # the largest absolute weight, negative
    r = I.ranges(noise_model(**{"g_converter.g_min": g_min}))
    g_plus, g_minus, scale = (to_numpy(a) if hasattr(a, "shape") else a
                              for a in I.to_conductances(np, w, r))
    np.testing.assert_allclose(scale, (25.0 - g_min) / 1.5, rtol=1e-15)
    for g in (g_plus, g_minus):
        assert g.min() >= g_min and g.max() <= 25.0
    # the idle device of each pair sits at g_min exactly; the largest weight maps to g_max
    assert np.all(g_minus[w > 0] == g_min) and np.all(g_plus[w < 0] == g_min)
    np.testing.assert_allclose(g_minus[2, 3], 25.0, rtol=1e-15)
    np.testing.assert_allclose(g_plus - g_minus, w * scale, rtol=1e-13, atol=1e-13)


def test_noise_free_round_trip():
    w = weights()
    for g_min in (0.0, 2.0):
        model = noise_model(**QUIET, **{"g_converter.g_min": g_min})
        programmed = I.program(np, w, model, seed=1, call=0)
        np.testing.assert_allclose(to_numpy(programmed.weights), w, rtol=1e-12, atol=0)
        assert all(np.all(to_numpy(nu) == 0.0) for nu in programmed.nu)
        back = I.drift(np, programmed, 1e4, model, seed=1, call=0)
        np.testing.assert_allclose(to_numpy(back), w, rtol=1e-12, atol=0)
    # through a tile: program + drift leave the weights as they were (to rounding)
    tile = make_tile(w, noise_model(**QUIET))
    tile.program_weights()
    tile.drift_weights(3600.0)
    np.testing.assert_allclose(to_numpy(tile.get_weights()), w, rtol=1e-12, atol=0)


def test_g_min_shifts_the_conductances_not_the_weights():
    w = weights()
    r0 = I.ranges(noise_model())
    r3 = I.ranges(noise_model(**{"g_converter.g_min": 3.0}))
    p0, m0, s0 = I.to_conductances(np, w, r0)
    p3, m3, s3 = I.to_conductances(np, w, r3)
    assert np.all(to_numpy(p3) >= 3.0) and np.all(to_numpy(m3) >= 3.0)
    assert not np.allclose(to_numpy(p0), to_numpy(p3))
    np.testing.assert_allclose(to_numpy(I.to_weights(p3, m3, s3, r3)),
                               to_numpy(I.to_weights(p0, m0, s0, r0)), rtol=1e-12, atol=1e-15)


def test_zero_weights_program_to_zero_without_nan():
    zero = np.zeros((M, N))
    r = I.ranges(noise_model())
    g_plus, g_minus, scale = I.to_conductances(np, zero, r)
    assert scale == pytest.approx(25.0 / 1e-7, rel=1e-15)
    assert np.all(to_numpy(g_plus) == 0.0) and np.all(to_numpy(g_minus) == 0.0)
    programmed = I.program(np, zero, noise_model(**QUIET), seed=1, call=0)
    assert np.all(to_numpy(programmed.weights) == 0.0)
    # with every noise on, a tile of zeros stays finite and tiny (below the 1e-7 floor)
    tile = make_tile(zero)
    tile.program_weights()
    tile.drift_weights(1e5)
    out = to_numpy(tile.get_weights())
    assert np.all(np.isfinite(out)) and np.abs(out).max() < 1e-7
    assert math.isfinite(tile.drift_compensation_factor)
    assert np.all(np.isfinite(to_numpy(tile.eval().forward(np.ones(N)))))


# -- §I2 programming noise ------------------------------------------------------------------------


@pytest.mark.parametrize("fields, g_max, g_ref", [
    (dict(prog_noise_scale=0.7), 25.0, 25.0),
    # a model g_max replaces the converter's and rescales σ_p (g_ref stays 25 with the defaults)
    (dict(prog_noise_scale=1.3, g_max=50.0), 50.0, 25.0),
    (dict(prog_noise_scale=1.0, prog_coeff_g_max_reference=40.0), 25.0, 40.0),
])
def test_programming_noise_statistics(fields, g_max, g_ref):
    """(G_p − G)/σ_p(G) on the active device of each pair (G ≥ g_max/2 ≫ σ_p, so the clip at 0
    never acts) has mean 0 and std prog_noise_scale."""
    m = n = 200
    rs = np.random.default_rng(3)
    w = rs.choice([-1.0, 1.0], (m, n)) * rs.uniform(0.5, 1.0, (m, n))
    model = noise_model(**fields)
    r = I.ranges(model)
    assert (r.g_max, r.prog_reference) == (g_max, g_ref)
    slices = I.to_conductances(np, w, r)
    coeff = [0.26348, 1.9650, -1.1731]
    for k, g in enumerate(slices[:2]):
        noisy = to_numpy(I.programming_noise(np, g, model, r, seed=7, call=0, slice_index=k))
        g = to_numpy(g)
        active = g >= g_max / 2
        assert active.sum() > 15000
        z = ((noisy - g) / sigma_p(g, coeff, g_max, g_ref))[active]
        scale = model.prog_noise_scale
        assert abs(z.mean()) < 4.5 * scale / math.sqrt(z.size)
        assert abs(z.std() - scale) < 4.5 * scale / math.sqrt(2 * z.size)
        # the idle device (G = 0) is clipped at 0: about half of them stay at 0
        idle = noisy[~active]
        assert idle.min() == 0.0 and abs((idle == 0.0).mean() - 0.5) < 0.02


def test_programming_noise_by_hand_in_a_tile():
    """The tile's first programming: stream inference.prog_noise, call 0 (counter
    inference.program), number k·m·n + i·n + j, tile seed; weights = (G⁺_p − G⁻_p)/s."""
    w = weights()
    model = noise_model(drift_scale=0.0, read_noise_scale=0.0, prog_coeff=[0.5, 1.0, -0.5])
    tile = make_tile(w, model, seed=11)
    tile.program_weights()
    scale = 25.0 / np.abs(w).max()
    g = [np.clip(w * scale, 0, 25.0), np.clip(-w * scale, 0, 25.0)]
    noisy = []
    for k in range(2):
        xi = to_numpy(rng.normal(11, "inference.prog_noise", 0, (M, N), start=k * M * N))
        # custom coefficients without a reference: g_ref = g_max (no rescaling)
        noisy.append(np.maximum(g[k] + sigma_p(g[k], [0.5, 1.0, -0.5], 25.0, 25.0) * xi, 0.0))
    np.testing.assert_allclose(to_numpy(tile.get_weights()), (noisy[0] - noisy[1]) / scale,
                               rtol=1e-12, atol=1e-14)
    assert tile.streams.calls["inference.program"] == 1


def test_drift_coefficients_by_hand():
    w = weights()
    model = noise_model(drift_scale=0.8)
    programmed = I.program(np, w, model, seed=4, call=2)
    scale = 25.0 / np.abs(w).max()
    for k, g in enumerate([np.clip(w * scale, 0, 25.0), np.clip(-w * scale, 0, 25.0)]):
        rel = np.log(np.maximum(np.abs(g / 25.0), 1e-7))
        mu = np.clip(-0.0155 * rel + 0.0244, 0.049, 0.1)
        sd = np.clip(-0.0125 * rel - 0.0059, 0.008, 0.045)
        xi = to_numpy(rng.normal(4, "inference.drift_nu", 2, (M, N), start=k * M * N))
        np.testing.assert_allclose(to_numpy(programmed.nu[k]), 0.8 * np.abs(mu + sd * xi),
                                   rtol=1e-13, atol=0)


# -- §I3 drift and read noise ---------------------------------------------------------------------


def expected_drift(programmed_w, nus, t, t_0=20.0, g_max=25.0, g_min=0.0):
    """The noise-free drift of spec/inference.md, evaluated independently with numpy."""
    scale = (g_max - g_min) / max(np.abs(programmed_w).max(), 1e-7)
    out = []
    for sign, nu in zip((1.0, -1.0), nus):
        g = np.clip(sign * programmed_w * scale, 0, g_max) + g_min
        out.append(g * ((t + t_0) / t_0) ** (-nu))
    return ((out[0] - g_min) - (out[1] - g_min)) / scale


@pytest.mark.parametrize("fields", [{}, {"t_0": 5.0, "g_converter.g_min": 1.0}])
def test_drift_law(fields):
    w = weights()
    model = noise_model(read_noise_scale=0.0, **fields)  # programming noise and drift on
    tile = make_tile(w, model)
    tile.program_weights()
    state = tile.inference_state
    wp, nus = to_numpy(state.programmed.weights), [to_numpy(nu) for nu in state.programmed.nu]
    assert not np.allclose(wp, w)  # programming noise acted
    assert all(np.all(nu > 0) for nu in nus)
    kw = dict(t_0=fields.get("t_0", 20.0), g_min=fields.get("g_converter.g_min", 0.0))
    for t in (0.0, 60.0, 1e6):
        tile.drift_weights(t)
        np.testing.assert_allclose(to_numpy(tile.get_weights()), expected_drift(wp, nus, t, **kw),
                                   rtol=1e-12, atol=1e-15)
    tile.drift_weights(0.0)  # no drift at t_inference = 0
    np.testing.assert_allclose(to_numpy(tile.get_weights()), wp, rtol=1e-12, atol=1e-15)


def test_longer_drift_shrinks_the_weights():
    tile = make_tile(weights(), noise_model(read_noise_scale=0.0))
    tile.program_weights()
    sizes = []
    for t in (0.0, 10.0, 1e3, 1e5, 1e7):
        tile.drift_weights(t)
        sizes.append(float(np.abs(to_numpy(tile.get_weights())).mean()))
    assert all(a > b for a, b in zip(sizes, sizes[1:])), sizes


def test_read_noise_grows_with_time():
    """drift_scale 0, no programming noise: W_t/W_p − 1 = q·sqrt(ln((t + t_read)/(2 t_read)))·ξ
    with t = t_inference + t_0 and q = min(0.0088/(G/g_max)^0.65, 0.2); half of the rows at
    |W| = 1 (G = g_max), half at |W| = 0.25."""
    m = n = 200
    rs = np.random.default_rng(8)
    w = rs.choice([-1.0, 1.0], (m, n)) * np.where(np.arange(m)[:, None] < m // 2, 1.0, 0.25)
    model = noise_model(prog_noise_scale=0.0, drift_scale=0.0, read_noise_scale=1.5)
    tile = make_tile(w, model)
    tile.program_weights()
    for t in (0.0, 1e6):
        tile.drift_weights(t)
        ratio = to_numpy(tile.get_weights()) / w - 1.0
        spread = math.sqrt(math.log((t + 20.0 + 2.5e-7) / (2 * 2.5e-7)))
        for rows, g_rel in ((slice(0, m // 2), 1.0), (slice(m // 2, m), 0.25)):
            z = ratio[rows]
            want = 1.5 * min(0.0088 / g_rel ** 0.65, 0.2) * spread
            assert abs(z.mean()) < 4.5 * want / math.sqrt(z.size)
            assert abs(z.std() - want) < 4.5 * want / math.sqrt(2 * z.size), (t, g_rel)


def test_read_noise_by_hand():
    """Drift call c (counter inference.drift) draws stream inference.read_noise, call c, number
    k·m·n + i·n + j; G = max(G_d + abs(G_d)·read_noise_scale·q·sqrt(ln((t + t_read)/(2 t_read)))·ξ,
    0) with q from the programmed conductance."""
    w = weights()
    model = noise_model(prog_noise_scale=0.0, drift_scale=0.0, read_noise_scale=2.0, t_read=1e-6)
    tile = make_tile(w, model, seed=6)
    tile.program_weights()
    tile.drift_weights(10.0)
    tile.drift_weights(300.0)
    scale = 25.0 / np.abs(w).max()
    spread = math.sqrt(math.log((300.0 + 20.0 + 1e-6) / (2 * 1e-6)))
    out = []
    for k, g in enumerate([np.clip(w * scale, 0, 25.0), np.clip(-w * scale, 0, 25.0)]):
        q = np.minimum(0.0088 / np.maximum((g / 25.0) ** 0.65, 1e-3), 0.2)
        xi = to_numpy(rng.normal(6, "inference.read_noise", 1, (M, N), start=k * M * N))
        out.append(np.maximum(g + g * 2.0 * q * spread * xi, 0.0))
    np.testing.assert_allclose(to_numpy(tile.get_weights()), (out[0] - out[1]) / scale,
                               rtol=1e-12, atol=1e-14)


# -- §I5 repeated drifts, reprogramming -----------------------------------------------------------


def test_every_drift_starts_from_the_programmed_state():
    w = weights()
    quiet = noise_model(read_noise_scale=0.0)
    a, b = make_tile(w, quiet), make_tile(w, quiet)
    a.program_weights()
    b.program_weights()
    a.drift_weights(100.0)
    a.drift_weights(1e4)
    b.drift_weights(1e4)
    np.testing.assert_array_equal(to_numpy(a.get_weights()), to_numpy(b.get_weights()))
    # with read noise, the second drift is call 1 of inference.read_noise from the programmed state
    noisy = make_tile(w, noise_model())
    noisy.program_weights()
    noisy.drift_weights(100.0)
    noisy.drift_weights(1e4)
    assert noisy.streams.calls["inference.drift"] == 2
    want = I.drift(np, noisy.inference_state.programmed, 1e4, noisy.rpu_config.noise_model,
                   seed=5, call=1)
    np.testing.assert_array_equal(to_numpy(noisy.get_weights()), to_numpy(want))


def test_drifting_twice_to_one_time_redraws_only_the_read_noise():
    w = weights()
    noisy, quiet = make_tile(w, noise_model()), make_tile(w, noise_model(read_noise_scale=0.0))
    for tile in (noisy, quiet):
        tile.program_weights()  # same seed: the same programming noise and ν
    first = []
    for _ in range(2):
        noisy.drift_weights(1e4)
        quiet.drift_weights(1e4)
        first.append(to_numpy(noisy.get_weights()))
    np.testing.assert_array_equal(to_numpy(quiet.get_weights()),
                                  to_numpy(copy.deepcopy(quiet).get_weights()))
    assert not np.array_equal(first[0], first[1])
    # both differ from the noise-free part by read noise only (q ≤ 0.2 relative, 6 std)
    base = to_numpy(quiet.get_weights())
    spread = math.sqrt(math.log((1e4 + 20.0 + 2.5e-7) / (2 * 2.5e-7)))
    for got in first:
        assert np.all(np.abs(got - base) <= 6 * 0.2 * spread * np.abs(base) + 1e-12)


def test_reprogramming_starts_from_the_reference():
    w = weights()
    tile = make_tile(w)
    model = tile.rpu_config.noise_model
    tile.program_weights()
    tile.drift_weights(1e3)
    tile.program_weights()
    np.testing.assert_array_equal(to_numpy(tile.inference_state.reference), w)
    np.testing.assert_array_equal(to_numpy(tile.get_weights()),
                                  to_numpy(I.program(np, w, model, seed=5, call=1).weights))
    tile.drift_weights(1e3)
    drifted = to_numpy(tile.get_weights())
    tile.program_weights(from_reference=False)  # the current (drifted) weights
    np.testing.assert_array_equal(to_numpy(tile.inference_state.reference), drifted)
    np.testing.assert_array_equal(to_numpy(tile.get_weights()),
                                  to_numpy(I.program(np, drifted, model, seed=5, call=2).weights))


# -- §I4 drift compensation -----------------------------------------------------------------------


def test_compensation_factor_with_an_exact_forward():
    """With a perfect forward pass the one-hot read is the weights' columns: λ = max(mean
    abs(W), 1e-4), α = λ₀/λ_t, and eval outputs are the training outputs × α."""
    w = weights()
    tile = make_tile(w, perfect=True)
    tile.program_weights()
    wp = to_numpy(tile.get_weights())
    assert tile.inference_state.baseline == pytest.approx(np.abs(wp).mean(), rel=1e-14)
    assert tile.drift_compensation_factor == 1.0
    tile.drift_weights(1e7)
    wt = to_numpy(tile.get_weights())
    alpha = tile.drift_compensation_factor
    assert alpha == pytest.approx(np.abs(wp).mean() / np.abs(wt).mean(), rel=1e-13)
    assert alpha > 1.2
    x = weights(5, N, seed=9)
    train = to_numpy(tile.train().forward(x))
    np.testing.assert_allclose(train, x @ wt.T, rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(to_numpy(tile.eval().forward(x)), train * alpha)
    # compensated one-hot reads are back at the baseline
    assert np.abs(to_numpy(tile.forward(np.eye(N)))).mean() == pytest.approx(
        np.abs(wp).mean(), rel=1e-13)


def test_compensation_readout_floor():
    tile = make_tile(np.zeros((M, N)), perfect=True)
    tile.program_weights()
    assert tile.inference_state.baseline == I.READOUT_FLOOR
    tile.drift_weights(1e5)
    assert tile.drift_compensation_factor == 1.0


def test_compensation_with_the_analog_forward():
    """Default (noisy, quantized) forward: λ is one analog read of the identity (one io.forward
    call); recomputed here from a copy whose io.forward counter is set back by one."""
    w = weights()
    tile = make_tile(w)
    tile.program_weights()

    def replay_readout(t):
        again = copy.deepcopy(t).train()
        state = again.streams.state_dict()
        state["calls"]["io.forward"] -= 1
        again.streams.load_state_dict(state)
        return max(float(np.abs(to_numpy(again.forward(np.eye(N)))).mean()), 1e-4)

    assert tile.inference_state.baseline == replay_readout(tile)
    x = weights(64, N, seed=2)
    before = np.abs(to_numpy(copy.deepcopy(tile).forward(x))).mean()
    tile.drift_weights(1e7)
    alpha = tile.drift_compensation_factor
    assert alpha == tile.inference_state.baseline / replay_readout(tile)
    assert alpha > 1.2
    twin = copy.deepcopy(tile)
    train = to_numpy(tile.train().forward(x))
    np.testing.assert_array_equal(to_numpy(twin.eval().forward(x)), train * alpha)
    # compensated outputs keep the size of the undrifted ones (within 10 %), uncompensated do not
    after = np.abs(to_numpy(tile.eval().forward(x))).mean()
    assert abs(after / before - 1) < 0.1 < abs(np.abs(train).mean() / before - 1)


def test_without_compensation_eval_equals_train():
    tile = make_tile(weights(), compensation=False)
    tile.program_weights()
    tile.drift_weights(1e7)
    assert tile.inference_state.baseline is None
    assert tile.drift_compensation_factor == 1.0
    assert "io.forward" not in tile.streams.calls  # no readouts drawn
    x = weights(4, N, seed=3)
    twin = copy.deepcopy(tile)
    np.testing.assert_array_equal(to_numpy(tile.eval().forward(x)),
                                  to_numpy(twin.train().forward(x)))


def test_train_eval_mode():
    tile = make_tile(weights())
    assert tile.training is True
    assert tile.eval() is tile and tile.training is False
    assert tile.train() is tile and tile.training is True
    with pytest.raises(TypeError, match="mode"):
        tile.train(1)


# -- every field acts -----------------------------------------------------------------------------

#: one changed value per field; a new field of these classes without a case fails the walk
FIELD_CASES = {
    "prog_coeff": [0.5, 1.0, -0.5],
    "g_converter.g_max": 30.0,
    "g_converter.g_min": 1.0,
    "g_max": 30.0,
    "t_read": 1e-6,
    "t_0": 50.0,
    "prog_noise_scale": 0.5,
    "read_noise_scale": 0.5,
    "drift_scale": 0.5,
    "prog_coeff_g_max_reference": 50.0,
    "drift_compensation": None,
}


def walked_fields():
    names = []
    for f in dataclasses.fields(C.PCMLikeNoiseModel):
        if f.name == "g_converter":
            names += [f"g_converter.{g.name}"
                      for g in dataclasses.fields(C.SinglePairConductanceConverter)]
        else:
            names.append(f.name)
    names += [f"drift_compensation.{f.name}" for f in dataclasses.fields(C.GlobalDriftCompensation)]
    return names + ["drift_compensation"]


def test_every_field_changes_the_result():
    assert set(walked_fields()) == set(FIELD_CASES)
    x = weights(3, N, seed=4)

    def result(name=None, value=None):
        fields = {} if name in (None, "drift_compensation") else {name: value}
        tile = make_tile(weights(), noise_model(**fields),
                         compensation=name != "drift_compensation")
        tile.program_weights()
        tile.drift_weights(1e4)
        return np.concatenate([to_numpy(tile.get_weights()).ravel(),
                               to_numpy(tile.eval().forward(x)).ravel()])

    base = result()
    assert np.array_equal(base, result())
    for name, value in FIELD_CASES.items():
        default = C.PCMLikeNoiseModel()
        for part in name.split("."):
            default = getattr(default, part, None)
        assert value != default or name == "drift_compensation", name
        assert not np.array_equal(result(name, value), base), name


# -- backends, namespaces, dtypes -----------------------------------------------------------------


def run_tile(xp=None, dtype=None, backend="auto", seed=5):
    tile = make_tile(weights(), seed=seed, xp=xp, dtype=dtype, backend=backend)
    ns = tile.xp
    tile.program_weights()
    tile.drift_weights(1e4)
    x = ns.asarray(weights(5, N, seed=6), dtype=tile.dtype)
    return (to_numpy(tile.get_weights()), tile.drift_compensation_factor,
            to_numpy(tile.eval().forward(x)), to_numpy(tile.inference_state.programmed.nu[0]))


def test_backends_agree(fast):
    ref, quick = run_tile(backend="reference"), run_tile(backend="fast")
    for a, b in zip(ref, quick):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("xp", OTHER_NAMESPACES)
def test_namespaces_agree(xp):
    ref, got = run_tile(), run_tile(xp=xp)
    for a, b in zip(ref, got):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


def test_float32_tiles():
    ref = run_tile()
    w32, alpha32, y32, nu32 = run_tile(dtype=np.float32)
    assert w32.dtype == np.float32 and y32.dtype == np.float32 and nu32.dtype == np.float32
    assert np.all(np.isfinite(w32)) and np.all(np.isfinite(y32))
    np.testing.assert_allclose(w32, ref[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(nu32, ref[3], rtol=1e-5)
    assert math.isfinite(alpha32) and alpha32 > 1.0


# -- bad input ------------------------------------------------------------------------------------


def test_bad_times_leave_the_tile_unchanged():
    tile = make_tile(weights())
    tile.program_weights()
    tile.drift_weights(10.0)
    before = tile.state_dict()
    for bad, error in ((-1, ValueError), (-1e-9, ValueError), (math.nan, ValueError),
                       (math.inf, ValueError), ("1", TypeError), (True, TypeError)):
        with pytest.raises(error, match="t_inference"):
            tile.drift_weights(bad)
        assert_same_state(before, tile.state_dict())
        with pytest.raises(error, match="t_inference"):
            tile.drift_weights(t_inference=bad)
        assert_same_state(before, tile.state_dict())
    with pytest.raises(TypeError, match="t_inference"):
        tile.drift_weights(1.0, t_inference=1.0)
    assert_same_state(before, tile.state_dict())


def test_drift_weights_defaults_to_t_inference_zero_as_aihwkit():
    """drift_weights() of an InferenceRPUConfig tile drifts to t_inference = 0 (aihwkit's
    default), by name or positionally alike; a pulsed tile refuses t_inference."""
    a, b, c = (make_tile(weights()) for _ in range(3))
    for tile in (a, b, c):
        tile.program_weights()
    a.drift_weights()
    b.drift_weights(t_inference=0.0)
    c.drift_weights(0.0)
    np.testing.assert_array_equal(a.get_weights(), b.get_weights())
    np.testing.assert_array_equal(a.get_weights(), c.get_weights())
    with pytest.raises(TypeError, match="t_inference"):
        AnalogTile(2, 2, C.SingleRPUConfig()).drift_weights(t_inference=1.0)


def test_time_beyond_float64_is_a_value_error():
    """An int beyond float64 is a bad t_inference like any other (tile.real_argument turns the
    OverflowError of float() into a ValueError naming the argument)."""
    tile = make_tile(weights())
    tile.program_weights()
    before = tile.state_dict()
    with pytest.raises(ValueError, match="t_inference"):
        tile.drift_weights(10**400)
    assert_same_state(before, tile.state_dict())


def test_huge_time_stores_no_nan():
    """spec/README.md "Failed calls": no call stores a NaN or an infinity. Near the float64
    limit (t ≳ 9e301 s) the read-noise spread ln((t + t_read)/(2 t_read)) overflows; the drift
    must either give finite weights or raise a ValueError naming t_inference, unchanged."""
    tile = make_tile(weights())
    tile.program_weights()
    before = tile.state_dict()
    try:
        tile.drift_weights(1e308)
    except ValueError as err:
        assert "t_inference" in str(err)
        assert_same_state(before, tile.state_dict())
    else:
        assert np.all(np.isfinite(to_numpy(tile.get_weights())))
        assert math.isfinite(tile.drift_compensation_factor)


def test_drift_before_programming():
    tile = make_tile(weights())
    before = tile.state_dict()
    with pytest.raises(ValueError, match="program_weights"):
        tile.drift_weights(10.0)
    assert_same_state(before, tile.state_dict())
    with pytest.raises(TypeError, match="from_reference"):
        tile.program_weights(from_reference=1)
    assert_same_state(before, tile.state_dict())


@pytest.mark.parametrize("cfg", [C.SingleRPUConfig(), C.FloatingPointRPUConfig()],
                         ids=["single", "floating_point"])
def test_program_needs_an_inference_config(cfg):
    tile = AnalogTile(M, N, cfg, seed=1)
    tile.set_weights(weights())
    before = tile.state_dict()
    with pytest.raises(C.ConfigError, match="program_weights"):
        tile.program_weights()
    assert_same_state(before, tile.state_dict())


def _bad_inference_entries(good):
    def edit(**changes):
        return {**good, **changes}

    nan = np.array(to_numpy(good["programmed"]))
    nan[0, 0] = np.nan
    return [
        "programmed",
        {k: v for k, v in good.items() if k != "factor"},
        edit(programmed=np.zeros((N, M))),
        edit(programmed=nan),
        edit(reference=[[1.0]]),
        edit(nu=[good["nu"][0]]),
        edit(nu="nu"),
        edit(nu=[good["nu"][0], np.zeros((M, N + 1))]),
        edit(baseline=-1.0),
        edit(baseline=math.nan),
        edit(factor=0.0),
        edit(factor=True),
        edit(factor=None),
    ]


def test_bad_inference_state_is_rejected():
    source = make_tile(weights(), seed=2)
    source.program_weights()
    source.drift_weights(10.0)
    good = source.state_dict()
    tile = make_tile(weights(seed=1))
    before = tile.state_dict()
    for bad in _bad_inference_entries(good["inference"]):
        with pytest.raises(ValueError, match=r"state\['inference'\]"):
            tile.load_state_dict({**good, "inference": bad})
        assert_same_state(before, tile.state_dict())
    tile.load_state_dict(good)  # the good one loads
    assert_same_state(good, tile.state_dict())


# -- checkpoints ----------------------------------------------------------------------------------


def _continue(tile):
    """Eval forward as loaded, then the next drift and forward."""
    x = weights(3, N, seed=7)
    out = [to_numpy(tile.forward(x)), tile.drift_compensation_factor]
    tile.drift_weights(5e3)
    return out + [to_numpy(tile.get_weights()), tile.drift_compensation_factor,
                  to_numpy(tile.forward(x))]


@pytest.mark.parametrize("how", ["save_load", "pickle", "deepcopy", "load_state_dict"])
def test_checkpoint_continues_identically(how, tmp_path):
    tile = make_tile(weights(), seed=3)
    tile.program_weights()
    tile.drift_weights(100.0)
    tile.eval()
    if how == "save_load":
        tile.save(tmp_path / "tile.npz")
        other = AnalogTile.load(tmp_path / "tile.npz")
    elif how == "pickle":
        other = pickle.loads(pickle.dumps(tile))
    elif how == "deepcopy":
        other = copy.deepcopy(tile)
    else:
        other = make_tile(weights(seed=1), seed=99)
        other.load_state_dict(tile.state_dict())
    assert other.training is False
    assert_same_state(tile.state_dict(), other.state_dict())
    for a, b in zip(_continue(tile), _continue(other)):
        np.testing.assert_array_equal(a, b)


def test_unprogrammed_state_round_trips():
    tile = make_tile(weights())
    state = tile.state_dict()
    assert state["inference"] is None and state["training"] is True
    other = make_tile(weights(seed=1))
    other.load_state_dict(state)
    assert other.inference_state is None


# -- streams --------------------------------------------------------------------------------------


def test_streams_are_registered():
    assert set(I.stream_names()) <= set(rng.STREAMS)

"""Hardware-aware training (spec/modifiers.md): weight clipping and the weight modifier of an
InferenceRPUConfig tile. Each clip type's bound; each modifier type against an independent
per-element evaluation of the documented formula with the same random numbers (streams
``modifier.noise``, ``modifier.sto_round``, ``modifier.drop`` and the ``modifier.pcm_*`` streams
of 'PCMNoise', call = the step number, shape (m, n), the weights' dtype); the statistics of
'PCMNoise'; the tile's use of Ŵ (training forward/backward read Ŵ, the update and
get_weights W, evaluation W unless enable_during_test, set_weights clears Ŵ, clip on W at every
step); no silent parameter; backends, namespaces, checkpoints and a failing step."""

import copy
import dataclasses
import io
import math
import pickle

import numpy as np
import pytest

from conftest import OTHER_NAMESPACES, to_numpy
from refsim import checkpoint, rng
from refsim import configs as C
from refsim.configs import ConfigError
from refsim.configs.utils import PCM_NOISE_FIELDS
from refsim.stages import modifiers as Mod
from refsim.tile import AnalogTile

NS = rng._namespace(None)

#: A weight matrix with max abs 0.8 (A ≠ 1), both signs, a zero, a distinct last column.
W = np.array([[0.31, -0.8, 0.05, 0.12, -0.27],
              [-0.44, 0.0, 0.66, -0.09, 0.7],
              [0.18, 0.53, -0.61, 0.24, -0.35],
              [-0.02, 0.39, 0.14, -0.72, 0.47]])

# -- clipping (§M1) -----------------------------------------------------------------------------------


def _clip(w, **kw):
    return to_numpy(Mod.clip_weights(NS, NS.asarray(w), C.WeightClipParameter(**kw)))


def test_fixed_value_bound():
    out = _clip(W, type="FixedValue", fixed_value=0.5)
    np.testing.assert_array_equal(out, np.clip(W, -0.5, 0.5))
    assert Mod.clip_bound(NS, NS.asarray(W), C.WeightClipParameter(type="FixedValue",
                                                                  fixed_value=0.5)) == 0.5


def test_layer_gaussian_bound_is_sigma_times_the_unbiased_std():
    flat = W.ravel().tolist()
    mean = sum(flat) / len(flat)
    std = math.sqrt(sum((v - mean) ** 2 for v in flat) / (len(flat) - 1))  # n − 1
    for sigma in (0.5, 1.0, 2.5):
        clip = C.WeightClipParameter(type="LayerGaussian", sigma=sigma)
        bound = Mod.clip_bound(NS, NS.asarray(W), clip)
        assert bound == pytest.approx(sigma * std, rel=1e-14)
        np.testing.assert_array_equal(_clip(W, type="LayerGaussian", sigma=sigma),
                                      np.clip(W, -bound, bound))
    # the biased std (÷ n) would give a visibly smaller bound
    assert Mod.clip_bound(NS, NS.asarray(W), C.WeightClipParameter(type="LayerGaussian",
                                                                  sigma=1.0)) > float(np.std(W))


def test_average_channel_max_bound_is_the_mean_of_the_row_maxima():
    expect = sum(max(abs(v) for v in row) for row in W.tolist()) / W.shape[0]
    clip = C.WeightClipParameter(type="AverageChannelMax")
    assert Mod.clip_bound(NS, NS.asarray(W), clip) == pytest.approx(expect, rel=1e-15)
    np.testing.assert_array_equal(_clip(W, type="AverageChannelMax"), np.clip(W, -expect, expect))


@pytest.mark.parametrize("kind", ["LayerGaussian", "AverageChannelMax"])
def test_a_positive_fixed_value_caps_the_computed_bound(kind):
    free = Mod.clip_bound(NS, NS.asarray(W), C.WeightClipParameter(type=kind, sigma=1.0))
    capped = C.WeightClipParameter(type=kind, sigma=1.0, fixed_value=0.2)
    assert free > 0.2 and Mod.clip_bound(NS, NS.asarray(W), capped) == 0.2
    np.testing.assert_array_equal(_clip(W, type=kind, sigma=1.0, fixed_value=0.2),
                                  np.clip(W, -0.2, 0.2))
    # a cap above the computed bound, and one ≤ 0, change nothing
    for cap in (5.0, 0.0, -1.0):
        got = Mod.clip_bound(NS, NS.asarray(W), C.WeightClipParameter(type=kind, sigma=1.0,
                                                                      fixed_value=cap))
        assert got == free, cap


def test_a_bound_at_or_below_zero_clips_nothing():
    for kw in (dict(type="FixedValue"),                       # fixed_value −1 (default)
               dict(type="FixedValue", fixed_value=0.0),
               dict(type="FixedValue", fixed_value=-0.3)):
        assert Mod.clip_bound(NS, NS.asarray(W), C.WeightClipParameter(**kw)) is None
        np.testing.assert_array_equal(_clip(W, **kw), W)
    zeros = np.zeros((3, 4))
    for kind in ("LayerGaussian", "AverageChannelMax"):  # bound 0 for all-zero weights
        assert Mod.clip_bound(NS, NS.asarray(zeros), C.WeightClipParameter(type=kind)) is None
    # one element: no unbiased std, no clipping
    np.testing.assert_array_equal(_clip([[3.0]], type="LayerGaussian"), [[3.0]])


def test_layer_gaussian_leaves_a_constant_matrix():
    """A constant W has std 0 and is not clipped (§M1); the rounding error of the mean would
    give a std of ~1e-16 and clip every weight to ~3e-16 (as aihwkit does: deviations.md)."""
    constant = np.full((3, 4), 0.7)  # std(W) = 0: bound 0, which clips nothing (§M1)
    np.testing.assert_array_equal(_clip(constant, type="LayerGaussian"), constant)


def test_type_none_ignores_the_other_fields():
    clip = C.WeightClipParameter(type="None", fixed_value=0.01, sigma=0.01)
    assert Mod.clip_bound(NS, NS.asarray(W), clip) is None
    np.testing.assert_array_equal(_clip(W, type="None", fixed_value=0.01, sigma=0.01), W)


# -- the modifier (§M2-§M3): an independent evaluation ------------------------------------------------

DEFAULTS = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING
                     else f.default) for f in dataclasses.fields(C.WeightModifierParameter)}


def _ties_away(v):
    return math.copysign(math.floor(abs(v) + 0.5), v)


def expect(w, seed, call, **fields):
    """Ŵ of spec/modifiers.md written out per element with Python floats (float64)."""
    p = {**DEFAULTS, **fields}
    kind = p["type"]
    w = np.asarray(w, dtype=np.float64)
    m, n = w.shape
    xi = to_numpy(rng.normal(seed, "modifier.noise", call, (m, n)))
    u = to_numpy(rng.uniform(seed, "modifier.sto_round", call, (m, n)))
    drop = to_numpy(rng.uniform(seed, "modifier.drop", call, (m, n)))
    pcm = {q: to_numpy((rng.normal if q in PCM_NORMALS else rng.uniform)(
        seed, f"modifier.pcm_{q}", call, (m, n))) for q in PCM_QUANTITIES}
    if kind == "None":
        return w.copy()
    cols = n - 1 if p["copy_last_column"] and n > 1 else n
    if p["rel_to_actual_wmax"]:
        a = max((abs(float(w[i, j])) for i in range(m) for j in range(cols)), default=0.0)
        a = a if a > 0 else 1.0
    else:
        a = p["assumed_wmax"]
    res = p["res"]
    r = 0.0 if res <= 0 else (1.0 / res if res > 1 else res)
    std = p["std_dev"]
    out = np.empty_like(w)
    for i in range(m):
        for j in range(n):
            v = float(w[i, j])
            nz = float(xi[i, j])
            shift = float(u[i, j]) - 0.5 if p["sto_round"] else 0.0
            if kind in ("Discretize", "DiscretizeAddNormal") and r > 0:
                q = 2.0 * r * a
                v = _ties_away(v / q + shift) * q
            if kind == "DoReFa" and r > 0:
                s = abs(p["dorefa_clip"] / math.tanh(a))
                v = _ties_away(math.tanh(v) * s / r + shift) * r
            if kind == "MultNormal" and std > 0:
                v = v * (1.0 + std * nz)
            if kind in ("AddNormal", "DiscretizeAddNormal") and std > 0:
                v = v + std * a * nz
            if kind in ("Poly", "ProgNoise") and std > 0:
                poly = sum(c * (abs(v) / a) ** k for k, c in enumerate(p["coeffs"]))
                pre = std * a / (p["g_max"] if kind == "ProgNoise" else 1.0)
                noisy = v + pre * poly * nz
                if kind == "ProgNoise":
                    noisy = -abs(noisy) if v < 0 else abs(noisy)
                v = noisy
            if kind == "PCMNoise":
                v = _pcm_element(v, a, p, {q: float(d[i, j]) for q, d in pcm.items()})
            if p["pdrop"] > 0 and float(drop[i, j]) < p["pdrop"]:
                v = 0.0
            if p["copy_last_column"] and j == n - 1:
                v = float(w[i, j])
            out[i, j] = v
    return out


PCM_QUANTITIES = ("reset", "gmax", "gmax_sign", "random", "random_value", "prog", "drift", "read")
PCM_NORMALS = ("prog", "drift", "read")


def _pcm_element(v, a, p, u):
    """'PCMNoise' of one weight v (spec/modifiers.md §M3 a-i), written as aihwkit's CUDA kernel
    does it: every number drawn, the noise terms multiplied by std_dev even when it is 0."""
    gmax, s = p["g_max"], p["std_dev"]
    g = max(min(v, a), -a) * gmax / a
    g = g if abs(g) > p["pcm_zero_thres"] * s * 0.26348 else 0.0
    negative = g < 0.0
    if p["pcm_prob_at_reset"] > 0 and u["reset"] < p["pcm_prob_at_reset"]:
        g = 0.0
    if p["pcm_prob_at_gmax"] > 0 and u["gmax"] < p["pcm_prob_at_gmax"]:
        g = g - gmax if u["gmax_sign"] > 0.5 else g + gmax
    if p["pcm_prob_at_random"] > 0 and u["random"] < p["pcm_prob_at_random"]:
        value = u["random_value"] * gmax
        g = value if g > 0 else -value
    g = min(max(g, -gmax), gmax)
    if not abs(g) > 0:
        return 0.0
    r = abs(g / gmax)
    g_prog = g + s * (0.26348 + r * 1.9650 + r * r * -1.1731) * u["prog"]
    r_prog = abs(g_prog / gmax)
    t0 = p["pcm_t0"]
    t = p["pcm_t_inference"] + t0
    g_drift = g_prog
    if t > t0:
        sig = min(max(-0.0125 * math.log(max(r_prog, 1e-6)) - 0.0059, 0.008), 0.045)
        g_drift = g_prog * (t / t0) ** -abs(u["drift"] * sig)
    q_s = min(0.0088 / max(r_prog ** 0.65, 1e-3), 0.2)
    factor = math.sqrt(math.log((t + 250e-9) / (2 * 250e-9)))
    g_final = g_drift + s * abs(g_drift) * q_s * factor * u["read"]
    out = g_final / gmax * a
    return -abs(out) if negative else abs(out)


def modify(w, seed=3, call=0, xp=NS, dtype=None, **fields):
    arr = xp.asarray(np.asarray(w, dtype=np.float64))
    if dtype is not None:
        arr = xp.astype(arr, dtype)
    return Mod.modify(xp, arr, C.WeightModifierParameter(**fields), seed, call)


#: One case per type and per option: (fields, exact) — exact: the same operations in the same
#: order, so bit for bit; else to 1e-13 (tanh, powers by ** instead of repeated products).
CASES = {
    "discretize": (dict(type="Discretize", res=0.1), True),
    "discretize-res>1-steps": (dict(type="Discretize", res=8.0), True),
    "discretize-sto_round": (dict(type="Discretize", res=0.1, sto_round=True), True),
    "dorefa": (dict(type="DoReFa", res=0.1), False),
    "dorefa-clip-sto": (dict(type="DoReFa", res=0.05, dorefa_clip=0.9, sto_round=True), False),
    "mult-normal": (dict(type="MultNormal", std_dev=0.2), True),
    "add-normal": (dict(type="AddNormal", std_dev=0.1), True),
    "discretize-add-normal": (dict(type="DiscretizeAddNormal", res=0.125, std_dev=0.05), True),
    "discretize-add-normal-sto": (dict(type="DiscretizeAddNormal", res=0.125, std_dev=0.05,
                                       sto_round=True), True),
    "poly": (dict(type="Poly", std_dev=0.5), False),
    "poly-coeffs": (dict(type="Poly", std_dev=0.5, coeffs=[0.1, -0.2, 0.3, 0.05]), False),
    "prog-noise": (dict(type="ProgNoise", std_dev=20.0, g_max=10.0), False),
    "drop-connect": (dict(type="DropConnect", pdrop=0.4), True),
    "copy-pdrop": (dict(type="Copy", pdrop=0.3), True),
    "add-normal-pdrop": (dict(type="AddNormal", std_dev=0.1, pdrop=0.3), True),
    "copy-last-column": (dict(type="AddNormal", std_dev=0.1, copy_last_column=True,
                              pdrop=0.5), True),
    "assumed-wmax": (dict(type="AddNormal", std_dev=0.1, rel_to_actual_wmax=False,
                          assumed_wmax=3.0), True),
    "assumed-wmax-discretize": (dict(type="Discretize", res=0.1, rel_to_actual_wmax=False,
                                     assumed_wmax=2.0), True),
    "dorefa-res>1": (dict(type="DoReFa", res=16.0), False),
    # 'PCMNoise': log, powers and sqrt by numpy and math may differ in the last bit
    "pcm-noise": (dict(type="PCMNoise", std_dev=1.0), False),
    "pcm-no-noise": (dict(type="PCMNoise"), False),
    "pcm-drift-only": (dict(type="PCMNoise", pcm_t_inference=1e4), False),
    "pcm-all": (dict(type="PCMNoise", std_dev=2.0, g_max=10.0, pcm_zero_thres=0.5,
                     pcm_t_inference=3600.0, pcm_prob_at_reset=0.2, pcm_prob_at_gmax=0.25,
                     pcm_prob_at_random=0.25, pcm_t0=5.0), False),
    "pcm-assumed-wmax-pdrop": (dict(type="PCMNoise", std_dev=0.5, rel_to_actual_wmax=False,
                                    assumed_wmax=0.5, pdrop=0.2, copy_last_column=True,
                                    pcm_t_inference=100.0, pcm_prob_at_gmax=0.5), False),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_modifier_matches_the_formula(name):
    fields, exact = CASES[name]
    for call in (0, 5):
        got = to_numpy(modify(W, seed=11, call=call, **fields))
        want = expect(W, 11, call, **fields)
        if exact:
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15, err_msg=name)
    # a different call or seed draws other numbers (unless the type draws none)
    draws = fields.get("sto_round") or fields.get("pdrop") or fields.get("std_dev")
    if draws:
        assert not np.array_equal(to_numpy(modify(W, seed=11, call=0, **fields)),
                                  to_numpy(modify(W, seed=11, call=1, **fields))), name
        assert not np.array_equal(to_numpy(modify(W, seed=11, call=0, **fields)),
                                  to_numpy(modify(W, seed=12, call=0, **fields))), name


def test_discretize_rounds_ties_away_from_zero_in_steps_of_2_res_a():
    w = np.array([[1.0, 0.125, -0.125, 0.375, -0.375, 0.0625]])  # A = 1, res 0.125: step 0.25
    got = to_numpy(modify(w, type="Discretize", res=0.125))
    np.testing.assert_array_equal(got, [[1.0, 0.25, -0.25, 0.5, -0.5, 0.0]])
    # res > 1 is a number of steps: res = 8 is the same as res = 1/8
    np.testing.assert_array_equal(to_numpy(modify(w, type="Discretize", res=8.0)), got)
    # res ≤ 0: no quantization
    for res in (0.0, -0.5):
        np.testing.assert_array_equal(to_numpy(modify(w, type="Discretize", res=res)), w)
        np.testing.assert_array_equal(to_numpy(modify(w, type="DoReFa", res=res)), w)
        noisy = to_numpy(modify(w, type="DiscretizeAddNormal", res=res, std_dev=0.1))
        np.testing.assert_array_equal(noisy, expect(w, 3, 0, type="AddNormal", std_dev=0.1))


def test_stochastic_rounding_is_unbiased():
    w = np.full((200, 200), 0.3)
    w[0, 0] = 1.0  # A = 1, step 2·0.25 = 0.5: 0.3 becomes 0.5 with probability 0.6, else 0
    got = to_numpy(modify(w, type="Discretize", res=0.25, sto_round=True))[1:]
    assert set(np.unique(got).tolist()) == {0.0, 0.5}
    frac = float(np.mean(got == 0.5))
    assert abs(frac - 0.6) < 4.5 * math.sqrt(0.24 / got.size)


def test_prog_noise_keeps_the_sign():
    w = np.array([[0.01, -0.01, 0.0, 1.0, -1.0] * 40])
    got = to_numpy(modify(w, type="ProgNoise", std_dev=200.0, g_max=1.0))
    assert np.all(got[:, w[0] > 0] >= 0) and np.all(got[:, w[0] < 0] <= 0)
    assert np.all(got[:, w[0] == 0] >= 0)  # W = 0 counts as positive
    assert not np.array_equal(got, w)
    # the same noise without the sign rule (Poly with std_dev/g_max) crosses zero somewhere
    free = to_numpy(modify(w, type="Poly", std_dev=200.0))
    assert np.any(np.sign(free) * np.sign(w) < 0)
    np.testing.assert_allclose(np.abs(got), np.abs(free), rtol=1e-13)


def test_all_zero_weights_use_a_equal_to_one():
    z = np.zeros((3, 4))
    got = to_numpy(modify(z, type="AddNormal", std_dev=0.1))
    np.testing.assert_array_equal(got, 0.1 * to_numpy(rng.normal(3, "modifier.noise", 0, (3, 4))))
    assert Mod.amplitude(NS, NS.asarray(z), C.WeightModifierParameter(type="AddNormal")) == 1.0
    # copy_last_column: a matrix zero but for its last column has A = 1 too
    last = np.zeros((2, 3))
    last[:, -1] = 5.0
    mod = C.WeightModifierParameter(type="AddNormal", copy_last_column=True)
    assert Mod.amplitude(NS, NS.asarray(last), mod) == 1.0


def test_copy_last_column_is_excluded_from_a_and_restored():
    w = W.copy()
    w[:, -1] = [4.0, -3.0, 2.0, 9.0]  # larger than the rest: would dominate A
    fields = dict(type="Discretize", res=0.25, copy_last_column=True)
    mod = C.WeightModifierParameter(**fields)
    assert Mod.amplitude(NS, NS.asarray(w), mod) == 0.8
    got = to_numpy(modify(w, **fields))
    np.testing.assert_array_equal(got[:, -1], w[:, -1])
    np.testing.assert_array_equal(got, expect(w, 3, 0, **fields))
    # without copy_last_column, A = 9 and everything else rounds to 0 with steps of 4.5
    plain = to_numpy(modify(w, type="Discretize", res=0.25))
    assert np.all(plain[:, :-1] == 0)


def test_rel_to_actual_wmax_false_uses_assumed_wmax():
    mod = C.WeightModifierParameter(type="AddNormal", rel_to_actual_wmax=False, assumed_wmax=2.5)
    assert Mod.amplitude(NS, NS.asarray(W), mod) == 2.5
    assert Mod.amplitude(NS, NS.asarray(W), C.WeightModifierParameter(type="AddNormal")) == 0.8


def test_resolution():
    assert Mod.resolution(0.1) == 0.1 and Mod.resolution(1.0) == 1.0
    assert Mod.resolution(4.0) == 0.25
    assert Mod.resolution(0.0) == 0.0 and Mod.resolution(-2.0) == 0.0


def test_inactive_modifiers_draw_nothing_and_return_w():
    for fields in (dict(type="None", pdrop=0.5, std_dev=1.0), dict(type="Copy"),
                   dict(type="DropConnect")):
        assert not Mod.is_active(C.WeightModifierParameter(**fields))
        np.testing.assert_array_equal(to_numpy(modify(W, **fields)), W)
    assert Mod.is_active(C.WeightModifierParameter(type="Copy", pdrop=0.1))


def test_float32_weights_give_float32_draws_and_results():
    fields = dict(type="DiscretizeAddNormal", res=0.1, std_dev=0.05, sto_round=True, pdrop=0.2)
    got = modify(W, dtype=NS.float32, **fields)
    assert got.dtype == NS.float32
    w32 = W.astype(np.float32)
    # the float32 evaluation of the same formula, with the draws cast to float32
    xi = to_numpy(rng.normal(3, "modifier.noise", 0, W.shape, dtype=NS.float32))
    u = to_numpy(rng.uniform(3, "modifier.sto_round", 0, W.shape, dtype=NS.float32))
    drop = to_numpy(rng.uniform(3, "modifier.drop", 0, W.shape, dtype=NS.float32))
    assert xi.dtype == np.float32
    a = float(np.max(np.abs(w32)))
    v = w32 / np.float32(0.2 * a) + (u - np.float32(0.5))
    q = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5)) * np.float32(0.2 * a)
    want = np.where(drop >= np.float32(0.2), q + np.float32(0.05 * a) * xi, np.float32(0))
    np.testing.assert_allclose(to_numpy(got), want, rtol=2e-6, atol=1e-7)


# -- 'PCMNoise' (§M3 a-i) ------------------------------------------------------------------------------


def _pcm(w, seed=3, call=0, **fields):
    return to_numpy(modify(w, seed=seed, call=call, type="PCMNoise", **fields))


def test_pcm_noise_std_and_mean_match_the_fit():
    """Every weight at A (g = g_max, r = 1), no faults, no drift: g_f·A/g_max = g_max + σ_p·ξ_p
    plus read noise abs(g_d)·c·ξ_r, so the variance is σ_p² + c²·(g_max² + σ_p²) with
    σ_p = std_dev·(P0 + P1 + P2) and c = std_dev·0.0088·sqrt(ln((t0 + t_read)/(2·t_read)))."""
    w = np.full((200, 200), 0.5)  # A = 0.5
    std, gmax, t0 = 0.05, 30.0, 20.0
    got = _pcm(w, std_dev=std, g_max=gmax) * gmax / 0.5  # in µS
    sig_p = std * (0.26348 + 1.9650 - 1.1731)
    c = std * 0.0088 * math.sqrt(math.log((t0 + 250e-9) / 500e-9))
    want = math.sqrt(sig_p ** 2 + c ** 2 * (gmax ** 2 + sig_p ** 2))
    assert c * gmax > 0.5 * sig_p  # the read noise is a visible part of it
    assert float(np.std(got)) == pytest.approx(want, rel=0.02)
    assert abs(float(np.mean(got)) - gmax) < 5 * want / math.sqrt(got.size)
    # only the programming noise (P(r) at r = 1) would be visibly smaller
    assert float(np.std(got)) > 1.1 * sig_p
    # std_dev 0: no noise at all, the weights come back up to rounding
    np.testing.assert_allclose(_pcm(w, g_max=gmax), w, rtol=1e-15)


def test_pcm_noise_is_relative_to_g_max():
    """The same std_dev is a larger weight noise for a smaller g_max (the fit is in µS)."""
    w = np.full((100, 100), 0.3)
    w[0, 0] = 1.0
    small = np.std(_pcm(w, std_dev=0.5, g_max=5.0)[1:] - 0.3)
    large = np.std(_pcm(w, std_dev=0.5, g_max=50.0)[1:] - 0.3)
    assert small > 4 * large


def test_pcm_prob_at_reset_one_zeroes_everything():
    got = _pcm(W, std_dev=1.0, pcm_t_inference=100.0, pcm_prob_at_reset=1.0)
    np.testing.assert_array_equal(got, np.zeros_like(W))
    w = np.full((100, 100), 0.4)
    frac = float(np.mean(_pcm(w, std_dev=0.2, pcm_prob_at_reset=0.3) == 0))
    assert abs(frac - 0.3) < 5 * math.sqrt(0.21 / w.size)


def test_pcm_faults_at_gmax_and_at_random():
    w = np.full((100, 100), 0.25)
    w[0, 0] = 1.0  # A = 1, g = 0.25·g_max
    got = _pcm(w, pcm_prob_at_gmax=1.0)[1:]
    # down: −0.75·g_max, reflected to +0.75 by the sign of the target; up: 1.25·g_max, clipped
    np.testing.assert_allclose(np.unique(got), [0.75, 1.0], rtol=1e-14)
    assert abs(float(np.mean(got == 1.0)) - 0.5) < 0.03
    rand = _pcm(-w, pcm_prob_at_random=1.0)[1:]  # uniform in (−1, 0]: the sign of the target
    assert np.all(rand <= 0) and np.all(rand > -1)
    assert abs(float(np.mean(rand)) + 0.5) < 5 * math.sqrt(1 / 12 / rand.size)
    assert len(np.unique(rand)) > 0.9 * rand.size


def test_pcm_noise_keeps_the_sign_of_the_target():
    w = np.array([[0.01, -0.01, 0.0, 1.0, -1.0, 0.002, -0.002] * 30])
    got = _pcm(w, std_dev=5.0, pcm_t_inference=1e5)
    assert np.all(got[:, w[0] > 0] >= 0) and np.all(got[:, w[0] < 0] <= 0)
    np.testing.assert_array_equal(got[:, w[0] == 0], 0.0)  # g = 0 is never programmed
    # the programming noise alone takes many small targets across zero (so the rule acts)
    g = w * 25.0
    r = np.abs(g) / 25.0
    xi = to_numpy(rng.normal(3, "modifier.pcm_prog", 0, w.shape))
    g_prog = g + 5.0 * (0.26348 + r * 1.9650 + r * r * -1.1731) * xi
    assert np.sum(np.sign(g_prog) * np.sign(w) < 0) > 50


def test_pcm_targets_are_clipped_to_a_before_the_faults():
    """W beyond A = assumed_wmax is clipped to the target g_max first (§M3 a), so a downward
    g_max fault takes it to 0, not to (W/A − 1)·g_max."""
    w = np.full((50, 50), 0.9)
    got = _pcm(w, rel_to_actual_wmax=False, assumed_wmax=0.6, pcm_prob_at_gmax=1.0)
    np.testing.assert_allclose(np.unique(got), [0.0, 0.6], rtol=1e-14)


def test_pcm_a_target_zeroed_by_the_threshold_counts_as_positive():
    """The sign of Ŵ is that of the target after the zero threshold (§M3 b): a small negative
    weight zeroed there and then hit by a g_max fault comes out positive, as in the kernel."""
    w = np.full((50, 50), -0.01)
    w[0, 0] = -1.0  # A = 1; the threshold 2·0.26348 µS zeroes g = −0.25 µS
    got = _pcm(w, std_dev=1.0, pcm_zero_thres=2.0, pcm_prob_at_gmax=1.0).ravel()[1:]
    assert np.all(got >= 0) and np.sum(got > 0) > 1000
    # without the threshold the same weights stay negative
    assert np.all(_pcm(w, std_dev=1.0, pcm_prob_at_gmax=1.0) <= 0)


def test_pcm_zero_threshold_leaves_small_targets_at_zero():
    # A = 1, g_max 25, threshold 2·std_dev·0.26348 µS = 0.52696 µS, i.e. weights ≤ 0.0210784
    w = np.array([[1.0, 0.02, -0.021, 0.0215, -0.022, 0.5]])
    got = _pcm(w, std_dev=1.0, pcm_zero_thres=2.0)
    np.testing.assert_array_equal(got[0, 1:3], 0.0)
    assert np.all(got[0, [0, 3, 4, 5]] != 0)
    # without the threshold every target is programmed
    assert np.all(_pcm(w, std_dev=1.0) != 0)


def test_pcm_drift_only_after_t_inference():
    """std_dev 0: Ŵ = W·(t/t0)^(−ν), ν = abs(ξ·σ_ν) with σ_ν = 0.008 at r = 1 and the 0.045 cap
    at r = 0.01 (−0.0125·ln(0.01) − 0.0059 = 0.0517); t_inference 0: no drift."""
    w = np.full((200, 200), 0.01)
    w[:, 0] = 1.0  # r = 1 in column 0, r = 0.01 elsewhere
    np.testing.assert_allclose(_pcm(w), w, rtol=1e-15)  # t_inference 0
    t_inf, t0 = 1e6, 20.0
    got = _pcm(w, pcm_t_inference=t_inf, pcm_t0=t0)
    assert np.all(np.abs(got) <= np.abs(w) * (1 + 1e-15))
    nu = -np.log(got / w) / math.log((t_inf + t0) / t0)
    half_normal = math.sqrt(2 / math.pi)
    for col, sigma in ((nu[:, 0], 0.008), (nu[:, 1:], 0.045)):
        se = sigma * math.sqrt(1 - 2 / math.pi) / math.sqrt(col.size)
        assert abs(float(np.mean(col)) - sigma * half_normal) < 5 * se
    # a later time drifts further with the same ν
    later = _pcm(w, pcm_t_inference=10 * t_inf, pcm_t0=t0)
    assert np.all(np.abs(later) <= np.abs(got))


def test_pcm_draws_only_what_acts(monkeypatch):
    """Each quantity from its own stream, drawn only when its step acts (§M3)."""
    seen = []
    for name in ("uniform", "normal"):
        real = getattr(rng, name)

        def record(seed, stream, *args, _real=real, **kwargs):
            seen.append(stream)
            return _real(seed, stream, *args, **kwargs)

        monkeypatch.setattr(rng, name, record)
    cases = [({}, set()),
             (dict(std_dev=0.1), {"prog", "read"}),
             (dict(pcm_t_inference=1.0), {"drift"}),
             (dict(pcm_prob_at_reset=0.1), {"reset"}),
             (dict(pcm_prob_at_gmax=0.1), {"gmax", "gmax_sign"}),
             (dict(pcm_prob_at_random=0.1), {"random", "random_value"}),
             (dict(pcm_zero_thres=0.5, std_dev=0.1, pdrop=0.1), {"prog", "read", "drop"})]
    for fields, want in cases:
        seen.clear()
        _pcm(W, **fields)
        assert {name.split("pcm_")[-1].split(".")[-1] for name in seen} == want, fields


def test_a_pcm_fault_does_not_move_the_other_numbers():
    base = _pcm(W, std_dev=0.3, pcm_t_inference=50.0)
    reset = _pcm(W, std_dev=0.3, pcm_t_inference=50.0, pcm_prob_at_reset=0.3)
    hit = reset == 0
    assert 0 < hit.sum() < W.size - 1  # W has one zero of its own
    np.testing.assert_array_equal(reset[~hit], base[~hit])


def test_pcm_fields_need_type_pcm_noise():
    for name, value in PCM_ONLY.items():
        C.WeightModifierParameter(type="PCMNoise", **{name: value})  # accepted
        with pytest.raises(ConfigError, match=f"^{name}: only used by the 'PCMNoise'"):
            C.WeightModifierParameter(type="AddNormal", **{name: value})
    # a read time shorter than t_read = 250 ns makes the read-noise factor NaN
    with pytest.raises(ConfigError, match="^pcm_t0"):
        C.WeightModifierParameter(type="PCMNoise", pcm_t0=1e-7)
    C.WeightModifierParameter(type="PCMNoise", pcm_t0=1e-7, pcm_t_inference=1.5e-7)
    c = C.InferenceRPUConfig()
    c.modifier.type = "PCMNoise"
    c.modifier.pcm_t0 = 2e-7  # set later: refused by the tile
    with pytest.raises(ConfigError, match="pcm_t0"):
        AnalogTile(2, 2, c)


def test_streams_are_registered():
    assert set(Mod.stream_names()) <= set(rng.STREAMS)


# -- the tile (§M4) -----------------------------------------------------------------------------------


def cfg(clip=None, perfect=True, **mod):
    c = C.InferenceRPUConfig()
    c.forward.is_perfect = perfect
    c.modifier = C.WeightModifierParameter(**mod)
    if clip:
        c.clip = C.WeightClipParameter(**clip)
    return c


def tile(config, w=W, seed=7, **kw):
    t = AnalogTile(w.shape[0], w.shape[1], config, seed=seed, **kw)
    t.set_weights(w)
    return t


def plain(w):
    """A perfect-forward tile without modifier that reads ``w``."""
    return tile(cfg(type="None"), np.asarray(w))


X = np.array([[0.5, -1.0, 0.25, 0.75, -0.3], [1.0, 0.2, -0.6, 0.1, 0.9]])
D = np.array([[0.3, -0.2, 0.1, 0.4], [-0.5, 0.25, 0.6, -0.1]])
NOISY = dict(type="AddNormal", std_dev=0.1, pdrop=0.2)


def test_before_the_first_step_the_passes_read_w():
    t = tile(cfg(**NOISY))
    assert t.modified_weights is None
    np.testing.assert_array_equal(t.forward(X), plain(W).forward(X))
    np.testing.assert_array_equal(t.backward(D), plain(W).backward(D))


def test_training_passes_read_w_hat_and_the_update_acts_on_w():
    t = tile(cfg(**NOISY))
    t.post_update_step()
    w_hat = to_numpy(t.modified_weights)
    np.testing.assert_array_equal(w_hat, expect(W, 7, 0, **NOISY))
    assert not np.array_equal(w_hat, W)
    np.testing.assert_array_equal(to_numpy(t.get_weights()), W)  # get_weights is W, not Ŵ
    np.testing.assert_array_equal(t.forward(X), plain(w_hat).forward(X))
    np.testing.assert_array_equal(t.backward(D), plain(w_hat).backward(D))
    np.testing.assert_allclose(t.forward(X), X @ w_hat.T, rtol=1e-15, atol=1e-15)
    t.update(X, D, 0.1)
    ref = plain(W)
    ref.update(X, D, 0.1)
    np.testing.assert_array_equal(to_numpy(t.get_weights()), to_numpy(ref.get_weights()))
    # Ŵ stays until the next step, which draws from the updated W with call 1
    np.testing.assert_array_equal(to_numpy(t.modified_weights), w_hat)
    t.post_update_step()
    np.testing.assert_array_equal(to_numpy(t.modified_weights),
                                  expect(to_numpy(ref.get_weights()), 7, 1, **NOISY))
    assert t.streams.calls["modifier"] == 2


def test_evaluation_reads_w_unless_enable_during_test():
    for during_test in (False, True):
        t = tile(cfg(enable_during_test=during_test, **NOISY))
        t.post_update_step()
        w_hat = to_numpy(t.modified_weights)
        t.eval()
        want = w_hat if during_test else W
        np.testing.assert_array_equal(t.forward(X), plain(want).eval().forward(X))
        t.train()
        np.testing.assert_array_equal(t.forward(X), plain(w_hat).forward(X))


def test_set_weights_clears_w_hat():
    t = tile(cfg(**NOISY))
    t.post_update_step()
    assert t.modified_weights is not None
    w2 = W * 0.5
    t.set_weights(w2)
    assert t.modified_weights is None
    np.testing.assert_array_equal(t.forward(X), plain(w2).forward(X))
    t.post_update_step()  # the next step modifies the new weights (call 1)
    np.testing.assert_array_equal(to_numpy(t.modified_weights), expect(w2, 7, 1, **NOISY))


def test_clip_acts_on_w_at_every_step_before_the_modifier():
    for mod in (dict(type="None"), NOISY):
        t = tile(cfg(clip=dict(type="FixedValue", fixed_value=0.5), **mod))
        w = W.copy()
        for step in range(3):
            t.post_update_step()
            w = np.clip(w, -0.5, 0.5)
            np.testing.assert_array_equal(to_numpy(t.get_weights()), w)
            if mod["type"] == "None":
                assert t.modified_weights is None
            else:
                np.testing.assert_array_equal(to_numpy(t.modified_weights),
                                              expect(w, 7, step, **mod))
            t.update(X, D, -2.0)  # pushes weights beyond the bound again
            w = to_numpy(t.get_weights())
            assert np.max(np.abs(w)) > 0.5


# -- no silent parameter ---------------------------------------------------------------------------

#: field -> (base settings that let it act, the changed value)
CLIP_WALK = {
    "fixed_value": (dict(type="FixedValue", fixed_value=0.5), 0.3),
    "sigma": (dict(type="LayerGaussian", sigma=1.0), 0.5),
    "type": (dict(fixed_value=0.5), "FixedValue"),
}
MOD_WALK = {
    "std_dev": (dict(type="AddNormal", std_dev=0.1), 0.2),
    "res": (dict(type="Discretize", res=0.1), 0.2),
    "sto_round": (dict(type="Discretize", res=0.1), True),
    "dorefa_clip": (dict(type="DoReFa", res=0.1), 0.9),
    "pdrop": (dict(type="Copy"), 0.5),
    "enable_during_test": (dict(type="AddNormal", std_dev=0.1), True),
    "rel_to_actual_wmax": (dict(type="AddNormal", std_dev=0.1), False),
    "assumed_wmax": (dict(type="AddNormal", std_dev=0.1, rel_to_actual_wmax=False), 2.0),
    "copy_last_column": (dict(type="AddNormal", std_dev=0.1), True),
    "coeffs": (dict(type="Poly", std_dev=0.5), [0.1, 0.2]),
    "type": (dict(std_dev=0.1), "AddNormal"),
    "g_max": (dict(type="ProgNoise", std_dev=2.0), 5.0),
}
#: fields that act only with type 'PCMNoise' (the config refuses non-defaults with other types):
#: field -> value, walked from PCM_BASE
PCM_ONLY = {"pcm_zero_thres": 20.0, "pcm_t_inference": 10.0, "pcm_prob_at_reset": 0.3,
            "pcm_prob_at_gmax": 0.3, "pcm_prob_at_random": 0.3, "pcm_t0": 1.0}
PCM_BASE = dict(type="PCMNoise", std_dev=0.5)


def _outcome(clip, mod):
    """W after one step, the training forward and the evaluation forward of the identity."""
    t = tile(cfg(clip=clip, **mod))
    t.post_update_step()
    eye = np.eye(W.shape[1])
    train = t.forward(eye)
    return to_numpy(t.get_weights()), train, t.eval().forward(eye)


def _differs(a, b):
    return any(not np.array_equal(x, y) for x, y in zip(a, b))


def test_every_clip_field_changes_the_result():
    assert set(CLIP_WALK) == {f.name for f in dataclasses.fields(C.WeightClipParameter)}
    for name, (base, value) in CLIP_WALK.items():
        before = _outcome(base, dict(type="None"))
        after = _outcome({**base, name: value}, dict(type="None"))
        assert _differs(before, after), name


def test_every_modifier_field_changes_the_result_or_is_refused():
    fields = {f.name for f in dataclasses.fields(C.WeightModifierParameter)}
    assert set(MOD_WALK) | set(PCM_ONLY) | {"per_batch_sample"} == fields
    assert set(PCM_ONLY) == set(PCM_NOISE_FIELDS)
    walk = {**MOD_WALK, **{name: (PCM_BASE, value) for name, value in PCM_ONLY.items()}}
    for name, (base, value) in walk.items():
        before = _outcome(None, base)
        after = _outcome(None, {**base, name: value})
        assert _differs(before, after), name
    # with PCMNoise, the fields of the other types' formulas must not matter
    for name, value in (("res", 0.1), ("sto_round", True), ("dorefa_clip", 0.9),
                        ("coeffs", [0.1, 0.2])):
        assert not _differs(_outcome(None, PCM_BASE), _outcome(None, {**PCM_BASE, name: value}))
    for name, value in PCM_ONLY.items():  # with any other type: refused
        with pytest.raises(ConfigError, match=name):
            C.WeightModifierParameter(type="AddNormal", **{name: value})
        c = C.InferenceRPUConfig()
        setattr(c.modifier, name, value)  # a field set later: refused by the tile
        with pytest.raises(ConfigError, match=name):
            AnalogTile(2, 2, c)
    with pytest.raises(ConfigError, match="per_batch_sample"):
        C.WeightModifierParameter(type="AddNormal", std_dev=0.1, per_batch_sample=True)
    # with 'Copy' and 'None' it is accepted, and Ŵ is one copy per step
    for kind in ("Copy", "None"):
        a = _outcome(None, dict(type=kind, pdrop=0.3, per_batch_sample=True))
        b = _outcome(None, dict(type=kind, pdrop=0.3))
        assert not _differs(a, b)


# -- backends, namespaces, checkpoints, failures -------------------------------------------------------

RICH = dict(type="DiscretizeAddNormal", res=0.05, std_dev=0.05, sto_round=True, pdrop=0.1,
            copy_last_column=True)
RICH_CLIP = dict(type="LayerGaussian", sigma=1.5)
PCM_RICH = dict(type="PCMNoise", std_dev=0.3, g_max=20.0, pcm_zero_thres=0.5,
                pcm_t_inference=100.0, pcm_prob_at_reset=0.05, pcm_prob_at_gmax=0.05,
                pcm_prob_at_random=0.05, pcm_t0=10.0, pdrop=0.1, copy_last_column=True)


def _train(t, steps, lr=0.2):
    """Forward, backward, update, post_update_step; everything observable, per step."""
    seen = []
    for _ in range(steps):
        y = t.forward(X)
        z = t.backward(D)
        t.update(X, D, lr)
        t.post_update_step()
        seen.append([to_numpy(y), to_numpy(z), to_numpy(t.get_weights()),
                     to_numpy(t.modified_weights)])
    return seen


def _same(a, b):
    for sa, sb in zip(a, b):
        for x, y in zip(sa, sb):
            np.testing.assert_array_equal(x, y)


def test_reference_and_fast_backends_are_bit_identical():
    pytest.importorskip("refsim_fast")
    for perfect in (True, False):  # the default forward IO (noise, DAC/ADC) too
        for mod in (RICH, PCM_RICH):
            config = cfg(clip=RICH_CLIP, perfect=perfect, **mod)
            ref = _train(tile(config, backend="reference"), 4)
            fast = _train(tile(config, backend="fast"), 4)
            _same(ref, fast)


@pytest.mark.parametrize("backend", ["reference", "fast"])
def test_a_tile_trains_with_pcm_noise(backend):
    """post_update_step builds Ŵ by §M3 a-i from the updated W at every step (call = step), the
    passes read it, and the loss of a small regression falls."""
    if backend == "fast":
        pytest.importorskip("refsim_fast")
    fields = dict(PCM_RICH, pdrop=0.0)
    t = tile(cfg(**fields), backend=backend)
    target = W * 0.5
    losses = []
    for step in range(25):
        y = to_numpy(t.forward(X))
        err = y - X @ target.T
        losses.append(float(np.mean(err ** 2)))
        t.update(X, err, 0.05)
        w = to_numpy(t.get_weights())
        t.post_update_step()
        np.testing.assert_allclose(to_numpy(t.modified_weights), expect(w, 7, step, **fields),
                                   rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(to_numpy(t.forward(X)), X @ to_numpy(t.modified_weights).T,
                                   rtol=1e-14, atol=1e-15)
    assert t.streams.calls["modifier"] == 25
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("xp", OTHER_NAMESPACES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_namespaces_agree_on_the_modifier(xp, name):
    fields, _ = CASES[name]
    ref = to_numpy(modify(W, seed=4, call=2, **fields))
    got = to_numpy(modify(W, seed=4, call=2, xp=rng._namespace(xp), **fields))
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("xp", OTHER_NAMESPACES)
def test_namespaces_agree_on_pcm_noise_in_float32(xp):
    ns = rng._namespace(xp)
    fields = CASES["pcm-all"][0]
    ref = modify(W, seed=4, call=2, dtype=NS.float32, **fields)
    got = modify(W, seed=4, call=2, xp=ns, dtype=ns.float32, **fields)
    assert got.dtype == ns.float32 and ref.dtype == NS.float32
    np.testing.assert_allclose(to_numpy(got), to_numpy(ref), rtol=2e-6, atol=1e-7)
    # and float32 is a float32 computation, close to (not equal to) float64
    wide = to_numpy(modify(W, seed=4, call=2, **fields))
    np.testing.assert_allclose(to_numpy(ref), wide, rtol=1e-4, atol=1e-5)
    assert not np.array_equal(to_numpy(ref).astype(np.float64), wide)


@pytest.mark.parametrize("xp", OTHER_NAMESPACES)
def test_namespaces_agree_on_clip_and_the_tile(xp):
    ns = rng._namespace(xp)
    for kw in (dict(type="FixedValue", fixed_value=0.4), dict(type="LayerGaussian", sigma=1.0),
               dict(type="AverageChannelMax", fixed_value=0.6)):
        got = to_numpy(Mod.clip_weights(ns, ns.asarray(W), C.WeightClipParameter(**kw)))
        np.testing.assert_allclose(got, _clip(W, **kw), rtol=1e-12, atol=1e-12)
    for mod in (RICH, PCM_RICH):
        _namespace_tile_agrees(xp, ns, cfg(clip=RICH_CLIP, **mod))


def _namespace_tile_agrees(xp, ns, config):
    ref = _train(tile(config), 3)
    t = AnalogTile(W.shape[0], W.shape[1], config, seed=7, xp=xp)
    t.set_weights(ns.asarray(W))
    seen = []
    for _ in range(3):
        y = t.forward(ns.asarray(X))
        z = t.backward(ns.asarray(D))
        t.update(ns.asarray(X), ns.asarray(D), 0.2)
        t.post_update_step()
        seen.append([to_numpy(y), to_numpy(z), to_numpy(t.get_weights()),
                     to_numpy(t.modified_weights)])
    for sa, sb in zip(ref, seen):
        for a, b in zip(sa, sb):
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


def test_checkpoint_continues_identically():
    config = cfg(clip=RICH_CLIP, perfect=False, **RICH)
    a = tile(config)
    _train(a, 3)
    state = a.state_dict()
    assert state["modified"] is not None
    b = tile(config, seed=99)
    b.load_state_dict(state)
    np.testing.assert_array_equal(to_numpy(b.modified_weights), to_numpy(a.modified_weights))
    c = pickle.loads(pickle.dumps(a))
    d = copy.deepcopy(a)
    buf = io.BytesIO()
    checkpoint.save(a, buf)
    buf.seek(0)
    e = checkpoint.load(buf)
    # the first forward after the restore reads the saved Ŵ
    first = [to_numpy(t.forward(X)) for t in (a, b, c, d, e)]
    for f in first[1:]:
        np.testing.assert_array_equal(f, first[0])
    runs = [_train(t, 3) for t in (a, b, c, d, e)]
    for r in runs[1:]:
        _same(runs[0], r)


def test_checkpoint_before_the_first_step_has_no_w_hat():
    a = tile(cfg(**NOISY))
    state = a.state_dict()
    assert state["modified"] is None
    b = tile(cfg(**NOISY), seed=1)
    b.post_update_step()
    b.load_state_dict(state)
    assert b.modified_weights is None
    _same(_train(a, 2), _train(b, 2))


def test_load_state_dict_checks_the_modified_weights():
    a = tile(cfg(**NOISY))
    a.post_update_step()
    state = a.state_dict()
    state["modified"] = np.zeros((2, 2))
    b = tile(cfg(**NOISY), seed=1)
    before = b.state_dict()
    with pytest.raises(ValueError, match="modified"):
        b.load_state_dict(state)
    assert b.modified_weights is None
    np.testing.assert_array_equal(to_numpy(b.get_weights()), to_numpy(before["weights"]))


def test_a_failing_post_update_step_leaves_the_tile_unchanged(monkeypatch):
    t = tile(cfg(clip=dict(type="FixedValue", fixed_value=0.3), **NOISY))
    t.post_update_step()
    t.update(X, D, -1.0)  # beyond the bound again
    w, w_hat = to_numpy(t.get_weights()), to_numpy(t.modified_weights)
    calls = dict(t.streams.calls)

    def broken(*args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(Mod, "modify", broken)
    with pytest.raises(RuntimeError, match="injected"):
        t.post_update_step()
    # the clip that ran before the failure is undone, Ŵ and the counters are as they were
    np.testing.assert_array_equal(to_numpy(t.get_weights()), w)
    np.testing.assert_array_equal(to_numpy(t.modified_weights), w_hat)
    assert dict(t.streams.calls) == calls
    monkeypatch.undo()
    t.post_update_step()  # and the next step is the one the failed call would have been
    np.testing.assert_array_equal(to_numpy(t.modified_weights),
                                  expect(np.clip(w, -0.3, 0.3), 7, 1, **NOISY))


def test_an_overflowing_modifier_is_a_named_error_and_changes_nothing():
    """Ŵ beyond the dtype (float32 W = 3e38 with AddNormal noise 10) is a ValueError naming the
    modifier, raised by post_update_step, and the tile is unchanged."""
    from refsim.tile import AnalogTile

    cfg = C.InferenceRPUConfig()
    cfg.modifier.type, cfg.modifier.std_dev = "AddNormal", 10.0
    tile = AnalogTile(1, 2, cfg, dtype=np.float32)
    tile.set_weights(np.full((1, 2), 3e38, dtype=np.float32))
    before = tile.state_dict()
    with pytest.raises(ValueError, match="modifier"):
        tile.post_update_step()
    assert tile.modified_weights is None
    assert tile.streams.state_dict() == before["rng"]

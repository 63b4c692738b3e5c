"""Properties of the IO stage (spec/io.md), tested through the public tile API (AnalogTile with the
reference backend) and, for the DAC, through refsim.stages.io.prepare_input.

Covered: ADC/DAC levels and bounds, the zero short-cut of noise management, bound management and
its limits, noise statistics, the perfect pass, a "no silent parameter" table over every
IOParameters field (with the documented inert cases listed explicitly), reproducibility and state
restore, agreement across array namespaces, dtypes and shapes.
"""

import dataclasses
import math

import array_api_compat
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import OTHER_NAMESPACES, to_numpy
from refsim import rng
from refsim.configs import (
    FloatingPointRPUConfig,
    InferenceRPUConfig,
    IOParameters,
    SingleRPUConfig,
)
from refsim.stages import io as io_stage
from refsim.tile import AnalogTile

DEFAULT = IOParameters()
DEFAULT_OUT_STEP = 24 / 510  # out_res 1/510 with out_bound 12
DEFAULT_INP_STEP = 2 / 126  # inp_res 1/126 with inp_bound 1
NF = {"out_noise": 0.0}  # noise-free: the default config has out_noise 0.06
NM_OFF = {"noise_management": "None"}
BM_OFF = {"bound_management": "None"}
QUANT_OFF = {"inp_res": -1.0, "out_res": -1.0}


# -- helpers --------------------------------------------------------------------------------------


def make_config(forward=None, backward=None):
    return SingleRPUConfig(forward=IOParameters(**(forward or {})),
                           backward=IOParameters(**(backward or {})))


def make_tile(weights, forward=None, backward=None, *, seed=0, xp=None, dtype="float64",
              rpu_config=None):
    """A reference tile holding ``weights`` (a numpy array) in namespace ``xp`` (default numpy)."""
    xp = np if xp is None else xp
    w = np.asarray(weights, dtype=np.float64)
    cfg = rpu_config if rpu_config is not None else make_config(forward, backward)
    tile = AnalogTile(w.shape[0], w.shape[1], cfg, seed=seed, xp=xp, dtype=getattr(xp, dtype),
                      backend="reference")
    tile.set_weights(xp.asarray(w, dtype=getattr(xp, dtype)))
    return tile


def run(tile, a, direction="forward", xp=None, dtype="float64"):
    """One pass on numpy input ``a``; the result as a numpy array."""
    xp = np if xp is None else xp
    arr = xp.asarray(np.asarray(a, dtype=np.float64), dtype=getattr(xp, dtype))
    return to_numpy(getattr(tile, direction)(arr))


def adc_step(res, bound):
    """The ADC/DAC step as spec/io.md states it (independent of the implementation)."""
    if res <= 0 or bound <= 0:
        return 0.0
    return res * 2 * bound if res <= 1 else 2 * bound / res


def on_grid(values, step, rel=1e-9):
    k = np.asarray(values) / step
    return np.abs(k - np.rint(k)) <= rel * np.maximum(1.0, np.abs(k))


def target_weights(gen, targets, xt):
    """Positive-ish weights W (len(targets), len(xt)) with W @ xt == targets (up to rounding)."""
    v = gen.uniform(0.2, 1.0, (len(targets), len(xt)))
    return v * (np.asarray(targets) / (v @ xt))[:, None]


def clip_problem(gen, lo, hi, *, m=8, n=32, batch=4, sign=1.0):
    """Weights and positive inputs whose normalised outputs (AbsMax NM) are targets in [lo, hi]
    (times ``sign``). Every row has the same normalised input, on the DAC grid, so the targets hold
    for every row; rows differ by their scale α."""
    k = gen.integers(32, 64, n)
    k[0] = 63
    xt = k / 63.0  # DAC levels of the default inp_res (step 1/63), max exactly 1
    targets = sign * gen.uniform(lo, hi, m)
    w = target_weights(gen, targets, xt)
    scales = gen.uniform(0.3, 2.0, batch)
    x = scales[:, None] * xt[None, :]
    return w, x, targets, scales


def abs_max(x):
    return np.max(np.abs(x), axis=1)


# -- ADC and DAC levels ---------------------------------------------------------------------------

out_res_st = st.one_of(
    st.sampled_from([1 / 510, 1 / 254, 1 / 30, 0.1, 0.25, 1.0, 0.3]),
    st.integers(2, 1000).map(float),
)
seed_st = st.integers(0, 2**32 - 1)


@given(
    m=st.integers(1, 16), n=st.integers(1, 16), batch=st.integers(1, 6), seed=seed_st,
    out_res=out_res_st, out_bound=st.sampled_from([0.5, 1.0, 3.5, 12.0, 20.0]),
    out_scale=st.sampled_from([1.0, 2.0, 0.5, -1.5, 3.7]),
    mv_type=st.sampled_from(["OnePass", "PosNegSeparate"]),
    direction=st.sampled_from(["forward", "backward"]),
    noisy=st.booleans(), sto=st.booleans(),
)
def test_outputs_are_adc_levels_times_out_scale(m, n, batch, seed, out_res, out_bound, out_scale,
                                                mv_type, direction, noisy, sto):
    """NM None, BM None: the factor is out_scale, y/out_scale is a multiple of
    step = out_res'·2·out_bound (or ±out_bound, where the clip is not on the grid), within
    ±out_bound."""
    gen = np.random.default_rng(seed)
    w = gen.uniform(-1, 1, (m, n))
    io = dict(NM_OFF, **BM_OFF, out_res=out_res, out_bound=out_bound, out_scale=out_scale,
              mv_type=mv_type, out_sto_round=sto, inp_sto_round=sto,
              out_noise=0.3 if noisy else 0.0, inp_noise=0.1 if noisy else 0.0,
              w_noise=0.1 if noisy else 0.0, w_noise_type="AdditiveConstant",
              ir_drop=0.5 if noisy else 0.0, ir_drop_g_ratio=20.0)
    tile = make_tile(w, io, io, seed=seed)
    size = n if direction == "forward" else m
    q = run(tile, gen.uniform(-2, 2, (batch, size)), direction) / out_scale
    step = adc_step(out_res, out_bound)
    at_bound = np.abs(np.abs(q) - out_bound) <= 1e-12 * out_bound
    assert np.all(on_grid(q, step) | at_bound)
    assert np.all(np.abs(q) <= out_bound * (1 + 1e-12))


@given(
    m=st.integers(1, 12), n=st.integers(1, 24), batch=st.integers(1, 6), seed=seed_st,
    nm=st.sampled_from(["AbsMax", "Max", "Constant", "AbsMaxNPSum"]),
    bm=st.sampled_from(["None", "Iterative", "IterativeWorstCase"]),
    mv_type=st.sampled_from(["OnePass", "PosNegSeparate", "PosNegSeparateDigitalSum"]),
    out_scale=st.sampled_from([1.0, 0.7, -2.0]), scale=st.sampled_from([0.01, 1.0, 5.0]),
)
def test_managed_outputs_are_adc_levels_times_alpha(m, n, batch, seed, nm, bm, mv_type,
                                                    out_scale, scale):
    """With noise management the factor is out_scale·α·(BM factor 2^k): y/(out_scale·α) is a
    multiple of the ADC step (the default out_bound is 255 steps, so clipping stays on the grid)
    and within ±(1 or 2 ADC stages)·out_bound·16 (at most 5 BM passes with the default inp_res)."""
    gen = np.random.default_rng(seed)
    w = gen.uniform(-1.5, 1.5, (m, n))
    x = scale * gen.uniform(-1, 1, (batch, n))
    io = dict(noise_management=nm, bound_management=bm, mv_type=mv_type, out_scale=out_scale,
              out_noise=0.1, nm_thres=0.5 if nm == "Constant" else 0.0)
    y = run(make_tile(w, io, seed=seed), x)
    if nm == "AbsMax":
        alpha = abs_max(x)
    elif nm == "Max":
        alpha = np.max(x, axis=1)
    elif nm == "Constant":
        alpha = np.full(batch, 0.5)
    else:  # AbsMaxNPSum (first pass); IterativeWorstCase's second pass uses the same rule
        a = abs_max(x)
        q = np.maximum(np.sum(np.clip(x, 0, None), 1), -np.sum(np.clip(x, None, 0), 1)) * 0.6 / 12
        alpha = np.maximum(a, np.minimum(q, a * 0.25 / DEFAULT_INP_STEP))
    live = alpha > 0
    assert np.all(y[~live] == 0)  # α <= 0 with inp_noise = 0: exact zeros
    ratio = y[live] / (out_scale * alpha[live])[:, None]
    assert np.all(on_grid(ratio, DEFAULT_OUT_STEP))
    stages = 2 if mv_type == "PosNegSeparateDigitalSum" else 1
    assert np.all(np.abs(ratio) <= stages * 12.0 * 16 * (1 + 1e-12))


def test_bm_factor_divides_out_of_clipped_outputs():
    """A row that still clips at the last BM pass (factor 16 with the defaults) comes out as
    ±out_bound·16·α·out_scale exactly."""
    gen = np.random.default_rng(5)
    w, x, _, scales = clip_problem(gen, 250.0, 300.0, n=64)  # would need factor 32
    y = run(make_tile(w, dict(NF, out_scale=0.5)), x)
    np.testing.assert_array_equal(y, np.broadcast_to((12.0 * 16 * scales * 0.5)[:, None], y.shape))


dac_res_st = st.one_of(st.sampled_from([1 / 126, 1 / 14, 0.1, 0.5, 1.0, -1.0, 0.0]),
                       st.integers(2, 300).map(float))


@given(
    batch=st.integers(1, 8), n=st.integers(1, 32), seed=seed_st, inp_res=dac_res_st,
    inp_bound=st.sampled_from([1.0, 0.5, 2.5, 0.0, -1.0]), sto=st.booleans(),
    scale=st.floats(0.1, 10.0), dtype=st.sampled_from(["float64", "float32"]),
)
def test_dac_levels(batch, n, seed, inp_res, inp_bound, sto, scale, dtype):
    """prepare_input: v = x·s, quantized to a multiple of the DAC step (nearest level, or one of
    the two neighbours with stochastic rounding), clipped to ±inp_bound; with quantization off
    (inp_res <= 0 or inp_bound <= 0) only clipping (or nothing)."""
    xp = array_api_compat.numpy
    io = IOParameters(**NM_OFF, inp_res=inp_res, inp_bound=inp_bound, inp_sto_round=sto)
    gen = np.random.default_rng(seed)
    x = gen.uniform(-3, 3, (batch, n)).astype(dtype)
    scales = np.full(batch, scale, dtype=dtype)
    draws = io_stage.Draws(seed, 0, "forward", batch)
    v = to_numpy(io_stage.prepare_input(xp, xp.asarray(x), xp.asarray(scales), io, draws, 0,
                                        xp.arange(batch, dtype=xp.int64))).astype(np.float64)
    assert v.dtype == np.float64 and v.shape == (batch, n)
    raw = x.astype(np.float64) * np.float64(scales[0])
    rel = 1e-9 if dtype == "float64" else 2e-5
    step = adc_step(inp_res, inp_bound)
    if inp_bound > 0:
        at_bound = np.abs(np.abs(v) - inp_bound) <= rel * inp_bound
        assert np.all(np.abs(v) <= inp_bound * (1 + rel))
    else:
        at_bound = np.zeros(v.shape, dtype=bool)
    if step > 0:
        assert np.all(on_grid(v, step, rel) | at_bound)
        inside = np.abs(raw) < inp_bound - step  # neither the level nor the raw value clipped
        limit = step if sto else step / 2
        assert np.all(np.abs(v - raw)[inside] <= limit * (1 + 1e-4) + rel * np.abs(raw[inside]))
    elif inp_bound > 0:
        np.testing.assert_allclose(v, np.clip(raw, -inp_bound, inp_bound), rtol=rel, atol=0)
    else:
        np.testing.assert_allclose(v, raw, rtol=rel, atol=0)


def test_dac_rounds_half_to_even():
    xp = array_api_compat.numpy
    io = IOParameters(**NM_OFF, inp_res=0.125, inp_bound=1.0)  # step 0.25
    x = np.array([[0.125, 0.375, -0.125, -0.375, 0.625, 0.875]])  # exact half steps
    draws = io_stage.Draws(0, 0, "forward", 1)
    v = to_numpy(io_stage.prepare_input(xp, xp.asarray(x), xp.asarray([1.0]), io, draws, 0,
                                        xp.arange(1, dtype=xp.int64)))
    k = v / 0.25
    np.testing.assert_array_equal(k, [[0, 2, 0, -2, 2, 4]])


def test_stochastic_rounding_is_unbiased():
    """DAC and ADC stochastic rounding: the mean of many quantized copies of one value is that
    value (within 5 standard errors); deterministic rounding is biased there."""
    xp = array_api_compat.numpy
    batch = 20000
    value = 0.3 * DEFAULT_INP_STEP + 5 * DEFAULT_INP_STEP
    io = IOParameters(**NM_OFF, inp_sto_round=True)
    draws = io_stage.Draws(11, 0, "forward", batch)
    v = to_numpy(io_stage.prepare_input(xp, xp.full((batch, 1), value), xp.ones(batch), io,
                                        draws, 0, xp.arange(batch, dtype=xp.int64)))
    se = DEFAULT_INP_STEP * 0.5 / math.sqrt(batch)
    assert abs(v.mean() - value) < 5 * se
    assert set(np.rint(v.ravel() / DEFAULT_INP_STEP).astype(int)) == {5, 6}
    # ADC: one weight 1, input on the DAC grid, NM None, out_noise 0
    x_level = 40 / 63
    tile = make_tile(np.ones((1, 1)), dict(NF, **NM_OFF, **BM_OFF, out_res=0.05, out_bound=1.0,
                                           out_sto_round=True), seed=3)
    y = run(tile, np.full((batch, 1), x_level))
    assert abs(y.mean() - x_level) < 5 * 0.1 * 0.5 / math.sqrt(batch)
    det = make_tile(np.ones((1, 1)), dict(NF, **NM_OFF, **BM_OFF, out_res=0.05, out_bound=1.0))
    assert abs(run(det, np.full((2, 1), x_level)).mean() - x_level) > 0.01


# -- the zero short-cut of noise management -------------------------------------------------------

noisy_io = dict(out_noise=0.2, w_noise=0.1, w_noise_type="AdditiveConstant", out_noise_std=0.3,
                inp_sto_round=True, out_sto_round=True, v_offset_std=0.1, r_series=0.05,
                out_nonlinearity=0.2, ir_drop=0.5, ir_drop_g_ratio=20.0)


@given(
    m=st.integers(2, 10), n=st.integers(2, 10), seed=seed_st,
    nm=st.sampled_from(["AbsMax", "Max", "AbsMaxNPSum"]),
    mv_type=st.sampled_from(["OnePass", "PosNegSeparate", "PosNegSeparateDigitalSum"]),
    zero=st.lists(st.booleans(), min_size=1, max_size=6),
)
def test_zero_rows_give_exact_zeros_under_noise_management(m, n, seed, nm, mv_type, zero):
    """Forward with inp_noise = 0 and backward (always, even with inp_noise > 0): an all-zero row
    (and, with 'Max', an all-negative row) gives exact zeros, with every noise source on."""
    gen = np.random.default_rng(seed)
    w = gen.uniform(0.5, 1.0, (m, n)) * gen.choice([-1.0, 1.0], (m, n))
    zero = np.array(zero)
    fwd = dict(noisy_io, noise_management=nm, mv_type=mv_type)
    bwd = dict(fwd, inp_noise=0.3)
    tile = make_tile(w, fwd, bwd, seed=seed)
    for direction, size in (("forward", n), ("backward", m)):
        x = gen.uniform(-1, 1, (len(zero), size))
        x[zero] = 0.0
        if nm == "Max":
            x[~zero] = np.abs(x[~zero])
            x[~zero, 0] = 0.5  # keep α > 0 for the live rows
        y = run(tile, x, direction)
        assert np.all(y[zero] == 0.0) and not np.any(np.signbit(y[zero]))  # +0.0 (§S9)
        if not np.all(zero):
            assert np.any(y[~zero] != 0.0)
        if nm == "Max":  # an all-negative row has α < 0: zero as well
            neg = -np.abs(gen.uniform(0.1, 1, (2, size)))
            assert np.all(run(tile, neg, direction) == 0.0)


def test_forward_zero_rows_are_noisy_with_input_noise():
    """Forward: the zero short-cut needs inp_noise = 0 (spec/io.md, noise_management)."""
    gen = np.random.default_rng(1)
    w = gen.uniform(0.5, 1.0, (8, 8))
    x = np.zeros((4, 8))
    tile = make_tile(w, dict(inp_noise=0.5))
    assert np.any(run(tile, x) != 0.0)
    tile = make_tile(w, backward=dict(inp_noise=0.5))
    assert np.all(run(tile, x, "backward") == 0.0)


def test_noise_management_none_does_not_zero_zero_rows():
    tile = make_tile(np.ones((8, 8)), dict(NM_OFF, out_noise=0.5))
    assert np.any(run(tile, np.zeros((4, 8))) != 0.0)


# -- bound management -----------------------------------------------------------------------------


@given(seed=seed_st, m=st.integers(1, 8), n=st.integers(8, 64), batch=st.integers(1, 4),
       negative=st.booleans(), bm=st.sampled_from(["Iterative", "IterativeWorstCase"]))
def test_bound_management_removes_saturation(seed, m, n, batch, negative, bm):
    """Rows that clip at factor 1 but fit at factor 2: after Iterative BM nothing clips and
    y ≈ α·ŷ; with BM None they stay clipped at exactly ±out_bound·α; in backward BM is ignored."""
    gen = np.random.default_rng(seed)
    sign = -1.0 if negative else 1.0
    w, x, targets, scales = clip_problem(gen, 13.0, 22.0, m=m, n=n, batch=batch, sign=sign)
    expect = scales[:, None] * targets[None, :]
    y = run(make_tile(w, {"bound_management": bm}, seed=seed), x)
    if bm == "Iterative":
        assert np.all(np.abs(y) > 12.0 * scales[:, None] * (1 + 1e-9))  # beyond one pass' range
        assert np.all(np.abs(y - expect) <= 0.6 * scales[:, None])
    else:  # one second pass with α' by the AbsMaxNPSum rule: fits, or clips at out_bound·α'
        s = np.sum(np.abs(x), axis=1)
        alpha = np.maximum(scales, np.minimum(s * 0.6 / 12, scales * 0.25 / DEFAULT_INP_STEP))
        normalised = np.abs(expect) / alpha[:, None]
        fits, clips = normalised < 11.5, normalised > 12.5
        alpha = np.broadcast_to(alpha[:, None], y.shape)
        assert np.all(np.abs(y - expect)[fits] <= 0.6 * alpha[fits])
        np.testing.assert_allclose(y[clips], sign * 12.0 * alpha[clips], rtol=1e-12)
    # the output factor is out_scale/(1/α) (spec/io.md §S7), not α
    clipped = np.broadcast_to(sign * 12.0 * (1.0 / (1.0 / scales))[:, None], expect.shape)
    y_none = run(make_tile(w, BM_OFF, seed=seed), x)
    np.testing.assert_array_equal(y_none, clipped)
    # backward ignores BM: Wᵀ-problem built the same way
    wb, db, _, sb = clip_problem(gen, 13.0, 22.0, m=n, n=m if m > 1 else 2, batch=batch, sign=sign)
    z = run(make_tile(wb.T, backward={"bound_management": bm}, seed=seed), db, "backward")
    np.testing.assert_array_equal(z, np.broadcast_to(sign * 12.0 * sb[:, None], z.shape))


def _last_factor(max_bm_factor=1000, max_bm_res=0.25, step_in=DEFAULT_INP_STEP):
    """The factor of the last pass allowed by the limits (spec/io.md, max_bm_factor/max_bm_res)."""
    f = 1
    while not (f > max_bm_factor or (step_in > 0 and f * step_in > max_bm_res)):
        f *= 2
    return f


@pytest.mark.parametrize("limits", [
    {}, {"max_bm_factor": 1}, {"max_bm_factor": 2}, {"max_bm_factor": 3}, {"max_bm_factor": 4},
    {"max_bm_factor": 7}, {"max_bm_res": 0.02}, {"max_bm_res": 0.05}, {"max_bm_res": 0.1},
    {"max_bm_res": 0.02, "max_bm_factor": 1000}, {"max_bm_factor": 2, "max_bm_res": 10.0},
])
def test_bm_limits_stop_iterations(limits):
    """Targets in [50, 90] need factor 8. max_bm_factor and max_bm_res stop the doubling after the
    first pass whose factor exceeds them; a row stopped before factor 8 stays clipped at
    out_bound·factor·α."""
    gen = np.random.default_rng(7)
    w, x, targets, scales = clip_problem(gen, 50.0, 90.0, n=64)
    last = _last_factor(limits.get("max_bm_factor", 1000), limits.get("max_bm_res", 0.25))
    y = run(make_tile(w, dict(limits)), x)
    if last >= 8:
        assert np.all(np.abs(y - scales[:, None] * targets) <= 0.6 * 8 * scales[:, None])
    else:
        np.testing.assert_array_equal(y, np.broadcast_to(12.0 * last * scales[:, None], y.shape))


def test_max_bm_res_is_inert_without_input_quantization():
    gen = np.random.default_rng(8)
    w, x, targets, scales = clip_problem(gen, 50.0, 90.0, n=64)
    cfg = dict(NF, inp_res=-1.0)
    y = run(make_tile(w, cfg), x)
    np.testing.assert_array_equal(y, run(make_tile(w, dict(cfg, max_bm_res=0.01)), x))
    assert np.all(np.abs(y - scales[:, None] * targets) <= 0.05 * 8 * scales[:, None])


@pytest.mark.parametrize("test_negative", [True, False])
def test_bm_test_negative_bound(test_negative):
    """With False only positive clipping triggers another pass: a negatively clipping row stays
    clipped, while a row that clips on both sides is still fixed (no masking; deviations.md)."""
    gen = np.random.default_rng(9)
    k = gen.integers(32, 64, 32)
    k[0] = 63
    xt = k / 63.0
    targets = np.array([-18.0, -14.0, 5.0, 2.0])
    w = target_weights(gen, targets, xt)
    x = np.array([1.0, 0.5])[:, None] * xt
    cfg = dict(NF, bm_test_negative_bound=test_negative)
    y = run(make_tile(w, cfg), x)
    if test_negative:
        assert np.all(np.abs(y - np.array([1.0, 0.5])[:, None] * targets) <= 0.3)
    else:
        np.testing.assert_array_equal(y[:, :2], np.array([[-12.0, -12.0], [-6.0, -6.0]]))
    # both signs clip (positive output at a later index than the negative one): always fixed
    both = target_weights(gen, np.array([-18.0, 2.0, 16.0]), xt)
    yb = run(make_tile(both, cfg), x)
    assert np.all(np.abs(yb - np.array([1.0, 0.5])[:, None] * [-18.0, 2.0, 16.0]) <= 0.3)


def test_iterative_worst_case_makes_at_most_two_passes():
    """IterativeWorstCase: if the first pass clips, one second pass with α by the AbsMaxNPSum
    rule, and no more: a row that still clips comes out at out_bound·α_NPSum."""
    gen = np.random.default_rng(10)
    w, x, targets, scales = clip_problem(gen, 200.0, 300.0, n=64)
    y = run(make_tile(w, dict(NF, bound_management="IterativeWorstCase")), x)
    a = abs_max(x)
    q = np.sum(x, axis=1) * 0.6 / 12.0
    alpha = np.maximum(a, np.minimum(q, a * 0.25 / DEFAULT_INP_STEP))
    assert np.all(alpha > 1.5 * a)  # the recomputed α differs from the abs-max
    np.testing.assert_allclose(y, np.broadcast_to(12.0 * alpha[:, None], y.shape), rtol=1e-12)


def test_iterative_worst_case_without_noise_management_halves_once():
    """§S7: with noise_management 'None' the second IterativeWorstCase pass divides the inputs by
    2, and there is no third pass."""
    gen = np.random.default_rng(18)
    k = gen.integers(32, 64, 64)
    k[0] = 63
    xt = k / 63.0
    for lo, hi in ((13.0, 22.0), (50.0, 90.0)):
        targets = gen.uniform(lo, hi, 6)
        w = target_weights(gen, targets, xt)
        y = run(make_tile(w, dict(NF, **NM_OFF, bound_management="IterativeWorstCase")), xt)
        if hi < 24:
            assert np.all(np.abs(y - targets) <= 0.6)
        else:
            np.testing.assert_array_equal(y, np.full(6, 24.0))


def test_iterative_worst_case_with_np_sum_halves_once():
    """§S7: with noise_management already 'AbsMaxNPSum' the second IterativeWorstCase pass keeps α
    and halves the inputs (red 2); a row that still clips comes out at out_bound·2·α."""
    gen = np.random.default_rng(20)
    w, x, _, _ = clip_problem(gen, 200.0, 300.0, n=32)
    y = run(make_tile(w, dict(NF, noise_management="AbsMaxNPSum",
                              bound_management="IterativeWorstCase")), x)
    a = abs_max(x)
    alpha = np.maximum(a, np.minimum(np.sum(x, axis=1) * 0.05, a * 0.25 / DEFAULT_INP_STEP))
    np.testing.assert_allclose(y, np.broadcast_to(24.0 * alpha[:, None], y.shape), rtol=1e-12)


def test_worst_case_recomputation_leaves_the_running_value_alone():
    """§S7: the AbsMaxNPSum recomputation of IterativeWorstCase does not update AverageAbsMax."""
    gen = np.random.default_rng(19)
    w, x, _, _ = clip_problem(gen, 13.0, 22.0, n=32, batch=4)
    tile = make_tile(w, dict(noise_management="AverageAbsMax",
                             bound_management="IterativeWorstCase"))
    run(tile, x)
    v = None
    for a in abs_max(x):
        v = a if v is None else 0.999 * v + 0.001 * a
    assert tile.state_dict()["nm_running"] == v


@given(seed=seed_st, bm=st.sampled_from(["Iterative", "IterativeWorstCase"]))
def test_bm_leaves_rows_that_do_not_clip_alone(seed, bm):
    """BM repeats only the rows that clip: the other rows equal the BM-None result (same draws of
    the first pass), with noise on."""
    gen = np.random.default_rng(seed)
    w, x, _, _ = clip_problem(gen, 13.0, 22.0, n=16, batch=3)
    small = gen.uniform(-0.1, 0.1, (3, 16))  # normalised outputs about a tenth of the targets
    small[:, 0] = 1.0
    xs = np.concatenate([x, small * 0.05], axis=0)
    order = gen.permutation(len(xs))
    xs = xs[order]
    cfg = dict(inp_noise=0.01, w_noise=0.02, w_noise_type="PCMRead")
    y_bm = run(make_tile(w, dict(cfg, bound_management=bm), seed=seed), xs)
    y_none = run(make_tile(w, dict(cfg, **BM_OFF), seed=seed), xs)
    fits = np.all(np.abs(y_none) < 12.0 * abs_max(xs)[:, None] * (1 - 1e-12), axis=1)
    assert np.sum(fits) >= 1 and np.sum(~fits) >= 1
    np.testing.assert_array_equal(y_bm[fits], y_none[fits])
    if bm == "Iterative":
        assert np.all(np.abs(y_bm[~fits]) > np.abs(y_none[~fits]))


# -- noise statistics -----------------------------------------------------------------------------

STAT_BATCH = 6000
CLEAN = dict(NM_OFF, **BM_OFF, **QUANT_OFF, out_bound=0.0, out_noise=0.0)


def _errors(io, w, x_row, direction, seed):
    tile = make_tile(w, io, io, seed=seed)
    x = np.broadcast_to(x_row, (STAT_BATCH, x_row.size))
    y = run(tile, x, direction)
    w_eff = w if direction == "forward" else w.T
    return y - x_row @ w_eff.T * io.get("out_scale", 1.0)


def _assert_std(err, sigma):
    """Per output: sample std within 5 standard errors (σ/sqrt(2N)) of σ, mean within 5σ/sqrt(N)."""
    sigma = np.broadcast_to(np.asarray(sigma, dtype=float), (err.shape[1],))
    n = err.shape[0]
    s = err.std(axis=0, ddof=1)
    assert np.all(np.abs(s / sigma - 1) < 5 / math.sqrt(2 * n)), (s, sigma)
    assert np.all(np.abs(err.mean(axis=0)) < 5 * sigma / math.sqrt(n))


NOISE_CASES = {
    "out_noise": (dict(out_noise=0.07), lambda w, x: np.full(w.shape[0], 0.07)),
    "inp_noise": (dict(inp_noise=0.05), lambda w, x: 0.05 * np.sqrt(np.sum(w**2, axis=1))),
    "w_noise_additive": (dict(w_noise=0.04, w_noise_type="AdditiveConstant"),
                         lambda w, x: np.full(w.shape[0], 0.04 * np.sqrt(np.sum(x**2)))),
    "w_noise_pcm": (dict(w_noise=0.04, w_noise_type="PCMRead"),
                    lambda w, x: 0.04 * np.sqrt(np.abs(w) @ x**2)),
}


@pytest.mark.parametrize("seed", [0, 12345, 2**32 - 1])
@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("mv_type", ["OnePass", "PosNegSeparate"])
@pytest.mark.parametrize("case", sorted(NOISE_CASES))
def test_noise_std_matches_the_formula(case, mv_type, direction, seed):
    io, sigma = NOISE_CASES[case]
    io = dict(CLEAN, **io, mv_type=mv_type)
    gen = np.random.default_rng(seed)
    w = gen.uniform(-1, 1, (6, 10))
    w_eff = w if direction == "forward" else w.T
    x_row = gen.uniform(-0.9, 0.9, w_eff.shape[1])
    _assert_std(_errors(io, w, x_row, direction, seed), sigma(w_eff, x_row))


@pytest.mark.parametrize("seed", [0, 77])
def test_out_noise_std_gives_fixed_per_output_sigmas(seed):
    """σ_i = abs(out_noise·(1 + out_noise_std·ξ_i)), ξ_i call 0 of io.forward.out_noise_std under
    the construction seed (refsim/stages/io.py draw_periphery)."""
    gen = np.random.default_rng(seed)
    w = gen.uniform(-1, 1, (12, 6))
    x_row = gen.uniform(-0.9, 0.9, 6)
    io = dict(CLEAN, out_noise=0.05, out_noise_std=0.6)
    xi = to_numpy(rng.normal(seed, "io.forward.out_noise_std", 0, (12,)))
    sigma = np.abs(0.05 * (1 + 0.6 * xi))
    assert sigma.std() > 0.01  # the outputs really differ
    _assert_std(_errors(io, w, x_row, "forward", seed), sigma)


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_noise_grows_with_alpha_and_out_scale(direction):
    """Output noise acts on the normalised output: its effect on y is out_noise·α·out_scale;
    input noise: inp_noise·α·‖W_i‖·out_scale."""
    gen = np.random.default_rng(3)
    w = gen.uniform(-1, 1, (6, 10))
    w_eff = w if direction == "forward" else w.T
    x_row = gen.uniform(-0.5, 0.5, w_eff.shape[1])
    x_row[0] = 2.5  # α = 2.5
    base = dict(CLEAN, noise_management="AbsMax", out_scale=3.0)
    err = _errors(dict(base, out_noise=0.02), w, x_row, direction, 1)
    _assert_std(err, 0.02 * 2.5 * 3.0)
    err = _errors(dict(base, inp_noise=0.01), w, x_row, direction, 2)
    _assert_std(err, 0.01 * 2.5 * 3.0 * np.sqrt(np.sum(w_eff**2, axis=1)))


# -- the perfect pass -----------------------------------------------------------------------------

PERFECT_CONFIGS = {
    "is_perfect": lambda s: make_config(dict(is_perfect=True, out_scale=s, out_noise=0.5,
                                             inp_noise=0.5, out_res=0.3, out_bound=0.1,
                                             mv_type="SplitMode", inp_bound=3.0),
                                        dict(is_perfect=True, out_scale=s, w_noise=0.3,
                                             w_noise_type="PCMRead", bound_management="Shift")),
    "Ideal": lambda s: make_config(dict(mv_type="Ideal", out_scale=s, out_noise=0.5, ir_drop=2.0),
                                   dict(mv_type="Ideal", out_scale=s, inp_res=0.4)),
    "FloatingPoint": lambda s: FloatingPointRPUConfig(),
}


@given(m=st.integers(1, 16), n=st.integers(1, 16), batch=st.integers(1, 5), seed=seed_st,
       kind=st.sampled_from(sorted(PERFECT_CONFIGS)),
       out_scale=st.sampled_from([1.0, 2.5, -0.3]), magnitude=st.sampled_from([1e-3, 1.0, 50.0]))
def test_perfect_pass_is_exact(m, n, batch, seed, kind, out_scale, magnitude):
    gen = np.random.default_rng(seed)
    w = gen.uniform(-1, 1, (m, n))
    s = 1.0 if kind == "FloatingPoint" else out_scale
    tile = make_tile(w, rpu_config=PERFECT_CONFIGS[kind](out_scale), seed=seed)
    x = magnitude * gen.uniform(-1, 1, (batch, n))
    d = magnitude * gen.uniform(-1, 1, (batch, m))
    for _ in range(2):  # and no state: the second call is the same
        np.testing.assert_array_equal(run(tile, x), (x @ w.T) * s)
        np.testing.assert_array_equal(run(tile, d, "backward"), (d @ w) * s)


def test_inference_config_backward_is_perfect():
    gen = np.random.default_rng(4)
    w = gen.uniform(-1, 1, (5, 7))
    d = gen.uniform(-3, 3, (4, 5))
    tile = make_tile(w, rpu_config=InferenceRPUConfig())
    np.testing.assert_array_equal(run(tile, d, "backward"), d @ w)


def test_perfect_pass_on_every_namespace(xp):
    gen = np.random.default_rng(6)
    w = gen.uniform(-1, 1, (5, 7))
    x = gen.uniform(-1, 1, (3, 7))
    tile = make_tile(w, rpu_config=PERFECT_CONFIGS["Ideal"](2.0), xp=xp)
    ns = array_api_compat.array_namespace(xp.asarray([1.0]))
    expect = to_numpy((xp.asarray(x) @ ns.matrix_transpose(xp.asarray(w))) * 2.0)
    np.testing.assert_array_equal(run(tile, x, xp=xp), expect)


# -- formulas of the noise-free pass (spec/io.md field tables) ------------------------------------

#: no quantization, noise, clipping or BM: the pass is a plain function of W and x
EXACT = dict(QUANT_OFF, **BM_OFF, out_noise=0.0, out_bound=1000.0)


def _alpha(x, nm, theta=0.0):
    a = abs_max(x)
    if nm == "None":
        return np.ones(len(x))
    if nm == "Constant":
        return np.full(len(x), theta if theta > 0 else 1.0)
    alpha = np.max(x, axis=1) if nm == "Max" else a
    if theta > 0:
        alpha = np.minimum(alpha, theta)
    if nm == "AbsMaxNPSum":  # out_bound <= 0 counts as 1; no DAC quantization, so no cap
        q = np.maximum(np.sum(np.clip(x, 0, None), 1), -np.sum(np.clip(x, None, 0), 1)) * 0.6
        alpha = np.maximum(alpha, q)  # θ limits only the abs-max part (§S3)
    return alpha


@given(seed=seed_st, nm=st.sampled_from(["None", "AbsMax", "Max", "Constant", "AbsMaxNPSum"]),
       theta=st.sampled_from([0.0, 0.3, 2.0]), direction=st.sampled_from(["forward", "backward"]),
       out_scale=st.sampled_from([1.0, -0.5]))
def test_noise_management_scales_and_clips_inputs(seed, nm, theta, direction, out_scale):
    """y = out_scale·α·W·clip(x/α, ±1) per row, α by the noise_management rule of §S3 (exact
    zeros for α <= 0); out_bound 0: no clipping, and B_o = 1 in the AbsMaxNPSum rule."""
    gen = np.random.default_rng(seed)
    w = gen.uniform(-1, 1, (5, 9))
    w_eff = w if direction == "forward" else w.T
    x = 2 * gen.uniform(-1, 1, (6, w_eff.shape[1]))
    x[1] = -np.abs(x[1])  # α < 0 under 'Max'
    x[2] = 0.0
    x[3, 0] = 40.0  # one large input: AbsMaxNPSum gives the abs-max
    x[4] = np.abs(x[4]) * 3  # same-sign inputs: AbsMaxNPSum gives q = 0.6·P > abs-max
    io = dict(EXACT, out_bound=0.0, noise_management=nm, nm_thres=theta, out_scale=out_scale)
    y = run(make_tile(w, io, io, seed=seed), x, direction)
    alpha = _alpha(x, nm, theta)
    if nm == "AbsMaxNPSum" and theta == 0:  # both branches of max(a, q) are exercised
        assert alpha[4] > abs_max(x)[4] and alpha[3] == abs_max(x)[3]
    live = alpha > 0
    expect = np.zeros_like(y)
    a = alpha[live][:, None]
    expect[live] = out_scale * a * (np.clip(x[live] / a, -1, 1) @ w_eff.T)
    np.testing.assert_allclose(y, expect, rtol=1e-12, atol=1e-12 * np.max(np.abs(expect)))


def test_average_abs_max_runs_over_rows_and_both_directions():
    """AverageAbsMax: v = abs-max of the first row, then v ← 0.999·v + 0.001·abs-max on every row,
    one running value for forward and backward, kept in the tile state."""
    gen = np.random.default_rng(12)
    w = gen.uniform(-1, 1, (4, 6))
    io = dict(EXACT, noise_management="AverageAbsMax")
    tile = make_tile(w, io, io)
    v = None
    for direction, size in (("forward", 6), ("backward", 4), ("forward", 6)):
        x = gen.uniform(-1, 1, (5, size)) * gen.uniform(0.1, 3, (5, 1))
        alphas = []
        for a in abs_max(x):
            v = a if v is None else 0.999 * v + 0.001 * a
            alphas.append(v)
        alpha = np.array(alphas)[:, None]
        w_eff = w if direction == "forward" else w.T
        y = run(tile, x, direction)
        np.testing.assert_allclose(y, alpha * (np.clip(x / alpha, -1, 1) @ w_eff.T), rtol=1e-12,
                                   atol=1e-14)
        assert tile.state_dict()["nm_running"] == pytest.approx(v, rel=1e-15)


def test_ir_drop_formula():
    """a_i = (n/g)·Σ_j |W_ij||x_j|, π = 0.05a³ − 0.2a² + 0.5a, y_i −= ir_drop·π_i·Σ_j W_ij·x_j·
    (1 − ((j+1)/n)²): input 0 has the largest position factor, the last input none."""
    gen = np.random.default_rng(13)
    w = gen.uniform(-1, 1, (5, 10))
    x = gen.uniform(-1, 1, (4, 10))
    n = 10
    io = dict(EXACT, **NM_OFF, ir_drop=0.7, ir_drop_g_ratio=25.0)
    y = run(make_tile(w, io), x)
    a = (n / 25.0) * (np.abs(x) @ np.abs(w).T)
    pi = 0.05 * a**3 - 0.2 * a**2 + 0.5 * a
    position = 1 - (np.arange(1, n + 1) / n) ** 2
    np.testing.assert_allclose(y, x @ w.T - 0.7 * pi * ((x * position) @ w.T), rtol=1e-12,
                               atol=1e-13)
    last = np.zeros((1, n))
    last[0, -1] = 0.9
    np.testing.assert_allclose(run(make_tile(w, io), last), last @ w.T, rtol=1e-14, atol=0)


@pytest.mark.parametrize("w_min", [-1.0, 0.0, 0.4])
@pytest.mark.parametrize("slope", [0.0, 0.3])
def test_series_resistance_and_slope_calibration_formula(w_min, slope):
    """r_series ρ (v_offset_std 0, so v = 0): with a reference R = −w_min·Σx̃,
    y = (z+R)/(1+ρ|z+R|) − R/(1+ρ|R|), without (w_min 0) y = z/(1+ρ|z|); then the
    nonlinearity stage with ν = 0 multiplies by F = (1 + ρ·slope_calibration·out_bound)²."""
    gen = np.random.default_rng(14)
    w = gen.uniform(-1, 1, (5, 8))
    x = gen.uniform(-1, 1, (4, 8))
    rho = 0.05
    io = dict(EXACT, **NM_OFF, r_series=rho, v_offset_w_min=w_min, slope_calibration=slope)
    y = run(make_tile(w, io), x)
    z = x @ w.T
    if w_min == 0.0:
        expect = z / (1 + rho * np.abs(z))
    else:
        ref = -w_min * np.sum(x, axis=1, keepdims=True)
        expect = (z + ref) / (1 + rho * np.abs(z + ref)) - ref / (1 + rho * np.abs(ref))
    factor = (1 + rho * slope * 1000.0) ** 2 if slope > 0 else 1.0
    np.testing.assert_allclose(y, factor * expect, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("std", [0.0, 0.4])
@pytest.mark.parametrize("slope", [0.0, 0.5])
def test_output_nonlinearity_formula(std, slope):
    """ν_i = |out_nonlinearity/out_bound·(1 + std·ξ_i)| (ξ_i call 0 of io.forward.out_nonlinearity
    under the construction seed), y = F·z/(1 + |ν_i z|), F = (1 + mean ν·slope·out_bound)²."""
    gen = np.random.default_rng(15)
    w = gen.uniform(-1, 1, (6, 8))
    x = gen.uniform(-1, 1, (4, 8))
    io = dict(EXACT, **NM_OFF, out_bound=2.0, out_nonlinearity=0.8, out_nonlinearity_std=std,
              slope_calibration=slope)
    y = run(make_tile(w, io, seed=31), x)
    xi = to_numpy(rng.normal(31, "io.forward.out_nonlinearity", 0, (6,)))
    nu = np.abs(0.8 / 2.0 * (1 + std * xi))
    factor = (1 + np.mean(nu) * slope * 2.0) ** 2 if slope > 0 else 1.0
    z = x @ w.T
    expect = np.clip(factor * z / (1 + np.abs(nu * z)), -2.0, 2.0)
    np.testing.assert_allclose(y, expect, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("w_min", [-1.0, 0.0])
def test_voltage_offset_formula(w_min):
    """v_i = max(v_offset_std·ξ_i, 0) (call 0 of io.forward.v_offset); with a reference
    y = (1 − v)z − 2vR, without y = (1 − v)z."""
    gen = np.random.default_rng(16)
    w = gen.uniform(-1, 1, (8, 6))
    x = gen.uniform(-1, 1, (3, 6))
    io = dict(EXACT, **NM_OFF, v_offset_std=0.2, v_offset_w_min=w_min)
    y = run(make_tile(w, io, seed=41), x)
    v = np.maximum(0.2 * to_numpy(rng.normal(41, "io.forward.v_offset", 0, (8,))), 0.0)
    assert np.any(v > 0) and np.any(v == 0)
    ref = -w_min * np.sum(x, axis=1, keepdims=True)
    np.testing.assert_allclose(y, (1 - v) * (x @ w.T) - 2 * v * ref, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("mv_type", ["PosNegSeparate", "PosNegSeparateDigitalSum"])
def test_pos_neg_asymmetry_formula(mv_type):
    """Negative pass: inputs ·(1 − inp_asymmetry), weights ·(1 − f_ij) (f_ij = dtod·ξ_ij, call 0
    of io.forward.w_read_asymmetry), output ·(1 − out_asymmetry); plus the positive pass."""
    gen = np.random.default_rng(17)
    w = gen.uniform(-1, 1, (5, 7))
    x = gen.uniform(-1, 1, (4, 7))
    io = dict(EXACT, **NM_OFF, mv_type=mv_type, inp_asymmetry=0.2, out_asymmetry=-0.3,
              w_read_asymmetry_dtod=0.1)
    y = run(make_tile(w, io, seed=51), x)
    f = 0.1 * to_numpy(rng.normal(51, "io.forward.w_read_asymmetry", 0, (5, 7)))
    neg = (0.8 * np.clip(x, None, 0)) @ (w * (1 - f)).T * 1.3
    np.testing.assert_allclose(y, np.clip(x, 0, None) @ w.T + neg, rtol=1e-12, atol=1e-13)


def test_digital_sum_quantizes_each_pass():
    """PosNegSeparateDigitalSum: two ADC conversions (each rounded to the step and clipped to
    ±out_bound), added; PosNegSeparate: one conversion of the analog sum."""
    io = dict(NF, **NM_OFF, **BM_OFF, inp_res=-1.0, out_res=0.125, out_bound=1.0)  # step 0.25
    cases = [  # (w, x, digital sum, analog sum)
        ([[1.0, 1.0]], [[0.375, -0.125]], 0.5 + 0.0, 0.25),  # Q(.375)=.5 (1.5→2), Q(−.125)=0
        ([[2.0, 2.0]], [[0.9, -0.3]], 1.0 - 0.5, 1.0),  # 1.8 clips at 1; Q(−0.6)=−0.5; Q(1.2)→1
    ]
    for w, x, digital, analog in cases:
        y = run(make_tile(np.array(w), dict(io, mv_type="PosNegSeparateDigitalSum")), x)
        np.testing.assert_allclose(y, [[digital]], rtol=0, atol=1e-15)
        y = run(make_tile(np.array(w), dict(io, mv_type="PosNegSeparate")), x)
        np.testing.assert_allclose(y, [[analog]], rtol=0, atol=1e-15)


# -- no silent parameter --------------------------------------------------------------------------


def _kinds():
    gen = np.random.default_rng(2024)
    kinds = {}
    w = gen.uniform(-1, 1, (8, 12))
    kinds["generic"] = (w, gen.uniform(-1, 1, (6, 12)), gen.uniform(-1, 1, (6, 8)))
    kinds["large"] = (w, 3 * gen.uniform(-1, 1, (6, 12)), 3 * gen.uniform(-1, 1, (6, 8)))
    for name, sign in (("clip", 1.0), ("clip_neg", -1.0)):
        wf, x, _, _ = clip_problem(gen, 50.0, 90.0, m=8, n=64, sign=sign)
        wb, d, _, _ = clip_problem(gen, 50.0, 90.0, m=64, n=8, sign=sign)  # Wᵀ d clips
        kinds[name] = (wf, x, None)
        kinds[name + "_bwd"] = (wb.T, None, d)
    return kinds


KINDS = _kinds()


@dataclasses.dataclass(frozen=True)
class Case:
    field: str
    value: object
    base: dict
    kind: str = "generic"
    direction: str = "forward"
    reason: str = ""

    def __str__(self):
        extra = ",".join(f"{k}={v}" for k, v in self.base.items() if k != "out_noise")
        return f"{self.direction}:{self.field}={self.value}[{extra}|{self.kind}]"


PN = {"mv_type": "PosNegSeparate"}
PND = {"mv_type": "PosNegSeparateDigitalSum"}

#: changing ``field`` from its default (in ``base``) to ``value`` changes the result
ACTIVE = [
    Case("is_perfect", True, NF),
    Case("is_perfect", True, {}, direction="backward"),
    Case("mv_type", "Ideal", NF),
    Case("mv_type", "PosNegSeparate", dict(NF, ir_drop=1.0, ir_drop_g_ratio=10.0)),
    Case("mv_type", "PosNegSeparateDigitalSum", NF),
    Case("mv_type", "PosNegSeparateDigitalSum", NF, direction="backward"),
    Case("inp_bound", 0.5, dict(NF, **NM_OFF)),
    Case("inp_bound", 0.0, dict(NF, **NM_OFF), kind="large"),
    Case("inp_bound", 0.5, dict(NF, **NM_OFF), direction="backward"),
    Case("inp_noise", 0.1, NF),
    Case("inp_noise", 0.1, NF, direction="backward"),
    Case("inp_res", 1 / 14, NF),
    Case("inp_res", 20.0, NF),
    Case("inp_res", -1.0, NF),
    Case("inp_res", 1 / 14, NF, direction="backward"),
    Case("inp_sto_round", True, NF),
    Case("inp_asymmetry", 0.3, dict(NF, **PN)),
    Case("inp_asymmetry", -0.3, dict(NF, **PND)),
    Case("out_bound", 1.0, dict(NF, **BM_OFF)),
    Case("out_bound", 0.0, dict(NF, **BM_OFF), kind="clip"),
    Case("out_bound", 1.0, NF, direction="backward"),
    Case("out_noise", 0.0, {}),
    Case("out_noise", 0.0, {}, direction="backward"),
    Case("out_noise_std", 0.5, {}),
    Case("out_res", 1 / 30, NF),
    Case("out_res", 40.0, NF),
    Case("out_res", -1.0, NF),
    Case("out_sto_round", True, NF),
    Case("out_scale", 2.0, NF),
    Case("out_scale", 2.0, NF, direction="backward"),
    Case("out_asymmetry", 0.3, dict(NF, **PN)),
    Case("out_asymmetry", 0.3, dict(NF, **PND)),
    Case("bound_management", "None", NF, kind="clip"),
    Case("bound_management", "IterativeWorstCase", NF, kind="clip"),
    Case("noise_management", "None", dict(NF, **BM_OFF), kind="large"),
    Case("noise_management", "None", NF, kind="large", direction="backward"),
    Case("noise_management", "AbsMaxNPSum", dict(NF, **BM_OFF), kind="clip"),
    Case("noise_management", "Max", dict(NF, **BM_OFF)),
    Case("noise_management", "Constant", dict(NF, **BM_OFF), kind="large"),
    Case("noise_management", "AverageAbsMax", dict(NF, **BM_OFF)),
    Case("w_noise", 0.1, dict(NF, w_noise_type="AdditiveConstant")),
    Case("w_noise", 0.1, dict(NF, w_noise_type="PCMRead")),
    Case("w_noise_type", "AdditiveConstant", dict(NF, w_noise=0.1)),
    Case("w_noise_type", "PCMRead", dict(NF, w_noise=0.1)),
    Case("ir_drop", 1.0, dict(NF, ir_drop_g_ratio=10.0)),
    Case("ir_drop", 1.0, dict(NF, out_res=-1.0)),  # the default g ratio: small but present
    Case("ir_drop", 1.0, dict(NF, ir_drop_g_ratio=10.0), direction="backward"),
    Case("ir_drop_g_ratio", 10.0, dict(NF, ir_drop=1.0)),
    Case("out_nonlinearity", 0.5, NF),
    Case("out_nonlinearity_std", 0.5, dict(NF, out_nonlinearity=0.5)),
    Case("slope_calibration", 0.5, dict(NF, out_nonlinearity=0.5)),
    Case("slope_calibration", 0.5, dict(NF, r_series=0.1)),
    Case("v_offset_std", 0.1, NF),
    Case("v_offset_std", 0.1, NF, direction="backward"),
    Case("v_offset_w_min", 0.0, dict(NF, v_offset_std=0.1)),
    Case("v_offset_w_min", -0.5, dict(NF, v_offset_std=0.1)),
    Case("v_offset_w_min", 0.0, dict(NF, r_series=0.1)),
    Case("r_series", 0.1, NF),
    Case("w_read_asymmetry_dtod", 0.2, dict(NF, **PN)),
    Case("w_read_asymmetry_dtod", 0.2, dict(NF, **PND)),
    Case("max_bm_factor", 2, NF, kind="clip"),
    Case("max_bm_res", 0.03, NF, kind="clip"),
    Case("bm_test_negative_bound", False, NF, kind="clip_neg"),
    Case("nm_thres", 0.5, NF, kind="large"),
    Case("nm_thres", 2.0, dict(NF, noise_management="Constant"), kind="large"),
    Case("nm_thres", 0.5, dict(NF, noise_management="Max"), kind="large"),
]

_BM_INERT = "bound management is forward only: backward makes one pass as with 'None'"
_PERFECT_INERT = "is_perfect: every other field but out_scale is ignored"
_ONE_PASS = "inp/out asymmetry and read asymmetry act only in the pos/neg mv_types (deviations.md)"

#: documented inert: changing ``field`` to ``value`` (in ``base``) leaves the result unchanged,
#: noise and RNG draws included
INERT = [
    Case("bound_management", "None", NF, "clip_bwd", "backward", _BM_INERT),
    Case("bound_management", "IterativeWorstCase", {}, "clip_bwd", "backward", _BM_INERT),
    Case("bound_management", "Shift", {}, "clip_bwd", "backward", _BM_INERT),
    Case("max_bm_factor", 1, {}, "clip_bwd", "backward", _BM_INERT),
    Case("max_bm_res", 0.01, {}, "clip_bwd", "backward", _BM_INERT),
    Case("bm_test_negative_bound", False, {}, "clip_neg_bwd", "backward", _BM_INERT),
    Case("max_bm_factor", 1, BM_OFF, "clip", reason="BM limits need BM active"),
    Case("max_bm_res", 0.01, BM_OFF, "clip", reason="BM limits need BM active"),
    Case("bm_test_negative_bound", False, BM_OFF, "clip_neg", reason="needs BM active"),
    Case("max_bm_res", 0.01, dict(NF, inp_res=-1.0), "clip",
         reason="max_bm_res acts only with input quantization"),
    Case("inp_asymmetry", 0.3, {}, reason=_ONE_PASS),
    Case("out_asymmetry", 0.3, {}, reason=_ONE_PASS),
    Case("w_read_asymmetry_dtod", 0.2, {}, reason=_ONE_PASS),
    Case("inp_asymmetry", 0.3, {}, direction="backward", reason=_ONE_PASS),
    Case("inp_sto_round", True, {"inp_res": -1.0}, reason="input quantization off"),
    Case("inp_sto_round", True, dict(NM_OFF, inp_bound=0.0), "large",
         reason="inp_bound <= 0 turns input quantization off"),
    Case("out_sto_round", True, {"out_res": -1.0}, reason="output quantization off"),
    Case("out_sto_round", True, dict(BM_OFF, out_bound=0.0), reason="out_bound <= 0: no ADC"),
    Case("ir_drop_g_ratio", 10.0, {}, reason="only used when ir_drop > 0"),
    Case("out_nonlinearity_std", 0.5, {}, reason="no effect when out_nonlinearity is 0"),
    Case("out_nonlinearity_std", 0.5, {"r_series": 0.1},
         reason="ν_i = 0 when out_nonlinearity is 0, whatever its spread"),
    Case("slope_calibration", 0.5, {}, reason="the nonlinearity stage is off"),
    Case("v_offset_w_min", 0.0, {}, reason="only with v_offset_std > 0 or r_series > 0"),
    Case("w_noise", 0.1, {}, reason="w_noise_type 'None' ignores w_noise"),
    Case("w_noise_type", "PCMRead", {}, reason="w_noise 0 disables weight noise"),
    Case("w_noise_type", "AdditiveConstant", {}, direction="backward",
         reason="w_noise 0 disables weight noise"),
    Case("out_noise_std", 0.5, NF, reason="out_noise 0 disables output noise"),
    Case("nm_thres", 0.5, NM_OFF, "large", reason="ignored by noise_management 'None'"),
    Case("nm_thres", 0.5, {"noise_management": "AverageAbsMax"}, "large",
         reason="ignored by 'AverageAbsMax'"),
    Case("out_noise", 0.5, {"is_perfect": True}, reason=_PERFECT_INERT),
    Case("inp_noise", 0.5, {"is_perfect": True}, reason=_PERFECT_INERT),
    Case("inp_res", 0.3, {"is_perfect": True}, reason=_PERFECT_INERT),
    Case("out_res", 0.3, {"is_perfect": True}, reason=_PERFECT_INERT),
    Case("out_bound", 0.5, {"is_perfect": True}, reason=_PERFECT_INERT),
    Case("inp_bound", 0.5, {"is_perfect": True}, reason=_PERFECT_INERT),
    Case("mv_type", "PosNegSeparateDigitalSum", {"is_perfect": True}, reason=_PERFECT_INERT),
    Case("noise_management", "Max", {"is_perfect": True}, reason=_PERFECT_INERT),
    Case("bound_management", "None", {"is_perfect": True}, "clip", reason=_PERFECT_INERT),
    Case("ir_drop", 2.0, {"is_perfect": True}, reason=_PERFECT_INERT),
    Case("v_offset_std", 0.2, {"is_perfect": True}, reason=_PERFECT_INERT),
    Case("out_noise", 0.5, {"mv_type": "Ideal"}, reason="mv_type 'Ideal' is is_perfect"),
    Case("out_nonlinearity", 0.5, {"mv_type": "Ideal"}, reason="mv_type 'Ideal' is is_perfect"),
]


def _case_outputs(case):
    w, x, d = KINDS[case.kind]
    a = d if case.direction == "backward" else x
    changed = dict(case.base, **{case.field: case.value})
    if case.direction == "forward":
        tiles = make_tile(w, case.base, seed=5), make_tile(w, changed, seed=5)
    else:
        tiles = make_tile(w, backward=case.base, seed=5), make_tile(w, backward=changed, seed=5)
    # two calls each: the second one also covers state (AverageAbsMax) and fresh draws
    return [np.concatenate([run(t, a, case.direction), run(t, a, case.direction)]) for t in tiles]


def test_every_field_has_an_active_case():
    fields = {f.name for f in dataclasses.fields(IOParameters)}
    assert fields == {c.field for c in ACTIVE}
    for c in ACTIVE + INERT:  # the value really differs from the default
        assert getattr(IOParameters(**c.base, **{c.field: c.value}), c.field) != \
            getattr(IOParameters(**c.base), c.field) == getattr(DEFAULT, c.field), c
    assert all(c.field not in c.base for c in ACTIVE + INERT)


@pytest.mark.parametrize("case", ACTIVE, ids=str)
def test_no_silent_parameter(case):
    y0, y1 = _case_outputs(case)
    assert y0.shape == y1.shape
    scale = max(1.0, float(np.max(np.abs(y0))))
    assert np.max(np.abs(y1 - y0)) > 1e-9 * scale, f"{case.field}={case.value!r} had no effect"


@pytest.mark.parametrize("case", INERT, ids=str)
def test_documented_inert_fields(case):
    assert case.reason
    y0, y1 = _case_outputs(case)
    np.testing.assert_array_equal(y0, y1)


def test_forward_and_backward_configs_are_separate():
    """backward uses rpu_config.backward only, forward rpu_config.forward only."""
    w, x, d = KINDS["generic"]
    base = make_tile(w, NF, NF)
    other = make_tile(w, NF, dict(NF, out_scale=3.0, inp_res=0.1))
    np.testing.assert_array_equal(run(base, x), run(other, x))
    other = make_tile(w, dict(NF, out_scale=3.0, inp_res=0.1), NF)
    np.testing.assert_array_equal(run(base, d, "backward"), run(other, d, "backward"))


# -- reproducibility and state --------------------------------------------------------------------

RICH = {
    "default": ({}, {}),
    "posneg": (dict(PND, inp_sto_round=True, out_sto_round=True, w_read_asymmetry_dtod=0.1,
                    inp_asymmetry=0.1, out_asymmetry=-0.1, inp_noise=0.02),
               dict(PN, w_noise=0.05, w_noise_type="PCMRead")),
    "periphery": (dict(out_noise_std=0.3, out_nonlinearity=0.2, out_nonlinearity_std=0.3,
                       slope_calibration=0.3, v_offset_std=0.05, r_series=0.02, ir_drop=0.5,
                       ir_drop_g_ratio=30.0),
                  dict(v_offset_std=0.05, out_noise_std=0.5, inp_noise=0.01)),
    "average_abs_max": (dict(noise_management="AverageAbsMax", w_noise=0.02,
                             w_noise_type="AdditiveConstant"),
                        dict(noise_management="AverageAbsMax")),
    "worst_case": (dict(bound_management="IterativeWorstCase", noise_management="AbsMaxNPSum"),
                   dict(noise_management="Max")),
}


def _rich_tile(name, w, seed, xp=None, dtype="float64"):
    fwd, bwd = RICH[name]
    return make_tile(w, fwd, bwd, seed=seed, xp=xp, dtype=dtype)


def _problem(seed, m=6, n=9, batch=5):
    gen = np.random.default_rng(seed)
    w = gen.uniform(-1, 1, (m, n))
    x = 3 * gen.uniform(-1, 1, (batch, n))
    x[0] *= 20  # a clipping row for BM
    d = gen.uniform(-1, 1, (batch, m))
    return w, x, d


def _sequence(tile, x, d, calls):
    out = []
    for direction in calls:
        out.append(run(tile, x if direction == "forward" else d, direction))
    return out


@given(seed=seed_st, name=st.sampled_from(sorted(RICH)),
       calls=st.lists(st.sampled_from(["forward", "backward"]), min_size=1, max_size=4))
def test_same_seed_same_numbers(seed, name, calls):
    w, x, d = _problem(seed)
    a = _sequence(_rich_tile(name, w, seed), x, d, calls)
    b = _sequence(_rich_tile(name, w, seed), x, d, calls)
    for ya, yb in zip(a, b):
        np.testing.assert_array_equal(ya, yb)


@given(seed=seed_st, name=st.sampled_from(sorted(RICH)),
       direction=st.sampled_from(["forward", "backward"]))
def test_different_seed_and_successive_calls_draw_fresh_noise(seed, name, direction):
    w, x, d = _problem(seed)
    a = x if direction == "forward" else d
    tile = _rich_tile(name, w, seed)
    first, second = run(tile, a, direction), run(tile, a, direction)
    assert not np.array_equal(first, second)
    other = run(_rich_tile(name, w, (seed + 1) % 2**32), a, direction)
    assert not np.array_equal(first, other)


@given(seed=seed_st)
def test_forward_and_backward_draw_from_separate_streams(seed):
    """A backward call in between does not shift the forward numbers (spec/rng.md §5)."""
    w, x, d = _problem(seed)
    a = _sequence(_rich_tile("posneg", w, seed), x, d, ["forward", "forward"])
    b = _sequence(_rich_tile("posneg", w, seed), x, d, ["forward", "backward", "forward"])
    np.testing.assert_array_equal(a[1], b[2])


def test_one_d_input_is_row_zero_of_a_batch():
    w, x, d = _problem(3)
    for direction, a in (("forward", x[1]), ("backward", d[1])):
        y1 = run(_rich_tile("posneg", w, 3), a, direction)
        y2 = run(_rich_tile("posneg", w, 3), a[None, :], direction)
        assert y1.shape == y2.shape[1:]
        np.testing.assert_array_equal(y1, y2[0])


@given(seed=seed_st, name=st.sampled_from(sorted(RICH)),
       before=st.lists(st.sampled_from(["forward", "backward"]), max_size=3),
       after=st.lists(st.sampled_from(["forward", "backward"]), min_size=1, max_size=3))
def test_state_dict_restore_continues_the_same_numbers(seed, name, before, after):
    w, x, d = _problem(seed)
    tile = _rich_tile(name, w, seed)
    _sequence(tile, x, d, before)
    state = tile.state_dict()
    expected = _sequence(tile, x, d, after)
    fresh = _rich_tile(name, np.zeros_like(w), seed)  # weights come from the state
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(to_numpy(fresh.get_weights()), w)
    for ya, yb in zip(expected, _sequence(fresh, x, d, after)):
        np.testing.assert_array_equal(ya, yb)
    # the state is a snapshot: running the original tile did not change it
    again = _rich_tile(name, w, seed)
    again.load_state_dict(state)
    for ya, yb in zip(expected, _sequence(again, x, d, after)):
        np.testing.assert_array_equal(ya, yb)


@pytest.mark.parametrize("name", ["default", "periphery"])
def test_state_restore_into_a_tile_built_with_another_seed(name):
    """AnalogTile.load_state_dict: a state loads into a tile of the same config built with
    another seed, which takes over the saved construction seed (the periphery variation is
    redrawn from it) and the random state, and continues exactly as the saved tile does."""
    w, x, d = _problem(1)
    tile = _rich_tile(name, w, 1)
    run(tile, x)
    state = tile.state_dict()
    expected = _sequence(tile, x, d, ["forward", "backward"])
    other = _rich_tile(name, w, 2)
    assert other.construction_seed != state["construction_seed"]
    unrestored = _sequence(_rich_tile(name, w, 2), x, d, ["forward", "forward"])[1]
    assert not np.array_equal(unrestored, expected[0])  # the seed does matter
    other.load_state_dict(state)  # must succeed (no ValueError)
    assert other.construction_seed == state["construction_seed"]
    for ya, yb in zip(expected, _sequence(other, x, d, ["forward", "backward"])):
        np.testing.assert_array_equal(ya, yb)


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_empty_batch_advances_the_counter_only(direction):
    """§S9: B = 0 gives shape (0, m), draws nothing, leaves the AverageAbsMax running value, and
    the call counter still advances (§S8)."""
    w, x, d = _problem(6)
    a = x if direction == "forward" else d
    out = w.shape[0] if direction == "forward" else w.shape[1]
    t1, t2 = _rich_tile("posneg", w, 6), _rich_tile("posneg", w, 6)
    y1 = [run(t1, a, direction), run(t1, a[:0], direction), run(t1, a, direction)]
    y2 = [run(t2, a, direction), run(t2, a, direction), run(t2, a, direction)]
    assert y1[1].shape == (0, out)
    np.testing.assert_array_equal(y1[2], y2[2])
    assert t1.state_dict()["rng"] == t2.state_dict()["rng"]
    tile = _rich_tile("average_abs_max", w, 6)
    run(tile, a, direction)
    before = tile.state_dict()["nm_running"]
    run(tile, a[:0], direction)
    assert tile.state_dict()["nm_running"] == before


def test_outputs_are_new_arrays_and_inputs_are_not_modified(xp):
    """§S9: outputs are new arrays; the inputs and the weights are not modified; set_weights and
    get_weights copy."""
    gen = np.random.default_rng(7)
    w = gen.uniform(-1, 1, (4, 5))
    w_in = xp.asarray(w.copy())
    tile = AnalogTile(4, 5, make_config({"is_perfect": True}, {"is_perfect": True}), xp=xp,
                      backend="reference")
    tile.set_weights(w_in)
    w_in[0, 0] = 99.0  # the tile kept a copy
    np.testing.assert_array_equal(to_numpy(tile.get_weights()), w)
    got = tile.get_weights()
    got[0, 1] = 99.0
    np.testing.assert_array_equal(to_numpy(tile.get_weights()), w)
    x = xp.asarray(gen.uniform(-1, 1, (3, 5)))
    x_copy = to_numpy(x).copy()
    for a, direction in ((x, "forward"), (xp.asarray(gen.uniform(-1, 1, (2, 4))), "backward")):
        before = to_numpy(a).copy()
        y = getattr(tile, direction)(a)
        np.testing.assert_array_equal(to_numpy(a), before)
        y[0, 0] = 123.0  # writing to the output touches neither input nor weights
        np.testing.assert_array_equal(to_numpy(a), before)
    np.testing.assert_array_equal(to_numpy(x), x_copy)
    np.testing.assert_array_equal(to_numpy(tile.get_weights()), w)


# -- agreement across namespaces (spec/agreement.md) ----------------------------------------------

CONTINUOUS = dict(QUANT_OFF, out_bound=0.0, **BM_OFF, noise_management="AbsMaxNPSum",
                  out_noise=0.05, out_noise_std=0.3, inp_noise=0.02, w_noise=0.03,
                  w_noise_type="PCMRead", ir_drop=0.5, ir_drop_g_ratio=30.0,
                  out_nonlinearity=0.3, out_nonlinearity_std=0.2, slope_calibration=0.2,
                  v_offset_std=0.05, r_series=0.03)
AGREE = {
    "default": ({}, {}),
    "continuous": (CONTINUOUS, dict(CONTINUOUS, **PN, noise_management="AbsMax")),
    "posneg": RICH["posneg"],
    "periphery": RICH["periphery"],
}


def _row_scale(b):
    """s_b = max_j abs(y_bj) of the expected output, per row (agreement.md §3)."""
    return np.max(np.abs(b), axis=-1, keepdims=True)


def _assert_quantized_agreement(a, b, unit):
    """abs(Δ) <= 1e-12·s_b, except at a few boundary flips of exactly one ADC step (times a BM
    factor 2^k, k <= 4: one step of a later pass)."""
    diff = np.abs(a - b)
    bad = diff > 1e-12 * _row_scale(b)
    assert np.sum(bad) <= max(1, bad.size // 50), f"{np.sum(bad)} of {bad.size} differ"
    if np.any(bad):
        k = diff[bad] / np.broadcast_to(unit, diff.shape)[bad]
        assert np.all(np.min(np.abs(k[:, None] - [1, 2, 4, 8, 16]), axis=1) <= 1e-9 * k), k


@pytest.mark.parametrize("xp", OTHER_NAMESPACES)
@pytest.mark.parametrize("name", sorted(AGREE))
def test_namespaces_agree(xp, name):
    fwd, bwd = AGREE[name]
    gen = np.random.default_rng(21)
    w = gen.uniform(-1, 1, (12, 16))
    x = 2 * gen.uniform(-1, 1, (8, 16))
    x[0] *= 10
    d = gen.uniform(-1, 1, (8, 12))
    calls = ["forward", "backward", "forward", "backward"]
    ref = _sequence(make_tile(w, fwd, bwd, seed=17), x, d, calls)
    tile = make_tile(w, fwd, bwd, seed=17, xp=xp)
    got = [run(tile, x if c == "forward" else d, c, xp=xp) for c in calls]
    for c, ya, yb in zip(calls, got, ref):
        assert ya.shape == yb.shape and ya.dtype == np.float64
        if name == "continuous":
            assert np.all(np.abs(ya - yb) <= 1e-12 * _row_scale(yb))
        else:
            a_in = x if c == "forward" else d
            io = IOParameters(**(fwd if c == "forward" else bwd))
            alpha = abs_max(a_in)[:, None] if io.noise_management.value != "None" else 1.0
            _assert_quantized_agreement(ya, yb, DEFAULT_OUT_STEP * alpha * abs(io.out_scale))


# -- dtypes, shapes and namespaces of the outputs -------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_outputs_keep_dtype_namespace_and_rank(xp, dtype):
    gen = np.random.default_rng(2)
    w = gen.uniform(-1, 1, (5, 7))
    tile = make_tile(w, RICH["posneg"][0], seed=4, xp=xp, dtype=dtype)
    want = getattr(xp, dtype)
    assert tile.get_weights().dtype == want
    ns_name = array_api_compat.array_namespace(xp.asarray([1.0])).__name__
    for direction, size, out in (("forward", 7, 5), ("backward", 5, 7)):
        for shape, out_shape in (((size,), (out,)), ((3, size), (3, out)), ((0, size), (0, out))):
            a = xp.asarray(gen.uniform(-1, 1, shape), dtype=want)
            y = getattr(tile, direction)(a)
            assert array_api_compat.array_namespace(y).__name__ == ns_name
            assert y.dtype == want
            assert tuple(y.shape) == out_shape


def test_output_dtype_follows_the_input(xp):
    """agreement.md rule 6: outputs are in the dtype of the inputs."""
    w = np.random.default_rng(0).uniform(-1, 1, (4, 3))
    t32 = make_tile(w, xp=xp, dtype="float32")
    assert t32.forward(xp.ones((2, 3), dtype=xp.float64)).dtype == xp.float64
    t64 = make_tile(w, xp=xp, dtype="float64")
    assert t64.backward(xp.ones((4,), dtype=xp.float32)).dtype == xp.float32


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_float32_agrees_with_float64(direction):
    """Without quantization the float32 pass is the float64 one within float32 accuracy (the
    random numbers are the same values, cast)."""
    gen = np.random.default_rng(8)
    w = gen.uniform(-1, 1, (10, 12)).astype(np.float32).astype(np.float64)
    a = gen.uniform(-1, 1, (6, 12 if direction == "forward" else 10))
    a = a.astype(np.float32).astype(np.float64)
    y64 = run(make_tile(w, CONTINUOUS, CONTINUOUS, seed=9), a, direction)
    y32 = run(make_tile(w, CONTINUOUS, CONTINUOUS, seed=9, dtype="float32"), a, direction,
              dtype="float32")
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5 * np.max(np.abs(y64)))


# -- the diagonal product (the drift-compensation readout) ----------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, m", [(2, 3), (7, 5), (64, 130)])
def test_a_diagonal_product_has_the_gemm_numbers(dtype, n, m):
    """A diagonal input is multiplied row by row; the numbers are the GEMM's bit for bit,
    signs of zeros included (spec/io.md §S5): diagonal entries of both signs, zeros on the
    diagonal and in the weights, -0.0 among them."""
    g = np.random.default_rng(n * m)
    diag = g.standard_normal(n).astype(dtype)
    diag[::3] = 0.0
    diag[1::5] = -diag[1::5]
    w = g.standard_normal((m, n)).astype(dtype)
    w[g.random((m, n)) < 0.2] = 0.0
    w[0, :] = -0.0
    a = np.diag(diag)
    with io_stage.one_blas_thread:
        gemm = a @ w.T
    got = io_stage.matmul(a, w.T)
    assert got.dtype == gemm.dtype and got.shape == gemm.shape
    assert got.tobytes() == gemm.tobytes()
    assert io_stage._diagonal_of(a) is not None  # the row-by-row path ran


def test_only_diagonal_finite_products_take_the_row_path():
    a = np.eye(4)
    assert io_stage._diagonal_of(a) is not None
    off = a.copy()
    off[0, 3] = 1e-30
    assert io_stage._diagonal_of(off) is None
    assert io_stage._diagonal_of(np.eye(4)[:3]) is None  # not square
    assert io_stage._diagonal_of(np.eye(4, dtype=np.int64)) is None
    w = np.ones((4, 4))
    w[2, 1] = np.inf  # 0·inf is NaN in the GEMM: the GEMM decides
    np.testing.assert_array_equal(io_stage.product(a, w), a @ w)


@pytest.mark.parametrize("backend", ["reference", "fast"])
def test_the_drift_readout_equals_a_gemm_forward(backend, monkeypatch):
    """The compensation readout (a forward pass of eye(n), spec/inference.md §I4) gives the same
    α whether its products take the diagonal path or a GEMM."""
    if backend == "fast":
        pytest.importorskip("refsim_fast")
    w = (rng.uniform(3, "test.a", 0, (24, 16)) - 0.5).astype(np.float32)

    def run():
        tile = AnalogTile(24, 16, InferenceRPUConfig(), seed=5, dtype=np.float32,
                          backend=backend)
        tile.set_weights(w)
        tile.program_weights()
        tile.drift_weights(3600.0)
        return tile.drift_compensation_factor, to_numpy(tile.get_weights())

    original, taken = io_stage._diagonal_of, []

    def counting(a):
        found = original(a)
        taken.append(found is not None)
        return found

    monkeypatch.setattr(io_stage, "_diagonal_of", counting)
    fast_path = run()
    assert sum(taken) >= 2  # the baseline and the drift readout took the row path
    monkeypatch.setattr(io_stage, "_diagonal_of", lambda a: None)
    gemm_path = run()
    assert fast_path[0] == gemm_path[0]
    np.testing.assert_array_equal(fast_path[1], gemm_path[1])


# -- products in row blocks (spec/agreement.md rule 5) ---------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [1, 128, 129, 300])
def test_products_are_formed_in_fixed_row_blocks(dtype, rows):
    """A product of more than PRODUCT_ROWS rows is the row blocks' products, bit for bit, in
    the reference and in the fast backend's parallel blocks for any thread count."""
    g = np.random.default_rng(rows)
    a = g.standard_normal((rows, 97)).astype(dtype)
    b = g.standard_normal((97, 61)).astype(dtype)
    size = io_stage.PRODUCT_ROWS
    with io_stage.one_blas_thread:
        want = np.concatenate([a[i:i + size] @ b for i in range(0, rows, size)])
    got = io_stage.matmul(a, b)
    assert got.tobytes() == want.tobytes()
    fast_io = pytest.importorskip("refsim_fast.io")
    for threads in (1, 2, 3):
        old = fast_io.num_threads
        fast_io.num_threads = threads
        try:
            with io_stage.one_blas_thread:
                parallel = io_stage.product(a, b, fast_io._parallel)
        finally:
            fast_io.num_threads = old
        assert parallel.tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_large_batch_forward_is_the_same_on_both_backends(dtype):
    """Batch 300 (three row blocks) through the full default IO pipeline: the fast backend's
    parallel blocks give the reference's numbers."""
    pytest.importorskip("refsim_fast")
    w = (rng.uniform(2, "test.a", 0, (40, 70)) - 0.5).astype(dtype)
    x = (rng.uniform(2, "test.b", 0, (300, 70)) * 2 - 1).astype(dtype)
    outs = []
    for backend in ("reference", "fast"):
        tile = AnalogTile(40, 70, InferenceRPUConfig(), seed=9, dtype=dtype, backend=backend)
        tile.set_weights(w)
        outs.append((to_numpy(tile.forward(x)), to_numpy(tile.backward(x[:, :40]))))
    for a, b in zip(*outs):
        assert a.tobytes() == b.tobytes()


def test_parallel_products_work_in_a_forked_child():
    """The fast backend's product threads are started again in a child made by fork."""
    fast_io = pytest.importorskip("refsim_fast.io")
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    a = np.random.default_rng(1).standard_normal((300, 20))
    with io_stage.one_blas_thread:
        want = io_stage.product(a, a.T, fast_io._parallel)  # the parent's pool exists now
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(_product_in_child, (a,)).get(timeout=60)
    assert got.tobytes() == want.tobytes()


def _product_in_child(a):
    import refsim_fast.io as fast_io

    fast_io.num_threads = 2
    with io_stage.one_blas_thread:
        return io_stage.product(a, a.T, fast_io._parallel)

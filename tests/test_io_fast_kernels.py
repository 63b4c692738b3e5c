"""Kernel-level agreement of the fast IO stage (refsim_fast.io, refsim_fast._io) with the reference
(refsim.stages.io) under spec/agreement.md.

What is compared, and how:

* The random numbers the kernels draw (their own vectorized Philox / AS241 / uniform paths) are
  bit-identical to refsim.rng's, the rounding helper to numpy.round.
* ``mvm(..., impl=refsim_fast.io)`` against ``mvm(..., impl=None)`` and ``analog_mv`` against
  ``analog_mv``, for every IOParameters field toggled, all mv_types, float32 and float64, shapes
  with 1s in them, several bound-management passes. Rule 3: float64 within 1e-12, float32 within
  1e-5, relative to the output scale (max(1, max abs(y))). Rule 4, boundary flips: an element
  outside that tolerance is accepted only when the ADC quantizes, when such elements are rare (at
  most one per thousand, and at least one allowed) and when each differs by exactly one
  quantization step (of the row's output scale; up to two in 'PosNegSeparateDigitalSum', which
  quantizes two passes); at the kernel level the unquantized reference value must in addition lie
  within the tolerance of a rounding boundary (or the outputs sit at the clipping bound). The
  fast backend runs the reference's GEMMs and row sums on identically laid-out arrays and the
  reference's element-wise operations in the same order and dtype, so on one machine the outputs
  are in practice bit-identical and no flip occurs; the flip rule covers math libraries whose
  ``log`` differs in the last bit from numpy's (tail normals, spec/agreement.md §2). The flip
  checker itself is tested on synthetic flips, near and far from a boundary.
* Thread counts 1, 2, 4 give bit-identical outputs; empty row sets, empty inputs / outputs and
  non-contiguous arrays work; bad arguments raise.
"""

import dataclasses

import json

import array_api_compat

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refsim import rng
from refsim.configs import AnalogMVType, IOParameters
from refsim.stages import io as ref

fast_io = pytest.importorskip("refsim_fast.io")
_io = pytest.importorskip("refsim_fast._io")

XP = array_api_compat.array_namespace(np.asarray(0))
RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
DTYPES = [np.float32, np.float64]

# -- the random numbers and the rounding of the kernels -------------------------------------------

# AS241's central branch is abs(v − ½) <= 0.425 with v = (2w+1)·2^-33, i.e. w in [LO, HI].
LO, HI = 0x13333333, 0xECCCCCCC


def test_central_branch_bounds_are_those_of_the_reference():
    w = np.array([LO - 1, LO, HI, HI + 1], dtype=np.int64)
    v = (w * 2 + 1).astype(np.float64) * 2.0**-33
    assert list(np.abs(v - 0.5) <= 0.425) == [False, True, True, False]


def _assert_normals_agree(got, want, words):
    """spec/agreement.md §2: central branch equal, tail branch within 1e-14."""
    words = np.asarray(words, dtype=np.int64)
    central = (words >= LO) & (words <= HI)
    np.testing.assert_array_equal(got[central], want[central])
    np.testing.assert_allclose(got[~central], want[~central], rtol=0, atol=1e-14)


def test_normals_of_words_match_reference_at_branch_edges_and_at_random():
    edges = [0, 1, 2, LO - 2, LO - 1, LO, LO + 1, 2**31 - 1, 2**31, 2**31 + 1, HI - 1, HI, HI + 1,
             HI + 2, 2**32 - 2, 2**32 - 1]
    words = np.concatenate([np.array(edges, dtype=np.uint32),
                            np.random.default_rng(0).integers(0, 2**32, 100_003, dtype=np.uint32)])
    out = np.empty(words.size)
    _io.normals_of_words(words, out)
    _assert_normals_agree(out, rng.normal_from_words(XP, words.astype(np.int64)), words)


@given(seed=st.integers(0, 2**32 - 1), stream=st.sampled_from(ref.stream_names()),
       call=st.integers(0, 2**64 - 1), start=st.integers(0, 2**40), count=st.integers(0, 700))
def test_row_draws_match_reference(seed, stream, call, start, count):
    sid = rng.stream_id(stream)
    out = np.empty(count)
    _io.normals_row(seed, sid, call, start, out)
    words = rng.random_words(seed, stream, call, start, count)
    _assert_normals_agree(out, rng.normal(seed, stream, call, count, start=start), words)
    _io.uniforms_row(seed, sid, call, start, out)
    np.testing.assert_array_equal(out, rng.uniform(seed, stream, call, count, start=start))


def _same_math_library():
    """Whether numpy's log (the reference's tail normals) equals the C library's here, so that
    every random number, and with it every output, is bit-identical between the backends."""
    words = np.random.default_rng(3).integers(0, 2**32, 200_000, dtype=np.uint32)
    out = np.empty(words.size)
    _io.normals_of_words(words, out)
    return np.array_equal(out, rng.normal_from_words(XP, words.astype(np.int64)))


SAME_LIBM = _same_math_library()
bit_identical_here = pytest.mark.skipif(
    not SAME_LIBM, reason="numpy's log differs from the C library's on this machine: tail "
    "normals may differ in the last bit (spec/agreement.md §2), outputs are compared under the "
    "tolerance rules only")


@pytest.mark.parametrize("dtype", DTYPES)
def test_rint_is_numpy_round_half_to_even(dtype):
    big = 2.0**23 if dtype == np.float32 else 2.0**52
    special = [0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49999997, -0.2, 1e-30, big - 0.5,
               big - 1.5, big, big + 1, -big - 1, 2 * big + 2, 1e30, -1e30, np.inf, -np.inf]
    ties = (np.arange(-2000, 2000) + 0.5)
    noise = np.random.default_rng(1).normal(0, 50, 10_000)
    a = np.concatenate([special, ties, noise, noise * 1e6]).astype(dtype)
    got = a.copy()
    _io.rint(got)
    want = np.round(a)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
    nan = np.array([np.nan], dtype=dtype)
    _io.rint(nan)
    assert np.isnan(nan[0])


# -- configurations --------------------------------------------------------------------------------

# Every IOParameters field toggled away from its default (alone, or with what makes it act).
TOGGLES = {
    "default": {},
    "perfect": dict(is_perfect=True),
    "ideal": dict(mv_type="Ideal"),
    "posneg": dict(mv_type="PosNegSeparate"),
    "digital_sum": dict(mv_type="PosNegSeparateDigitalSum"),
    "inp_bound_no_nm": dict(noise_management="None", inp_bound=0.7),
    "inp_bound_off": dict(noise_management="None", inp_bound=0.0),
    "inp_noise": dict(inp_noise=0.05),
    "inp_res_off": dict(inp_res=0.0),
    "inp_res_steps": dict(inp_res=40.0),
    "inp_sto_round": dict(inp_sto_round=True),
    "inp_asymmetry": dict(mv_type="PosNegSeparate", inp_asymmetry=0.2),
    "out_bound_small": dict(out_bound=1.5),
    "out_bound_off": dict(out_bound=0.0),
    "out_noise_off": dict(out_noise=0.0),
    "out_noise_std": dict(out_noise_std=0.4),
    "out_res_off": dict(out_res=0.0),
    "out_res_steps": dict(out_res=100.0),
    "out_sto_round": dict(out_sto_round=True, out_bound=3.0),
    "out_scale": dict(out_scale=2.5),
    "out_asymmetry": dict(mv_type="PosNegSeparateDigitalSum", out_asymmetry=0.15),
    "bm_none": dict(bound_management="None", out_bound=1.5),
    "bm_worst_case": dict(bound_management="IterativeWorstCase", out_bound=1.0),
    "bm_worst_case_no_nm": dict(bound_management="IterativeWorstCase", out_bound=1.0,
                                noise_management="None"),
    "nm_none": dict(noise_management="None"),
    "nm_np_sum": dict(noise_management="AbsMaxNPSum"),
    "nm_max": dict(noise_management="Max"),
    "nm_constant": dict(noise_management="Constant", nm_thres=0.8),
    "nm_average": dict(noise_management="AverageAbsMax"),
    "nm_thres": dict(nm_thres=0.5),
    "w_noise_type_none": dict(w_noise=0.03),
    "w_noise_additive": dict(w_noise=0.03, w_noise_type="AdditiveConstant"),
    "w_noise_pcm": dict(w_noise=0.03, w_noise_type="PCMRead"),
    "ir_drop": dict(ir_drop=1.0),
    "ir_drop_strong": dict(ir_drop=2.0, ir_drop_g_ratio=300.0),
    "out_nonlinearity": dict(out_nonlinearity=0.3),
    "out_nonlinearity_std": dict(out_nonlinearity=0.3, out_nonlinearity_std=0.2),
    "slope_calibration": dict(out_nonlinearity=0.3, slope_calibration=0.5),
    "v_offset": dict(v_offset_std=0.1),
    "v_offset_no_ref": dict(v_offset_std=0.1, v_offset_w_min=0.0),
    "r_series": dict(r_series=0.1),
    "r_series_no_ref": dict(r_series=0.1, v_offset_w_min=0.0),
    "r_series_offsets_slope": dict(r_series=0.1, v_offset_std=0.1, slope_calibration=0.3),
    "w_read_asymmetry": dict(mv_type="PosNegSeparate", w_read_asymmetry_dtod=0.1),
    "max_bm_factor": dict(max_bm_factor=2, out_bound=0.5),
    "max_bm_res": dict(max_bm_res=0.05, out_bound=0.5),
    "bm_positive_only": dict(bm_test_negative_bound=False, out_bound=1.5),
}

EVERYTHING = dict(inp_noise=0.02, inp_sto_round=True, inp_asymmetry=0.1, out_bound=2.0,
                  out_noise_std=0.3, out_sto_round=True, out_scale=1.5, out_asymmetry=0.1,
                  w_noise=0.02, w_noise_type="PCMRead", ir_drop=1.3, ir_drop_g_ratio=500.0,
                  out_nonlinearity=0.2, out_nonlinearity_std=0.1, slope_calibration=0.4,
                  v_offset_std=0.05, v_offset_w_min=-0.7, r_series=0.05,
                  w_read_asymmetry_dtod=0.05)
for _mv in ("OnePass", "PosNegSeparate", "PosNegSeparateDigitalSum"):
    TOGGLES[f"everything_{_mv}"] = dict(EVERYTHING, mv_type=_mv)
    TOGGLES[f"everything_additive_{_mv}"] = dict(EVERYTHING, mv_type=_mv,
                                                 w_noise_type="AdditiveConstant",
                                                 v_offset_w_min=0.0)
    # without DAC/ADC quantization every last-bit difference would show in the outputs
    TOGGLES[f"unquantized_{_mv}"] = dict(EVERYTHING, mv_type=_mv, inp_res=0.0, out_res=0.0)
    TOGGLES[f"unquantized_additive_{_mv}"] = dict(EVERYTHING, mv_type=_mv, inp_res=0.0,
                                                  out_res=0.0, w_noise_type="AdditiveConstant",
                                                  v_offset_w_min=0.0, r_series=0.0)

SHAPES = [(1, 1, 1), (5, 1, 3), (4, 6, 1), (1, 9, 7), (23, 31, 17)]


def make_io(**kwargs):
    return IOParameters(**kwargs).validate()


def make_inputs(dtype, batch, n, m, seed=0):
    g = np.random.default_rng(seed)
    x = g.uniform(-1, 1, (batch, n))
    if batch >= 3:
        x[1] = 0.0                       # α = 0: an exact zero row (without input noise)
        x[2] = -np.abs(x[2])             # all negative: α ≤ 0 under 'Max'
    w = g.uniform(-0.6, 0.6, (m, n))
    return x.astype(dtype), w.astype(dtype)


def make_periphery(io, m, n, dtype, direction="forward", seed=11):
    """As the tile does: drawn in float64, cast to the working dtype."""
    p = ref.draw_periphery(XP, io, m, n, seed, direction, np.float64)

    def cast(a):
        return None if a is None else a.astype(dtype)

    return ref.Periphery(cast(p.v_offset), cast(p.nonlinearity), cast(p.noise_std),
                         cast(p.read_asymmetry))


def make_draws(io, batch, direction="forward", seed=5, call=3):
    halves = 2 if io.mv_type in ref.POS_NEG else 1
    return ref.Draws(seed, call, direction, batch, halves)


class Recorder:
    """An ``impl`` for mvm that records each pass (rows, scale) and forwards to ``impl``."""

    def __init__(self, impl):
        self.impl = impl
        self.passes = []

    def analog_mv(self, xp, x, scale, weights, io, periphery, draws, pass_index, rows):
        self.passes.append((pass_index, np.asarray(rows).copy(), np.asarray(scale).copy()))
        return self.impl.analog_mv(xp, x, scale, weights, io, periphery, draws, pass_index, rows)

    def row_factors(self, batch):
        """The factor each output row was finally multiplied by (1/scale of its last pass)."""
        f = np.full(batch, np.nan)
        for _, rows, scale in self.passes:
            f[rows] = 1.0 / scale.astype(np.float64)
        return f


def run_mvm(io, dtype, batch, n, m, impl, *, backward=False, seed=0):
    x, w = make_inputs(dtype, batch, n, m, seed)
    if backward:  # as the tile passes them: a transposed view
        w = np.ascontiguousarray(w.T).T
    direction = "backward" if backward else "forward"
    periphery = make_periphery(io, m, n, dtype, direction)
    draws = make_draws(io, batch, direction)
    rec = Recorder(impl)
    y, running = ref.mvm(XP, x, w, io, periphery, draws, backward=backward, impl=rec)
    return y, running, rec


# -- the agreement checks (spec/agreement.md rules 3 and 4) ----------------------------------------


def _max_steps(io):
    return 2 if io.mv_type == AnalogMVType.POS_NEG_SEPARATE_DIGITAL_SUM else 1


def assert_agree(y_ref, y_fast, io, unit=None, near_boundary=None):
    """Rule 3 for every element, except rare one-step ADC flips (rule 4).

    ``unit``: the quantization step of each element in output units (broadcastable); default the
    ADC step. ``near_boundary(mask)``: optional check that the flipped elements' unquantized
    values lie at a rounding or clipping boundary.
    """
    assert y_ref.dtype == y_fast.dtype and y_ref.shape == y_fast.shape
    rtol = RTOL[y_ref.dtype]
    scale = max(1.0, float(np.max(np.abs(y_ref)))) if y_ref.size else 1.0
    tol = rtol * scale
    diff = np.abs(y_ref.astype(np.float64) - y_fast.astype(np.float64))
    bad = diff > tol
    if not bad.any():
        return
    step = ref.resolution_step(io.out_res, io.out_bound)
    assert step > 0, f"{bad.sum()} elements differ beyond {tol:g} and the ADC does not quantize"
    assert bad.sum() <= max(1, bad.size // 1000), f"{bad.sum()} of {bad.size} elements flipped"
    unit = np.broadcast_to(np.asarray(step if unit is None else unit, dtype=np.float64),
                           y_ref.shape)
    k = diff[bad] / unit[bad]
    ok = (np.abs(k - np.round(k)) * unit[bad] <= 4 * tol) & (np.round(k) >= 1) & \
        (np.round(k) <= _max_steps(io))
    assert ok.all(), f"differences of {k[~ok]} quantization steps are not boundary flips"
    if near_boundary is not None:
        near_boundary(bad)


def assert_mvm_agree(y_ref, rec_ref, y_fast, rec_fast, io):
    assert len(rec_ref.passes) == len(rec_fast.passes), "different bound-management passes"
    for (p, rows_r, _), (q, rows_f, _) in zip(rec_ref.passes, rec_fast.passes):
        assert p == q and np.array_equal(rows_r, rows_f), "different rows repeated"
    factors = rec_ref.row_factors(y_ref.shape[0]) * io.out_scale
    unit = ref.resolution_step(io.out_res, io.out_bound) * np.abs(factors)[:, None]
    assert_agree(y_ref, y_fast, io, unit=unit)


def test_flip_checker_accepts_boundary_flips_and_rejects_others():
    io = make_io()
    step = ref.resolution_step(io.out_res, io.out_bound)
    y = np.round(np.random.default_rng(2).normal(0, 3, (40, 50)) / step) * step
    one = y.copy()
    one[3, 4] += step
    assert_agree(y, one, io)                                   # one step: a flip
    two = y.copy()
    two[3, 4] += 2 * step
    with pytest.raises(AssertionError):
        assert_agree(y, two, io)                               # two steps: not a flip
    half = y.copy()
    half[3, 4] += 0.5 * step
    with pytest.raises(AssertionError):
        assert_agree(y, half, io)                              # not a quantization level
    many = y.copy()
    many[:, :3] += step
    with pytest.raises(AssertionError):
        assert_agree(y, many, io)                              # too many to be flips
    unq = y.copy()
    unq[3, 4] += 0.5 * step                                    # exactly at a rounding boundary
    assert_agree(y, one, io, near_boundary=_boundary_check(unq, None, step, 1e-12 * 3 * step))
    unq[3, 4] -= 0.3 * step                                    # far from it
    with pytest.raises(AssertionError):
        assert_agree(y, one, io, near_boundary=_boundary_check(unq, None, step, 1e-12))


def _boundary_check(unquantized, uniforms, step, tol, bound=None):
    """The unquantized values of flipped elements lie within ``tol`` of a rounding boundary
    (a half-integer multiple of the step, shifted by u − ½ with stochastic rounding), or at the
    clipping bound."""

    def check(mask):
        s = unquantized[mask].astype(np.float64) / step
        if uniforms is not None:
            s = s + (uniforms[mask] - 0.5)
        distance = np.abs(s - np.floor(s) - 0.5) * step
        at_bound = np.zeros_like(distance, dtype=bool) if bound is None else \
            np.abs(np.abs(unquantized[mask]) - bound) <= step
        assert np.all((distance <= 4 * tol) | at_bound), \
            f"flips {distance / step} steps away from a rounding boundary"

    return check


# -- mvm: reference vs fast ------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", list(TOGGLES))
def test_mvm_fast_agrees_with_reference(name, dtype, shape):
    io = make_io(**TOGGLES[name])
    batch, n, m = shape
    y_ref, run_ref, rec_ref = run_mvm(io, dtype, batch, n, m, ref)
    y_fast, run_fast, rec_fast = run_mvm(io, dtype, batch, n, m, fast_io)
    assert y_fast.dtype == np.dtype(dtype) and y_fast.shape == (batch, m)
    assert run_ref == run_fast
    assert_mvm_agree(y_ref, rec_ref, y_fast, rec_fast, io)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", ["default", "everything_OnePass", "everything_PosNegSeparate",
                                  "everything_PosNegSeparateDigitalSum", "inp_noise"])
def test_mvm_backward_fast_agrees_with_reference(name, dtype):
    """The backward pass: transposed (non-contiguous) weights, backward streams, no BM."""
    io = make_io(**TOGGLES[name])
    y_ref, _, rec_ref = run_mvm(io, dtype, 9, 13, 11, ref, backward=True)
    y_fast, _, rec_fast = run_mvm(io, dtype, 9, 13, 11, fast_io, backward=True)
    assert_mvm_agree(y_ref, rec_ref, y_fast, rec_fast, io)


def test_bound_management_makes_several_passes():
    """The configs above do exercise BM passes > 0 (guards the test's coverage)."""
    for name in ("out_bound_small", "max_bm_factor", "max_bm_res", "everything_OnePass"):
        _, _, rec = run_mvm(make_io(**TOGGLES[name]), np.float64, 23, 31, 17, fast_io)
        assert len(rec.passes) >= 2, name
    _, _, rec = run_mvm(make_io(**TOGGLES["max_bm_factor"]), np.float64, 23, 31, 17, fast_io)
    assert max(p for p, _, _ in rec.passes) >= 2


io_fields = st.fixed_dictionaries({
    "mv_type": st.sampled_from(["OnePass", "PosNegSeparate", "PosNegSeparateDigitalSum"]),
    "inp_noise": st.sampled_from([0.0, 0.03]),
    "inp_res": st.sampled_from([0.0, 1 / 126, 0.3, 20.0]),
    "inp_sto_round": st.booleans(),
    "inp_asymmetry": st.sampled_from([0.0, 0.2, -0.1]),
    "out_bound": st.sampled_from([0.0, 0.7, 2.0, 12.0]),
    "out_noise": st.sampled_from([0.0, 0.06]),
    "out_noise_std": st.sampled_from([0.0, 0.3]),
    "out_res": st.sampled_from([0.0, 1 / 510, 0.05, 60.0]),
    "out_sto_round": st.booleans(),
    "out_scale": st.sampled_from([1.0, 0.7]),
    "out_asymmetry": st.sampled_from([0.0, 0.1]),
    "bound_management": st.sampled_from(["None", "Iterative", "IterativeWorstCase"]),
    "noise_management": st.sampled_from(["None", "AbsMax", "AbsMaxNPSum", "Max", "Constant",
                                         "AverageAbsMax"]),
    "w_noise": st.sampled_from([0.0, 0.02]),
    "w_noise_type": st.sampled_from(["None", "AdditiveConstant", "PCMRead"]),
    "ir_drop": st.sampled_from([0.0, 1.5]),
    "ir_drop_g_ratio": st.sampled_from([571428.5714285714, 200.0]),
    "out_nonlinearity": st.sampled_from([0.0, 0.3]),
    "out_nonlinearity_std": st.sampled_from([0.0, 0.2]),
    "slope_calibration": st.sampled_from([0.0, 0.5]),
    "v_offset_std": st.sampled_from([0.0, 0.1]),
    "v_offset_w_min": st.sampled_from([-1.0, 0.0, -0.5]),
    "r_series": st.sampled_from([0.0, 0.1]),
    "w_read_asymmetry_dtod": st.sampled_from([0.0, 0.1]),
    "max_bm_factor": st.sampled_from([1000, 4]),
    "max_bm_res": st.sampled_from([0.25, 0.05]),
    "bm_test_negative_bound": st.booleans(),
    "nm_thres": st.sampled_from([0.0, 0.6]),
})


@settings(deadline=None)
@given(fields=io_fields, dtype=st.sampled_from(DTYPES), batch=st.integers(1, 12),
       n=st.integers(1, 20), m=st.integers(1, 20), seed=st.integers(0, 2**16),
       backward=st.booleans())
def test_mvm_random_configs_agree(fields, dtype, batch, n, m, seed, backward):
    io = make_io(**fields)
    y_ref, run_ref, rec_ref = run_mvm(io, dtype, batch, n, m, ref, backward=backward, seed=seed)
    y_fast, run_fast, rec_fast = run_mvm(io, dtype, batch, n, m, fast_io, backward=backward,
                                         seed=seed)
    assert run_ref == run_fast
    assert_mvm_agree(y_ref, rec_ref, y_fast, rec_fast, io)


# -- the fast driver (refsim_fast.io.mvm) against the reference driver with the fast passes ---------
#    Both run on the same kernels, so they agree bit for bit on any machine: what differs is who
#    computes the scales and how a plain pass is called.

DRIVER_SHAPES = [(1, 1, 1), (1, 9, 7), (5, 1, 3), (4, 6, 1), (3, 3, 5), (6, 6, 4), (23, 31, 17),
                 (130, 20, 9)]


def _both_drivers(io, dtype, shape, backward, running=None, seed=0):
    batch, n, m = shape
    x, w = make_inputs(dtype, batch, n, m, seed)
    if backward:
        w = np.ascontiguousarray(w.T).T
    direction = "backward" if backward else "forward"
    periphery = make_periphery(io, m, n, dtype, direction)
    draws = make_draws(io, batch, direction)
    want = ref.mvm(XP, x, w, io, periphery, draws, backward=backward, nm_running=running,
                   impl=fast_io)
    got = fast_io.mvm(XP, x, w, io, periphery, draws, backward=backward, nm_running=running)
    return want, got


# (AbsMaxNPSum's q exceeds the abs-max only with a small out_bound; its cap needs a small
# max_bm_res)
DRIVER_CONFIGS = dict(TOGGLES, np_sum_small_bound=dict(noise_management="AbsMaxNPSum",
                                                       out_bound=0.7),
                      np_sum_capped=dict(noise_management="AbsMaxNPSum", out_bound=0.7,
                                         max_bm_res=0.01),
                      np_sum_worst_case=dict(bound_management="IterativeWorstCase",
                                             out_bound=0.7, nm_thres=0.5))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", list(DRIVER_CONFIGS))
def test_fast_driver_equals_the_reference_driver(name, dtype):
    io = make_io(**DRIVER_CONFIGS[name])
    for shape in DRIVER_SHAPES:
        for backward in (False, True):
            for running in (None, 0.3):
                (y_ref, run_ref), (y, run) = _both_drivers(io, dtype, shape, backward, running)
                assert y.dtype == np.dtype(dtype) and y.shape == (shape[0], shape[2])
                np.testing.assert_array_equal(y, y_ref, err_msg=f"{shape} {backward}")
                assert run == run_ref


@settings(deadline=None)
@given(fields=io_fields, dtype=st.sampled_from(DTYPES), batch=st.integers(1, 12),
       n=st.integers(1, 20), m=st.integers(1, 20), seed=st.integers(0, 2**16),
       backward=st.booleans(), running=st.sampled_from([None, 0.05, 2.0]))
def test_fast_driver_random_configs(fields, dtype, batch, n, m, seed, backward, running):
    io = make_io(**fields)
    (y_ref, run_ref), (y, run) = _both_drivers(io, dtype, (batch, n, m), backward, running, seed)
    np.testing.assert_array_equal(y, y_ref)
    assert run == run_ref


def test_fast_driver_takes_the_reference_path_for_what_it_does_not_compile():
    """A non-finite input, an input without columns, a recorder's passes: the reference
    driver's result (which raises or propagates as the reference does)."""
    io = make_io(out_bound=1.5)
    x, w = make_inputs(np.float64, 4, 6, 3)
    x[2, 1] = np.nan
    draws = make_draws(io, 4)
    y_ref, _ = ref.mvm(XP, x, w, io, ref.Periphery(), draws, impl=fast_io)
    y, _ = fast_io.mvm(XP, x, w, io, ref.Periphery(), draws)
    np.testing.assert_array_equal(y, y_ref)  # (row 2: α is NaN, not > 0, so the row is 0)
    empty = np.empty((4, 0))  # (noise management has no abs-max of an empty row: both raise)
    for driver in (fast_io.mvm, lambda *a: ref.mvm(*a, impl=fast_io)):
        with pytest.raises(ValueError, match="zero-size"):
            driver(XP, empty, np.empty((3, 0)), io, ref.Periphery(), draws)
    rec = Recorder(fast_io)
    x, w = make_inputs(np.float32, 23, 31, 17)
    y, _ = fast_io.mvm(XP, x, w, io, ref.Periphery(), make_draws(io, 23), impl=rec)
    rec_ref = Recorder(fast_io)
    y_ref, _ = ref.mvm(XP, x, w, io, ref.Periphery(), make_draws(io, 23), impl=rec_ref)
    np.testing.assert_array_equal(y, y_ref)
    assert len(rec.passes) == len(rec_ref.passes) >= 2
    for (p, rows, scale), (q, rows_r, scale_r) in zip(rec.passes, rec_ref.passes):
        assert p == q and np.array_equal(rows, rows_r) and np.array_equal(scale, scale_r)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("nm", ["None", "Constant", "AverageAbsMax", "Max", "AbsMax",
                                "AbsMaxNPSum"])
def test_noise_scales_equal_the_reference_on_awkward_rows(nm, dtype):
    """Zeros of both signs, subnormals (flushed to 0 as scales), the largest finite values,
    rows of one element, long rows (the vectorized abs-max), with and without θ and the
    AbsMaxNPSum cap; a non-finite element anywhere makes the kernel decline."""
    info = np.finfo(dtype)
    g = np.random.default_rng(8)
    rows = [np.zeros(7), -np.zeros(7), np.full(7, info.smallest_subnormal),
            np.full(7, -info.smallest_normal / 4), np.array([info.max / 8, -info.max / 8, 1.0]),
            np.array([-3.0]), g.normal(0, 1, 1000), -np.abs(g.normal(0, 1, 33))]
    for theta, bound, res in [(0.0, 12.0, 0.25), (0.5, 0.7, 0.01)]:
        io = make_io(noise_management=nm, nm_thres=theta, out_bound=bound, max_bm_res=res)
        setup = fast_io._setup(io, "forward", np.dtype(dtype))
        for row in rows:
            x = np.stack([row, row[::-1] * 0.5]).astype(dtype)
            for running in (None, 0.25):
                with np.errstate(over="ignore"):  # (the cap of max/8 overflows to inf)
                    want, want_running = ref.noise_management(XP, x, io, io.noise_management,
                                                              running)
                alpha, got_running, positive = _io.noise_scales(
                    x, fast_io._NM_CODE[io.noise_management], *setup.nm_args, running)
                np.testing.assert_array_equal(alpha, want)
                assert got_running == want_running and positive == int(np.sum(want > 0))
            for bad in (np.nan, np.inf, -np.inf):
                y = x.copy()
                y[-1, -1] = bad
                assert _io.noise_scales(y, 4, *setup.nm_args, None) is None


@pytest.mark.parametrize("shape", [(100, 64, 48), (300, 12, 10)])
def test_plain_pass_is_taken_and_is_bit_identical_for_any_thread_count(shape, monkeypatch):
    """A few rows, or many rows with a small W (a convolution's: its blocks' products one after
    another, the rows on the threads): one compiled call per pass, the same numbers for 1, 2
    and 3 threads and as the reference driver's."""
    batch, n, m = shape
    io = make_io(out_bound=1.0, inp_noise=0.02)
    x, w = make_inputs(np.float32, batch, n, m, seed=3)
    calls = []
    kernel = fast_io._PLAIN_PASS[np.dtype(np.float32)]

    def counted(*args):
        calls.append(args[2].shape[0])
        return kernel(*args)

    monkeypatch.setitem(fast_io._PLAIN_PASS, np.dtype(np.float32), counted)
    results = []
    for threads in (1, 2, 3):
        monkeypatch.setattr(fast_io, "num_threads", threads)
        calls.clear()
        results.append(fast_io.mvm(XP, x, w, io, ref.Periphery(), make_draws(io, batch))[0])
        assert calls and calls[0] == batch and len(calls) > 1  # the first pass and repeats
    for y in results[1:]:
        np.testing.assert_array_equal(y, results[0])
    want, _ = ref.mvm(XP, x, w, io, ref.Periphery(), make_draws(io, batch), impl=fast_io)
    np.testing.assert_array_equal(results[0], want)


def test_noise_scales_and_plain_pass_refuse_inconsistent_arguments():
    io = make_io()
    plan = fast_io._setup(io, "forward", np.dtype(np.float64)).plain
    x = np.ones((3, 4))
    alpha = np.ones(3)
    rows = np.arange(3, dtype=np.int64)
    w_t = np.ones((4, 2))
    good = (plan, x, alpha, rows, w_t, np.matmul, True, False, 1.0, 1.0, 1, 0, 3, 1, 0, False, 1)
    out, ok = _io.plain_pass(*good)
    assert out.shape == (3, 2) and ok.dtype == np.bool_
    for i, bad, error in [(2, np.ones(2), ValueError), (3, np.arange(2, dtype=np.int64),
                                                         ValueError),
                          (4, np.ones((5, 2)), ValueError), (4, np.ones((4, 2), np.float32),
                                                             ValueError),
                          (4, [[1.0, 2.0]] * 4, ValueError), (3, -rows, ValueError),
                          (14, 2**62, ValueError), (13, 2**62, ValueError),
                          (5, lambda a, b: np.ones((3, 3)), ValueError)]:
        args = list(good)
        args[i] = bad
        with pytest.raises(error):
            _io.plain_pass(*args)
    with pytest.raises(ValueError, match="not a plain pass"):
        dac, adc = fast_io._settings(make_io(ir_drop=1.0), "forward")
        _io.PlainPass(dac, dict(adc, ir=1))
    with pytest.raises(ValueError, match="pos_neg"):
        dac, adc = fast_io._settings(make_io(mv_type="PosNegSeparate"), "forward")
        _io.PlainPass(dict(dac, pos_neg=0), adc)
    with pytest.raises(ValueError, match="nm"):
        _io.noise_scales(x, 6, 0.0, 1.0, 0.0, 0.25, 0.6, 1e-3, None)
    assert _io.noise_scales(np.empty((2, 0)), 4, 0.0, 1.0, 0.0, 0.25, 0.6, 1e-3, None) is None


# -- analog_mv: one pass, with the rule-4 explanation of flips ------------------------------------


def _pass_args(io, dtype, batch, n, m, *, pass_index=1, seed=0):
    x, w = make_inputs(dtype, batch, n, m, seed)
    g = np.random.default_rng(seed + 1)
    rows = np.sort(g.choice(batch + 5, size=batch, replace=False)).astype(np.int64)
    scale = g.uniform(0.5, 2.0, batch).astype(dtype)
    periphery = make_periphery(io, m, n, dtype)
    draws = make_draws(io, batch + 5)
    return x, scale, w, io, periphery, draws, pass_index, rows


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", list(TOGGLES))
def test_analog_mv_agrees_and_flips_are_explained(name, dtype):
    io = make_io(**TOGGLES[name])
    args = _pass_args(io, dtype, 19, 29, 23)
    out_ref, ok_ref = ref.analog_mv(XP, *args)
    out_fast, ok_fast = fast_io.analog_mv(XP, *args)
    assert out_fast.dtype == np.dtype(dtype) and ok_fast.dtype == np.bool_
    step = ref.resolution_step(io.out_res, io.out_bound)
    check = None
    if step > 0 and io.mv_type != AnalogMVType.POS_NEG_SEPARATE_DIGITAL_SUM:
        # the unquantized outputs (ADC step off; every random number stays the same)
        unq, _ = ref.analog_mv(XP, args[0], args[1], args[2], dataclasses.replace(io, out_res=0.0),
                               *args[4:])
        u = None
        if io.out_sto_round:
            draws, pass_index, rows = args[5], args[6], args[7]
            u = np.asarray(draws.uniform(XP, "out_sto_round", pass_index, rows,
                                         out_ref.shape[1], np.float64))
        tol = RTOL[out_ref.dtype] * max(1.0, float(np.max(np.abs(unq))))
        check = _boundary_check(unq, u, step, tol, bound=io.out_bound)
    assert_agree(out_ref, out_fast, io, near_boundary=check)
    flipped_rows = np.any(out_ref != out_fast, axis=1)
    assert np.array_equal(ok_ref[~flipped_rows], ok_fast[~flipped_rows])


@bit_identical_here
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", list(TOGGLES))
def test_analog_mv_is_bit_identical_where_the_math_library_is_the_same(name, dtype):
    """Stricter than the contract, and the test that catches a changed order of operations or a
    double-precision intermediate in a float32 pass: the fast backend runs the reference's
    operations in the same order and dtype and the same GEMMs, so with the same libm every
    output and bound-test bit is equal."""
    io = make_io(**TOGGLES[name])
    for seed, pass_index in ((0, 0), (1, 3)):
        args = _pass_args(io, dtype, 19, 29, 23, pass_index=pass_index, seed=seed)
        out_ref, ok_ref = ref.analog_mv(XP, *args)
        out_fast, ok_fast = fast_io.analog_mv(XP, *args)
        np.testing.assert_array_equal(out_fast, np.asarray(out_ref))
        np.testing.assert_array_equal(ok_fast, np.asarray(ok_ref))


@bit_identical_here
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", ["default", "out_bound_small", "everything_OnePass",
                                  "everything_PosNegSeparate",
                                  "everything_PosNegSeparateDigitalSum", "nm_average",
                                  "unquantized_OnePass", "unquantized_PosNegSeparateDigitalSum"])
def test_mvm_is_bit_identical_where_the_math_library_is_the_same(name, dtype):
    io = make_io(**TOGGLES[name])
    for backward in (False, True):
        y_ref, run_ref, _ = run_mvm(io, dtype, 23, 31, 17, ref, backward=backward)
        y_fast, run_fast, _ = run_mvm(io, dtype, 23, 31, 17, fast_io, backward=backward)
        np.testing.assert_array_equal(y_fast, np.asarray(y_ref))
        assert run_ref == run_fast


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_analog_mv_num_threads_argument(threads, monkeypatch):
    monkeypatch.setattr(fast_io, "_SERIAL_WORK", 0)  # let small passes use the threads too
    io = make_io(**TOGGLES["everything_PosNegSeparateDigitalSum"])
    args = _pass_args(io, np.float64, 37, 21, 19)
    base, ok_base = fast_io.analog_mv(XP, *args, num_threads=1)
    out, ok = fast_io.analog_mv(XP, *args, num_threads=threads)
    np.testing.assert_array_equal(out, base)
    np.testing.assert_array_equal(ok, ok_base)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", ["everything_OnePass", "everything_PosNegSeparate",
                                  "everything_PosNegSeparateDigitalSum", "out_bound_small",
                                  "default"])
def test_mvm_is_bit_identical_for_any_thread_count(name, dtype, monkeypatch):
    monkeypatch.setattr(fast_io, "_SERIAL_WORK", 0)  # let small passes use the threads too
    io = make_io(**TOGGLES[name])
    results = []
    for threads in (1, 2, 4):
        monkeypatch.setattr(fast_io, "num_threads", threads)
        results.append(run_mvm(io, dtype, 37, 45, 33, fast_io))
    y1, run1, rec1 = results[0]
    assert len(rec1.passes) >= 1
    for y, run, rec in results[1:]:
        np.testing.assert_array_equal(y, y1)
        assert run == run1 and len(rec.passes) == len(rec1.passes)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", ["default", "everything_OnePass", "everything_PosNegSeparate",
                                  "everything_additive_PosNegSeparateDigitalSum",
                                  "unquantized_OnePass", "inp_asymmetry"])
def test_row_blocks_on_threads_equal_the_whole_pass(name, dtype):
    """More rows than a product block (PRODUCT_ROWS): with two or more threads each block of
    rows runs DAC, products and ADC on one Python thread; the outputs are the one-thread pass's
    (whole-batch kernels) bit for bit, and agree with the reference."""
    io = make_io(**TOGGLES[name])
    batch, n, m = 2 * ref.PRODUCT_ROWS + 37, 48, 40
    assert batch * (n + m) >= fast_io._SERIAL_WORK  # (else the pass runs on one thread)
    args = _pass_args(io, dtype, batch, n, m)
    outs = [fast_io.analog_mv(XP, *args, num_threads=t) for t in (1, 2, 3)]
    for out, ok in outs[1:]:
        np.testing.assert_array_equal(out, outs[0][0])
        np.testing.assert_array_equal(ok, outs[0][1])
    out_ref, _ = ref.analog_mv(XP, *args)
    assert_agree(np.asarray(out_ref), outs[0][0], io)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_large_pass_is_bit_identical_for_any_thread_count(dtype):
    """A pass large enough to run in parallel by default, rows not a multiple of the threads."""
    io = make_io(**TOGGLES["everything_OnePass"])
    args = _pass_args(io, dtype, 81, 160, 120)
    assert 81 * (160 + 120) >= fast_io._SERIAL_WORK
    outs = [fast_io.analog_mv(XP, *args, num_threads=t) for t in (1, 2, 3, 4)]
    for out, ok in outs[1:]:
        np.testing.assert_array_equal(out, outs[0][0])
        np.testing.assert_array_equal(ok, outs[0][1])
    out_ref, _ = ref.analog_mv(XP, *args)
    assert_agree(np.asarray(out_ref), outs[0][0], io)


def test_default_num_threads_is_openmp_default():
    import refsim_fast

    assert isinstance(fast_io.num_threads, int) and fast_io.num_threads >= 1
    # conftest imports refsim_fast before torch, so the OpenMP runtime sleeps when idle and the
    # default is OpenMP's (also when torch started it spinning: test_torch.py)
    assert not refsim_fast.SPINNING_OPENMP
    assert fast_io.num_threads == refsim_fast.max_threads()


# -- edge cases and argument checks -------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Mean of empty slice")  # the reference's slope factor, m = 0
@pytest.mark.filterwarnings("ignore:invalid value encountered")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("mv_type", ["OnePass", "PosNegSeparate", "PosNegSeparateDigitalSum"])
@pytest.mark.parametrize("shape", [(0, 7, 5), (4, 0, 5), (4, 7, 0), (0, 0, 0)])
def test_empty_rows_inputs_and_outputs(shape, mv_type, dtype):
    io = make_io(**dict(EVERYTHING, mv_type=mv_type))
    batch, n, m = shape
    x = np.zeros((batch, n), dtype=dtype)
    w = np.ones((m, n), dtype=dtype)
    periphery = make_periphery(io, m, n, dtype)
    draws = make_draws(io, max(batch, 1))
    args = (x, np.ones(batch, dtype=dtype), w, io, periphery, draws, 0,
            np.arange(batch, dtype=np.int64))
    out, ok = fast_io.analog_mv(XP, *args)
    assert out.shape == (batch, m) and out.dtype == np.dtype(dtype)
    assert ok.shape == (batch,) and ok.dtype == np.bool_
    out_ref, ok_ref = ref.analog_mv(XP, *args)
    assert_agree(np.asarray(out_ref), out, io)
    np.testing.assert_array_equal(ok, np.asarray(ok_ref))


def test_mvm_with_an_empty_batch():
    io = make_io()
    x = np.zeros((0, 6), dtype=np.float32)
    w = np.ones((4, 6), dtype=np.float32)
    y, _ = ref.mvm(XP, x, w, io, make_periphery(io, 4, 6, np.float32), make_draws(io, 0),
                   impl=fast_io)
    assert y.shape == (0, 4) and y.dtype == np.float32


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", ["everything_OnePass", "everything_PosNegSeparateDigitalSum"])
def test_non_contiguous_arguments(name, dtype):
    io = make_io(**TOGGLES[name])
    x, scale, w, _, periphery, draws, p, rows = _pass_args(io, dtype, 11, 9, 8)
    contiguous = fast_io.analog_mv(XP, x, scale, w, io, periphery, draws, p, rows)
    big_x = np.zeros((11, 18), dtype=dtype)
    big_x[:, ::2] = x
    w_t = np.asfortranarray(w)                      # F-ordered weights
    big_scale = np.repeat(scale, 2)
    big_rows = np.repeat(rows, 3)
    ro_x = x.copy()
    ro_x.setflags(write=False)                      # read-only input
    for args in [(big_x[:, ::2], scale, w, rows), (x, big_scale[::2], w_t, big_rows[::3]),
                 (ro_x, scale, np.ascontiguousarray(w.T).T, rows)]:
        out, ok = fast_io.analog_mv(XP, args[0], args[1], args[2], io, periphery, draws, p,
                                    args[3])
        np.testing.assert_array_equal(out, contiguous[0])
        np.testing.assert_array_equal(ok, contiguous[1])
    out_ref, _ = ref.analog_mv(XP, big_x[:, ::2], big_scale[::2], w_t, io, periphery, draws, p,
                               big_rows[::3])
    assert_agree(out_ref, contiguous[0], io)


def test_mixed_dtypes_are_cast_to_the_dtype_of_x():
    io = make_io(**TOGGLES["everything_OnePass"])
    x, scale, w, _, periphery, draws, p, rows = _pass_args(io, np.float32, 6, 5, 4)
    same, _ = fast_io.analog_mv(XP, x, scale, w, io, periphery, draws, p, rows)
    periphery64 = make_periphery(io, 4, 5, np.float64)
    mixed, _ = fast_io.analog_mv(XP, x, scale.astype(np.float64), w.astype(np.float64), io,
                                 periphery64, draws, p, rows.astype(np.int32))
    assert mixed.dtype == np.float32
    np.testing.assert_array_equal(mixed, same)


def test_bad_arguments_raise():
    io = make_io()
    x, scale, w, _, periphery, draws, p, rows = _pass_args(io, np.float64, 4, 5, 3)

    def call(**kw):
        a = dict(x=x, scale=scale, weights=w, io=io, periphery=periphery, draws=draws,
                 pass_index=p, rows=rows)
        a.update(kw)
        return fast_io.analog_mv(XP, a["x"], a["scale"], a["weights"], a["io"], a["periphery"],
                                 a["draws"], a["pass_index"], a["rows"])

    with pytest.raises(TypeError, match="x"):
        call(x=x.astype(np.int64))
    with pytest.raises(TypeError, match="numpy"):
        call(x=x.tolist())
    with pytest.raises(TypeError, match="weights"):
        call(weights=w.astype(np.float16))
    with pytest.raises(ValueError, match="weights"):
        call(weights=w[:, :4])
    with pytest.raises(ValueError, match="2-D"):
        call(x=x[0])
    with pytest.raises(ValueError, match="scale"):
        call(scale=scale[:3])
    with pytest.raises(ValueError, match="rows"):
        call(rows=rows[:2])
    with pytest.raises(ValueError, match="rows"):
        call(rows=rows - 10)
    with pytest.raises(ValueError, match="rows"):
        call(rows=rows.astype(np.float64))
    with pytest.raises(ValueError, match="pass_index"):
        call(pass_index=-1)
    with pytest.raises(TypeError, match="draws"):
        call(draws=None)
    with pytest.raises(ValueError, match="v_offset"):
        call(io=make_io(v_offset_std=0.1),
             periphery=ref.Periphery(v_offset=np.zeros(2)))
    with pytest.raises(ValueError, match="num_threads"):
        fast_io.analog_mv(XP, x, scale, w, io, periphery, draws, p, rows, num_threads=0)


def test_tile_uses_the_fast_backend_and_agrees():
    from refsim.configs import InferenceRPUConfig
    from refsim.tile import AnalogTile

    g = np.random.default_rng(4)
    weights = g.uniform(-0.5, 0.5, (6, 10))
    x = g.uniform(-1, 1, (5, 10)).astype(np.float32)
    d = g.uniform(-1, 1, (5, 6)).astype(np.float32)
    out = {}
    for backend in ("reference", "fast"):
        tile = AnalogTile(6, 10, InferenceRPUConfig(), seed=9, dtype=np.float32, backend=backend)
        tile.set_weights(weights)
        out[backend] = (tile.forward(x), tile.backward(d), tile.forward(x[0]))
        assert tile._impl(np) is (fast_io if backend == "fast" else None)
    io = InferenceRPUConfig().forward
    for a, b in zip(out["reference"], out["fast"]):
        assert_agree(a, b, io, unit=np.inf)  # any flip here would be a failure


# -- the compiled boundary (spec/pulses.md, "Compiled kernels"): _io.prepare / _io.finalize and
#    the row helpers called directly with inconsistent arguments raise ValueError instead of
#    reading or writing out of bounds (CI runs these under ASan/UBSan: .ci/sanitize) ------------

R_, N_, M_ = 3, 5, 4


def _kernel_address(**kw):
    a = dict(seed=1, call=2, batch=R_, halves=2, pass_index=0, row_calls=0)
    a.update(kw)
    return a


def _prepare_args(pos_neg=False, **changes):
    dac, _ = fast_io._settings(make_io(mv_type="PosNegSeparate" if pos_neg else "OnePass",
                                       inp_noise=0.1, inp_sto_round=True), "forward")
    e2 = np.empty((0, 0))
    a = dict(x=np.random.default_rng(0).uniform(-1, 1, (R_, N_)), scale=np.ones(R_),
             rows=np.arange(R_, dtype=np.int64),
             out=e2 if pos_neg else np.empty((R_, N_)),
             neg=np.empty((R_, N_)) if pos_neg else e2, pos=np.empty((R_, N_)) if pos_neg else e2,
             args=dac, address=_kernel_address(), num_threads=2)
    a.update(changes)
    return a


def _finalize_args(**changes):
    """Every effect on, pos/neg mode: each array the row loops read is present."""
    _, adc = fast_io._settings(make_io(mv_type="PosNegSeparate", out_noise=0.1,
                                       w_noise=0.02, w_noise_type="PCMRead"), "forward")
    adc.update(ir=1, ir_scale=1.0, voff=3, nonlinearity=1, noise_std=1)
    g = np.random.default_rng(1)

    def mat(cols=M_):
        return g.uniform(0, 1, (R_, cols))

    a = dict(y0=mat(), ir_a0=mat(), ir_g0=mat(), row_sum0=np.ones(R_), spread0=mat(),
             y1=mat(), ir_a1=mat(), ir_g1=mat(), row_sum1=np.ones(R_), spread1=mat(1),
             v_offset=np.full(M_, 0.01), nonlinearity=np.full(M_, 0.1),
             noise_std=np.full(M_, 0.05), rows=np.arange(R_, dtype=np.int64),
             out=np.empty((R_, M_)), ok=np.empty(R_, np.uint8), args=adc,
             address=_kernel_address(), num_threads=2)
    a.update(changes)
    return a


def _call(kernel, a):
    names = {"prepare": ["x", "scale", "rows", "out", "neg", "pos", "args", "address",
                         "num_threads"],
             "finalize": ["y0", "ir_a0", "ir_g0", "row_sum0", "spread0", "y1", "ir_a1", "ir_g1",
                          "row_sum1", "spread1", "v_offset", "nonlinearity", "noise_std", "rows",
                          "out", "ok", "args", "address", "num_threads"]}[kernel]
    return getattr(_io, kernel)(*[a[k] for k in names])


def test_kernels_run_on_the_valid_boundary_arguments():
    a = _prepare_args()
    _call("prepare", a)
    assert np.all(np.isfinite(a["out"]))
    a = _prepare_args(pos_neg=True)
    _call("prepare", a)
    assert np.all(a["neg"] <= 0) and np.all(a["pos"] >= 0)
    a = _finalize_args()
    _call("finalize", a)
    assert np.all(np.isfinite(a["out"]))


def _with_args(kind, **fields):
    a = (_prepare_args if kind == "prepare" else _finalize_args)()
    return dict(a["args"], **fields)


E1, E2 = np.empty((0,)), np.empty((0, 0))

IO_KERNEL_BAD = {
    # prepare
    "scale_short": ("prepare", dict(scale=np.ones(R_ - 1)), "scale"),
    "rows_long": ("prepare", dict(rows=np.arange(R_ + 1, dtype=np.int64)), "rows"),
    "out_short": ("prepare", dict(out=np.empty((R_, N_ - 1))), "out"),
    "out_empty": ("prepare", dict(out=E2), "out"),
    "neg_empty": ("prepare", dict(out=E2, neg=E2, pos=np.empty((R_, N_)),
                                  args=_with_args("prepare", pos_neg=1)), "neg"),
    "pos_short": ("prepare", dict(out=E2, neg=np.empty((R_, N_)), pos=np.empty((R_ - 1, N_)),
                                  args=_with_args("prepare", pos_neg=1)), "pos"),
    "negative_row": ("prepare", dict(rows=np.array([0, -1, 2], np.int64)), "rows"),
    "negative_pass": ("prepare", dict(address=_kernel_address(pass_index=-1)), "address"),
    "index_overflow": ("prepare", dict(address=_kernel_address(pass_index=2**40, batch=2**40)),
                       "index"),
    "index_overflow_halves_0": ("prepare", dict(address=_kernel_address(
        pass_index=2**62, batch=2**62, halves=0)), "index"),
    # finalize
    "ok_short": ("finalize", dict(ok=np.empty(R_ - 1, np.uint8)), "ok"),
    "finalize_rows": ("finalize", dict(rows=np.arange(R_ - 1, dtype=np.int64)), "rows"),
    "y0_short": ("finalize", dict(y0=np.ones((R_, M_ - 1))), "y0"),
    "y1_missing": ("finalize", dict(y1=E2), "y1"),
    "ir_a0_missing": ("finalize", dict(ir_a0=E2), "ir_a0"),
    "ir_g1_short": ("finalize", dict(ir_g1=np.ones((R_ - 1, M_))), "ir_g1"),
    "row_sum0_missing": ("finalize", dict(row_sum0=E1), "row_sum0"),
    "row_sum1_short": ("finalize", dict(row_sum1=np.ones(R_ - 1)), "row_sum1"),
    "spread0_columns": ("finalize", dict(spread0=np.ones((R_, 2))), "spread0"),
    "spread1_missing": ("finalize", dict(spread1=E2), "spread1"),
    "v_offset_short": ("finalize", dict(v_offset=np.ones(M_ - 1)), "v_offset"),
    "nonlinearity_missing": ("finalize", dict(nonlinearity=E1), "nonlinearity"),
    "noise_std_missing": ("finalize", dict(noise_std=E1), "noise_std"),
    "mode": ("finalize", dict(args=_with_args("finalize", mode=3)), "mode"),
    "voff": ("finalize", dict(args=_with_args("finalize", voff=4)), "voff"),
    "finalize_overflow": ("finalize", dict(address=_kernel_address(batch=2**61, pass_index=4)),
                          "index"),
    "finalize_negative_halves": ("finalize", dict(address=_kernel_address(halves=-2)), "address"),
    "row_calls_past_the_last_call": ("finalize", dict(address=_kernel_address(
        row_calls=1, call=2**64 - 2)), "exceeds"),
    "row_calls_index_overflow": ("prepare", dict(address=_kernel_address(
        row_calls=1, pass_index=2**62)), "index"),
}


@pytest.mark.parametrize("case", sorted(IO_KERNEL_BAD))
def test_io_kernels_reject_inconsistent_arguments(case):
    kernel, changes, word = IO_KERNEL_BAD[case]
    a = (_prepare_args if kernel == "prepare" else _finalize_args)(**changes)
    with pytest.raises(ValueError, match=word):
        _call(kernel, a)


def test_io_kernels_refuse_non_contiguous_arrays():
    a = _prepare_args(x=np.asfortranarray(np.ones((R_, N_))))
    with pytest.raises(ValueError, match="contiguous"):
        _call("prepare", a)
    a = _finalize_args(v_offset=np.ones(2 * M_)[::2])
    with pytest.raises(ValueError, match="contiguous"):
        _call("finalize", a)


@pytest.mark.parametrize("helper", ["normals_row", "uniforms_row"])
def test_row_helpers_refuse_runs_past_the_index_range(helper):
    out = np.zeros(8)
    for start in (2**64 - 3, 2**63 - 7):
        with pytest.raises(ValueError, match="start"):
            getattr(_io, helper)(1, 2, 3, start, out)
    np.testing.assert_array_equal(out, 0.0)
    getattr(_io, helper)(1, 2, 3, 2**63 - 8, out)  # ends exactly at 2^63
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_fortran_transposed_unaligned_and_broadcast_inputs(dtype):
    """x in Fortran order, as a transposed view, unaligned and broadcast (stride 0), scale
    byte-swapped and broadcast: the wrapper converts them once at the compiled boundary; same
    numbers as contiguous input."""
    io = make_io(**TOGGLES["everything_PosNegSeparate"])
    x, scale, w, _, periphery, draws, p, rows = _pass_args(io, dtype, 6, 9, 8)
    want = fast_io.analog_mv(XP, x, scale, w, io, periphery, draws, p, rows)
    for args in [(np.asfortranarray(x), scale, np.asfortranarray(w)),
                 (np.ascontiguousarray(x.T).T, scale, w.T.copy().T)]:
        out, ok = fast_io.analog_mv(XP, *args, io, periphery, draws, p, rows)
        np.testing.assert_array_equal(out, want[0])
        np.testing.assert_array_equal(ok, want[1])
    # a C-contiguous buffer at an odd address, and byte-swapped scale: copied, not passed on
    buf = np.zeros(x.nbytes + 1, np.uint8)
    x_u = np.frombuffer(buf.data, dtype=x.dtype, count=x.size, offset=1).reshape(x.shape)
    x_u[...] = x
    assert not x_u.flags.aligned and x_u.flags.c_contiguous
    out, ok = fast_io.analog_mv(XP, x_u, scale.astype(scale.dtype.newbyteorder(">")), w, io,
                                periphery, draws, p, rows)
    np.testing.assert_array_equal(out, want[0])
    np.testing.assert_array_equal(ok, want[1])
    x_b = np.broadcast_to(x[2], x.shape)
    s_b = np.broadcast_to(scale[2], scale.shape)
    assert x_b.strides[0] == 0 and s_b.strides[0] == 0
    out, ok = fast_io.analog_mv(XP, x_b, s_b, w, io, periphery, draws, p, rows)
    want = fast_io.analog_mv(XP, np.ascontiguousarray(x_b), np.ascontiguousarray(s_b), w, io,
                             periphery, draws, p, rows)
    np.testing.assert_array_equal(out, want[0])
    assert_agree(ref.analog_mv(XP, x_b, s_b, w, io, periphery, draws, p, rows)[0], out, io)


@pytest.mark.parametrize("env, kept", [({}, True), ({"REFSIM_KEEP_FREED_MEMORY": "0"}, False),
                                       ({"MALLOC_TRIM_THRESHOLD_": "131072"}, False),
                                       ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=1"}, False)])
def test_freed_memory_setting_at_import(env, kept, tmp_path):
    """refsim_fast keeps freed memory for the next arrays (glibc's mallopt) unless told not to
    or the environment already sets malloc parameters; ``refsim info`` reports it, and a
    program+drift then faults in no fresh pages."""
    import os
    import platform
    import subprocess
    import sys

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    code = (
        "import json, resource, numpy as np, refsim_fast\n"
        "from refsim import configs\n"
        "from refsim.tile import AnalogTile\n"
        "t = AnalogTile(256, 256, configs.InferenceRPUConfig(), seed=1, dtype=np.float32,\n"
        "               backend='fast')\n"
        "t.set_weights(np.full((256, 256), 0.25, np.float32))\n"
        "for _ in range(3): t.program_weights(); t.drift_weights(100.0)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(5): t.program_weights(); t.drift_weights(100.0)\n"
        "faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n"
        "print(json.dumps([refsim_fast.info()['allocator'], faults]))\n")
    environ = {k: v for k, v in os.environ.items()
               if k != "REFSIM_KEEP_FREED_MEMORY" and not k.startswith("MALLOC_")
               and k != "GLIBC_TUNABLES"}
    # (run outside the source tree, whose refsim_fast has no compiled extensions)
    out = subprocess.run([sys.executable, "-c", code], env={**environ, **env},
                         capture_output=True, text=True, check=True, cwd=tmp_path)
    allocator, faults = json.loads(out.stdout)
    if kept and allocator.get("reason") == "mallopt refused":
        pytest.skip("another allocator answers mallopt here (the sanitizer build's ASan)")
    assert allocator["kept_freed_memory"] is kept
    if kept:
        assert allocator["mmap_threshold"] == 32 << 20 and faults < 50
    else:
        assert allocator["reason"] and faults > 500  # glibc's defaults: fresh pages every call


def test_pool_runs_every_block_once_and_raises_the_first_error():
    """refsim_fast.pool.parallel: the caller and the pool's threads take the blocks; each
    block runs once; an error stops the others taking blocks and is raised by the caller."""
    import doctest
    import threading

    import refsim_fast.inference
    import refsim_fast.pool as pool

    assert doctest.testmod(pool).failed == 0
    assert doctest.testmod(refsim_fast.inference).failed == 0
    assert doctest.testmod(fast_io).attempted > 0 and doctest.testmod(fast_io).failed == 0
    seen, lock = [], threading.Lock()

    def record(b):
        with lock:
            seen.append(b.start)

    for threads in (1, 2, 3):
        seen.clear()
        pool.parallel(record, pool.element_blocks(1000, 64), threads)
        assert sorted(seen) == list(range(0, 1000, 64))

    def fail(b):
        if b.start == 128:
            raise KeyError("block 128")

    with pytest.raises(KeyError, match="block 128"):
        pool.parallel(fail, pool.element_blocks(1000, 64), 2)

"""The pulse-train stage (spec/update.md §U1-§U5): A, B, BL, probabilities, coincidence counts."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import OTHER_NAMESPACES, to_numpy
from refsim import rng
from refsim.configs import UpdateParameters
from refsim.stages import pulses

XP_NUMPY = rng._namespace(None)


def counts_of(x, d, lr, g, up, seed=1, call=0, xp=None):
    ns = rng._namespace(xp)
    c, plan = pulses.coincidences(ns, ns.asarray(x, dtype=ns.float64),
                                  ns.asarray(d, dtype=ns.float64), lr, g, up, seed, call)
    return to_numpy(c), plan


def test_streams_are_registered():
    assert set(pulses.stream_names()) <= set(rng.STREAMS)


def test_aihwkit_worked_example():
    """aihwkit-semantics.md §2.3 [V]: eta 0.1, g 0.01, x = (1, .5, -.25), d = .2 gives BL = 3;
    MeanCount gives coincidences (1, 1, -1) and DeterministicImplicit (2, 1, 0), where aihwkit's
    positive count is a down pulse (refsim's counts carry the opposite sign)."""
    x, d = [1.0, 0.5, -0.25], [0.2]
    mean, plan = counts_of(x, d, 0.1, 0.01, UpdateParameters(pulse_type="MeanCount"))
    assert plan.bl == 3
    assert mean.tolist() == [[-1, -1, 1]]
    implicit, _ = counts_of(x, d, 0.1, 0.01, UpdateParameters(pulse_type="DeterministicImplicit"))
    assert implicit.tolist() == [[-2, -1, 0]]


@given(st.floats(1e-4, 1.0), st.floats(1e-3, 2.0), st.floats(1e-3, 2.0), st.floats(1e-4, 0.1),
       st.booleans(), st.booleans(), st.integers(1, 63), st.floats(0.1, 3.0))
def test_plan_rules(lr, x_max, d_max, g, fixed, blm, bl_max, um_scale):
    up = UpdateParameters(desired_bl=bl_max, fixed_bl=fixed, update_bl_management=blm,
                          um_grad_scale=um_scale)
    plan = pulses.pulse_plan(lr, x_max, d_max, g, up)
    k = lr * x_max * um_scale * d_max / g
    if blm:
        assert plan.bl == min(math.ceil(k), bl_max)
    else:
        assert plan.bl == bl_max or (not fixed and plan.bl == max(math.ceil(lr / g), 1))
    # update management: the largest x probability equals the largest (scaled) d probability,
    # and the expected count of the largest pair is lr·x_max·d_max/g, while k <= BL_max; beyond,
    # the x side sits at probability 1 and the d side saturates (the gradient is clipped)
    if plan.bl and (fixed or blm or g * bl_max >= lr):
        p_x, p_d = plan.b * x_max, plan.a * d_max
        if k <= bl_max:
            assert math.isclose(p_x, p_d * um_scale, rel_tol=1e-12)
            assert math.isclose(p_x * p_d * plan.bl * g, lr * x_max * d_max, rel_tol=1e-9)
        else:
            assert math.isclose(p_x, 1.0, rel_tol=1e-12) and p_d * um_scale >= 1.0 - 1e-12


def test_zero_rows_and_zero_lr_give_no_pulses():
    up = UpdateParameters()
    for x, d, lr in [([0.0, 0.0], [1.0], 0.1), ([1.0, 0.0], [0.0], 0.1), ([1.0, 1.0], [1.0], 0.0)]:
        counts, plan = counts_of(x, d, lr, 0.001, up)
        assert plan.bl == 0 and not counts.any()


@pytest.mark.parametrize("pulse_type", ["StochasticCompressed", "Stochastic", "MeanCount",
                                        "DeterministicImplicit"])
@given(st.lists(st.floats(-1, 1), min_size=1, max_size=8),
       st.lists(st.floats(-1, 1), min_size=1, max_size=8), st.floats(1e-3, 0.5))
def test_counts_are_bounded_by_bl_and_signed_by_the_gradient(pulse_type, x, d, lr):
    up = UpdateParameters(pulse_type=pulse_type)
    counts, plan = counts_of(x, d, lr, 0.001, up)
    assert np.abs(counts).max(initial=0) <= plan.bl
    expected_sign = -np.sign(np.outer(d, x))
    nonzero = counts != 0
    assert np.all(np.sign(counts[nonzero]) == expected_sign[nonzero])


def test_expected_update_is_unbiased():
    """E[counts]·g = −lr·d xᵀ when nothing saturates (spec/update.md §U4), over many cycles."""
    x = np.array([0.9, -0.5, 0.2, 0.0, 0.7])
    d = np.array([0.3, -0.8, 0.05])
    lr, g = 0.01, 0.001
    up = UpdateParameters()
    total = np.zeros((3, 5))
    cycles = 4000
    for call in range(cycles):
        counts, plan = counts_of(x, d, lr, g, up, seed=3, call=call)
        total += counts
    mean = total / cycles * g
    expected = -lr * np.outer(d, x)
    # per element: a sum of BL Bernoulli(p_x p_d) products; std of the mean ~ g·sqrt(var/cycles)
    p = np.abs(expected) / g / plan.bl
    stderr = g * np.sqrt(plan.bl * p * (1 - p) / cycles) + 1e-12
    assert np.all(np.abs(mean - expected) <= 5 * stderr)


def test_res_quantizes_probabilities_and_res_above_one_counts_steps():
    x, d = [0.9, 0.33], [0.7]
    for res, step in [(0.1, 0.1), (10.0, 0.1), (0.0, 0.0), (-1.0, 0.0)]:
        assert pulses.resolution(res) == step
    up = UpdateParameters(res=10.0, pulse_type="MeanCount")
    counts, plan = counts_of(x, d, 0.05, 0.001, up)
    assert plan.bl > 0 and counts.any(), "res > 1 must not silently drop the update"


def test_sto_round_is_unbiased():
    p = XP_NUMPY.asarray([0.23] * 200_000)
    u = rng.uniform(5, "test.a", 0, 200_000)
    q = to_numpy(pulses.probabilities(XP_NUMPY, p, 1.0, 0.1, u))
    assert set(np.round(q, 12)) <= {0.2, 0.3}
    assert abs(q.mean() - 0.23) < 5 * 0.05 / math.sqrt(200_000)


@pytest.mark.parametrize("xp", OTHER_NAMESPACES)
def test_counts_agree_across_namespaces(xp):
    gen = np.random.default_rng(0)
    x, d = gen.uniform(-1, 1, 16), gen.uniform(-1, 1, 8)
    for pulse_type in ("StochasticCompressed", "MeanCount", "DeterministicImplicit"):
        up = UpdateParameters(pulse_type=pulse_type, sto_round=True, res=0.05)
        ref, _ = counts_of(x, d, 0.02, 0.001, up, seed=9, call=4)
        got, _ = counts_of(x, d, 0.02, 0.001, up, seed=9, call=4, xp=xp)
        assert np.array_equal(ref, got)


def test_non_pulsed_types_are_rejected():
    with pytest.raises(ValueError, match="pulse_type"):
        counts_of([1.0], [1.0], 0.1, 0.001, UpdateParameters(pulse_type="None"))


def test_train_length_is_bounded():
    from refsim.configs import UpdateParameters
    from refsim.stages.pulses import MAX_BL, pulse_plan

    free = UpdateParameters(fixed_bl=False, update_management=False, update_bl_management=False)
    assert pulse_plan(0.5, 1.0, 1.0, 0.001, free).bl == 500
    with pytest.raises(ValueError, match="MAX_BL"):
        pulse_plan(1e3, 1.0, 1.0, 0.001, free)
    with pytest.raises(ValueError, match="desired_bl = 100000"):
        pulse_plan(0.1, 1.0, 1.0, 0.001, UpdateParameters(desired_bl=100000))
    assert pulse_plan(0.1, 1.0, 1.0, 0.001, UpdateParameters(desired_bl=MAX_BL)).bl <= MAX_BL


# -- the precision rule (spec/agreement.md rule 7) -------------------------------------------------


def _counts_in(real, x, d, lr, g, bl_max):
    """An independent evaluation of §U2 and §U4 for update-managed DeterministicImplicit trains,
    every operation rounded in ``real`` (aihwkit's float32 order when ``real`` is np.float32)."""
    eta, x, d, g = real(lr), np.asarray(x, real), np.asarray(d, real), real(g)
    x_m, d_m = np.max(np.abs(x)), np.max(np.abs(d))
    d_v = real(1) * d_m
    k = eta * x_m * d_v / g
    bl = min(math.ceil(k), bl_max)
    a = b = np.sqrt(eta / (g * real(bl)))
    if k > real(bl_max):
        d_v = d_v * (real(bl_max) / k)
    a, b = a * np.sqrt(x_m / d_v), b * np.sqrt(d_v / x_m)
    q_x = np.clip(np.abs(x) * b, 0, 1)
    q_d = np.clip(np.abs(d) * a, 0, 1)
    return np.rint((real(bl) * q_d)[:, None] * q_x[None, :]).astype(np.int64)


def test_float32_counts_round_in_float32():
    """A float32 tile's counts are those of the float32 formulas, including rint ties that the
    float64 formulas put on the other side (the test shows such cases occur)."""
    gen = np.random.default_rng(7)
    up = UpdateParameters(pulse_type="DeterministicImplicit", desired_bl=5)
    other_side = 0
    for _ in range(400):
        x = np.round(gen.uniform(-1, 1, 3) * 64) / 64
        d = np.round(gen.uniform(-1, 1, 2) * 64) / 64
        if not (np.any(x) and np.any(d)):
            continue
        lr, g = float(gen.choice([0.01, 0.1, 0.5])), 0.001
        c32, _ = pulses.coincidences(XP_NUMPY, XP_NUMPY.asarray(x, dtype=XP_NUMPY.float32),
                                     XP_NUMPY.asarray(d, dtype=XP_NUMPY.float32), lr, g, up, 1,
                                     0)
        expected = _counts_in(np.float32, x, d, lr, g, 5)
        np.testing.assert_array_equal(np.abs(to_numpy(c32)), expected)
        other_side += int(np.any(_counts_in(np.float64, x, d, lr, g, 5) != expected))
    assert other_side > 0


def test_deterministic_implicit_ignores_res_and_rounds_its_own_bins_stochastically():
    """'DeterministicImplicit' quantizes with x_res_implicit / d_res_implicit (stochastically with
    sto_round), not with res; a non-zero res with it is a ConfigError naming update.res."""
    from refsim.configs import ConfigError, SingleRPUConfig
    from refsim.tile import AnalogTile

    with pytest.raises(ConfigError, match=r"update\.res"):
        AnalogTile(2, 2, SingleRPUConfig(update=UpdateParameters(
            pulse_type="DeterministicImplicit", res=0.1)))
    x, d = [0.9, 0.33, -0.47], [0.7, -0.2]
    plain = UpdateParameters(pulse_type="DeterministicImplicit", x_res_implicit=0.3)
    sto = UpdateParameters(pulse_type="DeterministicImplicit", x_res_implicit=0.3, sto_round=True)
    plain_draws = {counts_of(x, d, 0.05, 0.001, plain, seed=s)[0].tobytes() for s in range(8)}
    draws = {counts_of(x, d, 0.05, 0.001, sto, seed=s)[0].tobytes() for s in range(8)}
    assert len(plain_draws) == 1 and len(draws) > 1  # sto_round acts on the implicit bins
    np.testing.assert_array_equal(counts_of(x, d, 0.05, 0.001, sto, seed=3)[0],
                                  counts_of(x, d, 0.05, 0.001, sto, seed=3)[0])

"""The learned input range and the output-bound gradient mask (spec/mapping.md §P5, §P6): the
data initialisation, the clip and scale around the analog passes, ρ's gradient and step, every
InputRangeParameter field acting, backends and namespaces agreeing, checkpoints resuming, bad
steps refused; and, when aihwkit 1.1.0 is installed beside refsim, the same training run side by
side with its AnalogLinear + AnalogSGD (float32)."""

import dataclasses
import json

from conftest import OTHER_NAMESPACES, assert_same_state, to_numpy

import numpy as np
import pytest

from aihwkit_peer import aihwkit_python, run_script
from refsim import configs as C
from refsim import fast_info
from refsim import nn
from refsim.stages import mapping as P
from refsim.tile import AnalogTile

BACKENDS = ["reference"] + (["fast"] if fast_info()["available"] else [])


def _config(out_bound=20.0, **ir):
    """An InferenceRPUConfig with a deterministic forward (no noise, no DAC/ADC, NM/BM off) and
    a perfect backward, the input range on with ``ir``."""
    cfg = C.InferenceRPUConfig()
    cfg.modifier.type = "None"
    cfg.forward.out_noise = cfg.forward.w_noise = 0.0
    cfg.forward.inp_res = cfg.forward.out_res = -1.0
    cfg.forward.noise_management = cfg.forward.bound_management = "None"
    cfg.forward.out_bound = out_bound
    cfg.backward.is_perfect = True
    cfg.pre_post.input_range.enable = True
    for field, value in ir.items():
        setattr(cfg.pre_post.input_range, field, value)
    return cfg


def _batches(steps, rng_seed=0, in_size=5, out_size=3, scale=256):
    """Weights and (x, grad) batches on a 2⁻⁶ grid (exact in float32)."""
    rng = np.random.default_rng(rng_seed)
    w = (rng.integers(-32, 33, size=(out_size, in_size)) / 64).astype(np.float32)
    data = [((rng.integers(-scale, scale + 1, size=(4, in_size)) / 64).astype(np.float32),
             (rng.integers(-64, 65, size=(4, out_size)) / 64).astype(np.float32))
            for _ in range(steps)]
    return w, data


def refsim_run(cfg, steps=4, lr=0.5, backend="reference", dtype=np.float32, xp=None, seed=0,
               scale=256):
    """Train an AnalogLinear (no bias) for ``steps`` batches; per step the output, the input
    gradient, ρ before the step, its gradient, ρ after the step and the weights."""
    w, data = _batches(steps, seed, scale=scale)
    layer = nn.AnalogLinear(5, 3, cfg, bias=False, dtype=getattr(xp, dtype.__name__, dtype)
                            if xp is not None else dtype, backend=backend, xp=xp)
    s = layer.xp
    layer.set_weights(s.asarray(w))
    out = []
    for x, g in data:
        y = layer.forward(s.asarray(x))
        gx = layer.backward(s.asarray(g))
        ir = layer.tiles[0][0].input_range
        rec = dict(y=to_numpy(y), gx=to_numpy(gx), rho_before=float(ir.value[0]),
                   grad=None if ir.grad is None else float(ir.grad[0]))
        layer.update(lr)
        layer.post_update_step()
        rec.update(rho=float(layer.tiles[0][0].input_range.value[0]),
                   w=to_numpy(layer.get_weights()[0]))
        out.append(rec)
    return out


# -- the stage's pure functions ---------------------------------------------------------------


def test_init_from_data_averages_the_first_batches():
    params = C.InputRangeParameter(enable=True, init_from_data=2, init_std_alpha=2.0)
    state = P.initial_input_range(np, params, np.float64)
    assert state.value[0] == 3.0 and state.count == 0
    a, b, c = (np.array([[0.0, 1.0, 2.0, 3.0]]) * k for k in (1, 2, 5))
    state = P.init_from_data(np, state, a, params)  # the first batch replaces init_value
    assert state.value[0] == pytest.approx(2.0 * np.std(a, ddof=1)) and state.count == 1
    state = P.init_from_data(np, state, np.zeros((2, 4)), params)  # std 0: not counted
    assert state.count == 1
    state = P.init_from_data(np, state, b, params)
    assert state.value[0] == pytest.approx((2 * np.std(a, ddof=1) + 2 * np.std(b, ddof=1)) / 2)
    before = state
    assert P.init_from_data(np, state, c, params) is before  # init_from_data batches used


def test_clip_and_scale():
    rho = np.array([2.0])
    np.testing.assert_array_equal(P.apply_input_range(np, np.array([-3.0, -1.0, 0.5, 2.0, 7.0]),
                                                      rho), [-1.0, -0.5, 0.25, 1.0, 1.0])


def test_range_gradient_terms():
    """The one-sided clipping term, its relative scaling, the output-clipping and decay terms."""
    x = np.array([[3.0, -3.0, 0.5, 1.0]])
    z = np.array([[-0.5, -0.25, 7.0, 9.0]])  # only x ≥ ρ with z < 0 and x ≤ −ρ with z > 0 count
    rho = np.array([2.0])
    base = dict(enable=True, decay=0.0, manage_output_clipping=False)
    g = P.range_gradient(np, x, z, rho, C.InputRangeParameter(gradient_relative=False, **base))
    assert g[0] == -0.5
    z2 = np.array([[-0.5, 0.25, 7.0, 9.0]])
    g = P.range_gradient(np, x, z2, rho, C.InputRangeParameter(gradient_relative=False, **base))
    assert g[0] == -0.75
    g = P.range_gradient(np, x, z2, rho, C.InputRangeParameter(gradient_scale=3.0, **base))
    assert g[0] == -0.75 * 2.0 * 3.0
    mask = np.array([[True, False, False]])  # 2 of 3 outputs inside the bound
    ir = C.InputRangeParameter(enable=True, decay=0.0, gradient_relative=False,
                               output_min_percentage=0.9)
    g = P.range_gradient(np, x, z2, rho, ir, mask)
    assert g[0] == pytest.approx(-0.75 - (1 / 3) * 2.0)
    ir = C.InputRangeParameter(enable=True, decay=0.1, gradient_relative=False,
                               manage_output_clipping=False, input_min_percentage=0.4)
    assert P.range_gradient(np, x, z2, rho, ir)[0] == pytest.approx(-0.75 + 0.1 * 2.0)


def test_output_bound_mask():
    io = C.IOParameters(out_bound=2.0, out_scale=0.5)
    bound = P.output_bound(io)
    assert bound == pytest.approx(0.999)
    np.testing.assert_array_equal(P.output_clip_mask(np, np.array([0.9, 0.999, -1.0, 0.0]), bound),
                                  [False, True, True, False])
    assert P.output_bound(C.IOParameters(out_bound=0.0)) is None


# -- the tile ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_clips_scales_and_learns(backend):
    """y = ρ·f(W clip(x, ±ρ)/ρ); ρ from the first batch; backward with the context accumulates
    ρ's gradient; update steps ρ after using it for x̂."""
    cfg = _config(init_from_data=1, init_std_alpha=1.0, decay=0.0, manage_output_clipping=False)
    tile = AnalogTile(3, 5, cfg, seed=1, dtype=np.float64, backend=backend)
    w, [(x, g)] = _batches(1)
    x, g = x.astype(np.float64), g.astype(np.float64)
    tile.set_weights(w.astype(np.float64))
    ctx = P.PassContext()
    y = tile.forward(x, context=ctx)
    rho = np.std(x, ddof=1)
    assert tile.input_range.value[0] == pytest.approx(rho, rel=1e-12)
    np.testing.assert_allclose(y, rho * (np.clip(x, -rho, rho) / rho) @ w.T, rtol=1e-12)
    z = tile.backward(g, context=ctx)
    np.testing.assert_allclose(z, g @ w, rtol=1e-12)  # straight through the clip
    up = np.where(x >= rho, np.minimum(z, 0), 0).sum() - np.where(x <= -rho, np.maximum(z, 0),
                                                                   0).sum()
    assert tile.input_range.grad[0] == pytest.approx(up * rho, rel=1e-12)
    assert up < 0  # the data clip some entries, so ρ is pushed up
    tile.update(x, g, 0.1)
    assert tile.input_range.value[0] == pytest.approx(rho - 0.1 * up * rho, rel=1e-12)
    assert tile.input_range.grad is None
    np.testing.assert_allclose(tile.get_weights(), w - 0.1 * g.T @ (np.clip(x, -rho, rho) / rho),
                               rtol=1e-12)


def test_evaluation_does_not_initialise_from_data():
    cfg = _config()
    tile = AnalogTile(3, 5, cfg, seed=1).eval()
    tile.forward(np.ones((2, 5)) * np.arange(5))
    assert tile.input_range.value[0] == 3.0 and tile.input_range.count == 0
    tile.train()
    tile.forward(np.ones((2, 5)) * np.arange(5))
    assert tile.input_range.count == 1


def test_a_bare_backward_without_context_learns_nothing():
    cfg = _config()
    tile = AnalogTile(3, 5, cfg, seed=1)
    x = np.arange(10.0).reshape(2, 5)
    tile.forward(x)
    tile.backward(np.ones((2, 3)))
    assert tile.input_range.grad is None


def test_the_output_bound_mask_zeroes_the_backward_input():
    """With a context, d is zeroed where the forward output reached out_scale·out_bound·0.999,
    on every analog tile (here a SingleRPUConfig tile); without one, or for a floating-point
    tile, it is not."""
    cfg = C.SingleRPUConfig()
    cfg.forward.is_perfect = cfg.backward.is_perfect = True
    cfg.forward.out_bound = 1.0
    tile = AnalogTile(2, 2, cfg, seed=1)
    tile.set_weights(np.array([[1.0, 0.0], [0.0, 1.0]]))
    x = np.array([[2.0, 0.5]])
    ctx = P.PassContext()
    tile.forward(x, context=ctx)
    np.testing.assert_array_equal(ctx.out_mask, [[True, False]])
    np.testing.assert_array_equal(tile.backward(np.ones((1, 2)), context=ctx), [[0.0, 1.0]])
    np.testing.assert_array_equal(tile.backward(np.ones((1, 2))), [[1.0, 1.0]])
    fp = AnalogTile(2, 2, C.FloatingPointRPUConfig(), seed=1)
    ctx = P.PassContext()
    fp.forward(x, context=ctx)
    assert ctx.out_mask is None


def test_a_collapsing_input_range_is_refused_and_changes_nothing():
    cfg = _config(init_from_data=0, decay=10.0, input_min_percentage=0.0,
                  manage_output_clipping=False, init_value=100.0)
    tile = AnalogTile(3, 5, cfg, seed=1)
    w, [(x, g)] = _batches(1)
    tile.set_weights(w.astype(np.float64))
    ctx = P.PassContext()
    tile.forward(x.astype(np.float64), context=ctx)
    tile.backward(g.astype(np.float64), context=ctx)
    before = tile.state_dict()
    assert float(tile.input_range.grad[0]) == 10.0 * 100.0  # nothing clipped: the decay term
    with pytest.raises(ValueError, match="pre_post.input_range"):
        tile.update(x.astype(np.float64), g.astype(np.float64), 0.1)
    assert_same_state(tile.state_dict(), before)


def test_a_wrong_context_is_refused():
    tile = AnalogTile(3, 5, _config(), seed=1)
    ctx = P.PassContext()
    tile.forward(np.ones((2, 5)), context=ctx)
    with pytest.raises(ValueError, match="d: "):
        tile.backward(np.ones((3, 3)), context=ctx)


def test_state_is_checkpointed_and_resumes_identically():
    cfg = _config(init_from_data=3)
    w, data = _batches(4)
    layer = nn.AnalogLinear(5, 3, cfg, bias=False)
    layer.set_weights(w.astype(np.float64))

    def step(m, x, g):
        m.forward(x.astype(np.float64))
        m.backward(g.astype(np.float64))
        m.update(0.5)
        m.post_update_step()

    step(layer, *data[0])
    layer.forward(data[1][0].astype(np.float64))
    layer.backward(data[1][1].astype(np.float64))  # mid-step: ρ has a pending gradient
    state = layer.tiles[0][0].state_dict()
    assert state["input_range"]["grad"] is not None and state["input_range"]["count"] == 2
    twin = AnalogTile(3, 5, cfg, seed=0)
    twin.load_state_dict(state)
    assert_same_state(twin.state_dict(), state)
    for tile in (layer.tiles[0][0], twin):
        tile.update(data[1][0].astype(np.float64), data[1][1].astype(np.float64), 0.5)
    assert_same_state(twin.state_dict(), layer.tiles[0][0].state_dict())
    bad = dict(state, input_range=dict(state["input_range"], value=np.array([-1.0])))
    with pytest.raises(ValueError, match="input_range"):
        twin.load_state_dict(bad)
    with pytest.raises(ValueError, match="input_range"):
        twin.load_state_dict(dict(state, input_range=None))


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_backends_agree(backend):
    cfg = _config(out_bound=0.5, init_from_data=2, decay=0.01, input_min_percentage=0.5)
    a = refsim_run(cfg, backend="reference", dtype=np.float64)
    b = refsim_run(cfg, backend=backend, dtype=np.float64)
    for ra, rb in zip(a, b):
        for key in ra:
            np.testing.assert_array_equal(ra[key], rb[key], err_msg=key)


@pytest.mark.parametrize("xp", OTHER_NAMESPACES)
def test_namespaces_agree(xp):
    cfg = _config(out_bound=0.5, init_from_data=2, decay=0.01, input_min_percentage=0.5)
    a = refsim_run(cfg, dtype=np.float64)
    b = refsim_run(cfg, dtype=np.float64, xp=xp)
    for ra, rb in zip(a, b):
        for key in ra:
            np.testing.assert_allclose(ra[key], rb[key], rtol=1e-12, atol=1e-14, err_msg=key)


# -- every field acts ------------------------------------------------------------------------------

BASE = dict(out_bound=0.5, init_from_data=2, init_std_alpha=1.0, decay=0.01,
            input_min_percentage=0.5,
            output_min_percentage=0.95)
#: For each InputRangeParameter field, a value that must change the training run of refsim_run
#: (from the settings BASE, or the ones given with it).
FIELD_CASES = {
    "enable": (False, {}),
    "learn_input_range": (False, {}),
    "init_value": (5.0, {"init_from_data": 0}),
    "init_from_data": (1, {}),
    "init_std_alpha": (3.0, {}),
    "decay": (0.1, {}),
    "input_min_percentage": (0.99, {}),
    "manage_output_clipping": (False, {}),
    "output_min_percentage": (0.5, {}),
    "gradient_scale": (3.0, {}),
    "gradient_relative": (False, {}),
}


def test_every_input_range_field_is_walked():
    names = {f.name for f in dataclasses.fields(C.InputRangeParameter)}
    assert names == set(FIELD_CASES)
    assert {f.name for f in dataclasses.fields(C.PrePostProcessingParameter)} == {"input_range"}


@pytest.mark.parametrize("field", sorted(FIELD_CASES))
def test_every_input_range_field_changes_the_result(field):
    value, extra = FIELD_CASES[field]
    settings = dict(BASE)
    out_bound = settings.pop("out_bound")
    settings.update(extra)
    base = refsim_run(_config(out_bound, **settings), dtype=np.float64, scale=512)
    settings[field] = value
    cfg = _config(out_bound, **settings)
    if field == "enable":
        cfg.pre_post.input_range.enable = False
        w, data = _batches(4, scale=512)
        layer = nn.AnalogLinear(5, 3, cfg, bias=False)
        layer.set_weights(w.astype(np.float64))
        y = layer.forward(data[0][0].astype(np.float64))
        assert not np.array_equal(y, base[0]["y"])
        return
    changed = refsim_run(cfg, dtype=np.float64, scale=512)
    assert any(not np.array_equal(a[k], b[k]) for a, b in zip(base, changed) for k in a
               if a[k] is not None), field


# -- side by side with aihwkit 1.1.0 ------------------------------------------------------------

AIHWKIT_RUN = """
import json, sys, numpy as np, torch
from aihwkit.simulator.configs import InferenceRPUConfig
from aihwkit.simulator.parameters.enums import (WeightModifierType, NoiseManagementType,
                                                BoundManagementType)
from aihwkit.nn import AnalogLinear
from aihwkit.optim import AnalogSGD
results = []
for case in json.loads({cases!r}):
    cfg = InferenceRPUConfig()
    cfg.modifier.type = WeightModifierType.NONE
    cfg.forward.out_noise = 0.0
    cfg.forward.w_noise = 0.0
    cfg.forward.inp_res = -1
    cfg.forward.out_res = -1
    cfg.forward.noise_management = NoiseManagementType.NONE
    cfg.forward.bound_management = BoundManagementType.NONE
    cfg.forward.out_bound = case['out_bound']
    cfg.backward.is_perfect = True
    cfg.pre_post.input_range.enable = True
    for k, v in case['ir'].items():
        setattr(cfg.pre_post.input_range, k, v)
    rng = np.random.default_rng(0)
    w = (rng.integers(-32, 33, size=(3, 5)) / 64).astype(np.float32)
    layer = AnalogLinear(5, 3, bias=False, rpu_config=cfg)
    layer.set_weights(torch.from_numpy(w))
    opt = AnalogSGD(layer.parameters(), lr=0.5)
    opt.regroup_param_groups(layer)
    tile = next(layer.analog_tiles())
    out = []
    for k in range(4):
        x = torch.from_numpy((rng.integers(-256, 257, size=(4, 5)) / 64).astype(np.float32))
        g = torch.from_numpy((rng.integers(-64, 65, size=(4, 3)) / 64).astype(np.float32))
        x.requires_grad_(True)
        opt.zero_grad()
        y = layer(x)
        y.backward(g)
        grad = tile.input_range.grad
        rec = dict(y=y.tolist(), gx=x.grad.tolist(),
                   rho_before=float(tile.input_range.detach()[0]),
                   grad=None if grad is None or not case['ir'].get('learn_input_range', True)
                   else float(grad[0]))
        opt.step()
        rec.update(rho=float(tile.input_range.detach()[0]), w=layer.get_weights()[0].tolist())
        out.append(rec)
    results.append(out)
print(json.dumps(results))
"""

#: Settings run on both sides with an output bound that nothing reaches (no output clipping).
AIHWKIT_CASES = [
    dict(init_from_data=2, decay=0.01, input_min_percentage=0.5),
    dict(init_from_data=1, decay=0.0),
    dict(init_from_data=0, init_value=1.5, decay=0.0, gradient_scale=2.0),
    dict(init_from_data=0, init_value=1.5, decay=0.0, gradient_relative=False,
         gradient_scale=2.0),
    dict(init_from_data=3, init_std_alpha=1.0, decay=0.05, input_min_percentage=0.1),
    dict(init_from_data=2, learn_input_range=False),
]


@pytest.fixture(scope="module")
def aihwkit_runs():
    if aihwkit_python() is None:
        pytest.skip("aihwkit is not installed beside refsim ($REFSIM_AIHWKIT_PYTHON)")
    cases = [dict(out_bound=20.0, ir=dict(c, manage_output_clipping=False))
             for c in AIHWKIT_CASES]
    cases.append(dict(out_bound=0.5, ir=dict(init_from_data=2, decay=0.01,
                                             input_min_percentage=0.5,
                                             manage_output_clipping=True)))
    return run_script(AIHWKIT_RUN.format(cases=json.dumps(cases)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", range(len(AIHWKIT_CASES)))
def test_side_by_side_with_aihwkit(aihwkit_runs, case, backend):
    """ρ of the data initialisation bit for bit in float32 (std accumulated in double on both
    sides); ρ's gradient and step, the weights, outputs and input gradients to float32 rounding:
    x/ρ is off the 2⁻⁶ grid, so the summation order of the sums and products shows
    (spec/agreement.md rule 7)."""
    settings = dict(AIHWKIT_CASES[case], manage_output_clipping=False)
    ours = refsim_run(_config(20.0, **settings), backend=backend)
    assert np.float32(aihwkit_runs[case][0]["rho_before"]) == np.float32(ours[0]["rho_before"])
    for step, (a, r) in enumerate(zip(aihwkit_runs[case], ours)):
        for key in ("rho_before", "grad", "rho"):
            assert (a[key] is None) == (r[key] is None), (step, key)
            if a[key] is not None:
                assert np.float32(a[key]) == pytest.approx(np.float32(r[key]), rel=2e-6), \
                    (step, key)
        for key in ("w", "y", "gx"):
            np.testing.assert_allclose(np.float32(a[key]), r[key], rtol=2e-6, atol=1e-6,
                                       err_msg=f"step {step} {key}")


def test_output_clipping_share_deviation(aihwkit_runs):
    """spec/deviations.md: aihwkit divides the count of clipped outputs by the number of entries
    of the *input* gradient (batch × in_size), refsim by the number of outputs (batch ×
    out_size). The first step clipping outputs shows it: aihwkit's gradient is refsim's with the
    other share."""
    theirs = aihwkit_runs[-1]
    cfg = _config(0.5, init_from_data=2, decay=0.01, input_min_percentage=0.5,
                  manage_output_clipping=True)
    ours = refsim_run(cfg)
    step = next(i for i, (a, r) in enumerate(zip(theirs, ours)) if a["grad"] != r["grad"])
    assert theirs[step]["rho_before"] == ours[step]["rho_before"]
    rho, batch = ours[step]["rho_before"], ours[step]["y"].shape[0]
    clipped = np.sum(np.abs(ours[step]["y"] / rho) >= 0.5 * 0.999)
    assert clipped > 0
    share_ours, share_theirs = 1 - clipped / (batch * 3), 1 - clipped / (batch * 5)
    assert share_ours < 0.95 and share_theirs < 0.95
    expected = ours[step]["grad"] + (1 - share_ours) * rho - (1 - share_theirs) * rho
    assert theirs[step]["grad"] == pytest.approx(expected, rel=1e-5)

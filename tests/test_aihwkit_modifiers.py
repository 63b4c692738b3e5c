"""refsim's weight clipping and weight modifier (spec/modifiers.md) side by side with aihwkit 1.1.0
(float32, CPU: ``WeightClipper`` and ``WeightModifier`` of its C++ core, reached through
``InferenceTile.post_update_step`` and ``AnalogLinear`` + ``AnalogSGD``).

* **deterministic** (the clip types; Discretize and DoReFa without sto_round): one
  post_update_step on the same float32 weights gives the same W and Ŵ. The weights are multiples of
  1/64, so every bound and step is computed exactly on both sides. Ŵ is read back as a perfect
  forward pass of the identity in training mode, on both sides.
* **deviations** (spec/deviations.md §4), both sides shown: aihwkit's Discretize step is res·A
  (refsim: 2·res·A; refsim with res/2 gives aihwkit's result), aihwkit does not invert res > 1
  (refsim: a number of steps), and aihwkit's MultNormal scales its noise by A too.
* **statistical** (noise types): aihwkit draws from a clock-seeded generator, refsim from its
  addressed streams, so only the distributions of Ŵ − W on one 128×128 matrix are compared
  (mean and standard deviation, loosely: a few standard errors).

aihwkit runs in its own Python (tests/aihwkit_peer.py ``run_script``); weights travel as .npy files.
Without aihwkit the module is skipped.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List

import numpy as np
import pytest

from aihwkit_peer import aihwkit_python, run_script
from refsim import configs as C
from refsim import fast_info
from refsim.tile import AnalogTile

pytestmark = pytest.mark.skipif(aihwkit_python() is None,
                                reason="aihwkit is not installed beside refsim "
                                       "($REFSIM_AIHWKIT_PYTHON)")

BACKENDS = ["reference"] + (["fast"] if fast_info()["available"] else [])

AIHWKIT_STEP = """
import json, numpy as np, torch
from aihwkit.simulator.configs import InferenceRPUConfig
from aihwkit.simulator.parameters import WeightModifierParameter, WeightClipParameter
from aihwkit.simulator.parameters.enums import WeightModifierType, WeightClipType
from aihwkit.simulator.tiles import InferenceTile
w = torch.from_numpy(np.load({w!r}))
out = []
for case in json.loads({cases!r}):
    c = InferenceRPUConfig()
    c.forward.is_perfect = True
    clip = dict(case.get('clip') or {{}})
    if clip:
        clip['type'] = WeightClipType(clip.get('type', 'None'))
        c.clip = WeightClipParameter(**clip)
    mod = dict(case.get('modifier') or {{'type': 'None'}})
    mod['type'] = WeightModifierType(mod['type'])
    c.modifier = WeightModifierParameter(**mod)
    t = InferenceTile(w.shape[0], w.shape[1], c)
    t.set_weights(w)
    hats = []
    for _ in range(case.get('steps', 1)):
        t.post_update_step()
        hats.append(t.forward(torch.eye(w.shape[1])).T.tolist())
    out.append(dict(weights=t.get_weights()[0].tolist(), hats=hats))
print(json.dumps(out))
"""


def aihwkit_steps(tmp_path, w: np.ndarray, cases: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    path = str(tmp_path / "w.npy")
    np.save(path, w.astype(np.float32))
    got = run_script(AIHWKIT_STEP.format(w=path, cases=json.dumps(cases)))
    return [dict(weights=np.asarray(g["weights"], np.float32),
                 hats=[np.asarray(h, np.float32) for h in g["hats"]]) for g in got]


def refsim_steps(w: np.ndarray, case: Dict[str, Any], backend: str, seed: int = 1):
    cfg = C.InferenceRPUConfig()
    cfg.forward.is_perfect = True
    if case.get("clip"):
        cfg.clip = C.WeightClipParameter(**case["clip"])
    cfg.modifier = C.WeightModifierParameter(**(case.get("modifier") or {"type": "None"}))
    tile = AnalogTile(w.shape[0], w.shape[1], cfg, seed=seed, dtype=np.float32, backend=backend)
    tile.set_weights(w.astype(np.float32))
    hats = []
    for _ in range(case.get("steps", 1)):
        tile.post_update_step()
        hats.append(np.asarray(tile.forward(np.eye(w.shape[1], dtype=np.float32)).T))
    return dict(weights=np.asarray(tile.get_weights()), hats=hats)


def dyadic_weights(shape, seed=0, scale=1.0):
    """Multiples of 1/64 in [−scale, scale] (scale a power of 2), with ±scale present."""
    g = np.random.default_rng(seed)
    w = g.integers(-64, 65, size=shape) / 64.0 * scale
    w[0, 0], w[-1, 1] = scale, -scale
    return w.astype(np.float32)


W = dyadic_weights((6, 7), seed=3, scale=0.5)

# -- deterministic: identical on both sides ----------------------------------------------------------

#: name -> case (clip and modifier settings, the same on both sides)
SAME: Dict[str, Dict[str, Any]] = {
    "clip-fixed": dict(clip=dict(type="FixedValue", fixed_value=0.25)),
    "clip-fixed-off": dict(clip=dict(type="FixedValue", fixed_value=-1.0)),
    "clip-gaussian": dict(clip=dict(type="LayerGaussian", sigma=1.0)),
    "clip-gaussian-capped": dict(clip=dict(type="LayerGaussian", sigma=2.5, fixed_value=0.125)),
    "clip-channel-max": dict(clip=dict(type="AverageChannelMax")),
    "clip-channel-max-capped": dict(clip=dict(type="AverageChannelMax", fixed_value=0.25)),
    "clip-none": dict(clip=dict(type="None", fixed_value=0.01, sigma=0.01)),
    # refsim's res is aihwkit's halved: the Discretize step deviation (see HALF_RES)
    "clip-then-discretize": dict(clip=dict(type="FixedValue", fixed_value=0.25),
                                 modifier=dict(type="Discretize", res=0.25), steps=2,
                                 ours=dict(type="Discretize", res=0.125)),
    "dorefa": dict(modifier=dict(type="DoReFa", res=0.125)),
    "dorefa-clip": dict(modifier=dict(type="DoReFa", res=0.0625, dorefa_clip=0.9)),
    "copy-no-drop": dict(modifier=dict(type="Copy")),
}

#: name -> (refsim's case, aihwkit's case): Discretize, whose step differs (deviations.md §4)
#: by a factor 2, so refsim's res/2 is aihwkit's res
HALF_RES: Dict[str, Any] = {
    "discretize": dict(type="Discretize", res=0.125),
    "discretize-ties": dict(type="Discretize", res=0.0625),
    "discretize-copy-last-column": dict(type="Discretize", res=0.125, copy_last_column=True),
    "discretize-assumed-wmax": dict(type="Discretize", res=0.25, rel_to_actual_wmax=False,
                                    assumed_wmax=0.25),
}


@pytest.fixture(scope="module")
def aihwkit_same(tmp_path_factory):
    cases = [{k: v for k, v in c.items() if k != "ours"} for c in SAME.values()]
    cases += [dict(modifier=m) for m in HALF_RES.values()]
    got = aihwkit_steps(tmp_path_factory.mktemp("same"), W, cases)
    return dict(zip(list(SAME) + list(HALF_RES), got))


def _assert_same(ours, theirs, name):
    np.testing.assert_array_equal(ours["weights"], theirs["weights"], err_msg=name)
    for k, (a, b) in enumerate(zip(ours["hats"], theirs["hats"])):
        np.testing.assert_array_equal(a, b, err_msg=f"{name} step {k}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(SAME))
def test_clip_and_deterministic_modifiers_agree(aihwkit_same, name, backend):
    case = SAME[name]
    ours = refsim_steps(W, {**case, "modifier": case.get("ours", case.get("modifier"))}, backend)
    if case.get("clip", {}).get("type") == "LayerGaussian" and "fixed_value" not in case["clip"]:
        # aihwkit sums mean and variance sequentially in float32, numpy pairwise: the bound
        # (and so the clipped elements) may differ in the last bit
        np.testing.assert_allclose(ours["weights"], aihwkit_same[name]["weights"], rtol=2.5e-7,
                                   atol=0, err_msg=name)
    else:
        _assert_same(ours, aihwkit_same[name], name)
    if case.get("clip", {}).get("type") not in (None, "None") and name != "clip-fixed-off":
        assert not np.array_equal(ours["weights"], W), name  # the clip did act


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(HALF_RES))
def test_discretize_step_deviation_both_sides(aihwkit_same, name, backend):
    """deviations.md §4 'modifier Discretize step': aihwkit's step is res·A, refsim's 2·res·A
    (the documented one); refsim with res/2 gives aihwkit's Ŵ bit for bit."""
    mod = HALF_RES[name]
    theirs = aihwkit_same[name]
    half = refsim_steps(W, dict(modifier={**mod, "res": mod["res"] / 2}), backend)
    _assert_same(half, theirs, name)
    same_res = refsim_steps(W, dict(modifier=mod), backend)
    a = mod.get("assumed_wmax") if mod.get("rel_to_actual_wmax") is False else \
        float(np.max(np.abs(W[:, :-1] if mod.get("copy_last_column") else W)))
    cols = slice(None, -1) if mod.get("copy_last_column") else slice(None)
    for hat, step in ((theirs["hats"][0], mod["res"] * a), (same_res["hats"][0],
                                                            2 * mod["res"] * a)):
        levels = hat[:, cols] / np.float32(step)
        np.testing.assert_array_equal(levels, np.round(levels))  # multiples of the step
    assert not np.array_equal(same_res["hats"][0], theirs["hats"][0])
    if mod.get("copy_last_column"):
        np.testing.assert_array_equal(theirs["hats"][0][:, -1], W[:, -1])
        np.testing.assert_array_equal(same_res["hats"][0][:, -1], W[:, -1])


def test_discretize_ties_round_away_from_zero_on_both_sides(tmp_path):
    w = np.array([[1.0, 0.125, -0.125, 0.375, -0.375, 0.625]], np.float32)
    theirs = aihwkit_steps(tmp_path, w, [dict(modifier=dict(type="Discretize", res=0.25))])[0]
    ours = refsim_steps(w, dict(modifier=dict(type="Discretize", res=0.125)), "reference")
    want = np.array([[1.0, 0.25, -0.25, 0.5, -0.5, 0.75]], np.float32)
    np.testing.assert_array_equal(theirs["hats"][0], want)
    np.testing.assert_array_equal(ours["hats"][0], want)


def test_res_above_one_deviation_both_sides(tmp_path):
    """deviations.md §4 'modifier res > 1': aihwkit uses res = 4 as a step of 4·A (every
    weight rounds to 0), refsim as 4 steps (res 1/4, step 2·A/4)."""
    theirs = aihwkit_steps(tmp_path, W, [dict(modifier=dict(type="Discretize", res=4.0))])[0]
    assert np.all(theirs["hats"][0] == 0)
    ours = refsim_steps(W, dict(modifier=dict(type="Discretize", res=4.0)), "reference")
    quarter = refsim_steps(W, dict(modifier=dict(type="Discretize", res=0.25)), "reference")
    np.testing.assert_array_equal(ours["hats"][0], quarter["hats"][0])
    assert len(np.unique(ours["hats"][0])) == 5  # −A, −A/2, 0, A/2, A


AIHWKIT_TRAIN = """
import json, numpy as np, torch
from aihwkit.nn import AnalogLinear
from aihwkit.optim import AnalogSGD
from aihwkit.simulator.configs import InferenceRPUConfig
from aihwkit.simulator.parameters import WeightModifierParameter, WeightClipParameter
from aihwkit.simulator.parameters.enums import WeightModifierType, WeightClipType
w = torch.from_numpy(np.load({w!r})); x = torch.from_numpy(np.load({x!r}))
g = torch.from_numpy(np.load({g!r}))
c = InferenceRPUConfig()
c.forward.is_perfect = True
c.clip = WeightClipParameter(type=WeightClipType.FIXED_VALUE, fixed_value={bound!r})
c.modifier = WeightModifierParameter(type=WeightModifierType.DISCRETIZE, res={res!r})
layer = AnalogLinear(w.shape[1], w.shape[0], bias=False, rpu_config=c)
layer.set_weights(w)
opt = AnalogSGD(layer.parameters(), lr={lr!r})
opt.regroup_param_groups(layer)
out = dict(y=[], weights=[])
for step in range({steps!r}):
    opt.zero_grad()
    y = layer(x)
    (y * g).sum().backward()
    opt.step()
    out['y'].append(y.detach().tolist())
    out['weights'].append(layer.get_weights()[0].tolist())
print(json.dumps(out))
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_with_analog_sgd_agrees(tmp_path, backend):
    """AnalogLinear + AnalogSGD: each step forward (Ŵ after the first step), backward, update on W,
    then post_update_step (clip FixedValue, then Discretize). The inputs, gradients and learning
    rate are dyadic, so the update is exact; refsim's res is aihwkit's halved (the step
    deviation), and the outputs and weights agree bit for bit."""
    x = (np.random.default_rng(1).integers(-4, 5, size=(3, W.shape[1])) / 4).astype(np.float32)
    g = (np.random.default_rng(2).integers(-4, 5, size=(3, W.shape[0])) / 8).astype(np.float32)
    lr, bound, res, steps = 0.125, 0.375, 0.125, 4
    paths = {}
    for name, a in (("w", W), ("x", x), ("g", g)):
        paths[name] = str(tmp_path / f"{name}.npy")
        np.save(paths[name], a)
    theirs = run_script(AIHWKIT_TRAIN.format(bound=bound, res=res, lr=lr, steps=steps, **paths))
    cfg = C.InferenceRPUConfig()
    cfg.forward.is_perfect = True
    cfg.clip = C.WeightClipParameter(type="FixedValue", fixed_value=bound)
    cfg.modifier = C.WeightModifierParameter(type="Discretize", res=res / 2)
    tile = AnalogTile(W.shape[0], W.shape[1], cfg, seed=1, dtype=np.float32, backend=backend)
    tile.set_weights(W)
    for step in range(steps):
        y = tile.forward(x)
        tile.backward(g)
        tile.update(x, g, lr)
        tile.post_update_step()
        np.testing.assert_array_equal(y, np.asarray(theirs["y"][step], np.float32),
                                      err_msg=f"y step {step}")
        np.testing.assert_array_equal(tile.get_weights(),
                                      np.asarray(theirs["weights"][step], np.float32),
                                      err_msg=f"weights step {step}")
    assert np.max(np.abs(tile.get_weights())) <= bound
    assert not np.array_equal(tile.modified_weights, tile.get_weights())


# -- statistical: noise types -----------------------------------------------------------------------

WIDE = (np.random.default_rng(5).uniform(-2.0, 2.0, size=(128, 128))).astype(np.float32)
WIDE[0, 0] = 2.0  # A = 2: the MultNormal deviation shows as a factor 2

#: name -> (refsim's modifier, aihwkit's modifier, the factor aihwkit's noise std has over
#: refsim's: MultNormal is scaled by A = 2 in aihwkit's C++ code, deviations.md §4)
NOISY: Dict[str, Any] = {
    "add-normal": (dict(type="AddNormal", std_dev=0.05), None, 1.0),
    "mult-normal": (dict(type="MultNormal", std_dev=0.05), None, 2.0),
    "poly": (dict(type="Poly", std_dev=0.5), None, 1.0),
    "prog-noise": (dict(type="ProgNoise", std_dev=5.0, g_max=25.0), None, 1.0),
    "discretize-add-normal": (dict(type="DiscretizeAddNormal", res=0.05, std_dev=0.02),
                              dict(type="DiscretizeAddNormal", res=0.1, std_dev=0.02), 1.0),
    "discretize-sto-round": (dict(type="Discretize", res=0.05, sto_round=True),
                             dict(type="Discretize", res=0.1, sto_round=True), 1.0),
    "dorefa-sto-round": (dict(type="DoReFa", res=0.1, sto_round=True), None, 1.0),
    "drop-connect": (dict(type="DropConnect", pdrop=0.3), None, 1.0),
    "add-normal-drop": (dict(type="AddNormal", std_dev=0.05, pdrop=0.2), None, 1.0),
}


@pytest.fixture(scope="module")
def aihwkit_noisy(tmp_path_factory):
    cases = [dict(modifier=theirs or ours) for ours, theirs, _ in NOISY.values()]
    return dict(zip(NOISY, aihwkit_steps(tmp_path_factory.mktemp("noisy"), WIDE, cases)))


def _stats(hat, w, relative):
    err = (hat.astype(np.float64) - w) / (w if relative else 1.0)
    return dict(mean=float(err.mean()), std=float(err.std()), zeros=float(np.mean(hat == 0)),
                n=err.size)


@pytest.mark.parametrize("name", sorted(NOISY))
def test_noise_statistics_agree(aihwkit_noisy, name):
    ours_mod, _, factor = NOISY[name]
    ours = refsim_steps(WIDE, dict(modifier=ours_mod), "reference", seed=11)
    theirs = aihwkit_noisy[name]
    w = WIDE.astype(np.float64)
    relative = ours_mod["type"] == "MultNormal"
    a, b = _stats(ours["hats"][0], w, relative), _stats(theirs["hats"][0], w, relative)
    # the weights themselves are untouched on both sides
    np.testing.assert_array_equal(ours["weights"], WIDE)
    np.testing.assert_array_equal(theirs["weights"], WIDE)
    # std within 6 %, mean within 6 standard errors of the larger std (N = 16384: the standard
    # error of a std is 0.55 %)
    assert b["std"] == pytest.approx(factor * a["std"], rel=0.06), (name, a, b)
    assert abs(a["mean"] - b["mean"]) < 6 * max(a["std"], b["std"]) / math.sqrt(a["n"]) + 1e-6, \
        (name, a, b)
    if ours_mod.get("pdrop"):
        p = ours_mod["pdrop"]
        for s in (a, b):
            assert abs(s["zeros"] - p) < 5 * math.sqrt(p * (1 - p) / s["n"]), (name, a, b)
    if ours_mod["type"] == "ProgNoise":
        for hat in (ours["hats"][0], theirs["hats"][0]):
            assert np.all(np.sign(hat) * np.sign(WIDE) >= 0)


def test_mult_normal_deviation_both_sides(aihwkit_noisy):
    """deviations.md §4 'modifier MultNormal': aihwkit's relative noise is std_dev·A (0.1 with
    A = 2), refsim's std_dev (0.05)."""
    ours = refsim_steps(WIDE, dict(modifier=NOISY["mult-normal"][0]), "reference", seed=11)
    w = WIDE.astype(np.float64)
    a = _stats(ours["hats"][0], w, True)["std"]
    b = _stats(aihwkit_noisy["mult-normal"]["hats"][0], w, True)["std"]
    assert a == pytest.approx(0.05, rel=0.05) and b == pytest.approx(0.1, rel=0.05)

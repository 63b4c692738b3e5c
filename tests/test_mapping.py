"""Digital output scales (spec/mapping.md §P1-§P3, spec/modifiers.md §M5): weight scaling with
weight_scaling_omega and weight remapping keep the layer's function while the stored weights are
scaled, on both backends; every field acts; the scales are checkpointed."""

import pickle

from conftest import OTHER_NAMESPACES, to_numpy

import numpy as np
import pytest

from refsim import configs as C
from refsim.stages import mapping as P
from refsim.tile import AnalogTile

W = np.array([[0.5, -2.0, 0.25], [0.125, 1.0, -0.75], [0.0, 0.0, 0.0]])
X = np.random.default_rng(1).uniform(-1, 1, (4, 3))
D = np.random.default_rng(2).uniform(-1, 1, (4, 3))


def _config(kind="inference", perfect=True, **mapping):
    cfg = C.InferenceRPUConfig() if kind == "inference" else C.SingleRPUConfig(
        device=C.ConstantStepDevice())
    cfg.forward.is_perfect = perfect
    cfg.backward.is_perfect = True
    for field, value in mapping.items():
        setattr(cfg.mapping, field, value)
    return cfg


def _tile(cfg, backend="reference", w=W):
    tile = AnalogTile(*w.shape, cfg, seed=3, backend=backend)
    tile.set_weights(w)
    return tile


def test_weight_scales():
    np.testing.assert_array_equal(P.weight_scales(np, W, 0.5, False), [4.0, 4.0, 4.0])
    np.testing.assert_array_equal(P.weight_scales(np, W, 0.5, True), [4.0, 2.0, 1.0])


@pytest.mark.parametrize("backend", ["reference", "fast"])
@pytest.mark.parametrize("columnwise", [False, True])
def test_weight_scaling_keeps_the_function(backend, columnwise):
    """Stored W_s = W/α with max abs(W_s) = ω; get_weights gives W back; a perfect forward,
    the backward and the exact update act as on the unscaled tile (to rounding)."""
    scaled = _tile(_config(weight_scaling_omega=0.6, weight_scaling_columnwise=columnwise),
                   backend)
    plain = _tile(_config(), backend)
    stored = scaled.get_weights(apply_weight_scaling=False)
    assert np.max(np.abs(stored)) == pytest.approx(0.6)
    if columnwise:
        np.testing.assert_allclose(np.max(np.abs(stored[:2]), axis=1), 0.6)
    np.testing.assert_allclose(scaled.get_weights(), W, rtol=1e-15, atol=1e-16)
    np.testing.assert_allclose(scaled.forward(X), plain.forward(X), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(scaled.backward(D), plain.backward(D), rtol=1e-14, atol=1e-15)
    scaled.update(X, D, 0.1)
    plain.update(X, D, 0.1)
    np.testing.assert_allclose(scaled.get_weights(), plain.get_weights(), rtol=1e-14,
                               atol=1e-15)


def test_every_mapping_scaling_field_acts():
    """weight_scaling_omega, weight_scaling_columnwise and weight_scaling_lr_compensation each
    change a result under a setting the spec names (§P1-§P2)."""
    base = _tile(_config("single", perfect=False))
    omega = _tile(_config("single", perfect=False, weight_scaling_omega=0.5))
    assert not np.array_equal(base.forward(X), omega.forward(X))  # the analog range changes
    col = _tile(_config("single", perfect=False, weight_scaling_omega=0.5,
                        weight_scaling_columnwise=True))
    assert not np.array_equal(omega.get_weights(False), col.get_weights(False))
    # without update management the split between lr and d sets the pulse probabilities
    cfg = _config("single", perfect=False, weight_scaling_omega=0.5,
                  weight_scaling_columnwise=True)
    cfg.update.update_management = cfg.update.update_bl_management = False
    col = _tile(cfg)
    cfg.mapping.weight_scaling_lr_compensation = True
    comp = _tile(cfg)
    col.update(X, D, 0.1)
    comp.update(X, D, 0.1)  # the same product, other pulse trains
    assert not np.array_equal(col.get_weights(), comp.get_weights())


@pytest.mark.parametrize("kind", ["LayerwiseSymmetric", "ChannelwiseSymmetric"])
def test_remap_keeps_the_function_and_bounds_the_stored_weights(kind):
    cfg = _config()
    cfg.remap.type = kind
    tile = _tile(cfg)
    y = tile.forward(X)
    tile.post_update_step()
    stored = tile.get_weights(apply_weight_scaling=False)
    if kind == "LayerwiseSymmetric":
        assert np.max(np.abs(stored)) == pytest.approx(1.0)
    else:
        np.testing.assert_allclose(np.max(np.abs(stored[:2]), axis=1), 1.0)
        np.testing.assert_array_equal(stored[2], 0.0)
    np.testing.assert_allclose(tile.get_weights(), W, rtol=1e-15, atol=1e-16)
    np.testing.assert_allclose(tile.forward(X), y, rtol=1e-14, atol=1e-15)


def test_remap_fields_act():
    """remapped_wmax sets the stored maximum; max_scale_range caps the channel scales relative
    to the smallest old scale (1 before the first step), max_scale_ref raises that floor."""
    def stored(**fields):
        cfg = _config()
        cfg.remap.type = "ChannelwiseSymmetric"
        for k, v in fields.items():
            setattr(cfg.remap, k, v)
        tile = _tile(cfg, w=W * 4)
        tile.post_update_step()
        return tile.get_weights(False), tile.out_scales
    w_plain, s_plain = stored()
    w_half, _ = stored(remapped_wmax=0.5)
    np.testing.assert_allclose(np.max(np.abs(w_half[:2]), axis=1), 0.5)
    w_cap, s_cap = stored(max_scale_range=2.0)
    assert np.max(s_cap) == pytest.approx(2.0) and np.max(np.abs(w_cap)) > 1.0
    w_ref, s_ref = stored(max_scale_range=2.0, max_scale_ref=3.0)
    assert np.max(s_ref) == pytest.approx(6.0) and not np.array_equal(s_ref, s_cap)
    assert np.max(s_plain) == pytest.approx(8.0)


def test_scales_are_checkpointed_and_set_weights_resets_them():
    cfg = _config(weight_scaling_omega=0.4)
    cfg.remap.type = "ChannelwiseSymmetric"
    tile = _tile(cfg)
    tile.post_update_step()
    for copy in (pickle.loads(pickle.dumps(tile)), _loaded(tile, cfg)):
        np.testing.assert_array_equal(copy.out_scales, tile.out_scales)
        np.testing.assert_array_equal(copy.forward(X), tile.forward(X))
    tile.set_weights(W)
    np.testing.assert_array_equal(tile.out_scales, P.weight_scales(np, W, 0.4, False))


def _loaded(tile, cfg):
    other = AnalogTile(*W.shape, cfg, seed=3)
    other.load_state_dict(tile.state_dict())
    return other


def test_bad_state_scales_are_refused():
    cfg = _config(weight_scaling_omega=0.4)
    tile = _tile(cfg)
    state = tile.state_dict()
    state["out_scales"] = -state["out_scales"]
    with pytest.raises(ValueError, match="out_scales"):
        AnalogTile(*W.shape, cfg, seed=3).load_state_dict(state)


AIHWKIT_SCALING = """
import json, torch
from aihwkit.simulator.configs import InferenceRPUConfig
from aihwkit.simulator.tiles import InferenceTile
c = InferenceRPUConfig()
c.forward.is_perfect = True
c.mapping.weight_scaling_omega = 0.6
c.mapping.weight_scaling_columnwise = {columnwise}
t = InferenceTile(3, 4, c)
t.set_weights(torch.tensor({w}))
y = t.forward(torch.tensor({x}))
print(json.dumps(dict(y=y.tolist(), stored=t.get_weights(apply_weight_scaling=False)[0].tolist(),
                      logical=t.get_weights()[0].tolist())))
"""


@pytest.mark.parametrize("columnwise", [False, True])
def test_weight_scaling_side_by_side_with_aihwkit(columnwise):
    """aihwkit 1.1.0's InferenceTile stores W/α with the same α (float32, bit for bit) and gives
    the same logical weights and perfect forward (skipped without aihwkit)."""
    from aihwkit_peer import run_script

    w = np.array([[0.5, -2.0, 0.25, 0.125], [0.125, 1.0, -0.75, 0.5], [0.25, 0.0, 0.0, -0.5]],
                 dtype=np.float32)
    x = np.array([[0.5, -0.25, 1.0, 0.75]], dtype=np.float32)
    theirs = run_script(AIHWKIT_SCALING.format(columnwise=columnwise, w=w.tolist(),
                                               x=x.tolist()))
    cfg = _config(weight_scaling_omega=0.6, weight_scaling_columnwise=columnwise)
    for backend in ("reference", "fast"):
        tile = AnalogTile(3, 4, cfg, dtype=np.float32, backend=backend)
        tile.set_weights(w)
        np.testing.assert_array_equal(tile.get_weights(False), np.float32(theirs["stored"]))
        np.testing.assert_array_equal(tile.get_weights(), np.float32(theirs["logical"]))
        np.testing.assert_array_equal(tile.forward(x), np.float32(theirs["y"]))


@pytest.mark.parametrize("xp", OTHER_NAMESPACES)
def test_namespaces_agree(xp):
    """Weight scaling, remapping and the scaled update give the same numbers on every namespace
    (float64, 1e-12)."""
    from refsim import rng

    def run(ns):
        cfg = _config(weight_scaling_omega=0.5, weight_scaling_columnwise=True)
        cfg.remap.type = "ChannelwiseSymmetric"
        tile = AnalogTile(*W.shape, cfg, seed=3, xp=ns)
        s = tile.xp
        tile.set_weights(s.asarray(W))
        tile.update(s.asarray(X), s.asarray(D), 0.1)
        tile.post_update_step()
        return [to_numpy(a) for a in (tile.forward(s.asarray(X)), tile.backward(s.asarray(D)),
                                      tile.get_weights(), tile.out_scales)]
    for a, b in zip(run(None), run(rng._namespace(xp))):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)

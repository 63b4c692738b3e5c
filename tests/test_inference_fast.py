"""The compiled inference passes (refsim_fast.inference) against the reference stage
(refsim.stages.inference) with the same normals: programming, drift coefficients, drift and read
noise bit for bit, every switch of the noise model, float32 and float64, shapes across the
kernel's chunks, any thread count; and bad input at the compiled boundary."""

import dataclasses

import numpy as np
import pytest

from refsim import rng
from refsim.configs import InferenceRPUConfig, PCMLikeNoiseModel
from refsim.stages import inference as reference
from refsim.tile import AnalogTile

fast = pytest.importorskip("refsim_fast.inference")
fast_draws = pytest.importorskip("refsim_fast.update")
_inference = pytest.importorskip("refsim_fast._inference")

MODELS = {
    "default": PCMLikeNoiseModel(),
    "no programming noise": PCMLikeNoiseModel(prog_noise_scale=0.0),
    "no drift": PCMLikeNoiseModel(drift_scale=0.0),
    "no read noise": PCMLikeNoiseModel(read_noise_scale=0.0),
    "scaled, g_max set": PCMLikeNoiseModel(prog_noise_scale=1.7, drift_scale=0.6,
                                           read_noise_scale=2.5, g_max=40.0, t_read=0.5,
                                           t_0=5.0),
    "four coefficients": PCMLikeNoiseModel(prog_coeff=[0.1, 1.2, -0.8, 0.3],
                                           prog_coeff_g_max_reference=30.0),
    "nothing": PCMLikeNoiseModel(prog_noise_scale=0.0, drift_scale=0.0, read_noise_scale=0.0),
}


def weights(shape, dtype, seed=3):
    w = (rng.uniform(seed, "test.w", 0, shape) - 0.5).astype(dtype)
    w.reshape(-1)[::7] = 0.0  # idle pairs: both devices at g_min
    return w


def same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (3, 4), (33, 70)])  # 2310 elements: three chunks
def test_program_and_drift_equal_the_reference(name, dtype, shape):
    model = MODELS[name]
    w = weights(shape, dtype)
    got = fast.program(np, w, model, seed=11, call=4)
    want = reference.program(np, w, model, seed=11, call=4, draws=fast_draws)
    same(got.weights, want.weights)
    for k in range(2):
        same(got.nu[k], want.nu[k])
    for t in (0.0, 1.0, 3600.0, 3.15e7):  # t = 0: no drift (t = t_0)
        same(fast.drift(np, got, t, model, 11, 2), reference.drift(np, want, t, model, 11, 2,
                                                                    draws=fast_draws))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_numpy_blocks_equal_the_reference(dtype):
    """300² pairs: 180 000 values per numpy pass, two blocks of refsim_fast.inference's
    element-wise passes (a full and a shorter one), on one and on two threads; the powers of
    two arrays equal the reference's scalar-operand powers bit for bit."""
    assert 2 * 300 * 300 > fast._NUMPY_BLOCK
    w = weights((300, 300), dtype)
    model = MODELS["default"]
    want = reference.program(np, w, model, seed=2, call=1, draws=fast_draws)
    for threads in (1, 2):
        got = fast.program(np, w, model, seed=2, call=1, num_threads=threads)
        same(got.weights, want.weights)
        same(got.nu[0], want.nu[0])
        same(fast.drift(np, got, 3.15e7, model, 2, 3, num_threads=threads),
             reference.drift(np, want, 3.15e7, model, 2, 3, draws=fast_draws))


def test_the_thread_count_does_not_matter():
    w = weights((40, 90), np.float32)
    model = MODELS["default"]
    runs = []
    for threads in (1, 2, 3):
        programmed = fast.program(np, w, model, 5, 0, num_threads=threads)
        runs.append((programmed.weights, programmed.nu[1],
                     fast.drift(np, programmed, 86400.0, model, 5, 1, num_threads=threads)))
    for run in runs[1:]:
        for a, b in zip(runs[0], run):
            same(a, b)


def test_non_contiguous_and_other_layouts_are_converted():
    w = np.asfortranarray(weights((6, 5), np.float64))
    model = MODELS["default"]
    same(fast.program(np, w, model, 1, 0).weights,
         reference.program(np, np.ascontiguousarray(w), model, 1, 0, draws=fast_draws).weights)


def test_a_fast_tile_uses_the_compiled_passes(monkeypatch):
    """The fast backend's tile programs and drifts through refsim_fast.inference, with the
    results of the reference stage given the same normals."""
    calls = []
    for name in ("program", "drift"):
        original = getattr(fast, name)

        def counting(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(fast, name, counting)
    w = weights((12, 9), np.float32)
    tile = AnalogTile(12, 9, InferenceRPUConfig(), seed=2, dtype=np.float32, backend="fast")
    tile.set_weights(w)
    tile.program_weights()
    tile.drift_weights(60.0)
    assert calls == ["program", "drift"]


def test_bad_input():
    model = MODELS["default"]
    with pytest.raises(TypeError, match="w: expected a float32 or float64"):
        fast.program(np, np.ones((2, 2), dtype=np.int64), model, 1, 0)
    with pytest.raises(ValueError, match="w: expected a 2-D"):
        fast.program(np, np.ones(4), model, 1, 0)
    programmed = fast.program(np, weights((3, 4), np.float64), model, 1, 0)
    bad = dataclasses.replace(programmed, nu=[programmed.nu[0][:2], programmed.nu[1]])
    with pytest.raises(ValueError, match=r"programmed.nu\[0\]"):
        fast.drift(np, bad, 10.0, model, 1, 0)
    with pytest.raises(ValueError, match="t_inference"):
        fast.drift(np, programmed, 1e308, PCMLikeNoiseModel(t_0=1e308), 1, 0)


def test_the_kernels_check_their_shapes():
    g = np.zeros((2, 6))
    with pytest.raises(ValueError, match="g: expected shape"):
        _inference.conductances(np.zeros(5), 1.0, 25.0, 0.0, g, None, False, 1)
    with pytest.raises(ValueError, match="ratio: expected shape"):
        _inference.conductances(np.zeros(6), 1.0, 25.0, 0.0, g, np.zeros((2, 5)), False, 1)
    out = np.zeros(6)
    with pytest.raises(ValueError, match="nu: expected shape"):
        _inference.program(g, None, np.ones(1), 25.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1, 1, 2, 0, out,
                           np.zeros((2, 5)), 1)
    with pytest.raises(ValueError, match="coeff: expected at least one"):
        _inference.program(g, None, np.ones(0), 25.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1, 1, 2, 0, out,
                           np.zeros((2, 6)), 1)
    with pytest.raises(ValueError, match="decay: expected shape"):
        _inference.drift(g, np.zeros((2, 5)), None, 25.0, 0.0, 1.0, 1.0, 1.0, 1, 3, 0, out, 1)
    with pytest.raises(ValueError, match="w_out: expected shape"):
        _inference.drift(g, None, None, 25.0, 0.0, 1.0, 1.0, 1.0, 1, 3, 0, np.zeros(5), 1)

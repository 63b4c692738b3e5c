"""The compound framework (refsim/stages/compounds.py, spec/compounds.md "Stage semantics"):
registry, sub-devices and their device index, the transfer stream prefix, reads, and the tile's
handling of a compound without an implementation."""

import numpy as np
import pytest

from refsim import configs as C
from refsim import rng
from refsim.stages import compounds
from refsim.stages import io as io_stage
from refsim.tile import AnalogTile


def _context(backend="reference", shape=(5, 6), seed=3):
    fast_update = fast_io = None
    if backend == "fast":
        import refsim_fast.io as fast_io
        import refsim_fast.update as fast_update
    return compounds.Context(xp=np, dtype=np.float64, device=None, shape=shape, seed=seed,
                             construction_seed=11, streams=rng.RandomStreams(seed),
                             fast_update=fast_update, fast_io=fast_io)


def test_every_compound_class_is_registered():
    assert compounds.implemented() == (
        "BufferedTransferCompound", "ChoppedTransferCompound", "DynamicTransferCompound",
        "MixedPrecisionCompound", "OneSidedUnitCell", "TransferCompound", "VectorUnitCell")


@pytest.mark.parametrize("config", [C.UnitCellRPUConfig(), C.DigitalRankUpdateRPUConfig(
    device=C.DigitalRankUpdateCell(device=C.VectorUnitCell(
        unit_cell_devices=[C.ConstantStepDevice()])))])
def test_abstract_cell_forwards_but_does_not_update(config):
    tile = AnalogTile(3, 4, config, seed=1)
    assert tile.compound is None
    tile.set_weights(np.full((3, 4), 0.1))
    assert tile.forward(np.ones(4)).shape == (3,)
    with pytest.raises(NotImplementedError, match=type(config).__name__):
        tile.update(np.ones(4), np.ones(3), 0.1)


def test_sub_devices_differ_by_their_index():
    ctx = _context()
    cfg = C.ConstantStepDevice(dw_min_std=0.3)
    a, b = (compounds.SubDevice(ctx, cfg, k, f"device.unit_cell_devices[{k}]") for k in (0, 1))
    assert not np.array_equal(a.params.dw_up, b.params.dw_up)
    # the same parameters and trains: only the per-pulse noise numbers differ with the index
    b.params = a.params
    x = np.full((1, 6), 0.8)
    d = np.full((1, 5), -0.8)
    for dev in (a, b):
        dev.pulse(ctx, x, d, 0.05, C.UpdateParameters(), first_call=0)
    assert not np.array_equal(a.w, b.w)
    assert np.array_equal(np.sign(a.w), np.sign(b.w))  # same trains, same directions


def test_transfer_prefix_draws_other_trains():
    ctx = _context()
    cfg = C.ConstantStepDevice(dw_min_std=0.0)
    x = 0.5 * np.ones((1, 6))
    d = -0.5 * np.ones((1, 5))
    out = []
    for prefix in ("update", "transfer"):
        dev = compounds.SubDevice(ctx, cfg, 0, "device")
        dev.pulse(ctx, x, d, 0.01, C.UpdateParameters(update_bl_management=False), 0,
                  prefix=prefix)
        out.append(dev.w)
    assert np.all(out[0] >= 0) and np.all(out[1] >= 0) and out[0].sum() > 0
    assert not np.array_equal(out[0], out[1])


def test_sub_device_pulses_agree_between_backends(fast):
    cfg = C.SoftBoundsReferenceDevice(dw_min_std=0.3)
    x = 2 * rng.uniform(2, "test.a", 0, (3, 6)) - 1
    d = rng.normal(2, "test.b", 0, (3, 5))
    out = []
    for backend in ("reference", "fast"):
        ctx = _context(backend)
        dev = compounds.SubDevice(ctx, cfg, 2, "device")
        for prefix in ("update", "transfer"):
            dev.pulse(ctx, x, d, 0.1, C.UpdateParameters(), 4, prefix=prefix)
        out.append(dev.w)
    assert np.any(out[0] != 0)
    np.testing.assert_array_equal(out[1], out[0])


def test_read_is_a_forward_pass_without_periphery_variation():
    ctx = _context()
    w = rng.uniform(1, "test.a", 0, (5, 6)) - 0.5
    eye = np.eye(6)[:2]
    perfect = C.IOParameters(is_perfect=True)
    np.testing.assert_allclose(ctx.read(w, eye, perfect, "transfer"), (w @ eye.T).T,
                               rtol=0, atol=1e-15)
    noisy = C.IOParameters()
    first = ctx.read(w, eye, noisy, "transfer")  # call 1 of io.transfer (the perfect read: 0)
    draws = io_stage.Draws(ctx.seed, 1, "transfer", 2, 1)
    want, _ = io_stage.mvm(np, eye, w, noisy, io_stage.Periphery(), draws)
    np.testing.assert_array_equal(first, want)
    assert ctx.streams.calls["io.transfer"] == 2
    assert not np.array_equal(ctx.read(w, eye, noisy, "transfer"), first)  # the next call
    with pytest.raises(ValueError, match="direction"):
        ctx.read(w, eye, perfect, "forward")


@pytest.mark.parametrize("backend", ["reference", "fast"])
@pytest.mark.parametrize("mv_type", ["OnePass", "PosNegSeparate", "PosNegSeparateDigitalSum"])
def test_read_each_equals_one_read_per_column(mv_type, backend):
    """Context.read_each (spec/io.md §S8 row_calls): one pass whose rows are calls of their own
    gives the reads of the columns one by one, and takes as many calls."""
    if backend == "fast":
        pytest.importorskip("refsim_fast.io")
    io = C.IOParameters(mv_type=C.AnalogMVType(mv_type), out_noise=0.05, out_sto_round=True,
                        w_noise=0.02, w_noise_type=C.WeightNoiseType.ADDITIVE_CONSTANT)
    w = rng.uniform(1, "test.a", 0, (5, 4)) - 0.5
    together, apart = _context(backend), _context(backend)
    together.read(w, np.eye(4)[:1], io, "transfer")
    apart.read(w, np.eye(4)[:1], io, "transfer")
    got = together.read_each(w, io, "transfer")
    want = np.stack([apart.read(w[:, j:j + 1], np.ones((1, 1)), io, "transfer")[0]
                     for j in range(4)])
    np.testing.assert_array_equal(got, want)
    assert together.streams.calls == apart.streams.calls == {"io.transfer": 5}
    assert not np.array_equal(got[0], together.read(w[:, :1], np.ones((1, 1)), io,
                                                    "transfer")[0])  # a later call differs


def test_sub_device_rejects_what_it_does_not_support():
    ctx = _context()
    with pytest.raises(C.ConfigError, match="device.x: expected a pulsed device"):
        compounds.SubDevice(ctx, C.IdealDevice(), 0, "device.x")
    with pytest.raises(C.ConfigError, match="write noise and pulse counting"):
        compounds.SubDevice(ctx, C.SoftBoundsDevice(write_noise_std=0.1), 0, "device.y")
    with pytest.raises(C.ConfigError, match="write noise and pulse counting"):
        compounds.SubDevice(ctx, C.ConstantStepDevice(count_pulses=True), 0, "device.z")

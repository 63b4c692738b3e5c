"""Transfer compounds (spec/transfer.md): Tiki-taka v1,
buffered TTv2, chopped TTv2 and AGAD on refsim/stages/transfer.py.

Schedules (transfer counts, lines, chopper flips, AGAD warm-up), hand-checked buffer arithmetic on
noise-free ConstantStep devices with perfect IO, every field's effect, reference vs compiled
backend, checkpoints, namespaces, bad configs and a small regression per build_config algorithm.
"""

import copy

import numpy as np
import pytest

import refsim
from refsim import rng
from refsim.configs import (
    AnalogMVType,
    BufferedTransferCompound,
    ChoppedTransferCompound,
    ConfigError,
    ConstantStepDevice,
    DynamicTransferCompound,
    IOParameters,
    LinearStepDevice,
    PulseType,
    SoftBoundsReferenceDevice,
    TransferCompound,
    UnitCellRPUConfig,
    UpdateParameters,
    WeightNoiseType,
    build_config,
)
from refsim.stages import transfer as T
from refsim.tile import AnalogTile

FAST = refsim.fast_info()["available"]
PERFECT = IOParameters(is_perfect=True)
ONE_PULSE = UpdateParameters(desired_bl=1, update_management=False, update_bl_management=False)


def cdev(**kw):
    """A noise-free ConstantStep device without device-to-device spread (g = dw_min)."""
    base = dict(dw_min=0.01, dw_min_dtod=0.0, dw_min_std=0.0, up_down_dtod=0.0, w_max_dtod=0.0,
                w_min_dtod=0.0, w_max=1.0, w_min=-1.0, reset_std=0.0)
    base.update(kw)
    return ConstantStepDevice(**base)


def make(cell, m=3, n=4, *, update=None, seed=1, backend="reference", **kw):
    cfg = UnitCellRPUConfig(device=cell, forward=PERFECT, backward=PERFECT,
                            update=update or UpdateParameters())
    return AnalogTile(m, n, cfg, seed=seed, backend=backend, **kw)


def zeros_update(tile, rows, lr=1.0):
    """``rows`` update rows with x = 0 (no gradient pulses): only the transfers act."""
    tile.update(np.zeros((rows, tile.in_size)), np.ones((rows, tile.out_size)), lr)


def with_state(tile, **values):
    """Load the tile's state with some compound entries replaced."""
    state = tile.state_dict()
    state["compound"].update(values)
    tile.load_state_dict(state)


def reads(tile):
    return tile.streams.calls.get("io.transfer", 0)


def writes(tile):
    return tile.streams.calls.get("transfer", 0)


def snapshot(tile):
    """Everything observable: weights, the compound's arrays and numbers, the random state."""
    out = {"weights": np.asarray(tile.get_weights()), "rng": tile.streams.state_dict()}
    for key, value in tile.state_dict()["compound"].items():
        if isinstance(value, list) and value and hasattr(value[0], "shape"):
            out[key] = [np.asarray(v) for v in value]
        else:
            out[key] = np.asarray(value) if hasattr(value, "shape") else value
    return out


def same(a, b):
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, list) and x and isinstance(x[0], np.ndarray):
            if len(x) != len(y) or not all(np.array_equal(p, q) for p, q in zip(x, y)):
                return False
        elif isinstance(x, np.ndarray):
            if not np.array_equal(x, y):
                return False
        elif x != y:
            return False
    return True


def data(rows, n, m, seed=0):
    r = np.random.default_rng(seed)
    return r.uniform(-1.0, 1.0, (rows, n)), r.normal(0.0, 0.3, (rows, m))


# -- Tiki-taka v1: schedule -----------------------------------------------------------------------


@pytest.mark.parametrize("units, every, batch, calls, events", [
    (True, 1.0, 3, 5, 5),        # one transfer after the last row of each mini-batch
    (True, 2.0, 3, 5, 2),        # every 6 rows
    (False, 2.0, 3, 5, 7),       # every 2 rows (15 rows)
    (False, 2.5, 3, 5, 5),       # round(2.5) = 3 rows, halves away from zero
    (True, 0.1, 30, 1, 10),      # ceil(0.1·30) in float32 = 3 rows (not 4)
    (True, 0.0, 3, 4, 0),        # period 0: never
])
def test_ttv1_transfer_count_and_pointer(units, every, batch, calls, events):
    tile = make(TransferCompound(unit_cell_devices=[cdev(), cdev()], units_in_mbatch=units,
                                 transfer_every=every, transfer_forward=PERFECT))
    for _ in range(calls):
        zeros_update(tile, batch)
    assert reads(tile) == events
    assert tile.compound.pointers[0] == events % 4
    assert tile.compound.counter == calls * batch


def test_ttv1_chain_periods_use_the_number_of_lines():
    """e_1 = e_0·n/n_reads (n = 4 columns, not m = 3 rows as in aihwkit), three devices."""
    cell = TransferCompound(unit_cell_devices=[cdev(), cdev(), cdev()], units_in_mbatch=False,
                            transfer_every=1.0, transfer_forward=PERFECT)
    tile = make(cell)
    zeros_update(tile, 8)
    assert reads(tile) == 8 + 2  # D0: every row, D1: every 4 rows
    assert tile.compound.pointers == [0, 2, 0]
    cell.n_reads_per_transfer = 2  # e_1 = 2; two lines per event
    tile = make(cell)
    zeros_update(tile, 8)
    assert reads(tile) == 8 + 4
    assert tile.compound.pointers == [0, 0, 0]  # 8·2 = 16 lines, 4·2 = 8 lines
    cell.n_reads_per_transfer = 9  # more than n: one full sweep per event
    assert make(cell).compound.n_reads == 4


def test_ttv1_transfer_writes_the_read_columns_exactly():
    """Perfect IO and exact writes (transfer_update pulse type 'None'): column c of D1 gains
    transfer_lr·η·D0[:, c], one column per event in order, and W = D1 at gamma 0."""
    a = np.arange(12.0).reshape(3, 4) / 40.0
    cell = TransferCompound(unit_cell_devices=[cdev(), cdev()], units_in_mbatch=False,
                            transfer_lr=2.0, transfer_forward=PERFECT,
                            transfer_update=UpdateParameters(pulse_type=PulseType.NONE))
    tile = make(cell)
    with_state(tile, devices=[a, np.zeros((3, 4))])
    zeros_update(tile, 3, lr=0.25)  # columns 0, 1, 2 with λ = 0.5
    expect = np.zeros((3, 4))
    expect[:, :3] = 0.5 * a[:, :3]
    np.testing.assert_array_equal(tile.get_weights(), expect)
    assert writes(tile) == 0  # exact writes draw nothing
    cell.scale_transfer_lr = False  # λ = transfer_lr = 2
    tile = make(cell)
    with_state(tile, devices=[a, np.zeros((3, 4))])
    zeros_update(tile, 1, lr=0.25)
    np.testing.assert_array_equal(tile.get_weights()[:, 0], 2.0 * a[:, 0])


def test_ttv1_rows_transfer_and_none_with_device_clamps():
    a = np.arange(12.0).reshape(3, 4) / 10.0
    cell = TransferCompound(unit_cell_devices=[cdev(), cdev()], units_in_mbatch=False,
                            transfer_columns=False, transfer_forward=PERFECT,
                            transfer_update=UpdateParameters(pulse_type=PulseType.NONE_WITH_DEVICE))
    tile = make(cell)
    with_state(tile, devices=[a, np.zeros((3, 4))])
    zeros_update(tile, 2)  # rows 0 and 1 of D0 onto D1, clamped to [-1, 1]
    expect = np.zeros((3, 4))
    expect[:2] = np.minimum(a[:2], 1.0)
    np.testing.assert_array_equal(tile.get_weights(), expect)
    assert tile.compound.pointers[0] == 2


def test_ttv1_random_selection_draws_the_start_column():
    cell = TransferCompound(unit_cell_devices=[cdev(), cdev()], units_in_mbatch=False,
                            random_selection=True, transfer_forward=PERFECT,
                            transfer_update=UpdateParameters(pulse_type=PulseType.NONE))
    tile = make(cell, seed=7)
    a = np.full((3, 4), 0.1)
    with_state(tile, devices=[a, np.zeros((3, 4))])
    zeros_update(tile, 3)
    starts = [int(np.floor(rng.uniform(7, "compound.column", call, 1)[0] * 4)) for call in range(3)]
    touched = [j for j in range(4) if np.any(tile.compound.devs[1].w[:, j] != 0)]
    assert touched == sorted(set(starts))
    assert tile.compound.pointers[0] == (starts[-1] + 1) % 4


def test_ttv1_with_reset_prob_resets_the_read_column():
    """Reset happens after the read (the write still carries the old column), per read column
    with compound.reset_prob, to β + reset_std·ξ (compound.reset_noise), clamped."""
    cell = TransferCompound(unit_cell_devices=[cdev(reset_std=0.05), cdev()],
                            units_in_mbatch=False, with_reset_prob=0.5, n_reads_per_transfer=2,
                            transfer_forward=PERFECT,
                            transfer_update=UpdateParameters(pulse_type=PulseType.NONE))
    tile = make(cell, seed=3)
    a = np.full((3, 4), 0.2)
    with_state(tile, devices=[a, np.zeros((3, 4))])
    zeros_update(tile, 2)  # events: columns (0, 1), then (2, 3)
    d0, d1 = tile.compound.devs[0].w, tile.compound.devs[1].w
    np.testing.assert_array_equal(d1, a)  # every column transferred before any reset
    for call, lines in enumerate([(0, 1), (2, 3)]):
        u = rng.uniform(3, "compound.reset_prob", call, 2)
        for b, c in enumerate(lines):
            if u[b] < 0.5:
                xi = rng.normal(3, "compound.reset_noise", call, 3, start=b * 3)
                np.testing.assert_array_equal(d0[:, c], 0.05 * xi)
            else:
                np.testing.assert_array_equal(d0[:, c], a[:, c])
    assert not np.array_equal(d0, a)  # the seed resets at least one column


def test_ttv1_fast_lr_rules_and_gradient_only_on_fast_device():
    x, d = data(4, 4, 3)
    results = {}
    for fast_lr, scale in ((1.0, True), (0.5, True), (0.5, False), (0.0, True)):
        cell = TransferCompound(unit_cell_devices=[cdev(), cdev()], transfer_every=0.0,
                                fast_lr=fast_lr, scale_fast_lr=scale)
        tile = make(cell)
        tile.update(x, d, 0.2)
        np.testing.assert_array_equal(tile.compound.devs[1].w, 0.0)
        results[(fast_lr, scale)] = tile.compound.devs[0].w
    # η_A: fast_lr·η = 0.2 and 0.1, fast_lr = 0.5, and η = 0.2 for fast_lr <= 0
    np.testing.assert_array_equal(results[(1.0, True)], results[(0.0, True)])
    assert not np.array_equal(results[(0.5, True)], results[(1.0, True)])
    same_lr = make(TransferCompound(unit_cell_devices=[cdev(), cdev()], transfer_every=0.0,
                                    scale_fast_lr=True))
    same_lr.update(x, d, 0.5)  # fast_lr 1 × η 0.5 = the absolute 0.5
    np.testing.assert_array_equal(same_lr.compound.devs[0].w, results[(0.5, False)])
    # the default is aihwkit's: the absolute fast_lr, whatever the optimizer's lr (issue 10)
    for lr in (0.1, 0.5):
        default = make(TransferCompound(unit_cell_devices=[cdev(), cdev()], transfer_every=0.0))
        default.update(x, d, lr)
        absolute = make(TransferCompound(unit_cell_devices=[cdev(), cdev()], transfer_every=0.0,
                                         scale_fast_lr=True, fast_lr=1.0 / lr))
        absolute.update(x, d, lr)
        np.testing.assert_array_equal(default.compound.devs[0].w, absolute.compound.devs[0].w)


# -- buffered TTv2 --------------------------------------------------------------------------------


@pytest.mark.parametrize("forget", [True, False])
def test_buffered_arithmetic_by_hand(forget):
    a = np.array([[0.025, 0.0], [-0.013, 0.0], [0.004, 0.0]])
    cell = BufferedTransferCompound(unit_cell_devices=[cdev(), cdev()], units_in_mbatch=False,
                                    momentum=0.1, forget_buffer=forget, transfer_forward=PERFECT)
    tile = make(cell, 3, 2)
    with_state(tile, devices=[a, np.zeros((3, 2))])
    zeros_update(tile, 3)  # columns 0, 1, 0 with λ' = 1
    h, c = np.zeros(3), np.zeros(3)
    for _ in range(2):
        h = h + a[:, 0] * 1.0
        n = np.clip(np.trunc(h / 0.01), -1.0, 1.0)
        h = np.where(n != 0, h * 0.1, h) if forget else np.where(n != 0, h - 0.9 * n * 0.01, h)
        c = c + 0.01 * n  # one deterministic pulse of g per count (desired_bl 1, step 1)
    state = tile.state_dict()["compound"]
    np.testing.assert_array_equal(state["buffers"][0][:, 0], h)
    np.testing.assert_array_equal(state["buffers"][0][:, 1], 0.0)
    np.testing.assert_array_equal(tile.get_weights()[:, 0], c)
    assert writes(tile) == 2


def test_buffered_gamma_ratio_and_threshold_scale():
    a = np.array([[0.06], [0.0]])
    for gamma_vec, thres, expect in (([0.5, 1.0], 1.0, 1), ([0.5, 1.0], 2.0, 0),
                                     ([2.0, 1.0], 2.0, 1), ([0.0, 1.0], 2.0, 1)):
        cell = BufferedTransferCompound(unit_cell_devices=[cdev(), cdev()], gamma_vec=gamma_vec,
                                        units_in_mbatch=False, thres_scale=thres,
                                        transfer_lr=0.5, transfer_forward=PERFECT)
        tile = make(cell, 2, 1)
        with_state(tile, devices=[a, np.zeros((2, 1))])
        zeros_update(tile, 1)  # h = 0.06·0.5·γ0/γ1 (no ratio at γ0 = 0) vs thres_scale·0.01
        assert writes(tile) == expect


# -- chopped TTv2 ---------------------------------------------------------------------------------


def chopped(**kw):
    base = dict(unit_cell_devices=[cdev(), cdev()], in_chop_prob=0.0, transfer_forward=PERFECT)
    base.update(kw)
    return ChoppedTransferCompound(**base)


def test_chopped_buffer_arithmetic_by_hand():
    """H += χ_in,c·χ_out,i·λ·v_i, λ = abs(lr)/β with β = buffer_granularity·g_A; crossings
    write −k with one pulse each, the buffer is multiplied by momentum."""
    a = np.array([[0.03, 0.0], [-0.012, 0.0], [0.0011, 0.0]])
    tile = make(chopped(buffer_granularity=2.0, momentum=0.25), 3, 2)
    with_state(tile, devices=[a, np.zeros((3, 2))], chop_in=np.array([-1.0, 1.0]),
               chop_out=np.array([1.0, -1.0, 1.0]))
    zeros_update(tile, 3, lr=1.0)  # columns 0, 1, 0; λ = 1/0.02
    sign = -1.0 * np.array([1.0, -1.0, 1.0])
    lam = 1.0 / (2.0 * 0.01)
    h, c = np.zeros(3), np.zeros(3)
    for _ in range(2):
        h = h + sign * (a[:, 0] * lam)
        cross = np.abs(h) >= 1.0
        k = np.where(cross, np.clip(np.trunc(h), -1.0, 1.0), 0.0)
        h = np.where(cross, h * 0.25, h)
        c = c + 0.01 * k
    state = tile.state_dict()["compound"]
    np.testing.assert_array_equal(state["buffer"][:, 0], h)
    np.testing.assert_array_equal(tile.get_weights()[:, 0], c)
    assert c[0] != 0.0  # a crossing happened
    assert state["sweep"] == 1 and state["pointers"][0] == 1


@pytest.mark.parametrize("option", ["no_buffer", "keep", "correct", "auto_granularity"])
def test_chopped_buffer_options_by_hand(option):
    a = np.array([[0.06], [-0.03]])
    kw = {"no_buffer": dict(no_buffer=True), "keep": dict(forget_buffer=False, momentum=0.5),
          "correct": dict(correct_gradient_magnitudes=True, fast_lr=0.5, scale_fast_lr=False),
          "auto_granularity": dict(auto_granularity=2.0, transfer_every=2.0)}[option]
    tile = make(chopped(unit_cell_devices=[cdev(), cdev(dw_min=0.02)], units_in_mbatch=False,
                        **kw), 2, 1)
    with_state(tile, devices=[a, np.zeros((2, 1))])
    zeros_update(tile, 4, lr=0.2)
    g_a, g_c = 0.01, 0.02
    lam = 0.2 / g_a
    events = 4
    if option == "correct":  # β·g_C/g_A, and λ / η_A (η_A = fast_lr = 0.5)
        lam = 0.2 / 0.5 / (g_a * (g_c / g_a))
    if option == "auto_granularity":  # β·auto_granularity/(n·abs(transfer_every)), period 2
        lam = 0.2 / (g_a * 2.0 / (1 * 2.0))
        events = 2
    h, c = np.zeros(2), np.zeros(2)
    for _ in range(events):
        h = (0.0 if option == "no_buffer" else h) + a[:, 0] * lam
        cross = np.abs(h) >= 1.0
        k = np.where(cross, np.clip(np.trunc(h), -1.0, 1.0), 0.0)
        h = np.where(cross, h - 0.5 * k, h) if option == "keep" else np.where(cross, 0.0 * h, h)
        c = c + g_c * k
    np.testing.assert_array_equal(tile.state_dict()["compound"]["buffer"][:, 0], h)
    np.testing.assert_array_equal(tile.get_weights()[:, 0], c)


def test_chopped_regular_chopper_schedule():
    """Regular mode, N = max(ceil(1/0.5), 2) = 2: every column flips after its read during
    every second sweep."""
    tile = make(chopped(in_chop_prob=0.5, in_chop_random=False, units_in_mbatch=False))
    history = []
    for _ in range(5):
        zeros_update(tile, 4)  # one sweep of the 4 columns
        history.append(np.asarray(tile.state_dict()["compound"]["chop_in"]).tolist())
    assert history == [[1] * 4, [-1] * 4, [-1] * 4, [1] * 4, [1] * 4]
    assert tile.state_dict()["compound"]["sweep"] == 5
    tile = make(chopped(in_chop_prob=0.5, in_chop_random=False, units_in_mbatch=False))
    zeros_update(tile, 6)  # within the second sweep: columns 0, 1 flipped so far
    assert np.asarray(tile.state_dict()["compound"]["chop_in"]).tolist() == [-1, -1, 1, 1]
    assert [T.chopper_period(p) for p in (0.1, 0.3, 1 / 3, 0.5, 0.9, 1.0, 0.0)] == \
        [10, 4, 3, 2, 2, 2, 2]


def _chopped_by_hand(a, events, lam, momentum, n_chop, out_prob, seed, g_c=0.01):
    """spec/transfer.md §T6 written out for columns, A fixed (no gradient), perfect reads and
    one-pulse writes: per event on line c = event mod L, h = H[:, c] + χ_line,c·χ_elem·(v·Λ) with
    the choppers as they are *before* this event; threshold; write; then χ_line,c flips (regular
    mode: during every N-th sweep); after the last line χ_elem flips where number i of the next
    call of ``compound.chop_out`` is < out_prob, and the sweep counter advances."""
    ell, lines = a.shape
    buffer, c_dev = np.zeros_like(a), np.zeros_like(a)
    chop_line, chop_elem, sweep = np.ones(lines), np.ones(ell), 0
    signs = []
    for event in range(events):
        c = event % lines
        signs.append(chop_line[c] * chop_elem)
        h = buffer[:, c] + chop_line[c] * chop_elem * (a[:, c] * lam)
        cross = np.abs(h) >= 1.0
        k = np.where(cross, np.clip(np.trunc(h), -1.0, 1.0), 0.0)
        buffer[:, c] = np.where(cross, h * momentum, h)
        c_dev[:, c] = c_dev[:, c] + g_c * k
        if sweep % n_chop + 1 == n_chop:
            chop_line[c] = -chop_line[c]
        if c == lines - 1:
            u = np.asarray(rng.uniform(seed, "compound.chop_out", sweep, ell))
            chop_elem = np.where(u < out_prob, -chop_elem, chop_elem)
            sweep += 1
    return buffer, c_dev, chop_line, chop_elem, sweep, signs


def test_chopped_chopper_order_by_hand():
    """c-TTv2's chopper order (spec/transfer.md §T6 steps 2, 5, 6) on a 2×3 tile with regular
    in-choppers (N = 2) and random out-choppers: the read of line c is accumulated with the signs
    χ_line,c·χ_elem in force *before* the event, χ_line,c flips right after its read, χ_elem
    after the last line of a sweep; buffer, C, visible weights and both choppers by hand over
    five sweeps."""
    a = np.array([[0.0043, -0.0071, 0.0025], [-0.0058, 0.0016, 0.0062]])
    seed = 7
    tile = make(chopped(in_chop_prob=0.5, in_chop_random=False, out_chop_prob=0.5,
                        momentum=0.25, units_in_mbatch=False), 2, 3, seed=seed)
    with_state(tile, devices=[a, np.zeros((2, 3))])
    events = 15
    zeros_update(tile, events, lr=1.0)  # Λ = 1/(buffer_granularity·g_A) = 100
    buffer, c_dev, chop_line, chop_elem, sweep, signs = _chopped_by_hand(
        a, events, lam=100.0, momentum=0.25, n_chop=2, out_prob=0.5, seed=seed)
    # the schedule really mixes the signs: both choppers flipped, and per element the sign of
    # an accumulation changes between sweeps
    assert np.any(chop_elem < 0) and len({tuple(sg) for sg in signs}) >= 3
    state = tile.state_dict()["compound"]
    assert state["sweep"] == sweep == 5
    np.testing.assert_array_equal(state["chop_in"], chop_line)
    np.testing.assert_array_equal(state["chop_out"], chop_elem)
    np.testing.assert_allclose(state["buffer"], buffer, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(state["devices"][1], c_dev, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(state["devices"][0], a)  # x = 0: no gradient pulses
    assert np.count_nonzero(c_dev) >= 3  # crossings were written
    np.testing.assert_allclose(tile.get_weights(), c_dev, rtol=0, atol=1e-15)  # γ = (0, 1)


def test_chopped_random_chopper_flips_follow_their_streams():
    tile = make(chopped(in_chop_prob=0.3, out_chop_prob=0.5, units_in_mbatch=False), seed=11)
    zeros_update(tile, 8)
    chop_in, chop_out = np.ones(4), np.ones(3)
    for event in range(8):
        if rng.uniform(11, "compound.chop_in", event, 1)[0] < 0.3:
            chop_in[event % 4] *= -1
        if event % 4 == 3:
            chop_out = np.where(rng.uniform(11, "compound.chop_out", event // 4, 3) < 0.5,
                                -chop_out, chop_out)
    state = tile.state_dict()["compound"]
    np.testing.assert_array_equal(state["chop_in"], chop_in)
    np.testing.assert_array_equal(state["chop_out"], chop_out)
    assert tile.streams.calls["compound.chop_in"] == 8
    assert tile.streams.calls["compound.chop_out"] == 2
    assert np.any(chop_in < 0) and np.any(chop_out < 0)


def test_chopped_gradient_signs_follow_the_choppers():
    x, d = data(3, 4, 3, seed=2)
    cell = chopped(transfer_every=0.0)
    plain, flipped = make(cell), make(cell)
    with_state(flipped, chop_in=np.array([1.0, -1.0, 1.0, 1.0]),
               chop_out=np.array([1.0, 1.0, -1.0]))
    plain.update(x, d, 0.5)
    flipped.update(x, d, 0.5)
    a, b = plain.compound.devs[0].w, flipped.compound.devs[0].w
    sign = np.outer([1.0, 1.0, -1.0], [1.0, -1.0, 1.0, 1.0])
    assert np.any(a != 0)
    np.testing.assert_array_equal(b, sign * a)


def test_chopped_visible_weight_row_major_with_gamma():
    """W = γ_C·C + γ_A·χ_out,i·χ_in,j·A_ij for m != n (aihwkit's index arithmetic is
    column-major here, a defect: spec/deviations.md)."""
    r = np.random.default_rng(4)
    a, c = r.uniform(-0.5, 0.5, (3, 5)), r.uniform(-0.5, 0.5, (3, 5))
    chop_in, chop_out = np.array([1.0, -1.0, 1.0, -1.0, 1.0]), np.array([-1.0, 1.0, 1.0])
    tile = make(chopped(gamma_vec=[0.5, 2.0]), 3, 5)
    with_state(tile, devices=[a, c], chop_in=chop_in, chop_out=chop_out)
    expect = 0.5 * (a * np.outer(chop_out, chop_in)) + 2.0 * c
    np.testing.assert_allclose(tile.get_weights(), expect, rtol=0, atol=1e-15)


def test_chopped_auto_transfer_every_and_no_self_transfer():
    """transfer_every < 0: max(1, round(num_states_A/n·abs(transfer_every))) rows
    (= 200/4·0.1 = 5), whatever units_in_mbatch; no extra transfer out of C."""
    for units in (False, True):
        tile = make(chopped(transfer_every=-0.1, units_in_mbatch=units, no_self_transfer=False))
        for _ in range(4):
            zeros_update(tile, 5)
        assert reads(tile) == 4


def test_chopped_auto_scale_running_maxima():
    x, d = data(4, 4, 3, seed=5)
    x[1] = 0.0  # skipped by the running max of x
    tile = make(chopped(auto_scale=True, auto_momentum=0.9, transfer_every=0.0))
    tile.update(x, d, 0.1)
    m_x = m_d = 0.0
    tau = (1.0 - 0.9) / 4
    for row in range(4):
        for name, v in (("x", np.max(np.abs(x[row]))), ("d", np.max(np.abs(d[row])))):
            m = m_x if name == "x" else m_d
            m = v if m <= 0 else (m if v <= 0 else (1 - tau) * m + tau * v)
            m_x, m_d = (m, m_d) if name == "x" else (m_x, m)
    state = tile.state_dict()["compound"]
    assert state["m_x"] == pytest.approx(m_x, rel=1e-15)
    assert state["m_d"] == pytest.approx(m_d, rel=1e-15)


# -- AGAD -----------------------------------------------------------------------------------------


def agad(**kw):
    base = dict(unit_cell_devices=[cdev(), cdev()], in_chop_prob=0.5, tail_weightening=0.2,
                transfer_forward=PERFECT, units_in_mbatch=False)
    base.update(kw)
    return DynamicTransferCompound(**base)


def test_agad_warm_up_no_writes_before_the_sweep_counter_exceeds_n():
    tile = make(agad(transfer_lr=10.0))
    with_state(tile, devices=[np.full((3, 4), 0.3), np.zeros((3, 4))])
    zeros_update(tile, 12)  # sweeps 0, 1, 2 (N = 2): reads, but no writes
    assert reads(tile) == 12 and writes(tile) == 0
    np.testing.assert_array_equal(tile.compound.devs[1].w, 0.0)
    zeros_update(tile, 1)  # sweep 3 > N
    assert writes(tile) == 1
    assert np.any(tile.compound.devs[1].w[:, 0] != 0)


@pytest.mark.parametrize("options", [dict(), dict(experimental_correct_accumulation=True),
                                     dict(forget_buffer=False, buffer_cap=0.3, momentum=0.2)])
def test_agad_reference_mean_and_buffer_by_hand(options):
    """Column 0 of a 2x1 tile, N = 2, μ = min(0.2/2, 1) = 0.1: P takes M when the chopper
    switched at the previous read; H += χ·(v − P)·λ; M ← (1 − μ)M + μ·v."""
    a = np.array([[0.013], [-0.035]])
    tile = make(agad(**options), 2, 1)
    with_state(tile, devices=[a, np.zeros((2, 1))])
    zeros_update(tile, 6, lr=0.5)  # λ = 0.5/0.01 = 50; one line, so every read ends a sweep
    h, mean, past, chop, switched, c = np.zeros(2), np.zeros(2), np.zeros(2), 1.0, False, 0.0
    v = a[:, 0]
    for sweep in range(6):
        q = sweep % 2 + 1
        lam = 0.5 / 0.01
        if options.get("experimental_correct_accumulation"):
            lam /= min(float(q), 1.0 / 0.01)
        if switched:
            past = mean.copy()
        switched = False
        h = h + (chop * (v - past)) * lam
        cross = np.abs(h) >= 1.0
        k = np.where(cross, np.clip(np.trunc(h), -1.0, 1.0), 0.0)
        if options.get("forget_buffer", True):
            h = np.where(cross, h * 0.0, h)
        else:
            h = np.where(cross, np.clip(h - 0.8 * k, -0.3, 0.3), h)
        mean = mean * 0.9 + v * 0.1
        if sweep > 2:
            c = c + 0.01 * k
        if q == 2:
            chop, switched = -chop, True
    state = tile.state_dict()["compound"]
    np.testing.assert_allclose(state["buffer"][:, 0], h, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(state["running_mean"][:, 0], mean, rtol=1e-14)
    np.testing.assert_allclose(state["past_mean"][:, 0], past, rtol=1e-14)
    np.testing.assert_allclose(tile.get_weights()[:, 0], c, atol=1e-15)
    assert float(state["chop_in"][0]) == chop and bool(state["switched"][0]) == switched


def test_agad_random_chopper_adds_to_the_regular_flips():
    tile = make(agad(in_chop_prob=0.25, in_chop_random=True), seed=5)  # N = 4
    zeros_update(tile, 16)
    chop = np.ones(4)
    for event in range(16):
        flip = (event // 4) % 4 + 1 == 4
        if rng.uniform(5, "compound.chop_in", event, 1)[0] < 0.25:
            flip = True
        if flip:
            chop[event % 4] *= -1
    np.testing.assert_array_equal(tile.state_dict()["compound"]["chop_in"], chop)


# -- every field acts (or is documented inert) ----------------------------------------------------

def _noisy(**kw):
    return ConstantStepDevice(**{"dw_min": 0.01, **kw})


BASES = {
    "tt": lambda: TransferCompound(unit_cell_devices=[_noisy(), _noisy()], units_in_mbatch=True),
    "buffered": lambda: BufferedTransferCompound(unit_cell_devices=[_noisy(), _noisy()],
                                                 units_in_mbatch=False),
    "chopped": lambda: ChoppedTransferCompound(unit_cell_devices=[_noisy(), _noisy()],
                                               in_chop_prob=0.5, fast_lr=0.5,
                                               transfer_lr=0.2),
    "agad": lambda: DynamicTransferCompound(unit_cell_devices=[_noisy(), _noisy()],
                                            in_chop_prob=0.5, tail_weightening=0.3),
}

FIELD_CASES = [
    ("tt", "unit_cell_devices", [_noisy(), _noisy(dw_min=0.02)]),
    ("tt", "construction_seed", 5),
    ("tt", "gamma", 0.5),
    ("tt", "gamma_vec", [0.3, 1.0]),
    ("tt", "transfer_every", 2.0),
    ("tt", "transfer_every_vec", [0.5, 0.0]),
    ("tt", "units_in_mbatch", False),
    ("tt", "n_reads_per_transfer", 2),
    ("tt", "transfer_columns", False),
    ("tt", "with_reset_prob", 0.5),
    ("tt", "random_selection", True),
    ("tt", "fast_lr", 0.5),
    ("tt", "transfer_lr", 2.0),
    ("tt", "transfer_lr_vec", [2.0, 1.0]),
    ("tt", "scale_transfer_lr", False),
    ("tt", "scale_fast_lr", True),
    ("tt", "transfer_forward", IOParameters(out_noise=0.2)),
    ("tt", "transfer_update", UpdateParameters(update_bl_management=False)),
    ("buffered", "thres_scale", 3.0),
    ("buffered", "step", 0.5),
    ("buffered", "momentum", 0.6),
    ("buffered", "forget_buffer", False),
    ("buffered", "transfer_update", UpdateParameters(desired_bl=2, update_management=False,
                                                     update_bl_management=False)),
    ("chopped", "in_chop_prob", 0.0),
    ("chopped", "in_chop_random", False),
    ("chopped", "out_chop_prob", 0.5),
    ("chopped", "buffer_granularity", 0.5),
    ("chopped", "auto_granularity", 3.0),
    ("chopped", "step", 0.5),
    ("chopped", "momentum", 0.5),
    ("chopped", "forget_buffer", False),
    ("chopped", "no_buffer", True),
    ("chopped", "units_in_mbatch", True),
    ("chopped", "auto_scale", True),
    ("chopped", "correct_gradient_magnitudes", True),
    ("chopped", "transfer_columns", False),
    ("chopped", "fast_lr", 0.2),
    ("chopped", "transfer_lr", 2.0),
    ("chopped", "scale_transfer_lr", False),
    ("chopped", "scale_fast_lr", True),
    ("chopped", "transfer_forward", IOParameters(out_noise=0.2)),
    ("chopped", "transfer_update", UpdateParameters(desired_bl=2, update_management=False,
                                                    update_bl_management=False)),
    ("chopped", "gamma", 0.5),
    ("chopped", "transfer_every", -0.1),
    ("chopped", "transfer_every_vec", [2.0, 0.0]),
    ("chopped", "transfer_lr_vec", [3.0, 1.0]),
    ("agad", "experimental_correct_accumulation", True),
    ("agad", "tail_weightening", 2.0),
    ("agad", "in_chop_random", True),
    ("agad", "in_chop_prob", 0.3),
    ("agad", "momentum", 0.5),
]

#: fields that do not change the result, with the reason (spec/transfer.md §T9)
INERT_CASES = [
    ("tt", "no_self_transfer", False),        # a transfer of the last device onto itself: none
    ("chopped", "no_self_transfer", False),   # refsim runs no extra A→C transfer
    ("agad", "no_buffer", True),              # AGAD always accumulates (as aihwkit)
    ("chopped", "auto_momentum", 0.5),        # only with auto_scale (covered below)
    ("agad", "buffer_cap", 0.5),              # only without forget_buffer (covered below)
]


def _run_fields(kind, changes, update=None, rows=4, calls=4):
    cell = BASES[kind]()
    for field, value in changes.items():
        setattr(cell, field, copy.deepcopy(value))
    cell.validate()
    x, d = data(rows * calls, 4, 3, seed=8)
    tile = make(cell, update=update or UpdateParameters(desired_bl=5), seed=2)
    for i in range(calls):
        tile.update(x[i * rows:(i + 1) * rows], d[i * rows:(i + 1) * rows], 0.3)
    return snapshot(tile)


@pytest.mark.parametrize("kind, field, value", FIELD_CASES,
                         ids=[f"{k}-{f}" for k, f, _ in FIELD_CASES])
def test_every_field_changes_the_result(kind, field, value):
    calls = 6 if kind == "agad" else 4  # AGAD writes only after its warm-up
    assert not same(_run_fields(kind, {}, calls=calls), _run_fields(kind, {field: value},
                                                                    calls=calls))


@pytest.mark.parametrize("kind, field, value", INERT_CASES,
                         ids=[f"{k}-{f}" for k, f, _ in INERT_CASES])
def test_inert_fields(kind, field, value):
    assert same(_run_fields(kind, {}), _run_fields(kind, {field: value}))


def test_conditional_fields_act_in_their_context():
    auto = {"auto_scale": True}
    assert not same(_run_fields("chopped", auto), _run_fields("chopped", {**auto,
                                                                          "auto_momentum": 0.5}))
    keep = {"forget_buffer": False, "transfer_lr": 5.0}
    assert not same(_run_fields("agad", keep, calls=6),
                    _run_fields("agad", {**keep, "buffer_cap": 0.5}, calls=6))
    assert not same(_run_fields("agad", {}, calls=6),
                    _run_fields("agad", {"forget_buffer": False}, calls=6))


# -- implementation choices that must not change results ------------------------------------------


@pytest.mark.parametrize("kind", ["tt3", "chopped"])
def test_collected_writes_and_sliced_reads_equal_the_plain_ones(kind, monkeypatch):
    """Writes collected per receiving device = written one by one; reads of the (ℓ, r) slice =
    reads of the full array with one-hot inputs (§T3)."""
    if kind == "tt3":
        cell = TransferCompound(unit_cell_devices=[_noisy(), _noisy(), _noisy()],
                                units_in_mbatch=False, n_reads_per_transfer=2,
                                transfer_every=0.5, transfer_forward=IOParameters(
                                    w_noise=0.01,
                                    w_noise_type=WeightNoiseType.ADDITIVE_CONSTANT))
    else:
        cell = ChoppedTransferCompound(unit_cell_devices=[_noisy(), _noisy()], in_chop_prob=0.3,
                                       transfer_columns=False, transfer_lr=4.0,
                                       transfer_forward=IOParameters(
                                           mv_type=AnalogMVType.POS_NEG_SEPARATE))
    x, d = data(12, 4, 3, seed=9)
    runs = []
    for defer, sliced in ((True, True), (False, True), (True, False)):
        tile = make(cell, seed=4)
        tile.compound.defer_writes = defer
        tile.compound.sliced = sliced
        for i in range(3):
            tile.update(x[4 * i:4 * i + 4], d[4 * i:4 * i + 4], 0.5)
        runs.append(snapshot(tile))
    assert writes(tile) > 0
    assert same(runs[0], runs[1]) and same(runs[0], runs[2])


TWIN_IO = IOParameters(out_noise=0.05, out_res=0.01, w_noise=0.01,
                       w_noise_type=WeightNoiseType.ADDITIVE_CONSTANT)
TWIN_CASES = {
    "chopped-columns": lambda: ChoppedTransferCompound(
        unit_cell_devices=[_noisy(), _noisy()], in_chop_prob=0.3, in_chop_random=True,
        out_chop_prob=0.4, auto_scale=True, fast_lr=0.5, transfer_lr=4.0, transfer_forward=TWIN_IO),
    "chopped-rows-regular": lambda: ChoppedTransferCompound(
        unit_cell_devices=[_noisy(), _noisy()], in_chop_prob=0.5, transfer_columns=False,
        transfer_lr=4.0, forget_buffer=False, momentum=0.2, correct_gradient_magnitudes=True,
        transfer_forward=IOParameters(mv_type=AnalogMVType.POS_NEG_SEPARATE, out_noise=0.02)),
    "chopped-every-2-no-buffer": lambda: ChoppedTransferCompound(
        unit_cell_devices=[_noisy(), _noisy()], in_chop_prob=0.2, transfer_every=2.0,
        units_in_mbatch=False, no_buffer=True, transfer_lr=8.0, transfer_forward=TWIN_IO),
    "chopped-exact-writes": lambda: ChoppedTransferCompound(
        unit_cell_devices=[_noisy(), _noisy()], in_chop_prob=0.3, transfer_lr=4.0,
        transfer_update=UpdateParameters(pulse_type=PulseType.NONE_WITH_DEVICE),
        transfer_forward=TWIN_IO),
    "agad": lambda: DynamicTransferCompound(
        unit_cell_devices=[_noisy(), _noisy()], in_chop_prob=0.5, tail_weightening=0.3,
        transfer_lr=4.0, in_chop_random=True, auto_scale=True, fast_lr=0.5,
        transfer_forward=TWIN_IO),
    "agad-rows-cap": lambda: DynamicTransferCompound(
        unit_cell_devices=[_noisy(), _noisy()], in_chop_prob=0.34, tail_weightening=0.5,
        transfer_columns=False, forget_buffer=False, buffer_cap=0.5, transfer_lr=4.0,
        experimental_correct_accumulation=True, transfer_forward=TWIN_IO),
}


@pytest.mark.parametrize("backend", ["reference", "fast"])
@pytest.mark.parametrize("case", sorted(TWIN_CASES))
def test_batched_chopped_update_equals_row_by_row(case, backend):
    """§T11: one batch of cycles on A with line copies, one read pass and the events absorbed
    in runs of distinct lines = the row-by-row update (§T2), bit for bit, state and random
    counters included; batches longer than the line count repeat lines within a call."""
    if backend == "fast" and not FAST:
        pytest.skip("refsim_fast is not built")
    x, d = data(40, 4, 3, seed=11)
    runs = []
    for batched in (True, False):
        tile = make(TWIN_CASES[case](), backend=backend, seed=6)
        tile.compound.batched = batched
        for lo, hi in ((0, 3), (3, 13), (13, 40)):
            tile.update(x[lo:hi], d[lo:hi], 0.5)
        tile.update(x[:5], d[:5], 0.0)
        runs.append(snapshot(tile))
    assert reads(tile) >= 20 and writes(tile) + abs(runs[0]["devices"][1]).sum() > 0
    assert same(runs[0], runs[1])


def test_reads_that_involve_every_input_are_not_sliced():
    assert T.sliceable(IOParameters())
    assert not T.sliceable(IOParameters(inp_noise=0.01))
    assert not T.sliceable(IOParameters(ir_drop=0.1))
    assert not T.sliceable(IOParameters(inp_sto_round=True))
    assert T.sliceable(IOParameters(inp_sto_round=True, inp_res=0.0))
    tile = make(TransferCompound(unit_cell_devices=[_noisy(), _noisy()],
                                 transfer_forward=IOParameters(inp_noise=0.05)))
    assert not tile.compound.sliced
    x, d = data(4, 4, 3)
    tile.update(x, d, 0.5)
    assert reads(tile) == 1


# -- tile operations ------------------------------------------------------------------------------


def test_set_weights_distributes_and_restarts_counters():
    cell = TransferCompound(unit_cell_devices=[cdev(), cdev(), cdev()],
                            gamma_vec=[0.2, 0.3, 0.5], units_in_mbatch=False)
    tile = make(cell)
    x, d = data(5, 4, 3)
    tile.update(x, d, 0.5)
    w = np.linspace(-0.45, 0.45, 12).reshape(3, 4)
    w[0, 0] = 0.7  # 0.7/0.5 = 1.4 is clamped to w_max = 1
    tile.set_weights(w)
    comp = tile.compound
    np.testing.assert_array_equal(comp.devs[0].w, 0.0)
    np.testing.assert_array_equal(comp.devs[1].w, 0.0)
    np.testing.assert_array_equal(comp.devs[2].w, np.clip(w / 0.5, -1, 1))
    expect = w.copy()
    expect[0, 0] = 0.5
    np.testing.assert_array_equal(tile.get_weights(), expect)
    assert comp.counter == 0 and comp.pointers == [0, 0, 0]


def test_set_weights_keeps_the_digital_state_of_chopped_rules():
    tile = make(chopped(in_chop_prob=0.5, in_chop_random=False, units_in_mbatch=False))
    with_state(tile, devices=[np.full((3, 4), 0.004), np.zeros((3, 4))])
    zeros_update(tile, 6)
    before = tile.state_dict()["compound"]
    tile.set_weights(np.full((3, 4), 0.1))
    after = tile.state_dict()["compound"]
    np.testing.assert_array_equal(after["buffer"], before["buffer"])
    np.testing.assert_array_equal(after["chop_in"], before["chop_in"])
    assert after["sweep"] == before["sweep"] == 1 and after["pointers"] == [0, 0]
    np.testing.assert_array_equal(after["devices"][0], 0.0)
    np.testing.assert_array_equal(tile.get_weights(), 0.1)


def test_reset_acts_on_the_fast_device_decay_and_diffusion_on_all():
    dev = cdev(lifetime=10.0, diffusion=0.01, reset_std=0.0)
    tile = make(TransferCompound(unit_cell_devices=[dev, dev], gamma=0.5))
    a, c = np.full((3, 4), 0.2), np.full((3, 4), 0.4)
    with_state(tile, devices=[a, c])
    tile.reset(1.0)
    np.testing.assert_array_equal(tile.compound.devs[0].w, 0.0)
    np.testing.assert_array_equal(tile.compound.devs[1].w, c)
    with_state(tile, devices=[a, c])
    tile.decay_weights()
    assert np.all(tile.compound.devs[0].w < a) and np.all(tile.compound.devs[1].w < c)
    np.testing.assert_allclose(tile.get_weights(), 0.5 * tile.compound.devs[0].w +
                               tile.compound.devs[1].w, rtol=1e-15)
    tile.diffuse_weights()
    assert tile.streams.calls["device.diffusion_noise"] == 2


def test_zero_learning_rate_only_advances_the_update_counter():
    tile = make(chopped(in_chop_prob=0.5, auto_scale=True))
    before = snapshot(tile)
    x, d = data(3, 4, 3)
    tile.update(x, d, 0.0)
    after = snapshot(tile)
    assert after.pop("rng")["calls"] == {"update": 3}
    before.pop("rng")
    assert same(before, after)


@pytest.mark.parametrize("kind", ["tt", "buffered", "chopped", "agad"])
def test_checkpoint_resume_equals_uninterrupted(kind):
    x, d = data(24, 4, 3, seed=3)
    cell = BASES[kind]()
    if kind == "tt":
        cell.random_selection, cell.with_reset_prob = True, 0.3
    if kind == "chopped":
        cell.auto_scale, cell.out_chop_prob = True, 0.3

    def fresh():
        return make(cell, update=UpdateParameters(desired_bl=5), seed=6)

    whole = fresh()
    for i in range(6):
        whole.update(x[4 * i:4 * i + 4], d[4 * i:4 * i + 4], 0.4)
    part = fresh()
    for i in range(3):
        part.update(x[4 * i:4 * i + 4], d[4 * i:4 * i + 4], 0.4)
    state = copy.deepcopy(part.state_dict())
    resumed = fresh()
    resumed.load_state_dict(state)
    for i in range(3, 6):
        resumed.update(x[4 * i:4 * i + 4], d[4 * i:4 * i + 4], 0.4)
    assert same(snapshot(whole), snapshot(resumed))
    assert writes(whole) > 0


def test_bad_state_is_rejected():
    tile = make(chopped())
    state = tile.state_dict()
    bad = copy.deepcopy(state)
    bad["compound"]["chop_in"] = np.array([1.0, 0.5, 1.0, 1.0])
    with pytest.raises(ValueError, match="chop_in"):
        tile.load_state_dict(bad)
    bad = copy.deepcopy(state)
    bad["compound"]["pointers"] = [7, 0]
    with pytest.raises(ValueError, match="pointers"):
        tile.load_state_dict(bad)
    bad = copy.deepcopy(state)
    bad["compound"]["buffer"] = np.zeros((4, 3))
    with pytest.raises(ValueError, match="buffer"):
        tile.load_state_dict(bad)


# -- bad configs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("build, field", [
    (lambda: make(TransferCompound(unit_cell_devices=[cdev()])), "device.unit_cell_devices"),
    (lambda: make(ChoppedTransferCompound()), "device.unit_cell_devices"),
    (lambda: make(TransferCompound(unit_cell_devices=[cdev(), cdev()]),
                  update=UpdateParameters(pulse_type=PulseType.NONE)), "update.pulse_type"),
    (lambda: make(TransferCompound(unit_cell_devices=[cdev(), cdev()], transfer_forward=
                                   IOParameters(mv_type=AnalogMVType.SPLIT_MODE))),
     "device.transfer_forward.mv_type"),
    (lambda: make(TransferCompound(unit_cell_devices=[
        cdev(), LinearStepDevice(write_noise_std=0.1)])), "device.unit_cell_devices[1]"),
    (lambda: make(chopped(auto_granularity=2.0, transfer_every=0.0)), "device.auto_granularity"),
    (lambda: ChoppedTransferCompound(unit_cell_devices=[cdev()] * 3), "unit_cell_devices"),
    (lambda: ChoppedTransferCompound(n_reads_per_transfer=2), "n_reads_per_transfer"),
    (lambda: DynamicTransferCompound(in_chop_prob=0.0), "in_chop_prob"),
    (lambda: DynamicTransferCompound(out_chop_prob=0.1), "out_chop_prob"),
    (lambda: TransferCompound(unit_cell_devices=[cdev(), cdev()], gamma_vec=[1.0]), "gamma_vec"),
    (lambda: BufferedTransferCompound(with_reset_prob=0.1), "with_reset_prob"),
])
def test_bad_config_raises_config_error_naming_the_field(build, field):
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        build()


# -- backends and namespaces ----------------------------------------------------------------------


ALGORITHMS = ["tt", "ttv2", "c-ttv2", "agad"]


def _algorithm_tile(alg, device, backend, xp=None, dtype=None):
    cfg = build_config(alg, device(dw_min=0.01), construction_seed=3)
    if alg == "agad":
        cfg.device.in_chop_prob = 0.5  # N = 2: the warm-up ends within the run
    if alg in ("ttv2", "c-ttv2"):
        cfg.device.transfer_lr = 20.0  # crossings within the run
    return AnalogTile(3, 4, cfg, seed=12, backend=backend, xp=xp, dtype=dtype)


def _train(tile, xp, dtype, rows=16, batch=4):
    x, d = data(rows, 4, 3, seed=13)
    for i in range(0, rows, batch):
        tile.update(xp.asarray(x[i:i + batch], dtype=dtype), xp.asarray(d[i:i + batch],
                                                                         dtype=dtype), 0.5)
    return tile


@pytest.mark.skipif(not FAST, reason="refsim_fast is not built")
@pytest.mark.parametrize("alg", ALGORITHMS)
@pytest.mark.parametrize("device", [ConstantStepDevice, SoftBoundsReferenceDevice])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_reference_and_fast_backend_agree_bit_for_bit(alg, device, dtype):
    ref = _train(_algorithm_tile(alg, device, "reference", dtype=dtype), np, dtype)
    fast = _train(_algorithm_tile(alg, device, "fast", dtype=dtype), np, dtype)
    assert writes(ref) > 0
    assert same(snapshot(ref), snapshot(fast))


def _namespaces():
    out = []
    try:
        import array_api_strict
        out.append(array_api_strict)
    except ImportError:
        pass
    try:
        import torch
        out.append(torch)
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_namespaces_agree(alg):
    spaces = _namespaces()
    if not spaces:
        pytest.skip("no other array namespace installed")
    ref = snapshot(_train(_algorithm_tile(alg, ConstantStepDevice, "reference"), np, np.float64))
    for xp in spaces:
        tile = _train(_algorithm_tile(alg, ConstantStepDevice, "reference", xp=xp), xp,
                      xp.float64)
        other = snapshot(tile)
        assert type(tile.get_weights()).__module__.split(".")[0] == xp.__name__.split(".")[0]
        assert other["rng"] == ref["rng"], xp.__name__
        for key, value in ref.items():
            if not isinstance(value, (list, np.ndarray)):
                assert other[key] == value, key
                continue
            values = value if isinstance(value, list) else [value]
            others = other[key] if isinstance(other[key], list) else [other[key]]
            for a, b in zip(values, others):
                np.testing.assert_allclose(np.asarray(b, dtype=np.float64), a, rtol=1e-12,
                                           atol=1e-14, err_msg=f"{xp.__name__} {key}")


# -- the build_config algorithms learn ------------------------------------------------------------


@pytest.mark.parametrize("alg, lr", [("tt", 0.2), ("ttv2", 0.05), ("c-ttv2", 0.1),
                                     ("agad", 0.1)])
def test_build_config_tiles_train_a_tiny_regression(alg, lr):
    cfg = build_config(alg, SoftBoundsReferenceDevice(dw_min=0.01), construction_seed=1)
    tile = AnalogTile(2, 3, cfg, seed=1)
    r = np.random.default_rng(0)
    target = np.array([[0.3, -0.2, 0.1], [-0.1, 0.25, -0.3]])
    x = r.uniform(-1.0, 1.0, (240, 3))
    y = x @ target.T

    def loss():
        return float(np.mean((tile.forward(x[:32]) - y[:32]) ** 2))

    start = loss()
    for i in range(0, 240, 8):
        out = tile.forward(x[i:i + 8])
        tile.update(x[i:i + 8], out - y[i:i + 8], lr)
    assert loss() < 0.7 * start

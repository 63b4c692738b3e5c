"""Golden vectors of short training runs of the compound devices (spec/compounds.md "Stage
semantics", spec/unit_cells.md, spec/transfer.md): writes spec/vectors/train/*.json.

Regenerate (from the repository root):

    /work/venv/bin/python spec/vectors/make_train_vectors.py

Each case builds an ``AnalogTile`` whose config holds a compound device (one per build_config
algorithm: 'sgd' with n_devices = 3, i.e. a VectorUnitCell, 'mp', 'tiki-taka', 'ttv2', 'c-ttv2',
'agad', each with a ConstantStepDevice and a SoftBoundsReferenceDevice, plus variants of the
schedules), reference backend, float64, sets initial weights and runs 3–6 update calls
``tile.update(x, d, lr)`` with batches of 2–4 rows. It stores the config, the seed, the drawn
parameters of every sub-device, the initial weights and, before the first and after every call,
the visible weights, the compound's state (``tile.state_dict()['compound']``, arrays as nested
lists) and the tile's random-call counters. The format is described in spec/vectors/README.md;
tests/test_train_golden.py replays the files on the reference and the fast backend and checks that
this builder reproduces them.

The builder checks that every case does what it is there for (:func:`check_case`): the visible
weight moves, gradient pulses reach the fast device, transfers read and write (the ``io.transfer``
and ``transfer`` counters advance and the receiving device changes), mixed-precision transfer events
and one-sided refreshes happen, and the schedule of each variant is the one its description claims.

The weights and inputs are ``(2u − 1)·c`` with ``u`` refsim uniforms (stream ``test.a`` call 0 for
the initial weights, stream ``test.b`` calls 2k and 2k + 1 for x and d of the k-th call, all with
the case's ``data_seed``), so they are exact binary fractions and the same on every machine.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from refsim import rng

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from vector_json import file_text, write_vectors  # noqa: E402,F401  (file_text: used by the tests)
from refsim.configs import (
    BufferedTransferCompound,
    ConstantStepDevice,
    IOParameters,
    OneSidedUnitCell,
    SoftBoundsReferenceDevice,
    UnitCellRPUConfig,
    build_config,
)
from refsim.tile import AnalogTile

HERE = pathlib.Path(__file__).resolve().parent
OUT_DIR = HERE / "train"

FORMAT = "refsim-train-vectors"
VERSION = 1
MAX_BYTES = 40 * 1024  # per file

TRANSFER_CLASSES = ("TransferCompound", "BufferedTransferCompound", "ChoppedTransferCompound",
                    "DynamicTransferCompound")


# -- deterministic data -----------------------------------------------------------------------------


def uniform_matrix(seed: int, stream: str, call: int, shape: tuple[int, int], scale: float) -> Any:
    """``(2u − 1)·scale`` with ``u`` refsim uniforms (exact multiples of 2⁻²⁴·scale)."""
    u = rng.uniform(seed, stream, call, shape, xp=np)
    return (2.0 * u - 1.0) * scale


@dataclasses.dataclass(frozen=True)
class Call:
    """One update call: ``batch`` rows, x = (2u − 1)·x_scale, d = (2u − 1)·d_scale."""

    batch: int
    lr: float
    x_scale: float = 1.0
    d_scale: float = 1.0


def calls(n: int, batch: int, lr: float, **kw: Any) -> tuple[Call, ...]:
    return tuple(Call(batch, lr, **kw) for _ in range(n))


@dataclasses.dataclass(frozen=True)
class Case:
    """A training run. ``checks`` names the extra properties :func:`check_case` asserts."""

    name: str
    description: str
    config: Callable[[], Any]
    calls: tuple[Call, ...]
    shape: tuple[int, int] = (4, 5)
    seed: int = 20240611
    data_seed: int = 11
    weight_scale: float = 0.25
    checks: tuple[str, ...] = ()


# -- configs ----------------------------------------------------------------------------------------


def cs() -> ConstantStepDevice:
    """ConstantStepDevice at its defaults (dw_min 0.001, dw_min_std 0.3, bounds ±0.6 dtod 0.3)."""
    return ConstantStepDevice()


def sbr() -> SoftBoundsReferenceDevice:
    """SoftBoundsReferenceDevice (additive c2c noise, dw_min_std 0.3) with a drawn reference."""
    return SoftBoundsReferenceDevice(reference_mean=0.05, reference_std=0.02)


PERFECT = IOParameters(is_perfect=True)


def algo(algorithm: str, device: Callable[[], Any], seed: int = 0, **cell: Any
         ) -> Callable[[], Any]:
    """``build_config(algorithm, device)`` (its IO, update and compound defaults), then the given
    fields of the compound set on top."""

    def make() -> Any:
        kw = {"n_devices": 3} if algorithm == "sgd" else {}
        config = build_config(algorithm, device(), construction_seed=seed, **kw)
        for key, value in cell.items():
            setattr(config.device, key, value)
        return config.validate()

    return make


def one_sided() -> Any:
    """OneSidedUnitCell of two small ConstantStep devices (bounds ±0.1, dw_min 0.005) with a
    refresh after every mini-batch."""
    return UnitCellRPUConfig(device=OneSidedUnitCell(
        unit_cell_devices=[ConstantStepDevice(w_max=0.1, w_min=-0.1, dw_min=0.005)],
        refresh_every=1, units_in_mbatch=True)).validate()


def tiki_taka_three() -> Any:
    """TransferCompound with three devices, gamma 0.5 (W = 0.25·D_0 + 0.5·D_1 + D_2)."""
    config = build_config("tiki-taka", ConstantStepDevice())
    config.device.unit_cell_devices = [ConstantStepDevice(), ConstantStepDevice(),
                                       ConstantStepDevice()]
    config.device.gamma = 0.5
    return config.validate()


def buffered() -> Any:
    """BufferedTransferCompound (TTv2 buffer) with the build_config IO, rows every 2."""
    config = build_config("tiki-taka", ConstantStepDevice())
    old = config.device
    config.device = BufferedTransferCompound(
        unit_cell_devices=old.unit_cell_devices, transfer_forward=old.transfer_forward,
        units_in_mbatch=False, transfer_every=2.0, thres_scale=2.0, momentum=0.2)
    return config.validate()


CS, SBR = "ConstantStepDevice (defaults: dw_min 0.001, dw_min_std 0.3)", \
    "SoftBoundsReferenceDevice (reference_mean 0.05, reference_std 0.02, dw_min_std 0.3)"

CASES: tuple[Case, ...] = (
    # -- 'sgd' with n_devices = 3: VectorUnitCell, SingleRandom -------------------------------------
    Case("sgd_vector_constant_step",
         f"build_config('sgd', n_devices=3): VectorUnitCell of three {CS}, update_policy "
         "SingleRandom (one device per call, compound.select), W the mean of the devices.",
         algo("sgd", cs), calls(5, 3, 0.05), shape=(4, 5), seed=101, data_seed=1,
         checks=("vector",)),
    Case("sgd_vector_soft_bounds_reference",
         f"build_config('sgd', n_devices=3): VectorUnitCell of three {SBR}, SingleRandom.",
         algo("sgd", sbr), calls(4, 2, 0.05), shape=(5, 6), seed=102, data_seed=2,
         checks=("vector",)),
    # -- 'mp': MixedPrecisionCompound ---------------------------------------------------------------
    Case("mp_constant_step",
         f"build_config('mp') with a {CS}: chi accumulates every row, transfer events of all rows "
         "at the first row of every mini-batch from the second on.",
         algo("mp", cs), calls(4, 2, 0.02), shape=(4, 5), seed=103, data_seed=3,
         checks=("mp",)),
    Case("mp_soft_bounds_reference",
         f"build_config('mp') with a {SBR}.",
         algo("mp", sbr), calls(4, 3, 0.02), shape=(5, 6), seed=104, data_seed=4,
         checks=("mp",)),
    Case("mp_bins_random_row",
         f"build_config('mp') with a {CS}, n_x_bins 5, n_d_bins 7 (stochastic rounding from "
         "compound.x_round / compound.d_round), n_rows_per_transfer 2 with random_row "
         "(compound.column), granularity 0.002.",
         algo("mp", cs, n_x_bins=5, n_d_bins=7, n_rows_per_transfer=2, random_row=True,
              granularity=0.002),
         calls(5, 2, 0.03), shape=(4, 5), seed=205, data_seed=5, checks=("mp", "mp_bins")),
    # -- 'tiki-taka': TransferCompound --------------------------------------------------------------
    Case("tiki_taka_constant_step",
         f"build_config('tiki-taka') with {CS}: units_in_mbatch, transfer_every 1 (one column "
         "of D_0 read through the noisy build_config IO and written onto D_1 after each call); "
         "W = D_1 (gamma 0).",
         algo("tiki-taka", cs), calls(5, 3, 0.1), shape=(4, 5), seed=106, data_seed=6,
         checks=("transfer", "per_call")),
    Case("tiki_taka_soft_bounds_reference",
         f"build_config('tiki-taka') with {SBR}.",
         algo("tiki-taka", sbr), calls(5, 2, 0.1), shape=(5, 6), seed=107, data_seed=7,
         checks=("transfer", "per_call")),
    Case("tiki_taka_rows_perfect",
         f"build_config('tiki-taka') with {CS}, units_in_mbatch False, transfer_every 3 (a "
         "transfer every 3 update rows, across call boundaries), n_reads_per_transfer 2, and a "
         "perfect transfer_forward (the reads are the exact columns).",
         algo("tiki-taka", cs, units_in_mbatch=False, transfer_every=3.0,
              n_reads_per_transfer=2, transfer_forward=PERFECT),
         calls(5, 2, 0.1), shape=(4, 5), seed=108, data_seed=8,
         checks=("transfer", "every_3_rows")),
    Case("tiki_taka_three_devices",
         f"TransferCompound with three {CS} (build_config 'tiki-taka' otherwise), gamma 0.5: "
         "D_0 → D_1 after every call, D_1 → D_2 every n = 3 calls (one sweep of D_0).",
         tiki_taka_three, calls(6, 2, 0.1), shape=(4, 3), seed=109, data_seed=9,
         checks=("transfer", "three_devices")),
    Case("ttv2_buffered",
         f"BufferedTransferCompound (TTv2 buffer: thres_scale 2, momentum 0.2) of two {CS} with "
         "the build_config IO, units_in_mbatch False, transfer_every 2.",
         buffered, calls(5, 4, 0.2), shape=(4, 5), seed=110, data_seed=10,
         checks=("transfer",)),
    # -- 'ttv2': ChoppedTransferCompound without choppers ------------------------------------------
    Case("ttv2_constant_step",
         f"build_config('ttv2') with {CS}: ChoppedTransferCompound with in_chop_prob 0, one "
         "column per update row into the buffer, single-pulse writes onto C; W = C.",
         algo("ttv2", cs), calls(5, 3, 0.1), shape=(4, 5), seed=111, data_seed=11,
         checks=("transfer", "no_chop")),
    Case("ttv2_soft_bounds_reference",
         f"build_config('ttv2') with {SBR}.",
         algo("ttv2", sbr), calls(5, 2, 0.1), shape=(5, 6), seed=112, data_seed=12,
         checks=("transfer", "no_chop")),
    # -- 'c-ttv2': ChoppedTransferCompound --------------------------------------------------------
    Case("c_ttv2_constant_step",
         f"build_config('c-ttv2') with {CS}: auto_scale, fast_lr 0.1, random input choppers "
         "with in_chop_prob 0.1.",
         algo("c-ttv2", cs), calls(6, 3, 0.1), shape=(4, 5), seed=113, data_seed=13,
         checks=("transfer", "chop_random")),
    Case("c_ttv2_soft_bounds_reference",
         f"build_config('c-ttv2') with {SBR}.",
         algo("c-ttv2", sbr), calls(5, 3, 0.1), shape=(5, 6), seed=114, data_seed=14,
         checks=("transfer", "chop_random")),
    Case("c_ttv2_chop_regular_perfect",
         f"build_config('c-ttv2') with {CS}, in_chop_prob 0.5 on the regular schedule "
         "(in_chop_random False: every column flips during every 2nd sweep, no draws), gamma_vec "
         "[0.5, 1] (W = C + 0.5·chopped A) and a perfect transfer_forward.",
         algo("c-ttv2", cs, in_chop_prob=0.5, in_chop_random=False, gamma_vec=[0.5, 1.0],
              transfer_forward=PERFECT),
         calls(6, 4, 0.5), shape=(4, 5), seed=115, data_seed=15,
         checks=("transfer", "chop_regular")),
    Case("c_ttv2_chop_random",
         f"build_config('c-ttv2') with {CS}, in_chop_prob 0.5 random (compound.chop_in) and "
         "out_chop_prob 0.5 (compound.chop_out after every sweep).",
         algo("c-ttv2", cs, in_chop_prob=0.5, out_chop_prob=0.5),
         calls(6, 4, 0.1), shape=(4, 5), seed=116, data_seed=16,
         checks=("transfer", "chop_random", "chop_out")),
    # -- 'agad': DynamicTransferCompound ----------------------------------------------------------
    Case("agad_constant_step",
         f"build_config('agad') with {CS} and in_chop_prob 0.5 (N = 2 sweeps per chopper period; "
         "writes onto C start after N + 1 = 3 sweeps of the 4 columns, i.e. from update row 13 "
         "on, inside the run).",
         algo("agad", cs, in_chop_prob=0.5), calls(6, 4, 0.1), shape=(5, 4), seed=117,
         data_seed=17, checks=("transfer", "warm_up", "chop_regular")),
    Case("agad_soft_bounds_reference",
         f"build_config('agad') with {SBR} and in_chop_prob 0.5 (warm-up as agad_constant_step).",
         algo("agad", sbr, in_chop_prob=0.5), calls(6, 4, 0.1), shape=(5, 4), seed=118, data_seed=18,
         checks=("transfer", "warm_up", "chop_regular")),
    Case("agad_rows_random_perfect",
         f"build_config('agad') with {CS}, transfer_columns False (rows: 4 lines), in_chop_prob "
         "0.34 (N = 3; writes from row 17 on) with random flips (in_chop_random, compound.chop_in), "
         "forget_buffer False with buffer_cap 1, and a perfect transfer_forward.",
         algo("agad", cs, transfer_columns=False, in_chop_prob=0.34, in_chop_random=True,
              forget_buffer=False, buffer_cap=1.0, transfer_forward=PERFECT),
         calls(6, 4, 0.5), shape=(4, 5), seed=119, data_seed=19,
         checks=("transfer", "warm_up", "chop_random")),
    # -- OneSidedUnitCell with refresh ------------------------------------------------------------
    Case("one_sided_refresh",
         "OneSidedUnitCell (UnitCellRPUConfig) with one ConstantStepDevice spec (bounds ±0.1, "
         "dw_min 0.005) for g- and g+, refresh_every 1 mini-batch (units_in_mbatch): both devices "
         "climb, pairs past the thresholds are reset (compound.reset_noise) and rewritten.",
         one_sided, calls(5, 4, 0.5), shape=(4, 5), seed=120, data_seed=20,
         weight_scale=0.0625, checks=("refresh",)),
)


# -- running a case -------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """The JSON form of a state: arrays as nested lists (floats, ints or bools), numbers as
    numbers, lists and dicts element by element."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        if value.dtype == np.bool_:
            return value.tolist()
        if np.issubdtype(value.dtype, np.integer):
            return value.astype(np.int64).tolist()
        return np.asarray(value, dtype=np.float64).tolist()
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a train vector")


def _matrix(a: Any) -> list[list[float]]:
    return [[float(v) for v in row] for row in np.asarray(a, dtype=np.float64)]


def sub_device_record(tile: AnalogTile) -> list[dict[str, Any]]:
    """Per sub-device (``tile.compound.devices()``, in that order): its device index, its
    granularity and its drawn per-element parameters b_min, b_max, dw_up, dw_down (and the
    model's arrays of spec/devices.md §V2; reset_bias, kappa, rho only when not inert)."""
    out = []
    for dev in tile.compound.devices():
        p = dev.params
        rec: dict[str, Any] = {"index": int(dev.index), "granularity": float(dev.granularity),
                               "b_min": _matrix(p.b_min), "b_max": _matrix(p.b_max),
                               "dw_up": _matrix(p.dw_up), "dw_down": _matrix(p.dw_down)}
        for key, inert in (("reset_bias", 0.0), ("kappa", 1.0), ("rho", 0.0)):
            value = np.asarray(getattr(p, key))
            if bool(np.any(value != inert)):
                rec[key] = _matrix(value)
        for key in sorted(p.extra):
            rec[key] = _matrix(p.extra[key])
        out.append(rec)
    return out


def snapshot(tile: AnalogTile) -> dict[str, Any]:
    """The visible weights, the compound state and the call counters of ``tile``."""
    return {"weights": _matrix(tile.get_weights()),
            "compound": jsonable(tile.state_dict()["compound"]),
            "rng_calls": dict(tile.streams.state_dict()["calls"])}


def update_data(case: Case, call: Call, k: int) -> tuple[Any, Any]:
    m, n = case.shape
    x = uniform_matrix(case.data_seed, "test.b", 2 * k, (call.batch, n), call.x_scale)
    d = uniform_matrix(case.data_seed, "test.b", 2 * k + 1, (call.batch, m), call.d_scale)
    return x, d


def run_case(case: Case) -> dict[str, Any]:
    """Build the tile of ``case``, run its update calls, return the vector record (JSON-able)."""
    config = case.config()
    m, n = case.shape
    tile = AnalogTile(m, n, config, seed=case.seed, backend="reference")
    weights = uniform_matrix(case.data_seed, "test.a", 0, case.shape, case.weight_scale)
    tile.set_weights(weights)
    initial = snapshot(tile)
    steps = []
    for k, call in enumerate(case.calls):
        x, d = update_data(case, call, k)
        tile.update(x, d, call.lr)
        steps.append({"update": {"x": _matrix(x), "d": _matrix(d), "lr": call.lr},
                      **snapshot(tile)})
    record = {
        "format": FORMAT,
        "version": VERSION,
        "name": case.name,
        "description": case.description,
        "seed": case.seed,
        "construction_seed": tile.construction_seed,
        "shape": {"out_size": m, "in_size": n},
        "dtype": "float64",
        "rpu_config": config.to_dict(),
        "compound_class": type(config.device).__name__,
        "sub_devices": sub_device_record(tile),
        "weights": _matrix(weights),
        "initial": initial,
        "steps": steps,
    }
    check_case(case, record)
    return record


# -- what every case must exercise ------------------------------------------------------------------


def _changed(a: Any, b: Any) -> bool:
    return not np.array_equal(np.asarray(a), np.asarray(b))


def _cell(state: dict) -> dict:
    """The cell state of a unit-cell or mixed-precision compound state."""
    return state["cell"]


def check_case(case: Case, record: dict) -> None:
    """Assert that the run exercises what the case is for (see the module docstring)."""
    name = case.name
    steps = record["steps"]
    first, last = record["initial"], steps[-1]
    calls_ = last["rng_calls"]
    rows = sum(c.batch for c in case.calls)
    assert 3 <= len(steps) <= 6 and all(2 <= c.batch <= 4 for c in case.calls), name
    assert calls_.get("update") == rows, (name, "one update call per row")
    assert _changed(first["weights"], last["weights"]), (name, "the visible weight never moves")
    cls = record["compound_class"]
    if cls in TRANSFER_CLASSES:
        devices0 = first["compound"]["devices"]
        devices1 = last["compound"]["devices"]
        assert _changed(devices0[0], devices1[0]), (name, "no gradient pulses on D_0")
        for j in range(1, len(devices0)):
            assert _changed(devices0[j], devices1[j]), (name, f"no transfer reaches D_{j}")
        assert calls_.get("io.transfer", 0) > 0 and calls_.get("transfer", 0) > 0, \
            (name, "no transfer reads or writes")
    checks = set(case.checks)
    if "vector" in checks:
        cells = [_cell(first["compound"])["weights"], _cell(last["compound"])["weights"]]
        moved = sum(_changed(a, b) for a, b in zip(*cells))
        assert moved >= 2, (name, "fewer than two devices of the cell were updated")
    if "mp" in checks:
        state = last["compound"]
        assert state["transfers"] >= 2 and calls_.get("transfer", 0) > 0, (name, "no transfers")
        assert state["rows"] == rows, name
    if "mp_bins" in checks:  # random start rows s (compound.column): the pointer is s + 2
        m = case.shape[0]
        starts = [(s["compound"]["row"] - 2) % m for k, s in enumerate(steps)
                  if s["compound"]["transfers"] > (steps[k - 1]["compound"]["transfers"]
                                                   if k else 0)]
        assert len(set(starts)) >= 3, (name, starts)
    if "per_call" in checks:  # units_in_mbatch, transfer_every 1: one read per call
        for k, step in enumerate(steps):
            assert step["rng_calls"].get("io.transfer") == k + 1, (name, k)
    if "every_3_rows" in checks:  # units_in_mbatch False, transfer_every 3
        seen = 0
        for step, call in zip(steps, case.calls):
            seen += call.batch
            assert step["rng_calls"].get("io.transfer", 0) == seen // 3, (name, seen)
    if "three_devices" in checks:
        reads = [step["rng_calls"].get("io.transfer") for step in steps]
        assert reads == [1, 2, 4, 5, 6, 8], (name, reads)  # + one D_1 read after calls 3 and 6
    if "no_chop" in checks:
        assert all(v == 1.0 for v in last["compound"]["chop_in"]), name
    if "chop_random" in checks or "chop_regular" in checks:
        assert any(v == -1.0 for step in steps for v in step["compound"]["chop_in"]), \
            (name, "no input chopper flips")
    if "chop_random" in checks:
        assert calls_.get("compound.chop_in", 0) > 0, name
    if "chop_regular" in checks:
        assert "compound.chop_in" not in calls_, name
    if "chop_out" in checks:
        assert calls_.get("compound.chop_out", 0) > 0, name
        assert any(v == -1.0 for step in steps for v in step["compound"]["chop_out"]), name
    if "warm_up" in checks:  # reads without writes first, writes after the warm-up
        quiet = [k for k, s in enumerate(steps)
                 if s["rng_calls"].get("io.transfer", 0) > 0 and "transfer" not in s["rng_calls"]]
        assert quiet and quiet[0] == 0 and quiet[-1] < len(steps) - 1, (name, quiet)
    if "refresh" in checks:
        cell = _cell(last["compound"])
        assert cell["refreshed"] > 0 and calls_.get("io.refresh", 0) > 0, (name, "no refresh")
        assert calls_.get("transfer", 0) > 0 and calls_.get("compound.reset_noise", 0) > 0, name


def main(argv: Sequence[str] = ()) -> int:
    return write_vectors(OUT_DIR, CASES, run_case, MAX_BYTES)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Golden vectors of short training runs of the compound devices (spec/vectors/train/,
spec/vectors/README.md).

Every vector is replayed on a fresh tile with the reference backend and, when ``refsim_fast`` is
importable, with the fast backend (``AnalogTile(..., backend="fast")``: sub-device writes and
transfer/refresh reads on the compiled kernels, the compound logic the same array-API code); the
vector builder (spec/vectors/make_train_vectors.py) must reproduce the stored files; and every
vector must really exercise its compound (gradient pulses, transfer reads and writes, mixed-precision
transfer events, one-sided refreshes), so that none passes trivially.

Comparison rule (spec/agreement.md §3, "Compounds", float64): before the first and after every
update call, the visible weights and every float of the compound state (sub-device weights,
buffers, χ, choppers, running maxima and means) satisfy ``abs(actual − expected) <= ATOL +
RTOL·abs(expected)`` with ``ATOL = RTOL = 1e-12``, and so do the drawn sub-device parameters;
integers (counters, pointers, the chosen device), booleans (switched flags) and the random-call
counters are equal. A vector whose devices are all ConstantStep and SoftBoundsReference devices
(every stored run), whose per-pulse arithmetic is +, −, ·, / and clamps, must moreover be
reproduced **bit for bit** on both backends (agreement.md §3, "Compounds": "bit-equal expected for
ConstantStep and SoftBoundsReference devices"): a difference there, even one within the tolerance,
is a failure.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from golden_support import backends, load_script

from refsim.configs import from_dict
from refsim.tile import AnalogTile

REPO = pathlib.Path(__file__).resolve().parents[1]
VECTOR_DIR = REPO / "spec" / "vectors"
TRAIN_DIR = VECTOR_DIR / "train"
BUILDER = VECTOR_DIR / "make_train_vectors.py"
FILES = sorted(TRAIN_DIR.glob("*.json"))
NAMES = [p.stem for p in FILES]

ATOL = RTOL = 1e-12  # float64 (agreement.md §3, "Compounds")
MAX_BYTES = 40 * 1024
#: Devices whose runs are bit-equal on both backends (agreement.md §3, "Compounds").
EXACT_DEVICES = {"ConstantStepDevice", "SoftBoundsReferenceDevice"}
TRANSFER_CLASSES = ("TransferCompound", "BufferedTransferCompound", "ChoppedTransferCompound",
                    "DynamicTransferCompound")


def load(name: str) -> dict:
    return json.loads((TRAIN_DIR / f"{name}.json").read_text())


def builder():
    """The vector builder, imported from the source tree (it is not part of the package)."""
    return load_script(BUILDER, "_refsim_make_train_vectors")


# -- comparison -------------------------------------------------------------------------------------


def plain(value):
    """A state as JSON-like Python values: arrays as nested lists, numpy scalars as Python ones."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        if value.dtype != np.bool_ and not np.issubdtype(value.dtype, np.integer):
            value = value.astype(np.float64)
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class Comparison:
    """Compares JSON values by the rule of the module docstring; with ``exact``, floats must be
    bit-equal."""

    def __init__(self, label: str, exact: bool = False) -> None:
        self.label = label
        self.exact = exact

    def __call__(self, actual, expected, where: str) -> None:
        if isinstance(expected, dict):
            assert isinstance(actual, dict), self._msg(where, f"expected a dict, got {actual!r}")
            assert actual.keys() == expected.keys(), \
                self._msg(where, f"keys {sorted(actual)} != {sorted(expected)}")
            for key in expected:
                self(actual[key], expected[key], f"{where}.{key}")
        elif isinstance(expected, list):
            assert isinstance(actual, list) and len(actual) == len(expected), \
                self._msg(where, f"expected a list of {len(expected)}, got {actual!r}")
            if expected and all(isinstance(v, float) for v in expected):
                self._floats(actual, expected, where)
            else:
                for i, (a, e) in enumerate(zip(actual, expected)):
                    self(a, e, f"{where}[{i}]")
        elif isinstance(expected, float):
            self._floats([actual], [expected], where)
        else:  # int, bool, str, None: exactly, and of the same type
            assert type(actual) is type(expected) and actual == expected, \
                self._msg(where, f"{actual!r} != {expected!r}")

    def _msg(self, where: str, text: str) -> str:
        return f"{self.label}: {where}: {text}"

    def _floats(self, actual, expected, where: str) -> None:
        assert all(isinstance(v, float) for v in actual), \
            self._msg(where, f"expected floats, got {actual!r}")
        a, e = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
        diff = np.abs(a - e)
        bad = np.flatnonzero(~(diff <= ATOL + RTOL * np.abs(e)))
        if len(bad):
            i = int(bad[0])
            raise AssertionError(self._msg(
                where, f"{len(bad)} value(s) outside atol = rtol = {ATOL:g}, first [{i}]: "
                       f"{float(a[i])!r} != {float(e[i])!r} (differs by {float(diff[i]):.3g})"))
        if self.exact:
            bad = np.flatnonzero(a != e)
            if len(bad):
                i = int(bad[0])
                raise AssertionError(self._msg(
                    where, f"{len(bad)} value(s) not bit-equal, although the vector's devices "
                           f"are {sorted(EXACT_DEVICES)} (agreement.md §3), first [{i}]: "
                           f"{float(a[i])!r} != {float(e[i])!r} (differs by "
                           f"{float(diff[i]):.3g})"))


def snapshot(tile: AnalogTile) -> dict:
    return {"weights": plain(tile.get_weights()), "compound": plain(tile.state_dict()["compound"]),
            "rng_calls": dict(tile.streams.state_dict()["calls"])}


def sub_devices(tile: AnalogTile) -> list:
    """The drawn parameters of the tile's sub-devices, under the names of ``sub_devices``."""
    out = []
    for dev in tile.compound.devices():
        p = dev.params
        rec = {"index": dev.index, "granularity": float(dev.granularity), "b_min": p.b_min,
               "b_max": p.b_max, "dw_up": p.dw_up, "dw_down": p.dw_down}
        for key, inert in (("reset_bias", 0.0), ("kappa", 1.0), ("rho", 0.0)):
            value = getattr(p, key)
            if bool(np.any(np.asarray(value) != inert)):
                rec[key] = value
        rec.update(p.extra)
        out.append(plain(rec))
    return out


def check_record(record: dict, backend: str) -> None:
    """Replay ``record`` on a fresh tile of ``backend`` and compare before the first and after
    every update call."""
    label = f"{record['name']} [{backend}]"
    compare = Comparison(label, exact=_devices_of(record) <= EXACT_DEVICES)
    config = from_dict(record["rpu_config"])
    assert config.to_dict() == record["rpu_config"], "rpu_config does not round-trip"
    assert type(config.device).__name__ == record["compound_class"]
    shape = record["shape"]
    tile = AnalogTile(shape["out_size"], shape["in_size"], config, seed=record["seed"],
                      backend=backend)
    assert tile.compound is not None, f"{label}: the tile has no compound"
    assert tile.construction_seed == record["construction_seed"], f"{label}: construction seed"
    compare(sub_devices(tile), record["sub_devices"], "sub_devices")
    tile.set_weights(np.asarray(record["weights"], dtype=np.float64))
    compare(snapshot(tile), record["initial"], "initial")
    for k, step in enumerate(record["steps"]):
        args = step["update"]
        tile.update(np.asarray(args["x"], dtype=np.float64),
                    np.asarray(args["d"], dtype=np.float64), args["lr"])
        w = tile.get_weights()
        assert isinstance(w, np.ndarray) and w.dtype == np.float64
        expected = {key: step[key] for key in ("weights", "compound", "rng_calls")}
        compare(snapshot(tile), expected, f"step {k}")


# -- the vectors themselves -------------------------------------------------------------------------


def test_vectors_are_present_and_small():
    assert len(FILES) >= 20, f"only {len(FILES)} train vectors in {TRAIN_DIR}"
    for path in FILES:
        assert path.stat().st_size < MAX_BYTES, f"{path.name}: {path.stat().st_size} bytes"
        record = json.loads(path.read_text())
        assert record["format"] == "refsim-train-vectors" and record["version"] == 1
        assert record["name"] == path.stem and record["dtype"] == "float64"
        shape = record["shape"]
        assert 3 <= shape["out_size"] <= 6 and 3 <= shape["in_size"] <= 6
        assert 3 <= len(record["steps"]) <= 6
        for step in record["steps"]:
            assert 2 <= len(step["update"]["x"]) <= 4
            assert len(step["update"]["x"]) == len(step["update"]["d"])


def _devices_of(record: dict) -> set:
    """The device classes inside the compound config."""
    found, stack = set(), [record["rpu_config"]["device"]]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("__class__", "").endswith("Device"):
                found.add(node["__class__"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def test_vectors_cover_algorithms_devices_and_reads():
    records = [load(name) for name in NAMES]
    classes = {r["compound_class"] for r in records}
    assert classes == {"VectorUnitCell", "OneSidedUnitCell", "MixedPrecisionCompound",
                       "TransferCompound", "BufferedTransferCompound", "ChoppedTransferCompound",
                       "DynamicTransferCompound"}
    for cls in ("VectorUnitCell", "MixedPrecisionCompound", "TransferCompound",
                "ChoppedTransferCompound", "DynamicTransferCompound"):
        devices = set().union(*(_devices_of(r) for r in records if r["compound_class"] == cls))
        assert {"ConstantStepDevice", "SoftBoundsReferenceDevice"} <= devices, cls
    perfect = [r["rpu_config"]["device"]["transfer_forward"]["is_perfect"] for r in records
               if r["compound_class"] in TRANSFER_CLASSES]
    assert 1 <= sum(perfect) < len(perfect), "noisy and perfect transfer reads"


def _changed(a, b) -> bool:
    return not np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("name", NAMES)
def test_every_vector_trains_and_transfers(name):
    """The visible weight moves; the fast device gets gradient pulses and every slower device
    receives transfers (reads and pulsed writes counted by ``io.transfer`` / ``transfer``);
    mixed precision has transfer events; a vector cell updates more than one device; a one-sided
    cell refreshes."""
    record = load(name)
    first, steps = record["initial"], record["steps"]
    last = steps[-1]
    calls = last["rng_calls"]
    rows = sum(len(step["update"]["x"]) for step in steps)
    assert calls.get("update") == rows, "one update call number per row"
    assert _changed(first["weights"], last["weights"]), "the visible weight never moves"
    cls = record["compound_class"]
    if cls in TRANSFER_CLASSES:
        before, after = first["compound"]["devices"], last["compound"]["devices"]
        assert _changed(before[0], after[0]), "no gradient pulses on the fast device"
        for j in range(1, len(before)):
            assert _changed(before[j], after[j]), f"nothing transferred onto device {j}"
        assert calls.get("io.transfer", 0) > 0, "no transfer reads"
        assert calls.get("transfer", 0) > 0, "no transfer writes"
    elif cls == "MixedPrecisionCompound":
        assert last["compound"]["transfers"] > 0 and calls.get("transfer", 0) > 0
        assert _changed(first["compound"]["chi"], last["compound"]["chi"])
    elif cls == "VectorUnitCell":
        moved = sum(_changed(a, b) for a, b in zip(first["compound"]["cell"]["weights"],
                                                   last["compound"]["cell"]["weights"]))
        assert moved >= 2, "fewer than two devices of the cell were updated"
    elif cls == "OneSidedUnitCell":
        assert last["compound"]["cell"]["refreshed"] > 0, "no refresh"
        assert calls.get("io.refresh", 0) > 0 and calls.get("transfer", 0) > 0
    else:
        raise AssertionError(f"unexpected compound {cls}")


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("name", NAMES)
def test_backend_reproduces_vector(name, backend):
    check_record(load(name), backend)


# -- the builder reproduces the files ---------------------------------------------------------------


def test_builder_cases_match_the_files():
    assert sorted(case.name for case in builder().CASES) == NAMES, (
        "spec/vectors/train/ is out of date: run spec/vectors/make_train_vectors.py")


@pytest.mark.parametrize("name", NAMES)
def test_builder_reproduces_stored_file(name):
    """Re-running the case builder (which also checks what the case exercises) gives the stored
    file: byte for byte on a machine whose math library agrees with the one that wrote them,
    otherwise within the comparison rule in the floats and equal in everything else."""
    make = builder()
    case = next(c for c in make.CASES if c.name == name)
    text = make.file_text(make.run_case(case))
    stored_text = (TRAIN_DIR / f"{name}.json").read_text()
    if text == stored_text:
        return
    stored, fresh = json.loads(stored_text), json.loads(text)
    for key in ("rpu_config", "seed", "construction_seed", "shape", "description", "weights"):
        assert fresh[key] == stored[key], f"{name}: {key} differs from the file"
    for k, (a, b) in enumerate(zip(fresh["steps"], stored["steps"])):
        assert a["update"] == b["update"], f"{name}: the inputs of step {k} differ"
    Comparison(name)(fresh, stored, "file")

"""Golden vectors of the update stage (spec/vectors/update/, spec/vectors/README.md).

Every vector is replayed on a fresh tile with the reference backend and, when ``refsim_fast`` is
importable, with the fast backend (``AnalogTile(..., backend="fast")``); the vector builder
(spec/vectors/make_update_vectors.py) must reproduce the stored files; and every update of every
vector must send pulses and change weights, so that no vector passes trivially.

Comparison rule (spec/agreement.md §3, "Update stage", float64): after every operation each weight
must satisfy ``abs(actual − expected) <= ATOL + RTOL·abs(expected)`` with ``ATOL = RTOL = 1e-12``;
the drawn device parameters likewise; call counters (``rng_calls``) and pulse counts exactly.
The vectors marked ``"exact": true`` (ConstantStep, LinearStep, SoftBounds, SoftBoundsReference
and PiecewiseStep devices without drift or log-normal draws, whose arithmetic is +, −, ·, / and
clamps) must be reproduced **bit for bit** on both backends — weights after every operation and
the drawn device parameters (agreement.md §3, "Update stage": "bit-equal expected for the exact
golden vectors"); a difference there, even one within the tolerance, is a failure. Only the other
vectors — ExpStep, PowStep(Reference), SoftBoundsPmax (derived with ``exp``), log-normal draws and
drift (``pow``, ``log``), which may differ in the last bits between math libraries — are held to
the tolerance alone.

The fast parametrization runs refsim_fast.update's compiled pulsed update (the tile's
``_fast_update_module``); decay, diffusion, reset and drift are the reference's on both.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from golden_support import backends, load_script

from refsim.configs import SingleRPUConfig, from_dict
from refsim.stages import devices as device_stage
from refsim.stages import pulses as pulse_stage
from refsim.tile import AnalogTile

REPO = pathlib.Path(__file__).resolve().parents[1]
VECTOR_DIR = REPO / "spec" / "vectors"
UPDATE_DIR = VECTOR_DIR / "update"
BUILDER = VECTOR_DIR / "make_update_vectors.py"
FILES = sorted(UPDATE_DIR.glob("*.json"))
NAMES = [p.stem for p in FILES]

ATOL = RTOL = 1e-12  # float64 (agreement.md §3, "Update stage")
OPERATIONS = ("update", "decay", "diffuse", "reset", "drift")


def load(name: str) -> dict:
    return json.loads((UPDATE_DIR / f"{name}.json").read_text())


def builder():
    """The vector builder, imported from the source tree (it is not part of the package)."""
    return load_script(BUILDER, "_refsim_make_update_vectors")


def close(actual, expected, what: str, exact: bool) -> None:
    """Assert the comparison rule: within atol = rtol = 1e-12, and bit-equal when ``exact``."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    diff = np.abs(actual - expected)
    bad = np.argwhere(~(diff <= ATOL + RTOL * np.abs(expected)))
    rule = f"outside atol = rtol = {ATOL:g}"
    if not len(bad) and exact:
        bad = np.argwhere(actual != expected)
        rule = "not bit-equal, although the vector is marked exact (agreement.md §3)"
    if len(bad):
        i, j = (int(v) for v in bad[0])
        raise AssertionError(
            f"{what}: {len(bad)} element(s) {rule}, first ({i}, {j}): "
            f"{float(actual[i, j])!r} != {float(expected[i, j])!r} (differs by "
            f"{float(diff[i, j]):.3g})")


def device_arrays(tile: AnalogTile) -> dict:
    """The tile's drawn parameters under the names of a vector's ``device_params``."""
    p = tile.device_params
    out = {"b_min": p.b_min, "b_max": p.b_max, "dw_up": p.dw_up, "dw_down": p.dw_down,
           "reset_bias": p.reset_bias, "kappa": p.kappa, "rho": p.rho, **p.extra}
    return out


def check_device_params(record: dict, tile: AnalogTile, label: str) -> None:
    assert tile.construction_seed == record["construction_seed"], f"{label}: construction seed"
    arrays = device_arrays(tile)
    for key, expected in record["device_params"].items():
        if key == "drift_nu":
            continue  # drawn by the drift stage; checked through the drifted weights
        assert key in arrays, f"{label}: the tile has no device parameter {key!r}"
        close(arrays[key], expected, f"{label}: device parameter {key}", record["exact"])
    inert = {"reset_bias": 0.0, "kappa": 1.0, "rho": 0.0}
    for key, value in inert.items():
        if key not in record["device_params"]:
            assert np.all(np.asarray(arrays[key]) == value), f"{label}: {key} is not inert"


def apply(tile: AnalogTile, operation: list) -> None:
    kind = operation[0]
    if kind == "update":
        args = operation[1]
        tile.update(np.asarray(args["x"], dtype=np.float64),
                    np.asarray(args["d"], dtype=np.float64), args["lr"])
    elif kind == "decay":
        tile.decay_weights()
    elif kind == "diffuse":
        tile.diffuse_weights()
    elif kind == "reset":
        tile.reset(operation[1])
    elif kind == "drift":
        tile.drift_weights(operation[1])
    else:
        raise AssertionError(f"unknown operation {kind!r}")


def check_record(record: dict, backend: str) -> None:
    """Replay ``record`` on a fresh tile of ``backend`` and compare after every operation."""
    label = f"{record['name']} [{backend}]"
    config = from_dict(record["rpu_config"])
    assert isinstance(config, SingleRPUConfig)
    assert config.to_dict() == record["rpu_config"], "rpu_config does not round-trip"
    shape = record["shape"]
    tile = AnalogTile(shape["out_size"], shape["in_size"], config, seed=record["seed"],
                      backend=backend)
    check_device_params(record, tile, label)
    tile.set_weights(np.asarray(record["weights"], dtype=np.float64))
    for k, step in enumerate(record["steps"]):
        apply(tile, step["operation"])
        w = tile.get_weights()
        assert isinstance(w, np.ndarray) and w.dtype == np.float64
        close(w, step["weights"], f"{label}: weights after step {k} ({step['operation'][0]})",
              record["exact"])
        calls = dict(tile.streams.state_dict()["calls"])
        assert calls == step["rng_calls"], f"{label}: call counters after step {k}"


# -- the vectors themselves -------------------------------------------------------------------------


def test_vectors_are_present_and_small():
    assert len(FILES) >= 30, f"only {len(FILES)} update vectors in {UPDATE_DIR}"
    total = sum(p.stat().st_size for p in FILES)
    assert total < 500 * 1024, f"update vectors take {total} bytes"
    for path in FILES:
        record = json.loads(path.read_text())
        assert record["format"] == "refsim-update-vectors" and record["version"] == 1
        assert record["name"] == path.stem and record["dtype"] == "float64"
        shape = record["shape"]
        assert 3 <= shape["out_size"] <= 6 and 4 <= shape["in_size"] <= 7
        for step in record["steps"]:
            assert step["operation"][0] in OPERATIONS


def test_vectors_cover_pulse_types_devices_and_operations():
    pulse_types, devices, operations = set(), set(), set()
    for name in NAMES:
        record = load(name)
        pulse_types.add(record["rpu_config"]["update"]["pulse_type"])
        devices.add(record["rpu_config"]["device"]["__class__"])
        operations.update(step["operation"][0] for step in record["steps"])
    assert pulse_types == {t.value for t in pulse_stage.PULSED}
    assert devices == set(device_stage.IMPLEMENTED)
    assert operations == set(OPERATIONS)
    resets = {step["operation"][1] for name in NAMES for step in load(name)["steps"]
              if step["operation"][0] == "reset"}
    assert {0.5, 1.0} <= resets


@pytest.mark.parametrize("name", NAMES)
def test_every_update_sends_pulses(name):
    """Every update of the vector sends pulses and moves at least one weight (and every other
    operation moves one too), so that the vector cannot be passed by doing nothing."""
    record = load(name)
    before = np.asarray(record["weights"])
    for k, step in enumerate(record["steps"]):
        after = np.asarray(step["weights"])
        assert not np.array_equal(before, after), f"step {k} changes no weight"
        if step["operation"][0] == "update":
            x = step["operation"][1]["x"]
            assert len(step["cycles"]) == len(x), "one cycle per batch row"
            counts = [np.asarray(c["counts"]) for c in step["cycles"]]
            assert any(np.any(c != 0) for c in counts), f"step {k}: no pulses"
            for c, cycle in zip(counts, step["cycles"]):
                assert np.max(np.abs(c)) <= cycle["bl"]
        before = after


@pytest.mark.parametrize("name", NAMES)
def test_stored_pulse_counts_are_the_pulse_stage(name):
    """The stored counts of every cycle are those of refsim.stages.pulses.coincidences for the
    cycle's call number (the tile's ``update`` counter), exactly (agreement.md §1, integers)."""
    record = load(name)
    config = from_dict(record["rpu_config"])
    g = device_stage.granularity(config.device)
    assert g == pytest.approx(record["granularity"], rel=RTOL, abs=0)
    calls = 0
    for step in record["steps"]:
        if step["operation"][0] == "update":
            args = step["operation"][1]
            x, d = np.asarray(args["x"]), np.asarray(args["d"])
            for r, cycle in enumerate(step["cycles"]):
                counts, plan = pulse_stage.coincidences(np, x[r], d[r], args["lr"], g,
                                                        config.update, record["seed"], calls + r)
                assert plan.bl == cycle["bl"]
                assert np.array_equal(counts, np.asarray(cycle["counts"]))
        calls = step["rng_calls"].get("update", 0)


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("name", NAMES)
def test_backend_reproduces_vector(name, backend):
    check_record(load(name), backend)


# -- the builder reproduces the files ---------------------------------------------------------------


def test_builder_cases_match_the_files():
    assert sorted(case.name for case in builder().CASES) == NAMES, (
        "spec/vectors/update/ is out of date: run spec/vectors/make_update_vectors.py")


def _floats_close(fresh, stored, where: str):
    """Compare two JSON values: floats by the comparison rule, everything else exactly."""
    if isinstance(stored, dict):
        assert isinstance(fresh, dict) and fresh.keys() == stored.keys(), where
        for key in stored:
            _floats_close(fresh[key], stored[key], f"{where}.{key}")
    elif isinstance(stored, list):
        assert isinstance(fresh, list) and len(fresh) == len(stored), where
        for i, (a, b) in enumerate(zip(fresh, stored)):
            _floats_close(a, b, f"{where}[{i}]")
    elif isinstance(stored, float) and not isinstance(stored, bool):
        assert isinstance(fresh, float), where
        assert abs(fresh - stored) <= ATOL + RTOL * abs(stored), f"{where}: {fresh!r} != {stored!r}"
    else:
        assert fresh == stored and type(fresh) is type(stored), f"{where}: {fresh!r} != {stored!r}"


@pytest.mark.parametrize("name", NAMES)
def test_builder_reproduces_stored_file(name):
    """Re-running the case builder gives the stored file: byte for byte on a machine whose math
    library agrees with the one that wrote them, otherwise within the comparison rule in the
    computed floats (weights, device parameters, granularity) and equal in everything else."""
    make = builder()
    case = next(c for c in make.CASES if c.name == name)
    text = make.file_text(make.run_case(case))
    stored_text = (UPDATE_DIR / f"{name}.json").read_text()
    if text == stored_text:
        return
    stored, fresh = json.loads(stored_text), json.loads(text)
    for key in ("rpu_config", "seed", "construction_seed", "shape", "exact", "description"):
        assert fresh[key] == stored[key], f"{name}: {key} differs from the file"
    for k, (a, b) in enumerate(zip(fresh["steps"], stored["steps"])):
        assert a["operation"] == b["operation"], f"{name}: the inputs of step {k} differ"
        assert a.get("cycles") == b.get("cycles"), f"{name}: the pulse counts of step {k} differ"
    _floats_close(fresh, stored, name)

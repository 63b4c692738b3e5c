"""Golden vectors of the IO stage (spec/vectors/io/, spec/vectors/README.md).

Every vector is replayed on a fresh tile with the reference backend and, when ``refsim_fast.io``
exists, with the fast backend; and the vector builder (spec/vectors/make_io_vectors.py) must
reproduce the stored files.

Comparison rule (spec/agreement.md §3, "IO stage", float64): output row b agrees when every element
is within ``1e-12·s_b`` of the stored value, ``s_b = max_j abs(y_bj)`` the row's output scale (so a
row short-cut to zero must be exactly zero). The one exception is a **boundary flip** of a quantized
output (agreement.md rule 4): when the ADC input lies within rounding error of a rounding boundary
(a half step), a different summation order (another BLAS, the fast backend's loops) may round it to
the neighbouring level. Such an element then differs by exactly one ADC step in output units,
``step_out·abs(out_scale)·f_b`` (``step_out`` from out_res/out_bound, spec/io.md §S1; ``f_b`` the
row's stored noise/bound-management factor ``row_factor``, §S7). Such a flip is accepted only when
it is **established** (agreement.md rule 4), never merely reported: the call is replayed on the
same backend with the ADC's quantization switched off (out_res = −1), which gives the value the ADC
rounded, s = y_unquantized/(step_out·out_scale·f_b) in ADC steps (plus u − ½ with stochastic
rounding, u the call's ``out_sto_round`` number, io.md §S8); s must lie within the rule-3 tolerance
(4·1e-12·s_b in output units) of the rounding boundary between the stored and the replayed level.
At most one flip per call. Anything else fails: a difference that is not one step, a flip where
the ADC does not quantize, a flip far from the boundary, a replayed level that is not rint(s), a
flip of 'PosNegSeparateDigitalSum' (two ADC stages summed: the vectors cannot establish it), or
more than one flip. (A flip at the clipping bound that changes the bound-management outcome
changes the whole row and is reported as a failure; it is rare enough, ~1e-14 per element, to be
investigated when it happens.)
"""

from __future__ import annotations

import copy
import json
import pathlib

import numpy as np
import pytest
from golden_support import fast_missing, load_script

from refsim import rng
from refsim.configs import from_dict
from refsim.stages.io import resolution_step
from refsim.tile import AnalogTile

REPO = pathlib.Path(__file__).resolve().parents[1]
VECTOR_DIR = REPO / "spec" / "vectors"
IO_DIR = VECTOR_DIR / "io"
BUILDER = VECTOR_DIR / "make_io_vectors.py"
FILES = sorted(IO_DIR.glob("*.json"))
NAMES = [p.stem for p in FILES]

RTOL = 1e-12  # float64, relative to the row's output scale (agreement.md §3)
STEP_RTOL = 1e-9  # how exactly a boundary flip must equal one ADC step (row_factor is ~1 ulp off)


def load(name: str) -> dict:
    return json.loads((IO_DIR / f"{name}.json").read_text())


def builder():
    """The vector builder, imported from the source tree (it is not part of the package)."""
    return load_script(BUILDER, "_refsim_make_io_vectors")


def replay(record: dict, backend: str) -> list:
    """Run the record's calls on a fresh tile; returns per call (outputs, nm_running, rng_calls)."""
    config = from_dict(record["rpu_config"])
    assert config.to_dict() == record["rpu_config"], "rpu_config does not round-trip"
    sizes = record["sizes"]
    tile = AnalogTile(sizes["out_size"], sizes["in_size"], config, seed=record["seed"],
                      backend=backend)
    tile.set_weights(np.asarray(record["weights"], dtype=np.float64))
    results = []
    for call in record["calls"]:
        x = np.asarray(call["inputs"], dtype=np.float64)
        y = tile.forward(x) if call["direction"] == "forward" else tile.backward(x)
        assert isinstance(y, np.ndarray) and y.dtype == np.float64
        assert y.shape == (x.shape[0], sizes["out_size" if call["direction"] == "forward"
                                              else "in_size"])
        results.append((y, tile.nm_running, dict(tile.streams.state_dict()["calls"])))
    return results


def compare_outputs(record: dict, index: int, actual, label: str) -> list:
    """Assert that call ``index`` of ``record`` agrees with ``actual`` up to candidate boundary
    flips (elements exactly one ADC step apart, at most one per call); returns those as
    ``(row, output)`` pairs, to be established by :func:`establish_flip`."""
    call = record["calls"][index]
    expected = np.asarray(call["outputs"], dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    assert actual.shape == expected.shape, f"{label}: shape {actual.shape} != {expected.shape}"
    io = record["rpu_config"].get(call["direction"]) or {}
    perfect = (record["rpu_config"]["__class__"] == "FloatingPointRPUConfig"
               or io.get("is_perfect") or io.get("mv_type") == "Ideal")
    step_out = 0.0 if perfect else resolution_step(io["out_res"], io["out_bound"])
    flips = []
    for b in range(expected.shape[0]):
        scale = float(np.max(np.abs(expected[b]))) if expected.shape[1] else 0.0
        diff = np.abs(actual[b] - expected[b])
        bad = np.nonzero(~(diff <= RTOL * scale))[0]
        for i in bad:
            where = (f"{label}: call {index} ({call['direction']}), row {b}, output {i}: "
                     f"{float(actual[b, i])!r} != {float(expected[b, i])!r}")
            assert step_out > 0, f"{where} (differs by {diff[i]:.3g}, not quantized)"
            quantum = step_out * abs(io["out_scale"]) * call["row_factor"][b]
            steps = diff[i] / quantum
            assert abs(steps - 1.0) <= STEP_RTOL, (
                f"{where}: differs by {steps:.6g} ADC steps; only a boundary flip of exactly one "
                f"step is accepted (agreement.md rule 4)")
            flips.append((b, int(i)))
    assert len(flips) <= 1, f"{label}: {len(flips)} boundary flips in one call: {flips}"
    return flips


def unquantized_outputs(record: dict, backend: str) -> list:
    """Per call, the outputs of the record's calls replayed with the ADC quantization of both
    directions switched off (out_res = −1, out_sto_round False): the values the ADC rounded, in
    output units (every random number is addressed, so nothing else moves)."""
    plain = copy.deepcopy(record)
    for direction in ("forward", "backward"):
        io = plain["rpu_config"].get(direction)
        if isinstance(io, dict) and "out_res" in io:
            io["out_res"], io["out_sto_round"] = -1.0, False
    return [y for y, _, _ in replay(plain, backend)]


def adc_steps(record: dict, index: int, row: int, out: int, unquantized) -> tuple:
    """``(s, scale)``: the value the ADC of call ``index`` rounded for output ``out`` of ``row``,
    in ADC steps (rint(s) is the level), and one step in output units (signed with out_scale):
    s = y_unquantized/scale, plus u − ½ with stochastic rounding (io.md §S4; u numbered as in
    §S8: ((p·B + b)·H + h)·m + i, p the pass kept, H = 1 for one ADC stage)."""
    call = record["calls"][index]
    direction = call["direction"]
    io = record["rpu_config"][direction]
    scale = (resolution_step(io["out_res"], io["out_bound"]) * io["out_scale"]
             * call["row_factor"][row])
    s = float(unquantized[row][out]) / scale
    if io["out_sto_round"]:
        batch, width = len(call["inputs"]), len(call["outputs"][row])
        number = ((call["row_passes"][row] - 1) * batch + row) * width + out
        u = rng.uniform(record["seed"], f"io.{direction}.out_sto_round",
                        call["rng_calls"][f"io.{direction}"] - 1, 1, start=number)
        s += float(np.asarray(u)[0]) - 0.5
    return s, scale


def establish_flip(record: dict, index: int, row: int, out: int, actual: float,
                   unquantized, label: str) -> None:
    """Rule 4 of agreement.md for one candidate flip of :func:`compare_outputs`: the value the
    ADC rounded lies within the rule-3 tolerance of the boundary between the stored and the
    replayed level (see the module docstring)."""
    call = record["calls"][index]
    io = record["rpu_config"][call["direction"]]
    expected = float(call["outputs"][row][out])
    where = (f"{label}: call {index} ({call['direction']}), row {row}, output {out}: "
             f"{float(actual)!r} != {expected!r}")
    assert io["mv_type"] != "PosNegSeparateDigitalSum", (
        f"{where}: one ADC step apart, but a flip of a digital sum of two ADC stages cannot be "
        f"established from the vectors (agreement.md rule 4)")
    s, scale = adc_steps(record, index, row, out, unquantized)
    assert float(actual) == pytest.approx(float(np.rint(s)) * scale, rel=STEP_RTOL, abs=0), (
        f"{where}: the replayed level is not rint of the replayed unquantized value "
        f"({s!r} steps; io.md §S4)")
    boundary = (float(actual) / scale + expected / scale) / 2.0
    row_scale = float(np.max(np.abs(np.asarray(call["outputs"][row], dtype=np.float64))))
    assert abs(s - boundary) * abs(scale) <= 4 * RTOL * row_scale, (
        f"{where}: one ADC step apart, but the unquantized value is {abs(s - boundary):.3g} "
        f"steps from the rounding boundary between the two levels: not a boundary flip "
        f"(agreement.md rule 4)")


def check_outputs(record: dict, index: int, actual, label: str, backend: str,
                  unquantized: dict) -> None:
    """compare_outputs, then establish every candidate flip (the unquantized replay on
    ``backend`` is made once per record, only when a flip occurs, and kept in ``unquantized``)."""
    for row, out in compare_outputs(record, index, actual, label):
        if "calls" not in unquantized:
            unquantized["calls"] = unquantized_outputs(record, backend)
        establish_flip(record, index, row, out, np.asarray(actual)[row, out],
                       unquantized["calls"][index], label)


def check_record(record: dict, backend: str) -> None:
    results = replay(record, backend)
    unquantized: dict = {}
    for index, (y, running, calls) in enumerate(results):
        stored = record["calls"][index]
        check_outputs(record, index, y, f"{record['name']} [{backend}]", backend, unquantized)
        if stored["nm_running"] is None:
            assert running is None
        else:
            assert running == pytest.approx(stored["nm_running"], rel=RTOL, abs=0)
        assert calls == stored["rng_calls"], "call counters differ (spec/io.md §S8)"


# -- the vectors themselves -------------------------------------------------------------------------


def test_vectors_are_present_and_small():
    assert len(FILES) >= 12, f"only {len(FILES)} IO vectors in {IO_DIR}"
    total = sum(p.stat().st_size for p in FILES)
    assert total < 300 * 1024, f"IO vectors take {total} bytes"
    for path in FILES:
        record = json.loads(path.read_text())
        assert record["format"] == "refsim-io-vectors" and record["version"] == 1
        assert record["name"] == path.stem and record["dtype"] == "float64"
        for call in record["calls"]:
            assert call["direction"] in ("forward", "backward")


@pytest.mark.parametrize("name", NAMES)
def test_reference_backend_reproduces_vector(name):
    check_record(load(name), "reference")


@pytest.mark.parametrize("name", NAMES)
def test_fast_backend_reproduces_vector(name):
    reason = fast_missing()
    if reason:
        pytest.skip(reason)
    check_record(load(name), "fast")


# -- the flip check itself -------------------------------------------------------------------------


def _tie_record() -> dict:
    """A one-call, noise-free record whose ADC inputs are exactly on rounding boundaries or far
    from them: step_out = 0.125·2·1 = 0.25, y = W·e_0 = (0.125, 0.375, 0.2): rint(0.5) = 0,
    rint(1.5) = 2, rint(0.8) = 1 (half to even)."""
    from refsim.configs import IOParameters, SingleRPUConfig

    io = IOParameters(out_noise=0.0, inp_res=-1.0, out_res=0.125, out_bound=1.0,
                      noise_management="None", bound_management="None")
    config = SingleRPUConfig(forward=io, backward=io)
    record = {"name": "ties", "seed": 3, "sizes": {"out_size": 3, "in_size": 2, "batch": 1},
              "rpu_config": config.to_dict(),
              "weights": [[0.125, 0.0], [0.375, 0.0], [0.2, 0.0]],
              "calls": [{"direction": "forward", "inputs": [[1.0, 0.0]], "row_factor": [1.0],
                         "row_passes": [1], "rng_calls": {"io.forward": 1}, "nm_running": None}]}
    y, _, _ = replay(dict(record, calls=[dict(record["calls"][0], outputs=None)]), "reference")[0]
    assert y.tolist() == [[0.0, 0.5, 0.25]]
    record["calls"][0]["outputs"] = y.tolist()
    return record


@pytest.mark.parametrize("out, stored, accepted", [
    (0, 0.25, True),    # y = 0.125 is exactly between 0 and 0.25: a flip
    (1, 0.25, True),    # y = 0.375 is exactly between 0.25 and 0.5
    (2, 0.5, False),    # y = 0.2 is 0.7 steps from the boundary 0.25|0.5
    (2, 0.0, False),    # and 0.3 steps from 0|0.25
])
def test_a_flip_is_accepted_only_at_a_rounding_boundary(out, stored, accepted):
    """A stored value one ADC step from the replay passes only when the unquantized value lies
    on the boundary between the two levels (agreement.md rule 4), not just for being one step."""
    record = _tie_record()
    actual = np.asarray(record["calls"][0]["outputs"])
    record["calls"][0]["outputs"][0][out] = stored
    assert compare_outputs(record, 0, actual, "ties") == [(0, out)]
    if accepted:
        check_outputs(record, 0, actual, "ties", "reference", {})
    else:
        with pytest.raises(AssertionError, match="from the rounding boundary"):
            check_outputs(record, 0, actual, "ties", "reference", {})


@pytest.mark.parametrize("name", ["stochastic_rounding", "single_default_forward", "nm_none"])
def test_adc_steps_reproduce_every_quantized_output(name):
    """The flip check's reconstruction of the ADC input (unquantized replay, row factor, and the
    out_sto_round numbers as addressed by io.md §S8) rounds to every stored unclipped output."""
    record = load(name)
    unquantized = unquantized_outputs(record, "reference")
    checked = 0
    for index, call in enumerate(record["calls"]):
        io = record["rpu_config"][call["direction"]]
        for row, outputs in enumerate(call["outputs"]):
            if not call["row_passes"] or not call["row_passes"][row]:
                continue  # a short-cut row
            for out, value in enumerate(outputs):
                s, scale = adc_steps(record, index, row, out, unquantized[index])
                if abs(value) >= io["out_bound"] * abs(scale) / resolution_step(
                        io["out_res"], io["out_bound"]) * (1 - 1e-12):
                    continue  # clipped
                assert np.rint(s) * scale == pytest.approx(value, rel=1e-9, abs=1e-15), (
                    name, index, row, out)
                checked += 1
    assert checked >= 20


# -- the builder reproduces the files ---------------------------------------------------------------


def test_builder_cases_match_the_files():
    assert sorted(case.name for case in builder().CASES) == NAMES, (
        "spec/vectors/io/ is out of date: run spec/vectors/make_io_vectors.py")


@pytest.mark.parametrize("name", NAMES)
def test_builder_reproduces_stored_file(name):
    """Re-running the case builder gives the stored file: byte for byte on a machine whose BLAS
    sums like the one that wrote them, otherwise equal in everything but the outputs, which obey
    the comparison rule of this module."""
    make = builder()
    case = next(c for c in make.CASES if c.name == name)
    record = make.run_case(case)
    text = make.file_text(record)
    assert make.file_text(make.run_case(case)) == text, "the builder is not deterministic"
    stored_text = (IO_DIR / f"{name}.json").read_text()
    if text == stored_text:
        return
    stored = json.loads(stored_text)
    fresh = json.loads(text)
    unquantized: dict = {}
    for index, call in enumerate(fresh["calls"]):
        check_outputs(stored, index, np.asarray(call["outputs"], dtype=np.float64),
                      f"{name} [builder]", "reference", unquantized)
        call["outputs"] = stored["calls"][index]["outputs"]
        call["row_factor"] = stored["calls"][index]["row_factor"] if call["row_factor"] is None \
            else [pytest.approx(v, rel=STEP_RTOL) for v in call["row_factor"]]
    assert fresh == stored, "the builder's weights, inputs, config or records differ from the file"

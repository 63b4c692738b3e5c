"""Golden vectors of the IO stage (spec/io.md, "Stage semantics"): writes spec/vectors/io/*.json.

Regenerate (from the repository root):

    /work/venv/bin/python spec/vectors/make_io_vectors.py

Each case builds an ``AnalogTile`` with the reference backend, sets weights and inputs made from
refsim's own counter-based uniforms (stream ``test.a`` for weights, ``test.b`` for inputs, so they are
the same on every machine), runs one or more forward/backward calls in float64 and stores the config,
seed, weights, inputs and outputs. The format is described in spec/vectors/README.md;
tests/test_io_golden.py checks the reference and the fast backend against the files and checks that
this builder reproduces them.

Only the public tile API is used to compute the outputs. The per-row bound-management record
(``row_factor``, ``row_passes``) is taken by handing the tile a recording wrapper of
``refsim.stages.io.analog_mv`` in place of its kernel module (the same hook through which the tile
selects the fast kernels); the wrapper delegates unchanged, so it cannot alter the outputs.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from refsim import rng

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from vector_json import file_text, write_vectors  # noqa: E402,F401  (file_text: used by the tests)
from refsim.configs import (
    ConstantStepDevice,
    FloatingPointRPUConfig,
    InferenceRPUConfig,
    IOParameters,
    SingleRPUConfig,
)
from refsim.stages import io as io_stage
from refsim.tile import AnalogTile

HERE = pathlib.Path(__file__).resolve().parent
OUT_DIR = HERE / "io"

FORMAT = "refsim-io-vectors"
VERSION = 1

OUT_SIZE, IN_SIZE, BATCH = 6, 10, 4
WEIGHT_SCALE = 0.5


# -- deterministic data -----------------------------------------------------------------------------


def uniform_matrix(seed: int, stream: str, call: int, shape: Tuple[int, int], scale: float) -> Any:
    """``(2u − 1)·scale`` with ``u`` refsim uniforms (exact multiples of 2⁻²⁴, so the values are exact
    in float64 and the same everywhere)."""
    u = rng.uniform(seed, stream, call, shape, xp=np)
    return (2.0 * u - 1.0) * scale


@dataclasses.dataclass(frozen=True)
class Call:
    """One tile call: direction, the scale of the inputs, rows replaced by special values, and the
    number of the input draw (so that repeated calls may reuse the same inputs)."""

    direction: str
    scale: float = 1.0
    data_call: int = 0
    special_rows: Tuple[Tuple[int, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    description: str
    config: Callable[[], Any]
    calls: Tuple[Call, ...]
    seed: int = 20240601
    data_seed: int = 7
    check: Optional[Callable[[Dict[str, Any]], None]] = None


def special_row(kind: str, width: int, base: Any) -> Any:
    if kind == "zero":
        return np.zeros(width)
    if kind == "negative":  # every element < 0: Max noise management gives α < 0
        return -np.abs(base) - 0.125
    raise ValueError(kind)


def inputs_of(case: Case, call: Call) -> Any:
    width = IN_SIZE if call.direction == "forward" else OUT_SIZE
    x = uniform_matrix(case.data_seed, "test.b", call.data_call, (BATCH, width), call.scale)
    for row, kind in call.special_rows:
        x[row] = special_row(kind, width, x[row])
    return x


def weights_of(case: Case) -> Any:
    return uniform_matrix(case.data_seed, "test.a", 0, (OUT_SIZE, IN_SIZE), WEIGHT_SCALE)


# -- the cases ------------------------------------------------------------------------------------


def single(forward: Optional[Dict[str, Any]] = None, backward: Optional[Dict[str, Any]] = None,
           **kwargs: Any) -> Callable[[], Any]:
    def make() -> Any:
        return SingleRPUConfig(forward=IOParameters(**(forward or {})),
                               backward=IOParameters(**(backward or {})), **kwargs)

    return make


def _passes(at_least: int = 1, exactly: Optional[int] = None, call: int = 0):
    def check(record: Dict[str, Any]) -> None:
        passes = record["calls"][call]["row_passes"]
        if exactly is not None:
            assert max(passes) == exactly, (record["name"], passes)
        assert max(passes) >= at_least, (record["name"], passes)

    return check


def _zero_row(row: int, call: int = 0):
    def check(record: Dict[str, Any]) -> None:
        c = record["calls"][call]
        assert all(v == 0.0 for v in c["outputs"][row]) and c["row_passes"][row] == 0, record["name"]

    return check


def _nonzero_row(row: int, call: int = 0):
    def check(record: Dict[str, Any]) -> None:
        c = record["calls"][call]
        assert any(v != 0.0 for v in c["outputs"][row]) and c["row_passes"][row] >= 1, record["name"]

    return check


def _all(*checks):
    def check(record: Dict[str, Any]) -> None:
        for c in checks:
            c(record)

    return check


PERIPHERY = dict(v_offset_std=0.1, r_series=0.05, out_nonlinearity=0.5, out_nonlinearity_std=0.1,
                 slope_calibration=0.5, out_noise_std=0.3)
POSNEG = dict(inp_asymmetry=0.1, out_asymmetry=0.05, w_read_asymmetry_dtod=0.05, w_noise=0.01,
              w_noise_type="AdditiveConstant", inp_noise=0.01)
NO_QUANT = dict(inp_res=-1.0, out_res=-1.0)
F, B = "forward", "backward"

CASES: Tuple[Case, ...] = (
    Case("inference_default_forward",
         "InferenceRPUConfig() with default forward IOParameters (AbsMax, Iterative, 7-bit DAC, "
         "9-bit ADC, out_noise 0.06); two forward calls with the same inputs: the second call uses "
         "call number 1 (fresh noise); row 3 is all zero (exact zero output, no draws).",
         InferenceRPUConfig,
         (Call(F, special_rows=((3, "zero"),)), Call(F, special_rows=((3, "zero"),))),
         check=_all(_zero_row(3), _zero_row(3, 1))),
    Case("single_default_forward", "SingleRPUConfig() forward with the default IOParameters.",
         single(), (Call(F),)),
    Case("single_default_backward",
         "SingleRPUConfig() backward with the default IOParameters (bound management ignored); "
         "then one forward call: the two directions have separate call counters.",
         single(), (Call(B), Call(F))),
    Case("floating_point",
         "FloatingPointRPUConfig: exact products, forward and backward, no random numbers.",
         FloatingPointRPUConfig, (Call(F, scale=3.0), Call(B, scale=3.0))),
    Case("is_perfect_out_scale",
         "is_perfect forward and backward with out_scale 2: y = 2·W x exactly.",
         single(dict(is_perfect=True, out_scale=2.0), dict(is_perfect=True, out_scale=2.0)),
         (Call(F, scale=3.0), Call(B, scale=3.0))),
    Case("no_quantization",
         "inp_res = out_res = -1 (no DAC/ADC quantization), out_scale 0.5, forward and backward.",
         single(dict(NO_QUANT, out_scale=0.5), dict(NO_QUANT, out_scale=0.5)),
         (Call(F), Call(B))),
    Case("stochastic_rounding",
         "inp_sto_round and out_sto_round, coarse resolutions (inp_res 1/14, out_res 1/30); forward "
         "and backward.",
         single(dict(inp_sto_round=True, out_sto_round=True, inp_res=1 / 14, out_res=1 / 30),
                dict(inp_sto_round=True, out_sto_round=True, inp_res=1 / 14, out_res=1 / 30)),
         (Call(F), Call(B))),
    Case("inp_noise",
         "inp_noise 0.05 forward; row 2 is all zero and is still computed (forward zero short-cut "
         "only when inp_noise = 0): its output is noise.",
         single(dict(inp_noise=0.05)), (Call(F, special_rows=((2, "zero"),)),),
         check=_nonzero_row(2)),
    Case("backward_zero_row_with_inp_noise",
         "inp_noise 0.05 backward; row 1 is all zero: exact zero output (the backward short-cut "
         "ignores inp_noise).",
         single(backward=dict(inp_noise=0.05)), (Call(B, special_rows=((1, "zero"),)),),
         check=_zero_row(1)),
    Case("w_noise_additive_constant",
         "w_noise 0.02, w_noise_type AdditiveConstant, forward and backward.",
         single(dict(w_noise=0.02, w_noise_type="AdditiveConstant"),
                dict(w_noise=0.02, w_noise_type="AdditiveConstant")),
         (Call(F), Call(B))),
    Case("w_noise_pcm_read",
         "w_noise 0.02, w_noise_type PCMRead, forward and backward.",
         single(dict(w_noise=0.02, w_noise_type="PCMRead"),
                dict(w_noise=0.02, w_noise_type="PCMRead")),
         (Call(F), Call(B))),
    Case("ir_drop",
         "ir_drop 1 with ir_drop_g_ratio 20 (a visible drop), no quantization and no output "
         "noise: a deterministic check of the IR-drop formula, forward and backward.",
         single(dict(NO_QUANT, ir_drop=1.0, ir_drop_g_ratio=20.0, out_noise=0.0),
                dict(NO_QUANT, ir_drop=1.0, ir_drop_g_ratio=20.0, out_noise=0.0)),
         (Call(F), Call(B))),
    Case("periphery",
         "v_offset_std 0.1, r_series 0.05, out_nonlinearity 0.5 (std 0.1), slope_calibration 0.5, "
         "out_noise_std 0.3, implicit reference (v_offset_w_min -1); the device's construction_seed "
         "1234 seeds the periphery variation; forward and backward.",
         single(PERIPHERY, PERIPHERY, device=ConstantStepDevice(construction_seed=1234)),
         (Call(F), Call(B))),
    Case("periphery_no_reference",
         "As 'periphery' with v_offset_w_min 0 (no reference current) and the tile seed as "
         "construction seed.",
         single(dict(PERIPHERY, v_offset_w_min=0.0), dict(PERIPHERY, v_offset_w_min=0.0)),
         (Call(F), Call(B))),
    Case("pos_neg_separate",
         "mv_type PosNegSeparate with inp_asymmetry 0.1, out_asymmetry 0.05, "
         "w_read_asymmetry_dtod 0.05, AdditiveConstant w_noise 0.01, inp_noise 0.01; forward and "
         "backward.",
         single(dict(POSNEG, mv_type="PosNegSeparate"), dict(POSNEG, mv_type="PosNegSeparate")),
         (Call(F), Call(B))),
    Case("pos_neg_separate_digital_sum",
         "mv_type PosNegSeparateDigitalSum, otherwise as 'pos_neg_separate'.",
         single(dict(POSNEG, mv_type="PosNegSeparateDigitalSum"),
                dict(POSNEG, mv_type="PosNegSeparateDigitalSum")),
         (Call(F), Call(B))),
    Case("nm_none",
         "noise_management None (inputs not scaled; inputs in [-0.5, 0.5]); row 0 all zero gives "
         "noise and quantization of 0.",
         single(dict(noise_management="None")), (Call(F, scale=0.5, special_rows=((0, "zero"),)),),
         check=_nonzero_row(0)),
    Case("nm_abs_max_thres",
         "noise_management AbsMax with nm_thres 0.5 (inputs up to 1 are clipped at inp_bound after "
         "scaling).",
         single(dict(nm_thres=0.5)), (Call(F),)),
    Case("nm_max",
         "noise_management Max; row 1 is all negative (α < 0: exact zero output), forward and "
         "backward.",
         single(dict(noise_management="Max"), dict(noise_management="Max")),
         (Call(F, special_rows=((1, "negative"),)), Call(B, special_rows=((1, "negative"),))),
         check=_all(_zero_row(1), _zero_row(1, 1))),
    Case("nm_constant",
         "noise_management Constant with nm_thres 2 (inputs in [-3, 3]; those beyond 2 clip).",
         single(dict(noise_management="Constant", nm_thres=2.0)), (Call(F, scale=3.0),)),
    Case("nm_average_abs_max",
         "noise_management AverageAbsMax in both directions: forward, forward, backward; the "
         "running value is shared by the directions and updated row by row.",
         single(dict(noise_management="AverageAbsMax"), dict(noise_management="AverageAbsMax")),
         (Call(F), Call(F, scale=2.0, data_call=1), Call(B, scale=0.5))),
    Case("nm_abs_max_np_sum",
         "noise_management AbsMaxNPSum with out_bound 2 (so that the NPSum term exceeds the "
         "abs-max for some rows).",
         single(dict(noise_management="AbsMaxNPSum", out_bound=2.0)), (Call(F),)),
    Case("bm_iterative",
         "bound_management Iterative with out_bound 0.5: several passes (factors 1, 2, 4, ...) for "
         "the clipping rows.",
         single(dict(out_bound=0.5)), (Call(F),), check=_passes(at_least=3)),
    Case("bm_iterative_max_bm_factor",
         "bound_management Iterative with out_bound 0.05, max_bm_factor 3 and no DAC quantization: "
         "the last pass is the first with factor > 3 (factor 4, 3 passes), outputs stay clipped.",
         single(dict(out_bound=0.05, max_bm_factor=3, inp_res=-1.0)), (Call(F),),
         check=_passes(exactly=3)),
    Case("bm_iterative_worst_case",
         "bound_management IterativeWorstCase with out_bound 1: at most 2 passes, the second with "
         "the AbsMaxNPSum scale.",
         single(dict(bound_management="IterativeWorstCase", out_bound=1.0)), (Call(F),),
         check=_passes(exactly=2)),
    Case("bm_iterative_worst_case_nm_none",
         "bound_management IterativeWorstCase with noise_management None and out_bound 0.5: the "
         "second pass halves the inputs.",
         single(dict(bound_management="IterativeWorstCase", noise_management="None",
                     out_bound=0.5)), (Call(F),), check=_passes(exactly=2)),
    Case("bm_negative_bound_false",
         "bound_management Iterative, out_bound 0.5, bm_test_negative_bound False: only positive "
         "clipping triggers another pass.",
         single(dict(out_bound=0.5, bm_test_negative_bound=False)), (Call(F),)),
)


# -- running a case -------------------------------------------------------------------------------


class _Recorder:
    """Stands in for the tile's kernel module: delegates to refsim.stages.io.analog_mv and notes,
    per row, the factor f = 1/s of the last pass that computed it and the number of passes."""

    def __init__(self, batch: int) -> None:
        self.factor = [0.0] * batch
        self.passes = [0] * batch

    def analog_mv(self, xp, x, scale, weights, io, periphery, draws, pass_index, rows):
        for r, s in zip(np.asarray(rows).tolist(), np.asarray(scale).tolist()):
            self.factor[r] = 1.0 / s
            self.passes[r] += 1
        return io_stage.analog_mv(xp, x, scale, weights, io, periphery, draws, pass_index, rows)


def _matrix(a: Any) -> List[List[float]]:
    return [[float(v) for v in row] for row in np.asarray(a, dtype=np.float64)]


def run_case(case: Case) -> Dict[str, Any]:
    """Build the tile of ``case``, run its calls, and return the vector record (a JSON-able dict)."""
    config = case.config()
    tile = AnalogTile(OUT_SIZE, IN_SIZE, config, seed=case.seed, backend="reference")
    weights = weights_of(case)
    tile.set_weights(weights)
    calls = []
    for call in case.calls:
        x = inputs_of(case, call)
        recorder = _Recorder(BATCH)
        tile._impl = lambda xp, _r=recorder: _r  # the kernel hook (see the module docstring)
        y = tile.forward(x) if call.direction == "forward" else tile.backward(x)
        io = tile._io(call.direction)
        perfect = io.is_perfect or io.mv_type.value == "Ideal"
        calls.append({
            "direction": call.direction,
            "inputs": _matrix(x),
            "outputs": _matrix(y),
            "row_factor": None if perfect else recorder.factor,
            "row_passes": None if perfect else recorder.passes,
            "nm_running": tile.nm_running,
            "rng_calls": dict(tile.streams.state_dict()["calls"]),
        })
    record = {
        "format": FORMAT,
        "version": VERSION,
        "name": case.name,
        "description": case.description,
        "seed": case.seed,
        "sizes": {"out_size": OUT_SIZE, "in_size": IN_SIZE, "batch": BATCH},
        "dtype": "float64",
        "rpu_config": config.to_dict(),
        "weights": _matrix(weights),
        "calls": calls,
    }
    if case.check is not None:
        case.check(record)
    return record


# -- a stable, diff-friendly JSON layout ----------------------------------------------------------


def main(argv: Sequence[str] = ()) -> int:
    return write_vectors(OUT_DIR, CASES, run_case)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

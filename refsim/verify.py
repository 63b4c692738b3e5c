"""``refsim verify``: check another implementation of analog tiles against refsim's spec.

An *adapter* wraps the implementation under test (spec/verify.md describes the protocol):

* a Python object with ``forward(config, weights, x) -> y``, ``backward(config, weights, d) -> z``
  and ``update(config, weights, x, d, lr) -> new_weights`` (numpy float64 arrays in and out;
  ``config`` is refsim's ``rpu_config.to_dict()``), optionally ``train(config, weights, steps)
  -> weights after each step`` (several updates on one tile; used by tests, not by the test set),
  loaded with ``--against MODULE:ATTR`` (the attribute may also be a class or factory that
  returns such an object); or
* a *command*: an executable that reads one JSON request on stdin and writes one JSON result on
  stdout (:class:`CommandAdapter`), given with ``--command "CMD ..."``; with ``--lines`` started
  once and answering one request per line; ``--against aihwkit --python PATH`` is such a
  line-mode command, refsim/adapters/aihwkit_adapter.py run by aihwkit's Python
  (:func:`aihwkit_adapter`).

Every request stands for a fresh tile: set the weights, make the one call, report the result.
The test set is deterministic (noise off, device spreads 0, 'DeterministicImplicit' pulses), so
results are comparable bit for bit: the stored golden vectors of spec/vectors/io and
spec/vectors/update whose configs are deterministic (:func:`is_deterministic`), and randomized
probes from a seed that vary one parameter at a time (:data:`PARAMETERS`) from a base config, so a
difference is localised to a parameter. The expected results are the stored golden outputs and,
for probes, refsim's reference backend in float64; with ``dtype`` float32 (``--dtype float32``, and
aihwkit 1.1.0, which has no double tiles) refsim's float32 tiles for every case, with a float32
tolerance (:data:`F32_RTOL`).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import pathlib
import re
import shlex
import subprocess
import sys
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from refsim import __version__, configs

STAGES = ("forward", "backward", "update")

#: Tolerances (float64, the dtype of every case). forward/backward: per output row b,
#: |actual − expected| ≤ IO_RTOL·s_b with s_b = max |expected| of the row (spec/agreement.md §3,
#: "IO stage"); update: per weight, |actual − expected| ≤ UPDATE_ATOL + UPDATE_RTOL·|expected|
#: ("Update stage"). "exact" means bit-equal (−0.0 equals +0.0).
IO_RTOL = 1e-12
UPDATE_ATOL = 1e-12
UPDATE_RTOL = 1e-12
TOLERANCE_TEXT = ("exact = bit-equal; within tolerance: forward/backward |a−e| ≤ 1e-12·max|e| of "
                  "the row, update |a−e| ≤ 1e-12 + 1e-12·|e| (float64, spec/agreement.md §3)")

#: float32 (``--dtype float32``: the expected results from refsim's float32 tiles): every stage,
#: per row of the result (an output row, or a row of the updated weights),
#: |actual − expected| ≤ F32_RTOL·max |expected| of the row.
F32_RTOL = 1e-6
TOLERANCE_TEXT_F32 = ("exact = bit-equal; within tolerance: |a−e| ≤ 1e-6·max|e| of the row "
                      "(float32: an output row, or a row of the updated weights)")

DTYPES = ("float64", "float32")


def tolerance_text(dtype: str = "float64") -> str:
    """The report's description of the tolerance of ``dtype``."""
    return TOLERANCE_TEXT_F32 if dtype == "float32" else TOLERANCE_TEXT

_IO_SECTION = {
    "inp_res": "spec/io.md §S4", "inp_bound": "spec/io.md §S4", "out_res": "spec/io.md §S6",
    "out_bound": "spec/io.md §S6", "noise_management": "spec/io.md §S3",
    "nm_thres": "spec/io.md §S3", "bound_management": "spec/io.md §S7",
    "max_bm_factor": "spec/io.md §S7", "max_bm_res": "spec/io.md §S7",
    "bm_test_negative_bound": "spec/io.md §S6", "out_scale": "spec/io.md §S7",
    "mv_type": "spec/io.md §S7", "inp_asymmetry": "spec/io.md §S7",
    "out_asymmetry": "spec/io.md §S7", "is_perfect": "spec/io.md §S1",
    "out_nonlinearity": "spec/io.md §S6", "ir_drop": "spec/io.md §S5",
    "r_series": "spec/io.md §S5",
}

#: The probe values of each IO field (applied to forward or backward), and companion changes
#: that the field needs to be valid or to act (e.g. inp_bound ≠ 1 needs noise_management 'None').
_IO_VALUES: Dict[str, Tuple[List[Any], Dict[str, Any]]] = {
    "inp_res": ([1 / 15, 1 / 63, 1 / 255, 0.1, 31.0], {}),
    "inp_bound": ([0.5, 0.75, 2.0], {"noise_management": "None"}),
    "out_res": ([1 / 15, 1 / 255, 0.01, 63.0], {}),
    "out_bound": ([0.5, 1.0, 2.0, 4.0], {}),
    "noise_management": (["None", "AbsMax", "AbsMaxNPSum", "Max", "Constant", "AverageAbsMax"], {}),
    "nm_thres": ([0.25, 0.5], {"noise_management": "AbsMax"}),
    "bound_management": (["Iterative", "IterativeWorstCase"], {"out_bound": 1.0}),
    "max_bm_factor": ([2, 4], {"out_bound": 0.5, "bound_management": "Iterative"}),
    "max_bm_res": ([0.05, 0.5], {"out_bound": 0.5, "bound_management": "Iterative",
                                 "inp_res": 1 / 63}),
    "bm_test_negative_bound": ([False], {"out_bound": 0.5, "bound_management": "Iterative"}),
    "out_scale": ([0.5, 2.0, -1.5], {}),
    "mv_type": (["PosNegSeparate", "PosNegSeparateDigitalSum"], {}),
    "inp_asymmetry": ([0.1, 0.3], {"mv_type": "PosNegSeparate"}),
    "out_asymmetry": ([0.1, 0.3], {"mv_type": "PosNegSeparate"}),
    "is_perfect": ([True], {}),
    "out_nonlinearity": ([0.2, 1.0], {"out_bound": 2.0}),
    "ir_drop": ([0.5, 2.0], {}),
    "r_series": ([0.05, 0.2], {}),
}

_FORWARD_ONLY = {"bound_management", "max_bm_factor", "max_bm_res", "bm_test_negative_bound"}

_UPDATE_VALUES: Dict[str, Tuple[List[Any], Dict[str, Any], str]] = {
    "update.desired_bl": ([1, 5, 100], {}, "spec/pulses.md §U2"),
    "update.update_management": ([False], {"update.update_bl_management": False},
                                 "spec/pulses.md §U2"),
    "update.update_bl_management": ([False], {}, "spec/pulses.md §U2"),
    "update.fixed_bl": ([False], {"update.update_bl_management": False,
                                  "update.update_management": False}, "spec/pulses.md §U2"),
    "update.um_grad_scale": ([0.5, 2.0], {}, "spec/pulses.md §U2"),
    "update.res": ([0.05, 16.0], {"update.pulse_type": "MeanCount"}, "spec/pulses.md §U3"),
    "update.x_res_implicit": ([0.1, 0.25], {}, "spec/pulses.md §U3"),
    "update.d_res_implicit": ([0.1, 0.25], {}, "spec/pulses.md §U3"),
    "update.pulse_type": (["NoneWithDevice", "None", "MeanCount"], {}, "spec/pulses.md §U4"),
    "device.dw_min": ([0.005, 0.02], {}, "spec/devices.md §V3"),
    "device.w_max": ([0.1, 0.3], {}, "spec/devices.md §V3"),
    "device.w_min": ([-0.1, -0.3], {}, "spec/devices.md §V3"),
    "device.up_down": ([0.2, -0.2], {}, "spec/devices.md §V1"),
    "device.reference_mean": ([0.05, -0.1], {}, "spec/devices.md §V2"),
}


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One row of the parameter table: the stage it is checked in, the spec section that defines
    it, the probe values and the companion changes applied with it."""

    name: str
    stage: str
    section: str
    values: Tuple[Any, ...]
    companions: Tuple[Tuple[str, Any], ...] = ()


def _parameter_table() -> Dict[str, Parameter]:
    table: Dict[str, Parameter] = {}
    for stage in STAGES:
        section = {"forward": "spec/io.md §S1–§S9", "backward": "spec/io.md §S1–§S9",
                   "update": "spec/devices.md §V4, spec/pulses.md §U1–§U4"}[stage]
        table[f"{stage}.(defaults)"] = Parameter(f"{stage}.(defaults)", stage, section, (None,))
    for direction in ("forward", "backward"):
        for field, (values, companions) in _IO_VALUES.items():
            if direction == "backward" and field in _FORWARD_ONLY:
                continue
            name = f"{direction}.{field}"
            table[name] = Parameter(name, direction, _IO_SECTION[field], tuple(values),
                                    tuple((f"{direction}.{k}", v) for k, v in companions.items()))
    for name, (values, companions, section) in _UPDATE_VALUES.items():
        table[name] = Parameter(name, "update", section, tuple(values), tuple(companions.items()))
    return table


#: The parameter -> spec section map (one table), with the probe values of each parameter.
#: "<stage>.(defaults)" are the base configs unchanged (noise off).
PARAMETERS: Dict[str, Parameter] = _parameter_table()

GOLDEN_SECTIONS = {"io": "spec/io.md §S1–§S9 (spec/vectors/io)",
                   "update": "spec/pulses.md §U1–§U6, spec/devices.md §V1–§V6 (spec/vectors/update)"}

def spec_dir() -> pathlib.Path:
    """The spec folder with the golden vectors and deviations.md: ``$REFSIM_SPEC_DIR``, else the
    source checkout refsim is imported from, else ``./spec`` (an installed refsim run from a
    checkout, as CI does); the first that holds ``vectors/``. A path that may not exist when none
    does (the report then says that only the probes ran)."""
    candidates = [os.environ.get("REFSIM_SPEC_DIR"),
                  pathlib.Path(__file__).resolve().parents[1] / "spec", pathlib.Path("spec")]
    for candidate in candidates:
        if candidate and (pathlib.Path(candidate) / "vectors").is_dir():
            return pathlib.Path(candidate).resolve()
    return pathlib.Path(__file__).resolve().parents[1] / "spec"


# -- determinism ------------------------------------------------------------------------------------

_ZERO_IO = ("inp_noise", "out_noise", "w_noise")
_ZERO_DEVICE = ("corrupt_devices_prob",)
_DETERMINISTIC_PULSES = ("DeterministicImplicit", "MeanCount", "None", "NoneWithDevice")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _spread(key: str) -> bool:
    return key.endswith("_std") or key.endswith("_dtod")


def _io_deterministic(io: Dict[str, Any]) -> bool:
    if io.get("is_perfect") or io.get("mv_type") == "Ideal":
        return True
    for key, value in io.items():
        if key in _ZERO_IO or _spread(key):
            if _number(value) and value != 0:
                return False
        if key.endswith("sto_round") and value:
            return False
    return True


def _device_deterministic(device: Dict[str, Any]) -> bool:
    for key, value in device.items():
        if isinstance(value, dict):
            if key == "drift":
                continue            # drift acts only in drift_weights
            return False            # a compound (sub-devices): not in the protocol
        if isinstance(value, list) and value and isinstance(value[0], dict):
            return False
        if key == "reset_std":
            continue                # acts only in reset
        if (key in _ZERO_DEVICE or _spread(key)) and _number(value) and value != 0:
            return False
    return True


def is_deterministic(config: Dict[str, Any], stage: str) -> bool:
    """Whether ``stage`` ('forward', 'backward', 'update') of a fresh tile with the config (a
    ``to_dict()``) draws no random number that changes its result: the direction's IO has no
    noise (inp_noise, out_noise, w_noise 0), no spread (every ``*_std``, ``*_dtod`` 0) and no
    stochastic rounding, or is perfect; the update is exact (FloatingPoint, Inference, pulse
    type 'None') or a single pulsed device without spreads or corrupt devices and with pulse type
    'DeterministicImplicit', 'MeanCount' or 'NoneWithDevice' and ``sto_round`` off."""
    if stage in ("forward", "backward"):
        io = config.get(stage)
        return True if io is None else _io_deterministic(io)
    kind = config.get("__class__")
    if kind in ("FloatingPointRPUConfig", "InferenceRPUConfig"):
        return True
    if kind != "SingleRPUConfig":
        return False
    update = config.get("update", {})
    if update.get("pulse_type") == "None":
        return True
    if update.get("pulse_type") not in _DETERMINISTIC_PULSES or update.get("sto_round"):
        return False
    return _device_deterministic(config.get("device", {}))


def make_deterministic(config: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of a config dict with every noise, spread and stochastic rounding off and the pulse
    type 'DeterministicImplicit' (for pulsed devices)."""
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if isinstance(value, (dict, list)):
                    out[key] = walk(value)
                elif (key in _ZERO_IO or key in _ZERO_DEVICE or _spread(key)) and _number(value):
                    out[key] = 0.0
                elif key.endswith("sto_round") and isinstance(value, bool):
                    out[key] = False
                else:
                    out[key] = value
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node
    result = walk(config)
    if result.get("__class__") == "SingleRPUConfig":
        result["update"]["pulse_type"] = "DeterministicImplicit"
    return result


# -- cases --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    """One request: a fresh tile with ``config`` and ``weights``, one call of ``stage``.
    ``inputs`` is x (forward), d (backward) or x (update, with ``d`` and ``lr``)."""

    ident: str
    source: str                     # "golden" or "probe"
    stage: str
    parameter: str
    value: Any
    config: Dict[str, Any]
    weights: np.ndarray
    inputs: np.ndarray
    d: Optional[np.ndarray] = None
    lr: Optional[float] = None
    changes: Dict[str, Any] = dataclasses.field(default_factory=dict)
    expected: Optional[np.ndarray] = None     # stored golden output (else refsim's)

    def shape_text(self) -> str:
        m, n = self.weights.shape
        return f"{m}x{n} tile, batch {self.inputs.shape[0]}"

    def request(self) -> Dict[str, Any]:
        req: Dict[str, Any] = {"op": self.stage, "config": self.config,
                               "weights": self.weights.tolist()}
        if self.stage == "backward":
            req["d"] = self.inputs.tolist()
        else:
            req["x"] = self.inputs.tolist()
        if self.stage == "update":
            req["d"] = self.d.tolist()
            req["lr"] = self.lr
        return req

    def without(self, axis: str, index: int) -> "Case":
        """The case with one batch row, output (row of W) or input (column of W) removed."""
        w, inp, d = self.weights, self.inputs, self.d
        if axis == "batch":
            inp = np.delete(inp, index, 0)
            d = None if d is None else np.delete(d, index, 0)
        elif axis == "output":
            w = np.delete(w, index, 0)
            if self.stage == "backward":
                inp = np.delete(inp, index, 1)
            if d is not None:
                d = np.delete(d, index, 1)
        else:
            w = np.delete(w, index, 1)
            if self.stage != "backward":
                inp = np.delete(inp, index, 1)
        return dataclasses.replace(self, weights=w, inputs=inp, d=d, expected=None)


def _call(adapter: Any, case: Case) -> np.ndarray:
    if case.stage == "forward":
        out = adapter.forward(case.config, case.weights.copy(), case.inputs.copy())
    elif case.stage == "backward":
        out = adapter.backward(case.config, case.weights.copy(), case.inputs.copy())
    else:
        out = adapter.update(case.config, case.weights.copy(), case.inputs.copy(), case.d.copy(),
                             case.lr)
    return np.asarray(out, dtype=np.float64)


# -- adapters -----------------------------------------------------------------------------------------


class AdapterError(Exception):
    """An adapter failed a request (raised, crashed, or answered malformed JSON)."""


class RefsimAdapter:
    """refsim itself (reference backend, float64 unless ``dtype``, seed 0): the built-in adapter
    ``refsim``."""

    name = "refsim"

    def __init__(self, backend: str = "reference", dtype: str = "float64") -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype: expected float64 or float32, got {dtype!r}")
        self.backend = backend
        self.dtype = dtype

    def _tile(self, config: Dict[str, Any], weights: Any) -> Any:
        from refsim.tile import AnalogTile

        w = np.asarray(weights, dtype=np.float64)
        tile = AnalogTile(w.shape[0], w.shape[1], configs.from_dict(config), seed=0,
                          dtype=np.dtype(self.dtype).type, backend=self.backend)
        tile.set_weights(w)
        return tile

    def forward(self, config: Dict[str, Any], weights: Any, x: Any) -> np.ndarray:
        return self._tile(config, weights).forward(np.asarray(x, dtype=self.dtype))

    def backward(self, config: Dict[str, Any], weights: Any, d: Any) -> np.ndarray:
        return self._tile(config, weights).backward(np.asarray(d, dtype=self.dtype))

    def update(self, config: Dict[str, Any], weights: Any, x: Any, d: Any,
               lr: float) -> np.ndarray:
        tile = self._tile(config, weights)
        tile.update(np.asarray(x, dtype=self.dtype), np.asarray(d, dtype=self.dtype), lr)
        return tile.get_weights()

    def train(self, config: Dict[str, Any], weights: Any, steps: Any) -> np.ndarray:
        """The optional ``train`` operation: one tile, ``update(x, d, lr)`` for each step
        (a mapping with ``x``, ``d``, ``lr``, or an ``(x, d, lr)`` tuple), the weights after each
        step, ``(len(steps), out_size, in_size)``."""
        tile = self._tile(config, weights)
        out = []
        for x, d, lr in _steps(steps):
            tile.update(np.asarray(x, dtype=self.dtype), np.asarray(d, dtype=self.dtype), lr)
            out.append(np.asarray(tile.get_weights(), dtype=np.float64))
        return np.stack(out) if out else np.zeros((0, *np.shape(weights)))


def _steps(steps: Any) -> List[Tuple[Any, Any, float]]:
    """The steps of a ``train`` request as ``(x, d, lr)`` tuples (from mappings or tuples)."""
    out = []
    for step in steps:
        x, d, lr = (step["x"], step["d"], step["lr"]) if isinstance(step, dict) else step
        out.append((np.asarray(x, dtype=np.float64), np.asarray(d, dtype=np.float64),
                    float(lr)))
    return out


class CommandAdapter:
    """An executable answering JSON requests (spec/verify.md §1): by default run once per
    request, one JSON request on stdin, one JSON result on stdout (``{"result": [[...]]}``, or
    ``{"error": "..."}``); with ``lines=True`` (the optional line mode) started once and kept
    running, one request per line on its stdin, one answer per line on its stdout (restarted
    after a crash or a timeout). ``command`` is a string (split with shell rules) or an argv list;
    ``dtype`` is sent in every request (the dtype of the expected results)."""

    def __init__(self, command: Any, timeout: float = 120.0, *, lines: bool = False,
                 dtype: str = "float64", name: Optional[str] = None) -> None:
        self.argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
        if not self.argv:
            raise ValueError("--command: empty command")
        shown = command if isinstance(command, str) else shlex.join(self.argv)
        self.name = name or f"command {shown!r}"
        self.timeout = timeout
        self.lines = lines
        self.dtype = dtype
        self._proc: Optional[subprocess.Popen] = None
        self._stderr: Any = None

    # -- the line mode: one persistent process --------------------------------------------------

    def _start(self) -> subprocess.Popen:
        import tempfile

        if self._proc is None or self._proc.poll() is not None:
            self.close()
            self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
            try:
                self._proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE,
                                              stdout=subprocess.PIPE, stderr=self._stderr,
                                              text=True, bufsize=1)
            except OSError as err:
                self._proc = None
                raise AdapterError(f"cannot run the command: {err}") from None
        return self._proc

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return "(no stderr)"
        self._stderr.seek(0)
        return (self._stderr.read().strip().splitlines() or ["(no stderr)"])[-1]

    def close(self) -> None:
        """Stop the line-mode process (if any)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                if proc.stdin:
                    proc.stdin.close()
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _exchange_line(self, text: str) -> str:
        import selectors

        proc = self._start()
        try:
            proc.stdin.write(text.replace("\n", " ") + "\n")
            proc.stdin.flush()
        except OSError:
            pass   # the process died: reported below
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            ready = sel.select(self.timeout)
        if not ready:
            tail = self._stderr_tail()
            proc.kill()
            self.close()
            raise AdapterError(f"no answer within {self.timeout:g} s: {tail}")
        line = proc.stdout.readline()
        if not line:
            status = proc.wait()
            tail = self._stderr_tail()
            self.close()
            raise AdapterError(f"the command exited with {status}: {tail}")
        return line

    # -- one request -----------------------------------------------------------------------------

    def _run(self, request: Dict[str, Any]) -> np.ndarray:
        request = {**request, "dtype": self.dtype}
        if self.lines:
            output = self._exchange_line(json.dumps(request))
        else:
            try:
                proc = subprocess.run(self.argv, input=json.dumps(request), capture_output=True,
                                      text=True, timeout=self.timeout)
            except (OSError, subprocess.TimeoutExpired) as err:
                raise AdapterError(f"cannot run the command: {err}") from None
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
                raise AdapterError(f"the command exited with {proc.returncode}: {tail}")
            output = proc.stdout
        try:
            answer = json.loads(output)
        except ValueError as err:
            raise AdapterError(f"the command's output is not JSON: {err}") from None
        if not isinstance(answer, dict) or ("result" not in answer and "error" not in answer):
            raise AdapterError("the command's output has neither 'result' nor 'error'")
        if "error" in answer:
            raise AdapterError(f"the command reported: {answer['error']}")
        return np.asarray(answer["result"], dtype=np.float64)

    def forward(self, config: Dict[str, Any], weights: Any, x: Any) -> np.ndarray:
        return self._run({"op": "forward", "config": config,
                          "weights": np.asarray(weights).tolist(), "x": np.asarray(x).tolist()})

    def backward(self, config: Dict[str, Any], weights: Any, d: Any) -> np.ndarray:
        return self._run({"op": "backward", "config": config,
                          "weights": np.asarray(weights).tolist(), "d": np.asarray(d).tolist()})

    def update(self, config: Dict[str, Any], weights: Any, x: Any, d: Any,
               lr: float) -> np.ndarray:
        return self._run({"op": "update", "config": config,
                          "weights": np.asarray(weights).tolist(), "x": np.asarray(x).tolist(),
                          "d": np.asarray(d).tolist(), "lr": lr})

    def train(self, config: Dict[str, Any], weights: Any, steps: Any) -> np.ndarray:
        """The optional ``train`` operation (spec/verify.md §1): the weights after each step."""
        return self._run({"op": "train", "config": config,
                          "weights": np.asarray(weights).tolist(),
                          "steps": [{"x": x.tolist(), "d": d.tolist(), "lr": lr}
                                    for x, d, lr in _steps(steps)]})


def serve(adapter: Any, stdin: Any, stdout: Any, lines: bool = False) -> None:
    """The body of a command adapter around a Python adapter: read one request from ``stdin``,
    write the result (or the error) to ``stdout``; with ``lines``, the line mode: one request per
    line until the end of ``stdin``, each answer a line (flushed)."""
    if lines:
        for line in stdin:
            if line.strip():
                _serve_one(adapter, line, stdout)
                stdout.write("\n")
                stdout.flush()
        return
    _serve_one(adapter, stdin.read(), stdout)


def _serve_one(adapter: Any, text: str, stdout: Any) -> None:
    try:
        req = json.loads(text)
        op = req["op"]
        w = np.asarray(req["weights"], dtype=np.float64)
        if op == "forward":
            out = adapter.forward(req["config"], w, np.asarray(req["x"], dtype=np.float64))
        elif op == "backward":
            out = adapter.backward(req["config"], w, np.asarray(req["d"], dtype=np.float64))
        elif op == "update":
            out = adapter.update(req["config"], w, np.asarray(req["x"], dtype=np.float64),
                                 np.asarray(req["d"], dtype=np.float64), float(req["lr"]))
        elif op == "train" and hasattr(adapter, "train"):
            out = adapter.train(req["config"], w, _steps(req["steps"]))
        else:
            raise ValueError(f"op: unknown operation {op!r}")
        json.dump({"result": np.asarray(out, dtype=np.float64).tolist()}, stdout)
    except Exception as err:   # the protocol answers every failure as JSON
        json.dump({"error": f"{type(err).__name__}: {err}"}, stdout)


def aihwkit_adapter(python: str, dtype: Optional[str] = None, timeout: float = 120.0) -> Any:
    """aihwkit as a line-mode command adapter: ``[python, refsim/adapters/aihwkit_adapter.py,
    --serve]``, ``python`` being the interpreter of aihwkit's environment. ``dtype`` None: float64
    when that aihwkit has double tiles, else float32 (asked with ``--dtypes``). Raises ValueError
    with a one-line reason when ``python`` cannot run or does not import aihwkit."""
    from refsim.adapters import script_path

    script = script_path("aihwkit_adapter")
    if not os.path.isfile(python) or not os.access(python, os.X_OK):
        raise ValueError(f"--python: {python} is not an executable file")
    try:
        proc = subprocess.run([python, script, "--dtypes"], capture_output=True, text=True,
                              timeout=timeout)
        dtypes = json.loads(proc.stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError) as err:
        raise ValueError(f"--python: {python} cannot run the aihwkit adapter: "
                         f"{type(err).__name__}") from None
    if not dtypes:
        raise ValueError(f"--python: {python} cannot import aihwkit")
    if dtype is None:
        dtype = "float64" if "float64" in dtypes else "float32"
    elif dtype not in dtypes:
        raise ValueError(f"--dtype: this aihwkit has no {dtype} tiles (it has "
                         f"{', '.join(dtypes)})")
    return CommandAdapter([python, script, "--serve"], timeout, lines=True, dtype=dtype,
                          name=f"aihwkit ({python}, {dtype})")


def load_adapter(spec: str, dtype: str = "float64") -> Any:
    """``"refsim"`` (the built-in adapter: refsim's reference backend), ``"refsim-fast"`` (refsim's
    compiled backend) or ``"MODULE:ATTR"`` (MODULE imported from ``sys.path`` or the working
    directory): the attribute is an adapter
    object, or a class / factory called without arguments that returns one. Raises ValueError
    with a one-line reason."""
    if spec == "refsim":
        adapter = RefsimAdapter(dtype=dtype)
        adapter.name = "refsim" if dtype == "float64" else f"refsim ({dtype})"
        return adapter
    if spec == "refsim-fast":
        from refsim.tile import _fast_module

        if _fast_module() is None:
            raise ValueError("--against: refsim-fast needs the compiled backend refsim_fast, "
                             "which is not installed")
        adapter = RefsimAdapter(backend="fast", dtype=dtype)
        adapter.name = "refsim-fast" if dtype == "float64" else f"refsim-fast ({dtype})"
        return adapter
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--against: expected 'refsim', 'refsim-fast' or MODULE:ATTR, "
                         f"got {spec!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:   # the `refsim` script's sys.path
        sys.path.append(os.getcwd())                          # lacks the working directory
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise ValueError(f"--against: cannot import {module_name!r}: "
                         f"{type(err).__name__}: {err}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"--against: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not all(callable(getattr(obj, m, None)) for m in STAGES) or isinstance(obj, type):
        if not callable(obj):
            raise ValueError(f"--against: {spec} is neither an adapter nor a factory")
        try:
            obj = obj()
        except Exception as err:
            raise ValueError(f"--against: {spec}() failed: {type(err).__name__}: {err}") from None
    missing = [m for m in STAGES if not callable(getattr(obj, m, None))]
    if missing:
        raise ValueError(f"--against: {spec} has no method {', '.join(missing)} "
                         f"(an adapter needs forward, backward, update)")
    if not hasattr(obj, "name"):
        try:
            obj.name = spec
        except AttributeError:
            pass
    return obj


# -- the test set ---------------------------------------------------------------------------------


def golden_cases() -> List[Case]:
    """The deterministic cases of the stored golden vectors (spec/vectors/io, update), with their
    stored outputs as the expected results. A call of an io/ file is taken when its direction is
    deterministic; with noise_management 'AverageAbsMax' (a running value kept between calls)
    only a file's first call. An update/ file is taken when its update is deterministic, its
    update steps up to the first other operation (the weights before a step are the stored
    weights after the previous one)."""
    cases: List[Case] = []
    for path in sorted((spec_dir() / "vectors" / "io").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        cfg = data["rpu_config"]
        stateful = any(cfg.get(d, {}).get("noise_management") == "AverageAbsMax"
                       for d in ("forward", "backward"))
        w = np.asarray(data["weights"], dtype=np.float64)
        for k, call in enumerate(data["calls"]):
            if stateful and k > 0:
                break
            stage = call["direction"]
            if not is_deterministic(cfg, stage):
                continue
            cases.append(Case(f"io/{path.stem}#{k}", "golden", stage, f"golden io/{path.stem}",
                              None, cfg, w, np.asarray(call["inputs"], dtype=np.float64),
                              expected=np.asarray(call["outputs"], dtype=np.float64)))
    for path in sorted((spec_dir() / "vectors" / "update").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        cfg = data["rpu_config"]
        if not is_deterministic(cfg, "update"):
            continue
        w = np.asarray(data["weights"], dtype=np.float64)
        for k, step in enumerate(data["steps"]):
            op = step["operation"]
            if op[0] != "update":
                break
            after = np.asarray(step["weights"], dtype=np.float64)
            cases.append(Case(f"update/{path.stem}#{k}", "golden", "update",
                              f"golden update/{path.stem}", None, cfg, w,
                              np.asarray(op[1]["x"], dtype=np.float64),
                              d=np.asarray(op[1]["d"], dtype=np.float64), lr=float(op[1]["lr"]),
                              expected=after))
            w = after
    return cases


def _base_configs() -> Dict[str, Dict[str, Any]]:
    """The base configs of the probes, noise off (make_deterministic)."""
    bases = {
        "FloatingPointRPUConfig": configs.FloatingPointRPUConfig(),
        "SingleRPUConfig(ConstantStepDevice)": configs.SingleRPUConfig(
            device=configs.ConstantStepDevice()),
        "SingleRPUConfig(SoftBoundsReferenceDevice)": configs.SingleRPUConfig(
            device=configs.SoftBoundsReferenceDevice()),
        "InferenceRPUConfig": configs.InferenceRPUConfig(),
    }
    return {name: make_deterministic(cfg.to_dict()) for name, cfg in bases.items()}


#: The IO of the parameter probes: every quantizer, bound and management off, so that the one
#: parameter switched on is the only non-ideality of the pass.
_CLEAN_IO = {"inp_res": -1.0, "out_res": -1.0, "out_bound": -1.0, "inp_bound": 1.0,
             "noise_management": "None", "bound_management": "None"}


def _set(config: Dict[str, Any], dotted: str, value: Any) -> bool:
    *path, last = dotted.split(".")
    node = config
    for part in path:
        node = node.get(part)
        if not isinstance(node, dict):
            return False
    if last not in node:
        return False
    node[last] = value
    return True


def _valid(config: Dict[str, Any], out_size: int, in_size: int) -> bool:
    from refsim.tile import AnalogTile

    try:
        AnalogTile(out_size, in_size, configs.from_dict(config), backend="reference")
    except (ValueError, TypeError, NotImplementedError):
        return False
    return True


#: The probes' values are multiples of 2⁻⁶ (GRID = 64).
GRID = 64


def _grid(r: np.random.Generator, shape: Tuple[int, ...], scale: float) -> np.ndarray:
    """Uniform values on a grid of 2⁻⁶ (exact in float32/float64 and in JSON): a product of two
    is a multiple of 2⁻¹², and a sum of up to 16 such products (|v| ≤ 4) is exact in float32,
    so a matrix product of the probes does not depend on its summation order (the BLAS's),
    unless noise management or a quantizer has made the values inexact first."""
    return np.round(r.uniform(-scale, scale, shape) * GRID) / GRID


def probe(seed: int, index: int) -> Case:
    """The probe ``index`` of ``seed``: the parameter is the index-th of :data:`PARAMETERS`
    (cyclically), its value, the base config, the sizes (3–8 outputs, 4–16 inputs, batch 1–4)
    and the data are drawn from ``numpy.random.default_rng([seed, index])``."""
    names = list(PARAMETERS)
    param = PARAMETERS[names[index % len(names)]]
    r = np.random.default_rng([seed, index])
    bases = _base_configs()
    if param.stage == "update":
        choices = list(bases) if param.name.endswith("(defaults)") else \
            [b for b in bases if b.startswith("SingleRPUConfig")]
    else:
        choices = list(bases) if param.name.endswith("(defaults)") else \
            [b for b in bases if b != "FloatingPointRPUConfig"]
    m, n, batch = int(r.integers(3, 9)), int(r.integers(4, 17)), int(r.integers(1, 5))
    order = r.permutation(len(choices))
    values = list(param.values)
    value_order = r.permutation(len(values))
    for bi in order:
        base_name = choices[int(bi)]
        for vi in value_order:
            value = values[int(vi)]
            cfg = json.loads(json.dumps(bases[base_name]))
            changes: Dict[str, Any] = {}
            if value is not None:
                if param.stage != "update":
                    for key, v in _CLEAN_IO.items():
                        _set(cfg, f"{param.stage}.{key}", v)
                ok = True
                for dotted, v in (*param.companions, (param.name, value)):
                    ok = ok and _set(cfg, dotted, v)
                    changes[dotted] = v
                if not ok:
                    continue
            if not _valid(cfg, m, n):
                continue
            scale = float(r.choice([0.5, 1.0, 2.0])) if param.stage != "update" else 1.0
            w = _grid(r, (m, n), 0.5)
            ident = f"probe {index}"
            if param.stage == "forward":
                return Case(ident, "probe", "forward", param.name, value, cfg, w,
                            _grid(r, (batch, n), scale), changes=_with_base(changes, base_name))
            if param.stage == "backward":
                return Case(ident, "probe", "backward", param.name, value, cfg, w,
                            _grid(r, (batch, m), scale), changes=_with_base(changes, base_name))
            lr = float(r.choice([0.01, 0.1, 0.5]))
            return Case(ident, "probe", "update", param.name, value, cfg, w,
                        _grid(r, (batch, n), 1.0), d=_grid(r, (batch, m), 0.5), lr=lr,
                        changes=_with_base(changes, base_name))
    raise RuntimeError(f"no valid config for {param.name}")   # a bug of the table


def _with_base(changes: Dict[str, Any], base: str) -> Dict[str, Any]:
    return {"base": base, **changes}


# -- comparison and minimisation ---------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    status: str                     # "exact", "within", "differs"
    max_abs_diff: Optional[float] = None
    message: str = ""


def compare(stage: str, actual: np.ndarray, expected: np.ndarray,
            dtype: str = "float64") -> Outcome:
    """exact / within tolerance / differs (see :data:`TOLERANCE_TEXT`, and
    :data:`TOLERANCE_TEXT_F32` for ``dtype`` float32)."""
    if actual.shape != expected.shape:
        return Outcome("differs", None, f"shape {actual.shape}, expected {expected.shape}")
    if not np.all(np.isfinite(actual)):
        return Outcome("differs", None, "non-finite values")
    if np.array_equal(actual, expected):
        return Outcome("exact", 0.0)
    diff = np.abs(actual - expected)
    if dtype == "float32":
        rows = np.atleast_2d(np.abs(expected))
        tol = F32_RTOL * np.max(rows, axis=-1, keepdims=True)
        tol = np.broadcast_to(tol, rows.shape).reshape(expected.shape)
    elif stage == "update":
        tol = UPDATE_ATOL + UPDATE_RTOL * np.abs(expected)
    else:
        rows = np.atleast_2d(np.abs(expected))
        tol = IO_RTOL * np.max(rows, axis=-1, keepdims=True)
        tol = np.broadcast_to(tol, rows.shape).reshape(expected.shape)
    worst = float(np.max(diff))
    return Outcome("within" if bool(np.all(diff <= tol)) else "differs", worst)


def _evaluate(adapter: Any, reference: RefsimAdapter, case: Case) -> Tuple[Outcome, Any, Any]:
    expected = case.expected if case.expected is not None else _call(reference, case)
    try:
        actual = _call(adapter, case)
    except Exception as err:   # any failure of the implementation under test is a difference
        return Outcome("differs", None, f"{type(err).__name__}: {err}"), expected, None
    return compare(case.stage, actual, expected, reference.dtype), expected, actual


def minimise(adapter: Any, reference: RefsimAdapter, case: Case,
             budget: int = 300) -> Tuple[Case, Outcome, Any, Any]:
    """Greedy shrink: remove batch rows, then outputs, then inputs, one at a time, keeping each
    removal after which the case still differs, until none can be removed (or ``budget``
    evaluations are spent)."""
    outcome, expected, actual = _evaluate(adapter, reference, case)
    spent = 0
    changed = True
    while changed and spent < budget:
        changed = False
        for axis in ("batch", "output", "input"):
            size = {"batch": case.inputs.shape[0], "output": case.weights.shape[0],
                    "input": case.weights.shape[1]}[axis]
            for index in range(size - 1, -1, -1):
                if size <= 1 or spent >= budget:
                    break
                smaller = case.without(axis, index)
                spent += 1
                try:
                    result = _evaluate(adapter, reference, smaller)
                except Exception:   # refsim rejects the smaller case: keep the larger one
                    continue
                if result[0].status == "differs":
                    case, (outcome, expected, actual) = smaller, result
                    size -= 1
                    changed = True
    return case, outcome, expected, actual


# -- the run ------------------------------------------------------------------------------------------


def deviation_rows(parameter: str, value: Any = None) -> List[str]:
    """The rows of spec/deviations.md that mention the parameter's field name, or its value
    when that is a name (an enum value such as 'IterativeWorstCase'; not 'None')."""
    field = parameter.split(".")[-1]
    deviations = spec_dir() / "deviations.md"
    if field.startswith("(") or field.startswith("golden") or not deviations.is_file():
        return []   # (spec/ is part of a source checkout, not of an installed package)
    rows = []
    words = [field] + ([value] if isinstance(value, str) and value != "None"
                       and re.fullmatch(r"[A-Za-z_]\w+", value) else [])
    pattern = re.compile(r"(?<![A-Za-z0-9_])(?:" + "|".join(map(re.escape, words)) +
                         r")(?![A-Za-z0-9_])")
    section = ""
    for line in deviations.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("|") and not line.startswith("|---") and pattern.search(line):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if cells and cells[0] not in ("what", "stage"):
                rows.append(f"spec/deviations.md {section}: {cells[0]}")
    return rows


def _section(parameter: str, source: str) -> str:
    if parameter in PARAMETERS:
        return PARAMETERS[parameter].section
    return GOLDEN_SECTIONS["io" if parameter.startswith("golden io/") else "update"]


def _jsonable(a: Any) -> Any:
    return None if a is None else np.asarray(a).tolist()


def run(adapter: Any, *, probes: int = 150, seed: int = 0, golden: bool = True,
        dtype: str = "float64") -> Dict[str, Any]:
    """Run the test set against ``adapter``; the report as a JSON-compatible dict. ``dtype``
    float32: the expected results (golden cases too) come from refsim's float32 tiles, with the
    float32 tolerance."""
    reference = RefsimAdapter(dtype=dtype)
    gold = golden_cases() if golden else []
    if dtype != "float64":   # the stored golden outputs are float64
        gold = [dataclasses.replace(c, expected=None) for c in gold]
    cases = gold + [probe(seed, i) for i in range(probes)]
    groups: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for case in cases:
        outcome, _, _ = _evaluate(adapter, reference, case)
        key = (case.stage, case.parameter)
        g = groups.setdefault(key, {"stage": case.stage, "parameter": case.parameter,
                                    "source": case.source,
                                    "section": _section(case.parameter, case.source),
                                    "cases": 0, "exact": 0, "within": 0, "differs": 0,
                                    "max_abs_diff": 0.0, "first_difference": None})
        g["cases"] += 1
        g[outcome.status] += 1
        if outcome.max_abs_diff is not None:
            g["max_abs_diff"] = max(g["max_abs_diff"], outcome.max_abs_diff)
        if outcome.status == "differs" and g["first_difference"] is None:
            small, small_outcome, expected, actual = minimise(adapter, reference, case)
            g["first_difference"] = {
                "case": case.ident, "value": case.value, "changes": case.changes,
                "original": case.shape_text(), "minimised": small.shape_text(),
                "message": small_outcome.message or outcome.message,
                "max_abs_diff": small_outcome.max_abs_diff,
                "request": small.request(), "expected": _jsonable(expected),
                "actual": _jsonable(actual), "deviations": deviation_rows(case.parameter, case.value)}
    rows = sorted(groups.values(), key=lambda g: (STAGES.index(g["stage"]), g["source"] != "golden",
                                                  g["parameter"]))
    totals = {s: sum(g[s] for g in rows) for s in ("cases", "exact", "within", "differs")}
    diagnosis = {stage: localise([g for g in rows if g["stage"] == stage]) for stage in STAGES}
    return {"format": "refsim-verify-report", "version": 1, "refsim": __version__,
            "adapter": getattr(adapter, "name", type(adapter).__name__), "seed": seed,
            "probes": probes, "golden_cases": sum(1 for c in cases if c.source == "golden"),
            "golden_vectors": str(spec_dir() / "vectors") if (spec_dir() / "vectors").is_dir()
            else None,
            "dtype": dtype, "tolerance": tolerance_text(dtype), "totals": totals,
            "ok": totals["differs"] == 0,
            "differing_parameters": [g["parameter"] for g in rows if g["differs"]],
            "diagnosis": {k: v for k, v in diagnosis.items() if v}, "results": rows}


def localise(groups: List[Dict[str, Any]]) -> str:
    """One stage's diagnosis ('' when nothing differs): the parameters set in the first differing
    case of every differing parameter probe (the varied parameter and its companions); when they
    have none in common and the base configs differ too, a common cause in the stage itself."""
    differing = [g for g in groups if g["differs"]]
    if not differing:
        return ""
    probes = [g for g in groups if g["source"] == "probe" and not g["parameter"].endswith(")")]
    bad = [g for g in probes if g["differs"]]
    common: Optional[set] = None
    for g in bad:
        keys = {k for k in g["first_difference"]["changes"] if k != "base"}
        common = keys if common is None else common & keys
    if common and len(bad) < len(probes):
        return "localised to " + ", ".join(sorted(common)) + (
            " (set in the first differing case of every differing parameter)")
    defaults = any(g["differs"] for g in groups if g["parameter"].endswith("(defaults)"))
    if defaults and (len(bad) >= 0.8 * len(probes) or not common):
        return (f"a common cause in the stage itself (its core arithmetic, or a setting every "
                f"probe uses): the base configs differ, and {len(bad)} of {len(probes)} "
                f"parameters, with no parameter in common")
    if bad:
        return "differing parameters: " + ", ".join(g["parameter"] for g in bad)
    return "only the base configs / golden vectors differ: " + ", ".join(
        g["parameter"] for g in differing)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return json.dumps(value) if not isinstance(value, str) else value


def _matrix(a: Any) -> str:
    return "(none)" if a is None else json.dumps(a)


def markdown(report: Dict[str, Any]) -> str:
    """The report as Markdown."""
    t = report["totals"]
    lines = [f"# refsim verify: {report['adapter']} against refsim {report['refsim']}", "",
             f"{t['cases']} cases ({report['golden_cases']} golden, {report['probes']} probes, "
             f"seed {report['seed']}, {report.get('dtype', 'float64')}): {t['exact']} exact, "
             f"{t['within']} within tolerance, {t['differs']} differ. "
             f"Tolerance: {report['tolerance']}."
             + ("" if report.get("golden_vectors") else
                " (No golden vectors: spec/vectors/ is part of a source checkout.)"), "",
             "**Result: " + ("everything is exact or within tolerance.**" if report["ok"] else
                             "differences in " + ", ".join(report["differing_parameters"]) +
                             ".**"), ""]
    for stage, text in report.get("diagnosis", {}).items():
        lines.append(f"* {stage}: {text}")
    if report.get("diagnosis"):
        lines.append("")
    lines += ["| stage | parameter | spec | cases | exact | within tol. | differs |",
             "|---|---|---|---|---|---|---|"]
    for g in report["results"]:
        mark = " **✗**" if g["differs"] else ""
        lines.append(f"| {g['stage']} | `{g['parameter']}`{mark} | {g['section']} | {g['cases']} "
                     f"| {g['exact']} | {g['within']} | {g['differs']} |")
    differing = [g for g in report["results"] if g["first_difference"]]
    if differing:
        lines += ["", "## First differing case per parameter (minimised)"]
    for g in differing:
        f = g["first_difference"]
        req = f["request"]
        lines += ["", f"### {g['stage']}: `{g['parameter']}` ({g['section']})", "",
                  f"* case: {f['case']}" + ("" if f["value"] is None else
                                            f", value {_fmt(f['value'])}"),
                  "* config: " + (", ".join(f"{k} = {_fmt(v)}" for k, v in f["changes"].items())
                                  or "the golden vector's rpu_config"),
                  f"* minimised from {f['original']} to {f['minimised']}",
                  f"* weights: `{_matrix(req['weights'])}`"]
        if "x" in req:
            lines.append(f"* x: `{_matrix(req['x'])}`")
        if "d" in req:
            lines.append(f"* d: `{_matrix(req['d'])}`")
        if "lr" in req:
            lines.append(f"* lr: {req['lr']!r}")
        lines += [f"* expected (refsim): `{_matrix(f['expected'])}`",
                  f"* actual: `{_matrix(f['actual'])}`"]
        if f["max_abs_diff"] is not None:
            lines.append(f"* max abs difference: {f['max_abs_diff']:.6g}")
        if f["message"]:
            lines.append(f"* message: {f['message']}")
        lines.append("* known deviation from aihwkit: " + ("; ".join(f["deviations"]) or
                                                            "none listed in spec/deviations.md"))
    return "\n".join(lines) + "\n"


def exit_status(report: Dict[str, Any]) -> int:
    """0 when every case is exact or within tolerance, 1 when something differs."""
    return 0 if report["ok"] else 1


__all__ = ["DTYPES", "PARAMETERS", "AdapterError", "Case", "CommandAdapter", "RefsimAdapter",
           "aihwkit_adapter", "compare", "tolerance_text",
           "deviation_rows", "exit_status", "golden_cases", "is_deterministic", "load_adapter",
           "make_deterministic", "markdown", "minimise", "probe", "run", "serve"]

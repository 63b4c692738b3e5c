"""The aihwkit adapter of ``refsim verify --against aihwkit --python PATH`` (spec/verify.md §1).

A standalone script, run with the Python of aihwkit's own environment (README, "aihwkit beside
refsim"): it imports only the standard library, numpy, torch and aihwkit — never refsim, which
that environment lacks. It speaks the command-adapter protocol: one JSON request on stdin, one
JSON result on stdout (``{"result": [[...]]}`` or ``{"error": "..."}``, exit status 0 either way);
with ``--serve``, the line mode: one request per line, one answer per line, until end of input.
``--dtypes`` prints the JSON list of the dtypes this aihwkit's tiles support (``["float32"]``, plus
``"float64"`` when its compiled simulator has double tiles).

Per request: the config (refsim's ``rpu_config.to_dict()``) is rebuilt with aihwkit's classes of
the same names (:func:`plan`, a pure function, then :func:`instantiate`), the tile is
``rpu_config.tile_class(out_size, in_size, rpu_config)`` with ``runtime.data_type`` of the
request's ``dtype`` (default float32), the weights are set with ``tile.set_weights`` (which
clamps pulsed devices to their bounds, spec/deviations.md §3), and the one call is made; for the
optional ``"train"`` op, one ``set_learning_rate`` and ``update`` per step on the same tile, with
the weights after each step.
"""

import dataclasses
import enum
import inspect
import json
import sys
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional

#: Fields of refsim's config classes that aihwkit 1.1.0's classes lack, with refsim's default:
#: such a field is dropped when it has this value and is an error otherwise (aihwkit cannot
#: express the setting). tests/test_verify.py checks the defaults against refsim's classes.
REFSIM_ONLY: Dict[str, Dict[str, Any]] = {
    "TransferCompound": {"scale_fast_lr": False},
    "BufferedTransferCompound": {"scale_fast_lr": False},
    "ChoppedTransferCompound": {"scale_fast_lr": False},
    "DynamicTransferCompound": {"scale_fast_lr": False},
}

_DROPPED_KEYS = ("__class__", "__schema__")


class Plan(NamedTuple):
    """A config class to build: aihwkit's class name and its converted field values."""

    name: str
    fields: Dict[str, Any]


class ConfigError(Exception):
    """The config cannot be expressed with aihwkit's classes."""


def class_fields(cls: type) -> Dict[str, Any]:
    """The fields of ``cls`` with their default values (``dataclasses.MISSING`` when unknown): a
    dataclass's fields, else the keyword parameters of its constructor; the defaults are read
    from an instance made without arguments (so ``default_factory`` and ``__post_init__`` count),
    falling back to the declared defaults."""
    try:
        instance: Any = cls()
    except Exception:
        instance = None
    names: Dict[str, Any] = {}
    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            names[f.name] = f.default
    else:
        for p in list(inspect.signature(cls).parameters.values()):
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                names[p.name] = dataclasses.MISSING if p.default is p.empty else p.default
    if instance is not None:
        for name in names:
            if hasattr(instance, name):
                names[name] = getattr(instance, name)
    return names


def convert_value(value: Any, default: Any) -> Any:
    """A JSON value as the field wants it: an enum member by value when the field's default is an
    enum (refsim writes enums as their string values)."""
    if isinstance(default, enum.Enum) and isinstance(value, str):
        try:
            return type(default)(value)
        except ValueError:
            raise ConfigError(f"{value!r} is not a value of aihwkit's "
                              f"{type(default).__name__}") from None
    return value


def plan(node: Mapping[str, Any], classes: Mapping[str, type],
         refsim_only: Mapping[str, Mapping[str, Any]] = REFSIM_ONLY, where: str = "config") -> Plan:
    """refsim's ``to_dict()`` form (``node``) as a :class:`Plan` of aihwkit's classes
    (``classes``: name → class). Nested class dicts become nested plans; enum strings become
    members of the field's enum; ``__class__`` and ``__schema__`` are dropped; a field the class
    lacks is dropped when it equals refsim's default (``refsim_only[class][field]``), otherwise
    :class:`ConfigError`. Pure: reads ``classes`` only."""
    name = node.get("__class__")
    if not isinstance(name, str):
        raise ConfigError(f"{where}: no '__class__'")
    cls = classes.get(name)
    if cls is None:
        raise ConfigError(f"aihwkit has no class {name}")
    known = class_fields(cls)
    out: Dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key not in known:
            defaults = refsim_only.get(name, {})
            if key in defaults and defaults[key] == value:
                continue
            raise ConfigError(f"aihwkit has no field {name}.{key}")
        if isinstance(value, dict) and "__class__" in value:
            out[key] = plan(value, classes, refsim_only, f"{where}.{key}")
        elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
            out[key] = [plan(v, classes, refsim_only, f"{where}.{key}[{i}]")
                        if isinstance(v, dict) else v for i, v in enumerate(value)]
        else:
            out[key] = convert_value(value, known[key])
    return Plan(name, out)


def instantiate(p: Any, classes: Mapping[str, type]) -> Any:
    """Build the objects of a :class:`Plan` (lists of plans too): constructor arguments for the
    fields the constructor takes, attributes for the others (e.g. a dataclass field with
    ``init=False``)."""
    if isinstance(p, list):
        return [instantiate(v, classes) for v in p]
    if not isinstance(p, Plan):
        return p
    cls = classes[p.name]
    values = {k: instantiate(v, classes) for k, v in p.fields.items()}
    if dataclasses.is_dataclass(cls):
        init = {f.name for f in dataclasses.fields(cls) if f.init}
    else:
        init = set(inspect.signature(cls).parameters)
    obj = cls(**{k: v for k, v in values.items() if k in init})
    for k, v in values.items():
        if k not in init:
            setattr(obj, k, v)
    return obj


def aihwkit_classes() -> Dict[str, type]:
    """aihwkit's config classes by name: aihwkit.simulator.configs, aihwkit.simulator.parameters
    and aihwkit.inference, with their submodules."""
    import importlib
    import pkgutil

    classes: Dict[str, type] = {}
    for root in ("aihwkit.simulator.parameters", "aihwkit.simulator.configs",
                 "aihwkit.inference"):
        package = importlib.import_module(root)
        modules = [package]
        for info in pkgutil.walk_packages(package.__path__, root + "."):
            try:
                modules.append(importlib.import_module(info.name))
            except Exception:   # an optional submodule that does not import here
                continue
        for module in modules:
            for attr, obj in vars(module).items():
                if isinstance(obj, type) and obj.__module__.startswith("aihwkit."):
                    classes.setdefault(attr, obj)
    return classes


_TORCH_DTYPES = {"float32": "FLOAT", "float64": "DOUBLE"}


def _tile(request: Dict[str, Any], classes: Mapping[str, type]) -> Any:
    import torch
    from aihwkit.simulator.parameters.enums import RPUDataType

    dtype = request.get("dtype", "float32")
    if dtype not in _TORCH_DTYPES:
        raise ConfigError(f"dtype {dtype!r}: expected float32 or float64")
    config = instantiate(plan(request["config"], classes), classes)
    if hasattr(config, "runtime"):
        config.runtime.data_type = getattr(RPUDataType, _TORCH_DTYPES[dtype])
    torch_dtype = torch.float32 if dtype == "float32" else torch.float64
    weights = torch.tensor(request["weights"], dtype=torch.float64).to(torch_dtype)
    tile = config.tile_class(weights.shape[0], weights.shape[1], config)
    tile.set_weights(weights)
    return tile, torch_dtype


def _rows(out: Any) -> list:
    import torch

    return out.detach().to(torch.float64).cpu().tolist()


def handle(request: Dict[str, Any], classes: Mapping[str, type]) -> Dict[str, Any]:
    """One request → ``{"result": ...}`` or ``{"error": ...}`` (never raises)."""
    try:
        import torch

        op = request.get("op")
        if op not in ("forward", "backward", "update", "train"):
            raise ConfigError(f"op: unknown operation {op!r}")
        if op == "train" and not isinstance(request.get("steps"), list):
            raise ConfigError("steps: expected a list of {x, d, lr} objects")
        tile, torch_dtype = _tile(request, classes)

        def tensor(value: Any) -> Any:
            return torch.tensor(value, dtype=torch.float64).to(torch_dtype)

        def weights() -> Any:
            out = tile.get_weights()
            return _rows(out[0] if isinstance(out, tuple) else out)

        with torch.no_grad():
            if op == "forward":
                return {"result": _rows(tile.forward(tensor(request["x"])))}
            if op == "backward":
                return {"result": _rows(tile.backward(tensor(request["d"])))}
            if op == "update":
                tile.set_learning_rate(float(request["lr"]))
                tile.update(tensor(request["x"]), tensor(request["d"]))
                return {"result": weights()}
            result = []
            for step in request["steps"]:   # one tile: compound state carries over
                tile.set_learning_rate(float(step["lr"]))
                tile.update(tensor(step["x"]), tensor(step["d"]))
                result.append(weights())
            return {"result": result}
    except Exception as err:   # the protocol answers every failure as JSON
        return {"error": f"{type(err).__name__}: {err}"}


def supported_dtypes() -> list:
    """The dtypes whose tiles this aihwkit builds (float64 needs double bindings)."""
    from aihwkit.simulator.configs import FloatingPointRPUConfig
    from aihwkit.simulator.parameters.enums import RPUDataType

    dtypes = ["float32"]
    try:
        config = FloatingPointRPUConfig()
        config.runtime.data_type = RPUDataType.DOUBLE
        config.tile_class(1, 1, config)
        dtypes.append("float64")
    except Exception:
        pass
    return dtypes


def main(argv: Optional[list] = None, stdin: Any = None, stdout: Any = None,
         classes: Optional[Callable[[], Mapping[str, type]]] = None) -> int:
    import warnings

    warnings.filterwarnings("ignore")
    argv = sys.argv[1:] if argv is None else argv
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    try:
        table = (classes or aihwkit_classes)()
    except Exception as err:
        table = {}
        failure: Optional[str] = f"cannot import aihwkit: {type(err).__name__}: {err}"
    else:
        failure = None

    def answer(text: str) -> Dict[str, Any]:
        if failure:
            return {"error": failure}
        try:
            request = json.loads(text)
        except ValueError as err:
            return {"error": f"the request is not JSON: {err}"}
        if not isinstance(request, dict):
            return {"error": "the request is not a JSON object"}
        return handle(request, table)

    if "--dtypes" in argv:
        stdout.write(json.dumps([] if failure else supported_dtypes()) + "\n")
    elif "--serve" in argv:
        for line in stdin:
            if line.strip():
                stdout.write(json.dumps(answer(line)) + "\n")
                stdout.flush()
    else:
        stdout.write(json.dumps(answer(stdin.read())) + "\n")
    stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sweeps of the demo jobs as Dask tasks: ``refsim sweep SPEC --out DIR`` and :func:`run`.

A sweep runs one demo job (``refsim demo``, i.e. training the digits MLP, or ``refsim demo --task
inference``, the hardware-aware training and PCM drift evaluation) at every point of a grid of
demo options and RPU-config fields. Each point is one Dask task, run in a worker process of a
``LocalCluster`` (``workers=N``) or of an existing Dask cluster (``scheduler=ADDRESS``); its row
is appended to a CSV table in the output folder as soon as it finishes.

The SPEC (a dict, or a JSON file holding one)::

    {"task": "train",
     "base": {"epochs": 5, "hidden": 32},
     "grid": {"algorithm": ["c-ttv2", "agad"],
              "device.unit_cell_devices[*].dw_min": [0.0005, 0.001, 0.002],
              "seed": [1, 2, 3]},
     "zip": []}

* ``task``: ``"train"`` (the default; ``refsim demo``) or ``"inference"`` (``refsim demo --task
  inference``).
* ``base``: settings shared by every point; ``grid``: a non-empty list of values per key. The
  points are the cross product of the grid's lists, in the grid's key order (the first key
  varies slowest). ``zip`` (optional): groups of grid keys whose lists have one length and are
  walked together, as one axis of the product.
* A key without a dot is a demo option, written as its ``refsim demo`` flag without the dashes
  (``batch_size`` or ``batch-size``): for ``train`` ``algorithm device backend seed epochs lr
  batch_size hidden dtype analog_bias stock_config limit``; for ``inference`` ``backend seed
  epochs lr batch_size hidden dtype repeats limit`` (``limit``: use only the first N training and
  test images). Unset options take the demo's defaults.
* A key with a dot is an RPU-config field by its dotted path, as ``ConfigError`` messages name
  it: ``forward.out_noise``, ``device.dw_min`` (a single-device config, e.g. ``sgd``),
  ``device.unit_cell_devices[0].dw_min`` (one device of a compound), ``device.unit_cell_devices[
  *].dw_min`` (each of them), ``modifier.std_dev``. It is set on the config the demo would use
  (``refsim.cli.demo_config``, after ``--analog-bias``; for ``inference`` on each of the four
  variants' configs), base fields first, then the grid's, and the config is validated again.

Errors. A malformed spec raises ``ValueError`` naming the SPEC key before anything runs: an
unknown task, option or top-level key, a bad option value, an empty or repeated grid value, a
zip group that does not fit, a config field that exists in no point's config, or two points that
are the same run. A point whose config cannot be built (a value out of its domain, a field that
only some algorithms have) gets a failed row saying why, and the other points run; so does a
point that raises while it runs, and one whose workers died too often
(``distributed.scheduler.allowed-failures``; Dask reruns the task of a lost worker elsewhere
until then).

The output folder DIR holds ``spec.json`` (the spec), ``configs/HASH.json`` (the full config of
each point, by its hash) and ``results.csv``, the table: one header line, then one line per
finished point, appended (and flushed) as points finish and never rewritten; columns
:data:`COLUMNS`. ``point_id`` is a hash of the task and the point's resolved options and fields,
the same in every sweep; ``params``, ``options``, ``metrics`` (final) and ``history`` (per
epoch) are JSON. A line is complete when it has every column, its JSON parses and its
``status`` (the last column) is ``ok`` or ``failed``; a line cut short by a crash is ignored.
With ``resume`` the points that have a complete row are skipped (``retry_failed``: only those
whose row is ``ok``); the spec must be the one in DIR. Ctrl-C stops the sweep: the finished rows
are kept, running tasks are cancelled, and :func:`run` raises ``KeyboardInterrupt``.

Results are reproducible: a point's metrics depend only on the point (every random draw comes
from the demo's seed), not on the worker, the order or the number of workers.

``dask[distributed]`` is an optional extra (``pip install "refsim[sweep]"``), imported only when
a sweep runs on Dask; ``workers=0`` runs the points one after another in this process, without
Dask.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import datetime
import hashlib
import io
import itertools
import json
import math
import os
import re
import sys
import time
import traceback
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from refsim import __version__, configs

__all__ = ["COLUMNS", "TASKS", "FieldMissing", "Point", "build_configs", "default_plot_path",
           "expand", "inference_metric", "load_results", "load_spec", "plot", "plot_data", "run",
           "run_point", "set_field"]

#: The demo jobs a sweep can run (``refsim demo --task``).
TASKS = ("train", "inference")

#: The columns of ``results.csv``, in order (``status`` last: a cut-off line is incomplete).
COLUMNS = ("point_id", "task", "params", "options", "config_hash", "seed", "metrics", "history",
           "elapsed_s", "worker", "refsim_version", "finished_at", "error", "status")
_JSON_COLUMNS = ("params", "options", "metrics", "history")
TABLE = "results.csv"
SPEC_FILE = "spec.json"
CONFIGS = "configs"
STATUSES = ("ok", "failed")

_SPEC_KEYS = ("task", "base", "grid", "zip", "description")
_SEED_MAX = 2**32 - 1


def _option_defaults(task: str) -> Dict[str, Any]:
    """The demo's defaults of every option of ``task`` (``refsim demo --help``)."""
    from refsim.cli import DEMO_DEFAULTS

    common = {"backend": "auto", "seed": 1, "epochs": DEMO_DEFAULTS["epochs"],
              "lr": DEMO_DEFAULTS["lr"], "batch_size": DEMO_DEFAULTS["batch_size"],
              "dtype": "float32", "limit": None}
    if task == "train":
        return {"algorithm": "c-ttv2", "device": "SoftBoundsReferenceDevice",
                "hidden": DEMO_DEFAULTS["hidden"], "analog_bias": False, "stock_config": False,
                **common}
    return {"hidden": 32, "repeats": 5, **common}


def _check_option(name: str, value: Any, where: str) -> Any:
    """The checked (and canonical) value of demo option ``name``; ``ValueError`` naming
    ``where`` (the SPEC key) when it is not one ``refsim demo`` takes."""

    def bad(expected: str) -> ValueError:
        return ValueError(f"{where}: expected {expected}, got {value!r}")

    def integer(lo: int, hi: Optional[int] = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < lo or \
                (hi is not None and value > hi):
            raise bad(f"an integer in [{lo}, {hi if hi is not None else 'inf'}]")
        return value

    if name == "algorithm":
        try:
            return configs.canonical_algorithm(value)
        except configs.ArgumentError:
            raise bad("an algorithm: " + ", ".join(sorted(configs.ALGORITHMS)) +
                      " or an alias") from None
    if name == "device":
        if value not in configs.PULSED_DEVICES:
            raise bad("a pulsed device: " + ", ".join(sorted(configs.PULSED_DEVICES)))
        return value
    if name == "backend":
        if value not in ("auto", "reference", "fast"):
            raise bad("'auto', 'reference' or 'fast'")
        return value
    if name == "dtype":
        if value not in ("float32", "float64"):
            raise bad("'float32' or 'float64'")
        return value
    if name == "seed":
        return integer(0, _SEED_MAX)
    if name in ("epochs", "batch_size", "hidden", "repeats"):
        return integer(1)
    if name == "limit":
        return None if value is None else integer(1)
    if name == "lr":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value) or value <= 0:
            raise bad("a positive finite number")
        return float(value)
    if name in ("analog_bias", "stock_config"):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    raise AssertionError(name)


def _is_field(key: str) -> bool:
    """A SPEC key with a dot is an RPU-config field, one without a demo option."""
    return "." in key


_SEGMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)((?:\[(?:\d+|\*)\])*)$")


def _parse_path(path: str, where: str) -> List[Tuple[str, List[str]]]:
    """``"device.unit_cell_devices[*].dw_min"`` → ``[("device", []), ("unit_cell_devices",
    ["*"]), ("dw_min", [])]``; ``ValueError`` naming ``where`` when it is malformed."""
    parts = []
    for segment in path.split("."):
        match = _SEGMENT.match(segment)
        if not match:
            raise ValueError(f"{where}: {path!r} is not a config field path (dotted names, "
                             f"list items as [0] or [*], e.g. device.unit_cell_devices[*].dw_min)")
        parts.append((match.group(1), re.findall(r"\[(\d+|\*)\]", match.group(2))))
    return parts


class FieldMissing(ValueError):
    """A config field path that does not exist in a config."""


def set_field(config: Any, path: str, value: Any) -> None:
    """Set the RPU-config field at dotted ``path`` (``[i]``: item i of a list field, ``[*]``:
    every item) to a copy of ``value``, in place; :class:`FieldMissing` when the path does not
    exist in this config. The config is not validated here.

    Examples
    --------
    >>> from refsim.configs import build_config, ConstantStepDevice
    >>> config = build_config("agad", ConstantStepDevice)
    >>> set_field(config, "device.unit_cell_devices[*].dw_min", 0.002)
    >>> [d.dw_min for d in config.device.unit_cell_devices]
    [0.002, 0.002]
    """
    _set(config, _parse_path(path, repr(path)), value, path, "")


def _set(obj: Any, parts: List[Tuple[str, List[str]]], value: Any, path: str,
         where: str) -> None:
    (name, indices), rest = parts[0], parts[1:]
    names = {f.name for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else set()
    if name not in names:
        hint = (f" (its devices are in {where}unit_cell_devices: "
                f"{where}unit_cell_devices[*].{name} sets each)"
                if "unit_cell_devices" in names else "")
        raise FieldMissing(f"{path}: {type(obj).__name__} at {where.rstrip('.') or 'the top'} "
                           f"has no field {name!r}{hint}")
    here = where + name
    if not indices:
        if rest:
            _set(getattr(obj, name), rest, value, path, here + ".")
        else:
            setattr(obj, name, copy.deepcopy(value))
        return
    for seq, i, at in _items(getattr(obj, name), indices, path, here):
        if rest:
            _set(seq[i], rest, value, path, at + ".")
        else:
            seq[i] = copy.deepcopy(value)


def _items(seq: Any, indices: List[str], path: str, at: str) -> List[Tuple[list, int, str]]:
    """The (list, index, dotted name) of each item that ``[i]``/``[*]`` indices pick."""
    if not isinstance(seq, list):
        raise FieldMissing(f"{path}: {at} is not a list")
    picks = range(len(seq)) if indices[0] == "*" else [int(indices[0])]
    found = []
    for i in picks:
        if i >= len(seq):
            raise FieldMissing(f"{path}: {at} has {len(seq)} items, no [{i}]")
        if len(indices) > 1:
            found.extend(_items(seq[i], indices[1:], path, f"{at}[{i}]"))
        else:
            found.append((seq, i, f"{at}[{i}]"))
    return found


def _canonical(value: Any) -> str:
    """Canonical JSON text (sorted keys, no spaces, strict): the input of every hash."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _digest(value: Any) -> str:
    return hashlib.sha256(_canonical(value).encode()).hexdigest()[:16]


def _key(key: Any, where: str) -> str:
    """A SPEC key, options with ``_`` for ``-`` (``batch-size`` → ``batch_size``)."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"{where}: keys must be non-empty strings, got {key!r}")
    return key if _is_field(key) else key.replace("-", "_")


def load_spec(spec: Union[Mapping[str, Any], str, os.PathLike]) -> Dict[str, Any]:
    """The checked, normalized spec ``{"task", "base", "grid", "zip", "description"}`` of a dict
    or a JSON file (see the module docstring); ``ValueError`` naming the SPEC key otherwise.
    Option keys are written with ``_``; option values are checked and made canonical (the
    algorithm's canonical name, ``lr`` a float)."""
    if isinstance(spec, (str, os.PathLike)):
        try:
            with open(spec, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as err:
            raise ValueError(f"SPEC: cannot read {os.fspath(spec)}: {err.strerror or err}") from None
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"SPEC: {os.fspath(spec)} is not JSON: {err}") from None
    if not isinstance(spec, Mapping):
        raise ValueError(f"SPEC: expected a JSON object, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(_SPEC_KEYS))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown SPEC key (expected {', '.join(_SPEC_KEYS)})")
    task = spec.get("task", "train")
    if task not in TASKS:
        raise ValueError(f"task: unknown task {task!r} (expected 'train', refsim demo, or "
                         f"'inference', refsim demo --task inference)")
    allowed = _option_defaults(task)

    def entry(section: str, key: Any, values: List[Any]) -> Tuple[str, List[Any]]:
        name = _key(key, section)
        where = f'{section}["{key}"]'
        if _is_field(name):
            _parse_path(name, where)
            return name, values
        if name not in allowed:
            job = "refsim demo" + ("" if task == "train" else " --task inference")
            raise ValueError(f"{where}: unknown option of {job} (expected one of "
                             f"{', '.join(sorted(allowed))} or a dotted config field)")
        return name, [_check_option(name, v, f"{where}" + (f"[{i}]" if section == "grid" else ""))
                      for i, v in enumerate(values)]

    base_in = spec.get("base", {})
    if not isinstance(base_in, Mapping):
        raise ValueError(f"base: expected an object of settings, got {base_in!r}")
    base: Dict[str, Any] = {}
    for key, value in base_in.items():
        name, (checked,) = entry("base", key, [value])
        if name in base:
            raise ValueError(f'base["{key}"]: given twice')
        base[name] = checked
    grid_in = spec.get("grid")
    if not isinstance(grid_in, Mapping) or not grid_in:
        raise ValueError("grid: expected a non-empty object of key -> list of values")
    grid: Dict[str, List[Any]] = {}
    for key, values in grid_in.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f'grid["{key}"]: expected a non-empty list of values, got {values!r}')
        name, checked = entry("grid", key, values)
        if name in grid:
            raise ValueError(f'grid["{key}"]: given twice')
        texts = [_canonical(v) for v in checked]
        for i, text in enumerate(texts):
            if text in texts[:i]:
                raise ValueError(f'grid["{key}"][{i}]: {values[i]!r} appears twice')
        grid[name] = checked
    zips_in = spec.get("zip", [])
    if not isinstance(zips_in, list):
        raise ValueError("zip: expected a list of lists of grid keys")
    zips: List[List[str]] = []
    seen: set = set()
    for i, group in enumerate(zips_in):
        if not isinstance(group, list) or len(group) < 2:
            raise ValueError(f"zip[{i}]: expected a list of two or more grid keys, got {group!r}")
        names = []
        for key in group:
            name = _key(key, f"zip[{i}]")
            if name not in grid:
                raise ValueError(f"zip[{i}]: {key!r} is not a grid key")
            if name in seen:
                raise ValueError(f"zip[{i}]: {key!r} is in two zip groups")
            seen.add(name)
            names.append(name)
        lengths = {len(grid[n]) for n in names}
        if len(lengths) != 1:
            raise ValueError(f"zip[{i}]: the lists of {', '.join(names)} differ in length "
                             f"({', '.join(str(len(grid[n])) for n in names)})")
        zips.append(names)
    description = spec.get("description", "")
    if not isinstance(description, str):
        raise ValueError("description: expected a string")
    return {"task": task, "base": base, "grid": grid, "zip": zips, "description": description}


@dataclasses.dataclass
class Point:
    """One run of a sweep: its grid values (``params``), every demo option (``options``, with
    the defaults filled in) and the config fields to set (``fields``, base then grid)."""

    point_id: str
    task: str
    params: Dict[str, Any]
    options: Dict[str, Any]
    fields: Dict[str, Any]


def _axes(spec: Mapping[str, Any]) -> List[List[str]]:
    """The axes of the cross product: each zip group, every other grid key alone, in the
    grid's key order (an axis sits where its first key does)."""
    axes: List[List[str]] = []
    placed: set = set()
    for key in spec["grid"]:
        if key in placed:
            continue
        group = next((g for g in spec["zip"] if key in g), [key])
        axes.append(list(group))
        placed.update(group)
    return axes


def expand(spec: Union[Mapping[str, Any], str, os.PathLike]) -> List[Point]:
    """The points of a spec, in order (the first axis varies slowest).

    Examples
    --------
    >>> points = expand({"grid": {"algorithm": ["sgd", "agad"], "seed": [1, 2]}})
    >>> [(p.params["algorithm"], p.params["seed"]) for p in points]
    [('sgd', 1), ('sgd', 2), ('agad', 1), ('agad', 2)]
    """
    spec = load_spec(spec)
    task, grid = spec["task"], spec["grid"]
    axes = _axes(spec)
    points: List[Point] = []
    ids: Dict[str, int] = {}
    for combo in itertools.product(*[range(len(grid[axis[0]])) for axis in axes]):
        params = {key: grid[key][i] for axis, i in zip(axes, combo) for key in axis}
        params = {key: params[key] for key in grid}           # the grid's key order
        settings = {**spec["base"], **params}
        options = _option_defaults(task)
        options.update({k: v for k, v in settings.items() if not _is_field(k)})
        fields = {k: v for k, v in spec["base"].items() if _is_field(k)}
        fields.update({k: v for k, v in params.items() if _is_field(k)})
        point_id = _digest({"task": task, "options": options, "fields": fields})
        if point_id in ids:
            raise ValueError(f"grid: points {ids[point_id]} and {len(points)} are the same run "
                             f"({params}; an algorithm and its alias?)")
        ids[point_id] = len(points)
        points.append(Point(point_id, task, params, options, fields))
    return points


def _base_configs(point: Point) -> Dict[str, Any]:
    """The configs the demo would use for the point, before the SPEC's fields: ``{"model":
    config}`` for ``train``, ``{variant: config}`` for ``inference``."""
    o = point.options
    if point.task == "train":
        from refsim.cli import demo_config

        config = demo_config(o["algorithm"], getattr(configs, o["device"]),
                             stock=o["stock_config"])
        config.mapping.digital_bias = not o["analog_bias"]
        return {"model": config}
    from refsim.nn import inference_demo

    return {v: inference_demo.demo_config(v.startswith("hwa"), v.endswith("compensation"))
            for v in inference_demo.VARIANTS}


def build_configs(point: Point) -> Dict[str, Any]:
    """The point's validated configs (the demo's, with the SPEC's fields set); raises
    :class:`FieldMissing` or ``ConfigError`` (both ``ValueError``) naming the field."""
    built = _base_configs(point)
    for config in built.values():
        for path, value in point.fields.items():
            set_field(config, path, value)
        config.validate()
    return built


def _check_fields_exist(spec: Mapping[str, Any], points: Sequence[Point]) -> None:
    """``ValueError`` naming the SPEC key of a config field that no point's config has (a
    typo); a field that only some points' configs have fails those points only."""
    missing = {k: "" for k in [*spec["base"], *spec["grid"]] if _is_field(k)}
    seen: set = set()
    for point in points:
        kind = _canonical({k: point.options.get(k) for k in
                           ("algorithm", "device", "stock_config", "analog_bias")})
        if not missing or kind in seen:
            continue
        seen.add(kind)
        try:
            config = next(iter(_base_configs(point).values()))
        except (ValueError, TypeError):
            continue
        for key in list(missing):
            try:
                set_field(copy.deepcopy(config), key, None)
                del missing[key]
            except FieldMissing as err:
                missing[key] = missing[key] or str(err)
    for key, reason in missing.items():
        section = "grid" if key in spec["grid"] else "base"
        raise ValueError(f'{section}["{key}"]: no point\'s config has this field ({reason})')


def _job(point: Point, built: Mapping[str, Any]) -> Dict[str, Any]:
    """What a worker needs to run a point: plain data (the configs as JSON)."""
    if point.task == "train":
        config = built["model"].to_dict()
    else:
        config = {variant: cfg.to_dict() for variant, cfg in built.items()}
    return {"point_id": point.point_id, "task": point.task, "params": point.params,
            "options": point.options, "config": config, "config_hash": _digest(config)}


def _error_text(err: BaseException) -> str:
    """One line: the exception's type and message, and where it was raised."""
    text = " ".join("".join(traceback.format_exception_only(type(err), err)).split())
    tb = traceback.extract_tb(err.__traceback__)
    if tb:
        frame = tb[-1]
        text += f" (at {os.path.basename(frame.filename)}:{frame.lineno} in {frame.name})"
    return text


def _worker_name() -> str:
    """The Dask worker's address when this runs in a Dask worker, else this process."""
    distributed = sys.modules.get("distributed")
    if distributed is not None:
        try:
            return distributed.get_worker().address
        except ValueError:
            pass
    return f"local (pid {os.getpid()})"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _row(job: Mapping[str, Any], *, status: str, metrics: Any = None, history: Any = None,
         elapsed: float = 0.0, worker: str = "", error: str = "",
         version: str = __version__) -> Dict[str, Any]:
    return {"point_id": job["point_id"], "task": job["task"], "params": job["params"],
            "options": job["options"], "config_hash": job.get("config_hash", ""),
            "seed": job["options"]["seed"], "metrics": metrics or {}, "history": history or [],
            "elapsed_s": round(elapsed, 3), "worker": worker, "refsim_version": version,
            "finished_at": _now(), "error": error, "status": status}


def _load_data(options: Mapping[str, Any]) -> Tuple[Any, Any, Any, Any]:
    import numpy as np

    from refsim.data import load_digits

    x_train, y_train, x_test, y_test = load_digits(standardize=True,
                                                   dtype=np.dtype(options["dtype"]))
    limit = options["limit"]
    if limit is not None:
        return x_train[:limit], y_train[:limit], x_test[:limit], y_test[:limit]
    return x_train, y_train, x_test, y_test


def _run_train(options: Mapping[str, Any], config: Mapping[str, Any]) -> Tuple[Dict, List]:
    """``refsim demo`` with these options and this config: the final metrics and the metrics
    of every epoch (loss, train and test accuracy), as the demo computes them."""
    import numpy as np

    from refsim import nn

    o = options
    model = nn.mlp([64, o["hidden"], 10], configs.from_dict(config), activation="relu",
                   seed=o["seed"], dtype=np.dtype(o["dtype"]), backend=o["backend"])
    x_train, y_train, x_test, y_test = _load_data(o)
    history = []
    for epoch in range(o["epochs"]):
        loss = nn.train_epoch(model, x_train, y_train, o["lr"], o["batch_size"], o["seed"],
                              epoch=epoch)
        history.append({"epoch": epoch + 1, "loss": loss,
                        "train_accuracy": nn.accuracy(model, x_train, y_train),
                        "test_accuracy": nn.accuracy(model, x_test, y_test)})
    metrics = {k: history[-1][k] for k in ("loss", "train_accuracy", "test_accuracy")}
    return metrics, history


def inference_metric(variant: str, t: Optional[float]) -> str:
    """The name of an inference metric: ``"hwa+compensation@1year"`` (mean test accuracy over
    the programmings at that time; ``..._std`` its standard deviation), ``"plain@trained"``."""
    from refsim.nn.inference_demo import time_name

    return f"{variant}@" + ("trained" if t is None else time_name(t).replace(" ", ""))


def _run_inference(options: Mapping[str, Any], config: Mapping[str, Any]) -> Tuple[Dict, List]:
    """``refsim demo --task inference`` with these options and configs: final metrics (see
    :func:`inference_metric`) and the training loss of every variant per epoch."""
    import numpy as np

    from refsim.nn import inference_demo

    o = options
    result = inference_demo.run(epochs=o["epochs"], lr=o["lr"], batch_size=o["batch_size"],
                                hidden=o["hidden"], seed=o["seed"], repeats=o["repeats"],
                                dtype=np.dtype(o["dtype"]).type, backend=o["backend"],
                                limit=o["limit"],
                                configure=lambda variant, _: configs.from_dict(config[variant]))
    metrics: Dict[str, float] = {}
    for v in inference_demo.VARIANTS:
        metrics[inference_metric(v, None)] = result["trained"][v]
        for t in result["times"]:
            values = np.asarray(result["accuracy"][v][t], dtype=np.float64)
            metrics[inference_metric(v, t)] = float(values.mean())
            metrics[inference_metric(v, t) + "_std"] = float(values.std())
    history = [{"epoch": e + 1, **{f"{v}@loss": result["loss"][v][e]
                                   for v in inference_demo.VARIANTS}}
               for e in range(o["epochs"])]
    return metrics, history


def run_point(job: Mapping[str, Any]) -> Dict[str, Any]:
    """Run one point (a job of :func:`run`) and return its row: status ``ok`` with its metrics,
    or ``failed`` with the error, never raising an ``Exception``. This is the Dask task."""
    start = time.perf_counter()
    try:
        runner = _run_train if job["task"] == "train" else _run_inference
        metrics, history = runner(job["options"], job["config"])
    except Exception as err:   # recorded in the row; the sweep goes on
        return _row(job, status="failed", elapsed=time.perf_counter() - start,
                    worker=_worker_name(), error=_error_text(err))
    return _row(job, status="ok", metrics=metrics, history=history,
                elapsed=time.perf_counter() - start, worker=_worker_name())


# ----------------------------------------------------------------------------- the table

def _encode_row(row: Mapping[str, Any]) -> str:
    """One CSV line (``\\n``-terminated, no line break inside: JSON columns are compact JSON,
    the error text one line)."""
    cells = []
    for column in COLUMNS:
        value = row[column]
        if column in _JSON_COLUMNS:
            value = json.dumps(value, allow_nan=True, separators=(",", ":"))
        text = str(value)
        cells.append(" ".join(text.splitlines()) if column not in _JSON_COLUMNS else text)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()


def _decode_line(line: str) -> Optional[Dict[str, Any]]:
    """The row of one table line, or None when the line is incomplete (see the module
    docstring)."""
    try:
        cells = next(csv.reader([line]))
    except (csv.Error, StopIteration):
        return None
    if len(cells) != len(COLUMNS):
        return None
    row: Dict[str, Any] = dict(zip(COLUMNS, cells))
    if row["status"] not in STATUSES or not row["point_id"]:
        return None
    try:
        for column in _JSON_COLUMNS:
            row[column] = json.loads(row[column])
        row["seed"] = int(row["seed"])
        row["elapsed_s"] = float(row["elapsed_s"])
    except ValueError:
        return None
    return row


_HEADER = ",".join(COLUMNS) + "\n"


def _read_table(path: str) -> List[Dict[str, Any]]:
    """The complete rows of a table file, in file order; ``ValueError`` when the file is not a
    sweep table."""
    with open(path, encoding="utf-8", newline="") as handle:
        text = handle.read()
    if not text:
        return []
    lines = text.split("\n")
    if lines[0] + "\n" != _HEADER:
        raise ValueError(f"{path}: not a refsim sweep table (its header is not "
                         f"{_HEADER.strip()!r})")
    return [row for row in map(_decode_line, lines[1:]) if row is not None]


def load_results(out: Union[str, os.PathLike], *, latest: bool = True) -> List[Dict[str, Any]]:
    """The complete rows of the sweep in folder ``out`` as dicts (JSON columns decoded), in the
    order they finished; with ``latest`` only the last row of each point (a point has more
    than one after ``retry_failed``)."""
    path = os.path.join(os.fspath(out), TABLE)
    if not os.path.isfile(path):
        raise ValueError(f"{os.fspath(out)}: no sweep table ({TABLE}) there")
    rows = _read_table(path)
    if latest:
        last = {row["point_id"]: i for i, row in enumerate(rows)}
        rows = [row for i, row in enumerate(rows) if last[row["point_id"]] == i]
    return rows


class _Table:
    """The append-only results table: one ``os.write`` per row, flushed to disk."""

    def __init__(self, path: str) -> None:
        new = not os.path.exists(path) or os.path.getsize(path) == 0
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if new:
            self._write(_HEADER)
        else:
            with open(path, "rb") as handle:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":   # a line cut short by a crash: end it there
                    self._write("\n")

    def _write(self, text: str) -> None:
        os.write(self.fd, text.encode("utf-8"))
        os.fsync(self.fd)

    def append(self, row: Mapping[str, Any]) -> None:
        self._write(_encode_row(row))

    def close(self) -> None:
        os.close(self.fd)


def _write_once(path: str, text: str) -> None:
    """Write ``path`` unless it exists (atomically: a temporary file renamed into place)."""
    if os.path.exists(path):
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _prepare_out(out: str, spec: Mapping[str, Any], resume: bool) -> None:
    """Create ``out`` and its spec file, or check that it holds this spec when resuming;
    ``ValueError`` naming the folder otherwise."""
    spec_path = os.path.join(out, SPEC_FILE)
    table = os.path.join(out, TABLE)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"out: {out} is not a directory")
    if os.path.exists(spec_path) or os.path.exists(table):
        if not resume:
            raise ValueError(f"out: {out} already holds a sweep; pass resume=True (--resume) to "
                             f"continue it, or another folder")
        if os.path.exists(spec_path):
            try:
                stored = load_spec(spec_path)
            except ValueError as err:
                raise ValueError(f"out: {spec_path} is not a readable spec ({err})") from None
            if _canonical(stored) != _canonical(spec):
                raise ValueError(f"out: {out} holds a sweep of another spec ({spec_path}); "
                                 f"resume it with that spec, or use another folder")
    os.makedirs(os.path.join(out, CONFIGS), exist_ok=True)
    _write_once(spec_path, json.dumps(spec, indent=2) + "\n")


# ----------------------------------------------------------------------------- progress

class _Progress:
    """``sweep [#####.....] 7/16 done, 1 failed, 2 running, ETA 0:41`` on stderr."""

    def __init__(self, enabled: bool, total: int, skipped: int) -> None:
        self.enabled, self.total, self.skipped = enabled, total, skipped
        self.ok = self.failed = self.running = 0
        self.start = time.perf_counter()
        self.shown = False
        self.text = ""

    def finished(self, status: str) -> None:
        if status == "ok":
            self.ok += 1
        else:
            self.failed += 1

    def draw(self) -> None:
        if not self.enabled:
            return
        done = self.skipped + self.ok + self.failed
        new = self.ok + self.failed
        left = self.total - done
        eta = "?"
        if new and left:
            seconds = (time.perf_counter() - self.start) / new * left
            eta = str(datetime.timedelta(seconds=round(seconds)))
        elif not left:
            eta = "0:00:00"
        width = 24
        filled = width * done // max(self.total, 1)
        text = (f"\rsweep [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} done, "
                f"{self.failed} failed, {self.running} running, ETA {eta}  ")
        if text != self.text or not self.shown:
            sys.stderr.write(text)
            sys.stderr.flush()
            self.text, self.shown = text, True

    def clear(self) -> None:
        if self.enabled and self.shown:
            sys.stderr.write("\r" + " " * 79 + "\r")
            sys.stderr.flush()
            self.shown = False


# ----------------------------------------------------------------------------- running

def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as err:
        raise ImportError("refsim sweep on Dask needs dask[distributed], the optional 'sweep' "
                          "extra: pip install 'refsim[sweep]' (or run with workers=0, "
                          f"--workers 0, in this process) ({err})") from None
    return distributed


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while the local cluster starts its worker processes (they inherit it), so
    that Ctrl-C in a terminal, which signals the whole process group, stops the sweep through
    the driver (which cancels the tasks and closes the cluster) instead of killing the workers
    with a traceback each."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _ignore_sigint_plugin(distributed: Any) -> Any:
    """A Dask worker plugin by which a worker process ignores SIGINT, for the workers that a
    nanny starts again after a crash (the first ones inherit it, :func:`_sigint_ignored`)."""

    class IgnoreSigint(distributed.WorkerPlugin):
        def setup(self, worker: Any) -> None:
            import signal

            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            except ValueError:   # not the process's main thread: leave it
                pass

    return IgnoreSigint()


def _run_serial(jobs: Sequence[Dict[str, Any]], finish: Callable[[Dict[str, Any]], None],
                bar: _Progress) -> None:
    for job in jobs:
        bar.running = 1
        bar.draw()
        finish(run_point(job))


def _running(client: Any, keys: set) -> int:
    """How many of the sweep's tasks run now: per worker, those it is processing, at most its
    number of threads (the rest wait in its queue). Only for the progress bar."""
    try:
        processing, nthreads = client.processing(), client.nthreads()
    except Exception:   # the count is cosmetic
        return 0
    return sum(min(sum(k in keys for k in ks), nthreads.get(w, 1))
               for w, ks in processing.items())


def _run_dask(jobs: Sequence[Dict[str, Any]], finish: Callable[[Dict[str, Any]], None],
              bar: _Progress, workers: Optional[int], scheduler: Optional[str]) -> None:
    """Submit every job to Dask (a LocalCluster of ``workers`` processes with one thread each,
    or the cluster at ``scheduler``) and hand each row to ``finish`` as it completes."""
    import logging

    distributed = _import_distributed()
    cluster = None
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as err:
            raise OSError(f"scheduler: cannot connect to {scheduler!r}: {err}") from None
    else:
        with _sigint_ignored():   # the worker processes inherit it: Ctrl-C reaches the driver only
            cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                               processes=True, host="127.0.0.1",
                                               dashboard_address=":0",
                                               silence_logs=logging.ERROR)
        client = distributed.Client(cluster)
        client.register_plugin(_ignore_sigint_plugin(distributed), name="refsim-ignore-sigint")
    futures: Dict[Any, Dict[str, Any]] = {}
    try:
        nonce = os.urandom(4).hex()
        for job in jobs:
            future = client.submit(run_point, job, key=f"refsim-point-{job['point_id']}-{nonce}",
                                   pure=False)
            futures[future] = job
        keys = {f.key for f in futures}
        pending = distributed.as_completed(list(futures))
        resubmitted: Dict[str, int] = {}
        last_poll = 0.0
        while not pending.is_empty():
            ready = pending.next_batch(block=False)
            for future in ready:
                job = futures.pop(future)
                try:
                    row = future.result()
                except (OSError, RuntimeError) as err:   # lost in transfer: run it again
                    row = _row(job, status="failed", error=_error_text(err))
                    again = _resubmit(client, job, nonce, resubmitted)
                    if again is not None:
                        futures[again] = job
                        keys.add(again.key)
                        pending.add(again)
                        future.release()
                        continue
                except Exception as err:   # KilledWorker, a task that could not run at all
                    row = _row(job, status="failed", error=_error_text(err))
                future.release()
                bar.running = max(bar.running - 1, 0)
                finish(row)
            if bar.enabled and time.perf_counter() - last_poll > 1.0:
                bar.running = _running(client, keys)
                last_poll = time.perf_counter()
            bar.draw()
            if not ready:
                time.sleep(0.05)
    finally:
        if futures:
            try:
                client.cancel(list(futures), force=True)
            except Exception:
                pass
        client.close()
        if cluster is not None:
            cluster.close()


#: How often a point whose row was lost in transfer is submitted again.
RESUBMISSIONS = 3


def _resubmit(client: Any, job: Mapping[str, Any], nonce: str,
              counts: Dict[str, int]) -> Any:
    """A new task for ``job`` when fetching its finished row failed — the worker holding it
    died: a connection error (``CommClosedError`` is an ``OSError``) while the client fetched
    it, or distributed's client losing track of the recomputed key (a ``RuntimeError`` about an
    asyncio event of another loop; both seen in the killed-worker test) — or None after
    RESUBMISSIONS. A point's own errors never come here: run_point records them in its row."""
    point = job["point_id"]
    counts[point] = counts.get(point, 0) + 1
    if counts[point] > RESUBMISSIONS:
        return None
    return client.submit(run_point, job, key=f"refsim-point-{point}-{nonce}-{counts[point]}",
                         pure=False)


def run(spec: Union[Mapping[str, Any], str, os.PathLike], out: Union[str, os.PathLike], *,
        workers: Optional[int] = None, scheduler: Optional[str] = None, resume: bool = False,
        retry_failed: bool = False, progress: Optional[bool] = None,
        report: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """Run a sweep (see the module docstring) and append each point's row to ``out``'s table.

    Parameters
    ----------
    spec : the spec, a dict or the path of a JSON file.
    out : the output folder (created when missing).
    workers : worker processes of a local Dask cluster (default: one per usable CPU); 0 runs
        the points one after another in this process, without Dask.
    scheduler : the address of an existing Dask scheduler (``tcp://host:8786``) to run on
        instead (its workers need the same refsim installed).
    resume : skip the points that have a complete row in ``out`` (it must hold this spec).
    retry_failed : with ``resume``, run the points whose row is ``failed`` again.
    progress : a progress bar on stderr (default: when stderr is a terminal).
    report : called with each new row as it is written.

    Returns
    -------
    dict: ``out``, ``table``, ``points``, ``ok``, ``failed`` (rows written now), ``skipped``
    (complete before), ``seconds``.

    Raises
    ------
    ValueError: a bad spec, naming its key, or an ``out`` that holds another sweep;
    ImportError: Dask is needed but not installed (naming the ``sweep`` extra);
    KeyboardInterrupt: Ctrl-C, after the rows of the finished points are written.

    Examples
    --------
    >>> import tempfile
    >>> from refsim import sweep
    >>> spec = {"base": {"algorithm": "sgd", "epochs": 1, "hidden": 8, "limit": 50},
    ...         "grid": {"forward.out_noise": [0.0, 0.06], "seed": [1, 2]}}
    >>> with tempfile.TemporaryDirectory() as out:
    ...     summary = sweep.run(spec, out, workers=0)
    ...     rows = sweep.load_results(out)
    >>> summary["ok"], len(rows), sorted(rows[0]["metrics"])
    (4, 4, ['loss', 'test_accuracy', 'train_accuracy'])
    """
    if workers is not None and scheduler is not None:
        raise ValueError("workers, scheduler: give one of them, not both")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or
                                workers < 0):
        raise ValueError(f"workers: expected an integer >= 0, got {workers!r}")
    if retry_failed and not resume:
        raise ValueError("retry_failed: goes with resume=True")
    start = time.perf_counter()
    spec = load_spec(spec)
    points = expand(spec)
    _check_fields_exist(spec, points)
    out = os.fspath(out)
    if workers != 0:
        _import_distributed()   # before anything is written
    _prepare_out(out, spec, resume)
    table_path = os.path.join(out, TABLE)
    done: Dict[str, str] = {}
    if resume and os.path.exists(table_path):
        for row in _read_table(table_path):
            if row["status"] == "ok" or not retry_failed:
                done[row["point_id"]] = row["status"]
            elif row["point_id"] in done and done[row["point_id"]] != "ok":
                del done[row["point_id"]]
    todo = [p for p in points if p.point_id not in done]
    table = _Table(table_path)
    bar = _Progress(sys.stderr.isatty() if progress is None else progress, len(points),
                    len(points) - len(todo))
    counts = {"ok": 0, "failed": 0}

    def finish(row: Dict[str, Any]) -> None:
        table.append(row)
        counts[row["status"]] += 1
        bar.finished(row["status"])
        if report is not None:
            bar.clear()
            report(row)
        bar.draw()

    try:
        jobs = []
        for point in todo:
            try:
                built = build_configs(point)
            except (ValueError, TypeError) as err:   # ConfigError, FieldMissing, ...
                job = {"point_id": point.point_id, "task": point.task, "params": point.params,
                       "options": point.options}
                finish(_row(job, status="failed", error=f"invalid config: {err}"))
                continue
            job = _job(point, built)
            _write_once(os.path.join(out, CONFIGS, job["config_hash"] + ".json"),
                        json.dumps(job["config"], indent=1, sort_keys=True) + "\n")
            jobs.append(job)
        bar.draw()
        if jobs and workers == 0:
            _run_serial(jobs, finish, bar)
        elif jobs:
            _run_dask(jobs, finish, bar, workers if workers is not None else
                      (None if scheduler else _usable_cpus()), scheduler)
    finally:
        bar.clear()
        table.close()
    return {"out": out, "table": table_path, "points": len(points), "ok": counts["ok"],
            "failed": counts["failed"], "skipped": len(points) - len(todo),
            "seconds": round(time.perf_counter() - start, 3)}


# ----------------------------------------------------------------------------- plots

def _label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def plot_data(rows: Sequence[Mapping[str, Any]], spec: Mapping[str, Any], metric: str,
              param: str, average: Sequence[str] = ("seed",)
              ) -> Tuple[List[Any], Dict[str, Dict[str, List[float]]]]:
    """The data of :func:`plot`: the x values (the grid's list of ``param``) and, per line (a
    combination of the other grid keys except those in ``average`` and those zipped with
    ``param``), the metric's values at each x (several when averaged)."""
    grid = spec["grid"]
    param = _key(param, "PARAM")
    if param not in grid:
        raise ValueError(f"PARAM: {param!r} is not a grid key (grid: {', '.join(grid)})")
    ok = [row for row in rows if row["status"] == "ok"]
    if not ok:
        raise ValueError("METRIC: the sweep has no finished point yet")
    names = sorted({name for row in ok for name in row["metrics"]})
    if metric not in names:
        raise ValueError(f"METRIC: {metric!r} is not a metric of this sweep (metrics: "
                         f"{', '.join(names)})")
    tied = next((g for g in spec["zip"] if param in g), [param])
    average = [_key(a, "average") for a in average]
    others = [k for k in grid if k not in tied and k not in average]
    xs = list(grid[param])
    lines: Dict[str, Dict[str, List[float]]] = {}
    for row in ok:
        name = ", ".join(f"{k}={_label(row['params'][k])}" for k in others) or metric
        x = _canonical(row["params"][param])
        lines.setdefault(name, {}).setdefault(x, []).append(float(row["metrics"][metric]))
    return xs, lines


def default_plot_path(out: Union[str, os.PathLike], metric: str, param: str) -> str:
    """``out/METRIC-vs-PARAM.png``, with characters other than letters, digits and ``_.@+-``
    made ``_``."""
    return os.path.join(os.fspath(out),
                        re.sub(r"[^A-Za-z0-9_.@+-]+", "_", f"{metric}-vs-{param}") + ".png")


def plot(out: Union[str, os.PathLike], metric: str, param: str,
         path: Optional[Union[str, os.PathLike]] = None, *,
         average: Sequence[str] = ("seed",)) -> str:
    """Draw ``metric`` (a final metric, e.g. ``test_accuracy``) against the grid key ``param``,
    one line per combination of the other grid values (mean ± std over the keys in
    ``average``, by default the seeds), as a PNG (or any format matplotlib writes, by the
    suffix); returns its path (default ``out/METRIC-vs-PARAM.png``). Needs matplotlib, the
    optional ``plot`` extra."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out = os.fspath(out)
    spec = load_spec(os.path.join(out, SPEC_FILE))
    xs, lines = plot_data(load_results(out), spec, metric, param, average)
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    positions = [float(x) for x in xs] if numeric else list(range(len(xs)))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, per_x in lines.items():
        px, mean, std = [], [], []
        for pos, x in zip(positions, xs):
            values = per_x.get(_canonical(x))
            if values:
                px.append(pos)
                mean.append(float(np.mean(values)))
                std.append(float(np.std(values)))
        ax.errorbar(px, mean, yerr=std if any(std) else None, marker="o", capsize=3, label=name)
    if numeric and min(positions) > 0 and max(positions) / min(positions) >= 100:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(positions)
        ax.set_xticklabels([_label(x) for x in xs])
    ax.set_xlabel(param)
    averaged = [a for a in average if a in spec["grid"] and a != param]
    ax.set_ylabel(metric + (f" (mean ± std over {', '.join(averaged)})" if averaged else ""))
    ax.set_title(f"refsim sweep: {metric} against {param}", fontsize=10)
    ax.grid(True, alpha=0.3)
    if len(lines) > 1 or next(iter(lines)) != metric:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.fspath(path) if path is not None else default_plot_path(out, metric, param)
    fig.savefig(path, dpi=100, format=os.path.splitext(path)[1][1:].lower() or "png")
    plt.close(fig)
    return path


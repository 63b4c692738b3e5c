"""Checkpoint files: save an :class:`~refsim.tile.AnalogTile` or a :mod:`refsim.nn` model to one
``.npz`` file and load it back, in this process or a fresh one, on any array namespace.

A loaded object continues exactly as the saved one would have: the same forward outputs (noise
included), the same updates, the same random draws (its state is its ``state_dict()``: weights,
seeds and call counters, noise-management, drift, write-noise, pulse-counter and compound state;
the device-to-device and periphery variation are redrawn from the saved seeds).

File format (version 1): a numpy ``.npz`` archive (written by ``numpy.savez``, read with
``allow_pickle=False``) with

* ``__refsim_checkpoint__`` -- a 0-d unicode array holding one JSON object, the *header*:

  - ``format``: ``"refsim-checkpoint"``; ``version``: ``1``; ``refsim_version``;
  - ``kind``: ``"AnalogTile"``, ``"nn.AnalogLinear"``, ``"nn.AnalogSequential"``, ``"nn.ReLU"``,
    ``"nn.Sigmoid"`` or ``"nn.Tanh"``;
  - ``object``: what rebuilds the object: the constructor arguments (sizes, seed, dtype name,
    ``rpu_config`` as the text of ``config.to_json()``; for a sequential model the list of its
    modules, each ``{"kind", "object"}``);
  - ``saved_from``: the namespace, device and backend the object had (information only: the
    loader chooses its own);
  - ``state``: the object's ``state_dict()`` (tile states without their ``rpu_config``, which is
    in ``object``) with every array replaced by ``{"$array": KEY}``; tuples are written as
    ``{"$tuple": [...]}``, dataclasses of refsim (e.g. the drift state) as
    ``{"$dataclass": "module.Class", "fields": {...}}``, numpy scalars as
    ``{"$scalar": DTYPE, "value": ...}``, dicts whose keys are not plain strings (or start with
    ``$``) as ``{"$dict": [[key, value], ...]}``;
  - ``arrays``: ``{KEY: {"shape": [...], "dtype": NAME}}`` for every array member;

* ``arrays/KEY`` -- one member per array of the state, converted to numpy (float dtypes kept),
  ``KEY`` the ``/``-joined path of the array in the state (e.g. ``weights``,
  ``compound/devices/0``, ``drift/w0``, ``modules/0/tiles/0/0/weights``).

:func:`save` and :func:`load` are the whole interface; ``AnalogTile.save`` / ``AnalogTile.load``
and ``save`` / ``load`` of the :mod:`refsim.nn` modules call them. A file that is not a readable
checkpoint of this version, or whose arrays do not fit its header or its object, raises a
``ValueError`` naming the file and the offending key; an object that cannot be saved raises a
``TypeError``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import types
import zipfile
import zlib
from typing import Any, Dict, Tuple

import array_api_compat
import numpy as np

FORMAT = "refsim-checkpoint"
VERSION = 1
HEADER_KEY = "__refsim_checkpoint__"
ARRAY_PREFIX = "arrays/"

#: The dtypes an array of a checkpoint may have.
_DTYPES = ("float32", "float64", "int64", "int32", "uint32", "bool")

__all__ = ["FORMAT", "VERSION", "load", "save"]


# -- modules in pickled state (AnalogTile.__getstate__, refsim.nn) ------------------------------


class ModuleRef:
    """A module replaced by its name in pickled state (modules cannot be pickled)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __reduce__(self) -> Tuple[Any, ...]:
        return (ModuleRef, (self.name,))

    def __repr__(self) -> str:
        return f"ModuleRef({self.name!r})"


def strip_modules(attributes: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of an object's ``__dict__`` with every module value replaced by a
    :class:`ModuleRef` (for ``__getstate__``)."""
    return {k: ModuleRef(v.__name__) if isinstance(v, types.ModuleType) else v
            for k, v in attributes.items()}


def restore_modules(state: Dict[str, Any]) -> Dict[str, Any]:
    """The inverse of :func:`strip_modules` (for ``__setstate__``): each :class:`ModuleRef`
    imported again."""
    return {k: importlib.import_module(v.name) if isinstance(v, ModuleRef) else v
            for k, v in state.items()}


# -- arrays ---------------------------------------------------------------------------------------


def _namespace_name(xp: Any) -> str:
    """``numpy``, ``torch``, ``cupy``, ``array_api_strict``, … for an array namespace."""
    name = xp.__name__
    return name[len("array_api_compat."):] if name.startswith("array_api_compat.") else name


def _dtype_name(xp: Any, dtype: Any) -> str:
    if dtype == xp.float32:
        return "float32"
    if dtype == xp.float64:
        return "float64"
    raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}")


def _is_array(obj: Any) -> bool:
    return not isinstance(obj, np.generic) and array_api_compat.is_array_api_obj(obj)


def to_numpy(a: Any) -> np.ndarray:
    """A numpy copy of an array of any supported namespace and device (dtype kept)."""
    if isinstance(a, np.ndarray):
        out = np.array(a, copy=True)
    elif array_api_compat.is_torch_array(a):
        out = a.detach().cpu().numpy().copy()
    elif array_api_compat.is_cupy_array(a):
        out = a.get()
    else:
        try:
            out = np.from_dlpack(a).copy()
        except (TypeError, RuntimeError, BufferError, AttributeError):
            out = np.array(a, copy=True)
    return out


def _to_namespace(a: np.ndarray, xp: Any, device: Any) -> Any:
    """``a`` (a numpy array read from a file) as an array of ``xp`` on ``device``."""
    if xp.__name__.endswith("numpy") and device in (None, "cpu"):
        return a
    kwargs = {} if device is None else {"device": device}
    return xp.asarray(a, copy=True, **kwargs)


# -- flatten / unflatten of states ----------------------------------------------------------------


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _refsim_dataclass(path: str, where: str) -> type:
    """The refsim dataclass named ``path`` (only refsim's own, only dataclasses)."""
    module, _, name = path.rpartition(".")
    if not (module == "refsim" or module.startswith("refsim.")):
        raise ValueError(f"{where}: {path!r} is not a refsim class")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise ValueError(f"{where}: unknown class {path!r}") from None
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise ValueError(f"{where}: {path!r} is not a dataclass")
    return cls


def flatten(tree: Any) -> Tuple[Any, Dict[str, np.ndarray]]:
    """Split a state (nested dicts, lists, tuples and refsim dataclasses of arrays, numpy
    scalars and JSON scalars) into a JSON-compatible tree with ``{"$array": KEY}`` in place of
    each array, and the arrays (as numpy) by KEY. TypeError naming the path for anything else."""
    arrays: Dict[str, np.ndarray] = {}

    def key_of(path: Tuple[str, ...]) -> str:
        key = "/".join(path) or "root"
        base, n = key, 1
        while key in arrays:
            key, n = f"{base}#{n}", n + 1
        return key

    def walk(obj: Any, path: Tuple[str, ...]) -> Any:
        where = "/".join(path) or "<root>"
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, np.generic):
            name = obj.dtype.name
            if name not in _DTYPES:
                raise TypeError(f"{where}: cannot save a numpy scalar of dtype {name}")
            return {"$scalar": name, "value": obj.item()}
        if isinstance(obj, int):
            return int(obj)
        if isinstance(obj, float):
            return float(obj)
        if _is_array(obj):
            a = to_numpy(obj)
            if a.dtype.name not in _DTYPES:
                raise TypeError(f"{where}: cannot save an array of dtype {a.dtype}")
            key = key_of(path)
            arrays[key] = a
            return {"$array": key}
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            cls = type(obj)
            if not cls.__module__.startswith("refsim"):
                raise TypeError(f"{where}: cannot save a {cls.__name__} (only refsim's "
                                f"dataclasses)")
            return {"$dataclass": _class_path(cls),
                    "fields": {f.name: walk(getattr(obj, f.name), path + (f.name,))
                               for f in dataclasses.fields(obj)}}
        if isinstance(obj, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in obj):
                return {k: walk(v, path + (k,)) for k, v in obj.items()}
            return {"$dict": [[walk(k, path + ("<key>",)), walk(v, path + (str(k),))]
                              for k, v in obj.items()]}
        if type(obj) is list:
            return [walk(v, path + (str(i),)) for i, v in enumerate(obj)]
        if type(obj) is tuple:
            return {"$tuple": [walk(v, path + (str(i),)) for i, v in enumerate(obj)]}
        raise TypeError(f"{where}: cannot save a {type(obj).__name__} (arrays, numbers, "
                        f"strings, None, lists, tuples, dicts and refsim dataclasses only)")

    return walk(tree, ()), arrays


def unflatten(tree: Any, arrays: Dict[str, Any], where: str = "state") -> Any:
    """The inverse of :func:`flatten`: ``{"$array": KEY}`` replaced by ``arrays[KEY]``.
    ValueError naming the key for a malformed tree."""
    if isinstance(tree, list):
        return [unflatten(v, arrays, f"{where}[{i}]") for i, v in enumerate(tree)]
    if not isinstance(tree, dict):
        if tree is None or isinstance(tree, (bool, int, float, str)):
            return tree
        raise ValueError(f"{where}: unexpected {type(tree).__name__}")
    if "$array" in tree:
        key = tree["$array"]
        if not isinstance(key, str) or key not in arrays:
            raise ValueError(f"{where}: array {key!r} is missing")
        return arrays[key]
    if "$scalar" in tree:
        name = tree["$scalar"]
        if name not in _DTYPES:
            raise ValueError(f"{where}: bad scalar dtype {name!r}")
        return np.dtype(name).type(tree.get("value"))
    if "$tuple" in tree:
        items = tree["$tuple"]
        if not isinstance(items, list):
            raise ValueError(f"{where}: '$tuple' must hold a list")
        return tuple(unflatten(v, arrays, f"{where}[{i}]") for i, v in enumerate(items))
    if "$dataclass" in tree:
        cls = _refsim_dataclass(str(tree["$dataclass"]), where)
        fields = tree.get("fields")
        if not isinstance(fields, dict):
            raise ValueError(f"{where}: '$dataclass' without 'fields'")
        values = {k: unflatten(v, arrays, f"{where}.{k}") for k, v in fields.items()}
        try:
            return cls(**values)
        except TypeError as err:
            raise ValueError(f"{where}: {err}") from None
    if "$dict" in tree:
        items = tree["$dict"]
        if not isinstance(items, list) or not all(isinstance(p, list) and len(p) == 2
                                                  for p in items):
            raise ValueError(f"{where}: '$dict' must hold [key, value] pairs")
        return {unflatten(k, arrays, f"{where}<key>"): unflatten(v, arrays, f"{where}[{k!r}]")
                for k, v in items}
    return {k: unflatten(v, arrays, f"{where}[{k!r}]") for k, v in tree.items()}


# -- the objects ----------------------------------------------------------------------------------


def _nn() -> Any:
    from refsim import nn

    return nn


def _tile_class() -> Any:
    from refsim.tile import AnalogTile

    return AnalogTile


_ACTIVATIONS = ("ReLU", "Sigmoid", "Tanh")


def _kind(obj: Any) -> str:
    if type(obj) is _tile_class():
        return "AnalogTile"
    nn = _nn()
    for name in ("AnalogLinear", "AnalogSequential") + _ACTIVATIONS:
        if type(obj) is getattr(nn, name):
            return f"nn.{name}"
    raise TypeError(f"obj: cannot save a {type(obj).__name__} (an AnalogTile or a refsim.nn "
                    f"AnalogLinear, AnalogSequential, ReLU, Sigmoid or Tanh)")


def _describe(obj: Any) -> Dict[str, Any]:
    """``{"kind", "object"}``: what rebuilds ``obj`` (constructor arguments)."""
    kind = _kind(obj)
    if kind == "AnalogTile":
        desc = {"out_size": obj.out_size, "in_size": obj.in_size, "seed": obj.streams.seed,
                "dtype": _dtype_name(obj.xp, obj.dtype), "rpu_config": obj.rpu_config.to_json()}
    elif kind == "nn.AnalogLinear":
        desc = {"in_features": obj.in_features, "out_features": obj.out_features,
                "bias": obj.has_bias, "seed": obj.seed, "dtype": _dtype_name(obj.xp, obj.dtype),
                "rpu_config": obj.rpu_config.to_json()}
    elif kind == "nn.AnalogSequential":
        desc = {"modules": [_describe(m) for m in obj.modules]}
    else:
        desc = {}
    return {"kind": kind, "object": desc}


def _saved_from(obj: Any) -> Dict[str, Any]:
    tiles = list(_tiles(obj))
    if not tiles:
        return {}
    tile = tiles[0]
    device = tile.device
    return {"namespace": _namespace_name(tile.xp), "device": None if device is None
            else str(device), "backend": tile.backend}


def _tiles(obj: Any) -> Any:
    kind = _kind(obj)
    if kind == "AnalogTile":
        yield obj
    elif kind == "nn.AnalogLinear":
        for row in obj.tiles:
            yield from row
    elif kind == "nn.AnalogSequential":
        for m in obj.modules:
            yield from _tiles(m)


def _state_out(obj: Any) -> Dict[str, Any]:
    """``obj.state_dict()`` without the tiles' rpu_config (the header's ``object`` has it)."""
    kind = _kind(obj)
    if kind == "AnalogTile":
        return {k: v for k, v in obj.state_dict().items() if k != "rpu_config"}
    if kind == "nn.AnalogLinear":
        state = obj.state_dict()
        state["tiles"] = [[{k: v for k, v in s.items() if k != "rpu_config"} for s in row]
                          for row in state["tiles"]]
        return state
    if kind == "nn.AnalogSequential":
        return {"type": "AnalogSequential", "modules": [_state_out(m) for m in obj.modules]}
    return obj.state_dict()


def _state_in(obj: Any, state: Any, where: str) -> None:
    """Load a state written by :func:`_state_out` into ``obj`` (built by :func:`_build`)."""
    kind = _kind(obj)
    if not isinstance(state, dict):
        raise ValueError(f"{where}: expected a dict")
    if kind == "AnalogTile":
        if (state.get("compound") is None) != (obj.compound is None):
            raise ValueError(f"{where}['compound']: expected a compound state exactly when the "
                             f"rpu_config has a compound device")
        obj.load_state_dict({**state, "rpu_config": obj.rpu_config.to_dict()})
    elif kind == "nn.AnalogLinear":
        tiles = state.get("tiles")
        if not isinstance(tiles, list) or [len(r) if isinstance(r, list) else -1
                                           for r in tiles] != [len(r) for r in obj.tiles]:
            raise ValueError(f"{where}['tiles']: not the tile layout of this layer")
        for row, row_states in zip(obj.tiles, tiles):
            for tile, s in zip(row, row_states):
                if not isinstance(s, dict):
                    raise ValueError(f"{where}['tiles']: expected tile state dicts")
                s["rpu_config"] = tile.rpu_config.to_dict()
        obj.load_state_dict(state)
    elif kind == "nn.AnalogSequential":
        states = state.get("modules")
        if not isinstance(states, list) or len(states) != len(obj.modules):
            raise ValueError(f"{where}['modules']: expected {len(obj.modules)} module states")
        obj._check_state_type(state)
        for k, (m, s) in enumerate(zip(obj.modules, states)):
            _state_in(m, s, f"{where}['modules'][{k}]")
    else:
        obj.load_state_dict(state)


def _config(text: Any, where: str) -> Any:
    from refsim.configs import from_json

    if not isinstance(text, str):
        raise ValueError(f"{where}: expected the config's JSON text")
    return from_json(text)


def _field(desc: Any, name: str, where: str) -> Any:
    if not isinstance(desc, dict) or name not in desc:
        raise ValueError(f"{where}: key {name!r} is missing")
    return desc[name]


def _build(desc: Any, xp: Any, device: Any, backend: str, where: str) -> Any:
    """The object a ``{"kind", "object"}`` description describes, freshly constructed."""
    kind = _field(desc, "kind", where)
    args = _field(desc, "object", where)
    if not isinstance(args, dict):
        raise ValueError(f"{where}['object']: expected a dict")
    w = f"{where}['object']"

    def dtype() -> Any:
        name = _field(args, "dtype", w)
        if name not in ("float32", "float64"):
            raise ValueError(f"{w}['dtype']: expected 'float32' or 'float64', got {name!r}")
        return getattr(xp, name)

    if kind == "AnalogTile":
        return _tile_class()(_field(args, "out_size", w), _field(args, "in_size", w),
                             _config(_field(args, "rpu_config", w), f"{w}['rpu_config']"),
                             seed=_field(args, "seed", w), dtype=dtype(), xp=xp,
                             device=device, backend=backend)
    nn = _nn()
    if kind == "nn.AnalogLinear":
        return nn.AnalogLinear(_field(args, "in_features", w), _field(args, "out_features", w),
                               _config(_field(args, "rpu_config", w), f"{w}['rpu_config']"),
                               bias=_field(args, "bias", w), seed=_field(args, "seed", w),
                               dtype=dtype(), xp=xp, device=device, backend=backend)
    if kind == "nn.AnalogSequential":
        modules = _field(args, "modules", w)
        if not isinstance(modules, list):
            raise ValueError(f"{w}['modules']: expected a list")
        return nn.AnalogSequential(*[_build(m, xp, device, backend, f"{w}['modules'][{k}]")
                                     for k, m in enumerate(modules)])
    if isinstance(kind, str) and kind.startswith("nn.") and kind[3:] in _ACTIVATIONS:
        return getattr(nn, kind[3:])()
    raise ValueError(f"{where}['kind']: unknown object kind {kind!r}")


# -- files ----------------------------------------------------------------------------------------


def _name(path: Any) -> str:
    if isinstance(path, (str, os.PathLike)):
        return os.fspath(path)
    return str(getattr(path, "name", "<file object>"))


def save(obj: Any, path: Any) -> None:
    """Save an :class:`~refsim.tile.AnalogTile` or a :mod:`refsim.nn` model to ``path``.

    Parameters
    ----------
    obj : AnalogTile, refsim.nn.AnalogLinear, refsim.nn.AnalogSequential, ReLU, Sigmoid or Tanh
        The object (its constructor arguments, config and ``state_dict()``).
    path : str, os.PathLike or binary file object
        The file, written exactly there (no suffix is added; ``.npz`` is the convention) and
        atomically (a temporary file in the same folder, then renamed).

    Raises
    ------
    TypeError
        ``obj`` is not one of the supported classes, or its state holds something that is not
        an array, number, string, list, tuple, dict or refsim dataclass.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from refsim import checkpoint
    >>> from refsim.configs import InferenceRPUConfig
    >>> from refsim.tile import AnalogTile
    >>> tile = AnalogTile(3, 4, InferenceRPUConfig(), seed=1)
    >>> path = os.path.join(tempfile.mkdtemp(), "tile.npz")
    >>> checkpoint.save(tile, path)
    >>> same = checkpoint.load(path)
    >>> bool(np.all(same.forward(np.ones(4)) == tile.forward(np.ones(4))))
    True
    """
    from refsim import __version__

    description = _describe(obj)
    tree, arrays = flatten(_state_out(obj))
    header = {"format": FORMAT, "version": VERSION, "refsim_version": __version__,
              **description, "saved_from": _saved_from(obj), "state": tree,
              "arrays": {k: {"shape": list(a.shape), "dtype": a.dtype.name}
                         for k, a in arrays.items()}}
    members = {HEADER_KEY: np.array(json.dumps(header))}
    members.update({ARRAY_PREFIX + k: a for k, a in arrays.items()})
    if not isinstance(path, (str, os.PathLike)):
        np.savez(path, **members)
        return
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)),
                       f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **members)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)


def _read(path: Any) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """The header and the arrays (numpy) of a checkpoint file, checked against each other."""
    name = _name(path)
    if isinstance(path, (str, os.PathLike)) and not os.path.exists(path):
        raise FileNotFoundError(f"{name}: no such file")
    try:
        archive = np.load(path, allow_pickle=False)
    except _READ_ERRORS as err:
        raise ValueError(f"{name}: not a refsim checkpoint (not a readable .npz file: "
                         f"{err})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{name}: not a refsim checkpoint (a .npy file, not an .npz archive)")
    with archive:
        files = set(archive.files)
        if HEADER_KEY not in files:
            raise ValueError(f"{name}: not a refsim checkpoint (key {HEADER_KEY!r} is missing)")
        try:
            header = json.loads(str(archive[HEADER_KEY][()]))
        except (*_READ_ERRORS, TypeError) as err:
            raise ValueError(f"{name}: key {HEADER_KEY!r}: unreadable header ({err})") from None
        if not isinstance(header, dict):
            raise ValueError(f"{name}: key {HEADER_KEY!r}: the header is not a JSON object")
        if header.get("format") != FORMAT:
            raise ValueError(f"{name}: header key 'format': expected {FORMAT!r}, got "
                             f"{header.get('format')!r}")
        if header.get("version") != VERSION:
            raise ValueError(f"{name}: header key 'version': unsupported checkpoint version "
                             f"{header.get('version')!r} (this refsim reads version {VERSION})")
        for key in ("kind", "object", "state", "arrays"):
            if key not in header:
                raise ValueError(f"{name}: header key {key!r} is missing")
        manifest = header["arrays"]
        if not isinstance(manifest, dict):
            raise ValueError(f"{name}: header key 'arrays': expected a dict")
        arrays = {}
        for key, meta in manifest.items():
            member = ARRAY_PREFIX + key
            if member not in files:
                raise ValueError(f"{name}: key {member!r} is missing")
            try:
                a = archive[member]
            except _READ_ERRORS as err:
                raise ValueError(f"{name}: key {member!r}: unreadable ({err})") from None
            ok = isinstance(meta, dict) and list(a.shape) == meta.get("shape") and \
                a.dtype.name == meta.get("dtype") and a.dtype.name in _DTYPES
            if not ok:
                raise ValueError(f"{name}: key {member!r}: shape {list(a.shape)}, dtype "
                                 f"{a.dtype.name}, but the header says {meta!r}")
            arrays[key] = a
        extra = sorted(files - {HEADER_KEY} - {ARRAY_PREFIX + k for k in manifest})
        if extra:
            raise ValueError(f"{name}: key {extra[0]!r} is not in the header")
    return header, arrays


def load(path: Any, *, xp: Any = None, device: Any = None, backend: str = "auto") -> Any:
    """Load an object saved by :func:`save` (in this or any other process).

    Parameters
    ----------
    path : str, os.PathLike or binary file object
        The checkpoint file.
    xp : module, optional
        The array namespace of the loaded object (numpy by default, whatever the saved one was;
        ``torch``, ``array_api_strict``, ``cupy``, ...).
    device : optional
        The device of its arrays (the namespace's default when None).
    backend : {"auto", "reference", "fast"}
        The backend of its tiles (the saved one is recorded in the header, not reapplied).

    Returns
    -------
    AnalogTile or refsim.nn module
        A fresh object of the saved kind that continues exactly as the saved one would have.

    Raises
    ------
    FileNotFoundError
        There is no such file.
    ValueError
        The file is not a readable refsim checkpoint of this version, or its header, arrays and
        object do not fit together (missing key, wrong shape or dtype, another config); the
        message names the file and the key.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from refsim import checkpoint, nn
    >>> from refsim.configs import FloatingPointRPUConfig
    >>> model = nn.mlp([4, 3, 2], FloatingPointRPUConfig(), seed=1)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
    >>> checkpoint.save(model, path)
    >>> same = checkpoint.load(path)
    >>> bool(np.all(same.forward(np.ones(4)) == model.forward(np.ones(4))))
    True
    """
    from refsim import rng
    from refsim.tile import BACKENDS

    xp = rng._namespace(xp)
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    name = _name(path)
    header, arrays = _read(path)
    try:
        obj = _build({"kind": header["kind"], "object": header["object"]}, xp, device, backend,
                     "header")
        state = unflatten(header["state"], {k: _to_namespace(a, xp, device)
                                            for k, a in arrays.items()})
        _state_in(obj, state, "state")
    except KeyError as err:
        raise ValueError(f"{name}: state key {err} is missing") from err
    except (ValueError, TypeError, AttributeError, IndexError) as err:
        raise ValueError(f"{name}: {err}") from err
    return obj

"""The config machinery: field domains, validation and (de)serialization (spec/README.md).

Every config class is a dataclass whose fields are declared with one of the helpers below
(:func:`real`, :func:`integer`, :func:`flag`, :func:`choice`, :func:`reals`, :func:`nested`,
:func:`nested_list`). Each helper attaches a :class:`Domain` that knows how to check and normalise a
value and how to describe itself; the same description appears in the spec tables, and a test keeps
the two equal.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import numbers
from enum import Enum
from typing import Any, Callable, ClassVar, Dict, Iterator, Optional, Tuple, Type

from .errors import ConfigError

#: Version of the dict/JSON layout written by :meth:`ConfigBase.to_dict`.
SCHEMA_VERSION = 1

CLASS_KEY = "__class__"

#: Integer fields hold int64 values (spec/README.md): larger Python ints are rejected.
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

#: Deepest nesting of configs accepted by :func:`from_dict` (real configs nest at most ~4 deep).
MAX_DEPTH = 32
SCHEMA_KEY = "__schema__"

_REGISTRY: Dict[str, Type["ConfigBase"]] = {}


@dataclasses.dataclass(frozen=True)
class Domain:
    """The set of valid values of one config field.

    ``kind`` is one of ``real``, ``int``, ``bool``, ``enum``, ``reals`` (a list of reals),
    ``config`` (a nested config) and ``configs`` (a list of nested configs).
    """

    kind: str
    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False
    optional: bool = False
    enum: Optional[Type[Enum]] = None
    classes: Tuple[str, ...] = ()
    nonempty: bool = False

    # -- description --------------------------------------------------------------------------
    def describe(self) -> str:
        """One-line description, used verbatim in the spec tables."""
        if self.kind in ("real", "int", "reals"):
            base = {"real": "real", "int": "integer", "reals": "list of reals"}[self.kind]
            parts = []
            if self.lo is not None:
                parts.append(("> " if self.lo_open else ">= ") + _num(self.lo))
            if self.hi is not None:
                parts.append(("< " if self.hi_open else "<= ") + _num(self.hi))
            text = base + (" " + ", ".join(parts) if parts else "")
            if self.kind == "reals" and self.nonempty:
                text += ", non-empty"
        elif self.kind == "bool":
            text = "bool"
        elif self.kind == "enum":
            assert self.enum is not None
            text = "one of " + ", ".join(repr(m.value) for m in self.enum)
        elif self.kind == "config":
            text = " or ".join(self.classes)
        elif self.kind == "configs":
            text = "list of " + " or ".join(self.classes)
        else:  # pragma: no cover - programming error
            raise AssertionError(self.kind)
        if self.optional:
            text += ", or None"
        return text

    # -- checking -----------------------------------------------------------------------------
    def check(self, value: Any, path: str) -> Any:
        """Return the normalised value, or raise :class:`ConfigError` naming ``path``."""
        if value is None:
            if self.optional:
                return None
            raise ConfigError(f"{path}: None is not allowed (expected {self.describe()})")
        kind = self.kind
        if kind == "bool":
            if isinstance(value, bool) or _is_numpy_bool(value):
                return bool(value)
            raise ConfigError(f"{path}: expected a bool, got {_show(value)}")
        if kind == "real":
            return self._check_real(value, path)
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ConfigError(f"{path}: expected an integer, got {_show(value)}")
            value = int(value)
            if not INT64_MIN <= value <= INT64_MAX:
                raise ConfigError(f"{path}: {_show(value)} is beyond the int64 range")
            self._check_range(value, path)
            return value
        if kind == "reals":
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise ConfigError(f"{path}: expected a list of reals, got {_show(value)}")
            out = [self._check_real(v, f"{path}[{i}]") for i, v in enumerate(value)]
            if self.nonempty and not out:
                raise ConfigError(f"{path}: must not be empty")
            return out
        if kind == "enum":
            assert self.enum is not None
            if isinstance(value, self.enum):
                return value
            if isinstance(value, str):
                for member in self.enum:
                    if member.value == value:
                        return member
            raise ConfigError(
                f"{path}: {_show(value)} is not a valid {self.enum.__name__} "
                f"(expected {self.describe()})"
            )
        if kind == "config":
            return self._check_config(value, path)
        if kind == "configs":
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{path}: expected a list of configs, got {_show(value)}")
            return [self._check_config(v, f"{path}[{i}]") for i, v in enumerate(value)]
        raise AssertionError(kind)  # pragma: no cover

    def _check_real(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"{path}: expected a real number, got {_show(value)}")
        try:
            value = float(value)
        except OverflowError:  # a Python int beyond the float64 range
            raise ConfigError(f"{path}: {_show(value)} is beyond the float64 range") from None
        if not math.isfinite(value):
            raise ConfigError(f"{path}: must be finite, got {value!r}")
        self._check_range(value, path)
        return value

    def _check_range(self, value: float, path: str) -> None:
        bad = False
        if self.lo is not None:
            bad |= value <= self.lo if self.lo_open else value < self.lo
        if self.hi is not None:
            bad |= value >= self.hi if self.hi_open else value > self.hi
        if bad:
            raise ConfigError(f"{path}: {value!r} is out of range (expected {self.describe()})")

    def _check_config(self, value: Any, path: str) -> "ConfigBase":
        allowed = tuple(_REGISTRY[name] for name in self.classes)
        if not isinstance(value, allowed):
            raise ConfigError(f"{path}: expected {' or '.join(self.classes)}, got {_show(value)}")
        return value


def _num(x: float) -> str:
    return repr(int(x)) if float(x).is_integer() else repr(float(x))


def _is_numpy_bool(value: Any) -> bool:
    return type(value).__name__ == "bool_" and type(value).__module__ == "numpy"


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


# -- field helpers --------------------------------------------------------------------------------


def _field(default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING,
           init: bool = True, **domain: Any) -> Any:
    meta = {"domain": Domain(**domain)}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta, init=init)
    return dataclasses.field(default=default, metadata=meta, init=init)


def real(default: Optional[float], *, ge: Optional[float] = None, gt: Optional[float] = None,
         le: Optional[float] = None, lt: Optional[float] = None, optional: bool = False) -> Any:
    """A real-valued field; ``ge``/``gt``/``le``/``lt`` bound its domain."""
    return _field(default, kind="real", lo=gt if gt is not None else ge, lo_open=gt is not None,
                  hi=lt if lt is not None else le, hi_open=lt is not None, optional=optional)


def integer(default: int, *, ge: Optional[int] = None, le: Optional[int] = None) -> Any:
    """An integer field."""
    return _field(default, kind="int", lo=ge, hi=le)


def flag(default: bool) -> Any:
    """A boolean field."""
    return _field(default, kind="bool")


def choice(enum: Type[Enum], default: Enum) -> Any:
    """An enum field; the enum's string values are accepted too."""
    return _field(default, kind="enum", enum=enum)


def reals(factory: Callable[[], list], *, ge: Optional[float] = None,
          nonempty: bool = False) -> Any:
    """A list-of-reals field."""
    return _field(factory=factory, kind="reals", lo=ge, nonempty=nonempty)


def nested(factory: Callable[[], Any], *classes: str, optional: bool = False,
           init: bool = True) -> Any:
    """A nested config field; ``classes`` names the accepted config classes (and subclasses)."""
    return _field(factory=factory, kind="config", classes=classes, optional=optional, init=init)


def nested_list(*classes: str) -> Any:
    """A list of nested configs (e.g. the devices of a unit cell)."""
    return _field(factory=list, kind="configs", classes=classes)


# -- read-only configs ----------------------------------------------------------------------------

#: Attribute marking a read-only config; its value is the config's dotted path prefix.
_FROZEN = "_frozen_path"

READ_ONLY = ("read-only: this is a tile's validated copy of its config, taken at construction "
             "(spec/README.md, 'A tile's config'); change a copy (copy.deepcopy(tile.rpu_config)) "
             "and build a new tile with it")


class FrozenList(list):
    """A list field of a read-only config: every mutation raises :class:`ConfigError`."""

    def __init__(self, items: Any, path: str) -> None:
        super().__init__(items)
        self._path = path

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise ConfigError(f"{self._path}: {READ_ONLY}")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse

    def __reduce__(self) -> Any:  # a copy or unpickled value is a plain list
        return (list, (list(self),))

    def __deepcopy__(self, memo: Dict[int, Any]) -> list:
        return [copy.deepcopy(v, memo) for v in self]


def _rebuild(data: Dict[str, Any], frozen: bool) -> "ConfigBase":
    """Unpickle a config (see :meth:`ConfigBase.__reduce__`)."""
    obj = from_dict(data)
    return obj.frozen() if frozen else obj


# -- the base class -------------------------------------------------------------------------------


class ConfigBase:
    """Base of every config dataclass: validation, dict/JSON round trip, registry."""

    #: Area of the spec (file ``spec/<area>.md``) that documents this class's fields.
    spec_area: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls

    def __post_init__(self) -> None:
        self._normalize("")

    # -- read-only copies ---------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        frozen = self.__dict__.get(_FROZEN)
        if frozen is not None:
            raise ConfigError(f"{frozen}{name}: {READ_ONLY}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        frozen = self.__dict__.get(_FROZEN)
        if frozen is not None:
            raise ConfigError(f"{frozen}{name}: {READ_ONLY}")
        object.__delattr__(self, name)

    @property
    def is_frozen(self) -> bool:
        """Whether this config is read-only (a tile's copy, see :meth:`frozen`)."""
        return self.__dict__.get(_FROZEN) is not None

    def frozen(self) -> "ConfigBase":
        """A validated, read-only deep copy of this config: setting any field (at any depth) or
        changing a list field raises :class:`ConfigError` naming the field. A tile keeps its config
        this way (spec/README.md, "A tile's config"); ``copy.deepcopy`` of it is an ordinary,
        changeable config.

        Examples
        --------
        >>> from refsim.configs import SingleRPUConfig
        >>> cfg = SingleRPUConfig().frozen()
        >>> cfg.forward.out_noise = 0.1
        Traceback (most recent call last):
        ...
        refsim.configs.errors.ConfigError: forward.out_noise: read-only: ...
        """
        out = from_dict(self.validate().to_dict())
        out._freeze("")
        return out

    def _freeze(self, prefix: str) -> None:
        for f, dom in self.domains():
            value, path = getattr(self, f.name), prefix + f.name
            if isinstance(value, ConfigBase):
                value._freeze(path + ".")
            elif isinstance(value, list):
                if dom.kind == "configs":
                    for i, item in enumerate(value):
                        item._freeze(f"{path}[{i}].")
                object.__setattr__(self, f.name, FrozenList(value, path))
        object.__setattr__(self, _FROZEN, prefix)

    def __reduce__(self) -> Any:
        return (_rebuild, (self.to_dict(), self.is_frozen))

    def __copy__(self) -> "ConfigBase":
        return from_dict(self.to_dict())

    def __deepcopy__(self, memo: Dict[int, Any]) -> "ConfigBase":
        return from_dict(self.to_dict())

    # -- validation ---------------------------------------------------------------------------
    def _normalize(self, prefix: str) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            dom: Domain = f.metadata["domain"]
            path = prefix + f.name
            value = dom.check(getattr(self, f.name), path)
            object.__setattr__(self, f.name, value)
            if isinstance(value, ConfigBase):
                value._normalize(path + ".")
            elif isinstance(value, list) and dom.kind == "configs":
                for i, item in enumerate(value):
                    item._normalize(f"{path}[{i}].")
        self._check_consistency(prefix)

    def _check_consistency(self, prefix: str) -> None:
        """Cross-field rules of this class; raise ConfigError naming ``prefix + field``."""

    def _check_complete(self, prefix: str) -> None:
        """Rules a config must meet to build a tile (checked by :meth:`validate`, not at
        construction, since aihwkit-style code fills e.g. a unit cell's device list later)."""

    def _walk(self, prefix: str) -> Iterator[Tuple[str, "ConfigBase"]]:
        """This config and every nested one, with their dotted path prefixes."""
        yield prefix, self
        for f, dom in self.domains():
            value, path = getattr(self, f.name), prefix + f.name
            if isinstance(value, ConfigBase):
                yield from value._walk(path + ".")
            elif isinstance(value, list) and dom.kind == "configs":
                for i, item in enumerate(value):
                    yield from item._walk(f"{path}[{i}].")

    def validate(self) -> "ConfigBase":
        """Check every field (recursively); raise :class:`ConfigError` naming the dotted path.

        Fields may be changed after construction (as in aihwkit); this re-checks them all.
        """
        self._normalize("")
        for prefix, config in self._walk(""):
            config._check_complete(prefix)
        if self.is_frozen:  # the checks hand back plain lists: keep them read-only
            self._freeze(self.__dict__[_FROZEN])
        return self

    # -- introspection ------------------------------------------------------------------------
    @classmethod
    def domains(cls) -> Iterator[Tuple[dataclasses.Field, Domain]]:
        """The fields of this class with their domains, in declaration order."""
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            yield f, f.metadata["domain"]

    # -- serialization ------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """Plain-dict form: JSON-compatible, with class tags and the schema version."""
        out = self._to_dict()
        out[SCHEMA_KEY] = SCHEMA_VERSION
        return out

    def _to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {CLASS_KEY: type(self).__name__}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            out[f.name] = _encode(getattr(self, f.name))
        return out

    def to_json(self, **kwargs: Any) -> str:
        """JSON text of :meth:`to_dict` (strict JSON: no NaN or infinity)."""
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ConfigBase":
        """Inverse of :meth:`to_dict`; the result must be an instance of ``cls``."""
        obj = from_dict(data)
        if not isinstance(obj, cls):
            raise ConfigError(f"expected a {cls.__name__}, the data holds a {type(obj).__name__}")
        return obj

    @classmethod
    def from_json(cls, text: str) -> "ConfigBase":
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


def _encode(value: Any) -> Any:
    if isinstance(value, ConfigBase):
        return value._to_dict()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def from_dict(data: Dict[str, Any]) -> ConfigBase:
    """Build a config from the dict written by :meth:`ConfigBase.to_dict`."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected a dict, got {_show(data)}")
    version = data.get(SCHEMA_KEY, SCHEMA_VERSION)
    if isinstance(version, bool) or version != SCHEMA_VERSION:
        raise ConfigError(
            f"{SCHEMA_KEY}: unsupported schema version {_show(version)} (this refsim reads "
            f"{SCHEMA_VERSION})"
        )
    return _decode_config(data, "")


def from_json(text: str) -> ConfigBase:
    """Build a config from the JSON written by :meth:`ConfigBase.to_json`."""
    if not isinstance(text, (str, bytes, bytearray)):
        raise ConfigError(f"expected JSON text, got {_show(text)}")
    try:
        data = json.loads(text)
    except RecursionError:
        raise ConfigError(f"the JSON nests deeper than a config can (at most {MAX_DEPTH} "
                          f"levels)") from None
    except ValueError as err:  # json.JSONDecodeError, UnicodeDecodeError
        raise ConfigError(f"not valid JSON: {err}") from None
    return from_dict(data)


def _decode_config(data: Any, path: str) -> ConfigBase:
    where = path or "<root>"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a dict with a {CLASS_KEY!r} key, got {_show(data)}")
    if path.count(".") + path.count("[") >= MAX_DEPTH:
        raise ConfigError(f"{where}: configs nest at most {MAX_DEPTH} levels deep")
    name = data.get(CLASS_KEY)
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ConfigError(f"{where}: unknown config class {_show(name)}")
    if path and SCHEMA_KEY in data and data[SCHEMA_KEY] != SCHEMA_VERSION:
        raise ConfigError(f"{path}.{SCHEMA_KEY}: unsupported schema version "
                          f"{_show(data[SCHEMA_KEY])} (this refsim reads {SCHEMA_VERSION})")
    cls = _REGISTRY[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    prefix = path + "." if path else ""
    init_kwargs: Dict[str, Any] = {}
    late: Dict[str, Any] = {}
    for key, raw in data.items():
        if key in (CLASS_KEY, SCHEMA_KEY):
            continue
        if key not in fields:
            raise ConfigError(f"{prefix}{key}: unknown field of {name}")
        f = fields[key]
        dom: Domain = f.metadata["domain"]
        value = _decode_value(raw, dom, prefix + key)
        (init_kwargs if f.init else late)[key] = value
    try:
        obj = cls(**init_kwargs)
    except ConfigError as err:
        raise ConfigError(f"{prefix}{err}") if prefix else err
    for key, value in late.items():
        object.__setattr__(obj, key, value)
    if late:
        obj._normalize(prefix)
    return obj


def _decode_value(raw: Any, dom: Domain, path: str) -> Any:
    if raw is None:
        return None
    if dom.kind == "config":
        return _decode_config(raw, path)
    if dom.kind == "configs":
        if not isinstance(raw, list):
            raise ConfigError(f"{path}: expected a list, got {_show(raw)}")
        return [_decode_config(item, f"{path}[{i}]") for i, item in enumerate(raw)]
    return raw  # scalars, enum strings and lists of reals are checked by the class itself


def registry() -> Dict[str, Type[ConfigBase]]:
    """Name -> class of every config class (a copy)."""
    return dict(_REGISTRY)


def describe_default(value: Any) -> str:
    """How a default value is written in the spec tables."""
    if isinstance(value, ConfigBase):
        changed = [
            f"{f.name}={describe_default(getattr(value, f.name))}"
            for f in dataclasses.fields(value)  # type: ignore[arg-type]
            if f.init and getattr(value, f.name) != _fresh_default(type(value), f)
        ]
        return f"{type(value).__name__}({', '.join(changed)})"
    if isinstance(value, Enum):
        return repr(value.value)
    if isinstance(value, list):
        return "[" + ", ".join(describe_default(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return repr(value)


def _fresh_default(cls: type, f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return f.default

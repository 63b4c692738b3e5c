"""``build_config``: RPU configs for the training algorithms (spec/rpu_configs.md, "build_config").

Follows aihwkit's ``aihwkit.simulator.configs.helpers.build_config``: same algorithm names and
aliases, classes or instances (or callables) for the device and parameter arguments, and
:class:`ArgumentError` for an unknown algorithm. Unlike aihwkit, ``construction_seed`` takes effect
for every algorithm (see :func:`construction_seed_of` and spec/deviations.md).
"""

from copy import deepcopy
from typing import Any, Callable, Dict, Tuple, Union

from .base import ConfigBase
from .compounds import (
    ChoppedTransferCompound,
    DynamicTransferCompound,
    MixedPrecisionCompound,
    TransferCompound,
    UnitCell,
    VectorUnitCell,
)
from .configs import DigitalRankUpdateRPUConfig, SingleRPUConfig, UnitCellRPUConfig
from .devices import IdealDevice, PulsedDevice
from .enums import BoundManagementType, NoiseManagementType, VectorUnitCellUpdatePolicy
from .errors import ArgumentError, ConfigError
from .io import IOParameters
from .update import UpdateParameters

#: Canonical algorithm name -> accepted aliases (all lower case).
ALGORITHMS: Dict[str, Tuple[str, ...]] = {
    "sgd": ("sgd",),
    "mp": ("mp", "mixed-precision"),
    "tiki-taka": ("tiki-taka", "tt", "ttv1"),
    "ttv2": ("ttv2",),
    "c-ttv2": ("chopped-ttv2", "ttv3", "c-ttv2"),
    "agad": ("agad", "ttv4"),
}

_ALIASES = {alias: name for name, aliases in ALGORITHMS.items() for alias in aliases}


def canonical_algorithm(algorithm: str) -> str:
    """The canonical name of an algorithm or alias (case-insensitive)."""
    if not isinstance(algorithm, str) or algorithm.lower() not in _ALIASES:
        known = ", ".join(sorted(_ALIASES))
        raise ArgumentError(f"algorithm: {algorithm!r} is not known (known: {known})")
    return _ALIASES[algorithm.lower()]


def _factory(arg: Any, kind: type, name: str) -> Callable[..., Any]:
    """A callable ``f(**overrides)`` making a fresh object from a class, instance or callable."""
    if isinstance(arg, ConfigBase):
        if not isinstance(arg, kind):
            raise ArgumentError(f"{name}: expected a {_names(kind)}, got {type(arg).__name__}")
        template = arg

        def make(**overrides: Any) -> Any:
            obj = deepcopy(template)
            for key, value in overrides.items():
                setattr(obj, key, value)
            return obj.validate()

        return make
    if isinstance(arg, type) and issubclass(arg, ConfigBase) and not issubclass(arg, kind):
        raise ArgumentError(f"{name}: expected a {_names(kind)} class, got {arg.__name__}")
    if callable(arg):
        return arg
    raise ArgumentError(f"{name}: expected a class, an instance or a callable, got {arg!r}")


def _names(kind: Any) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def build_config(
    algorithm: str,
    device: Any,
    io_parameters: Any = IOParameters,
    up_parameters: Any = UpdateParameters,
    n_devices: int = 1,
    construction_seed: int = 0,
    **kwargs: Any,
) -> Union[UnitCellRPUConfig, SingleRPUConfig, DigitalRankUpdateRPUConfig]:
    """RPU config for training with ``algorithm`` on devices of kind ``device``.

    Args:
        algorithm: ``"sgd"``; ``"mp"``/``"mixed-precision"``; ``"tiki-taka"``/``"tt"``/``"ttv1"``;
            ``"ttv2"``; ``"chopped-ttv2"``/``"ttv3"``/``"c-ttv2"``; ``"agad"``/``"ttv4"``.
        device: a pulsed device class, instance or callable; each device of the result is a
            fresh copy.
        io_parameters: IOParameters class, instance or callable for forward, backward and transfer.
        up_parameters: UpdateParameters class, instance or callable for update and transfer.
        n_devices: devices per unit cell for ``"sgd"`` (ignored by the other algorithms).
        construction_seed: seed of the device-to-device variation.
        kwargs: further RPU config fields (e.g. ``mapping``).

    Raises:
        ArgumentError: unknown algorithm, bad ``n_devices`` or an unknown field in ``kwargs``.
        ConfigError: an invalid value in the resulting config.
    """
    name = canonical_algorithm(algorithm)
    if isinstance(n_devices, bool) or not isinstance(n_devices, int) or n_devices < 1:
        raise ArgumentError(f"n_devices: expected an integer >= 1, got {n_devices!r}")
    dev = _factory(device, (PulsedDevice, IdealDevice), "device")
    io = _factory(io_parameters, IOParameters, "io_parameters")
    up = _factory(up_parameters, UpdateParameters, "up_parameters")

    def no_management() -> IOParameters:
        return io(
            noise_management=NoiseManagementType.NONE,
            bound_management=BoundManagementType.NONE,
        )

    def sd_update() -> UpdateParameters:
        return up(desired_bl=1, update_bl_management=False, update_management=False)

    common = dict(forward=io(), backward=io())
    if name == "sgd" and n_devices == 1:
        cls: type = SingleRPUConfig
        fields = dict(device=dev(construction_seed=construction_seed), update=up())
    elif name == "sgd":
        cls = UnitCellRPUConfig
        cell = VectorUnitCell(
            unit_cell_devices=[dev() for _ in range(n_devices)],
            update_policy=VectorUnitCellUpdatePolicy.SINGLE_RANDOM,
            construction_seed=construction_seed,
        )
        fields = dict(device=cell, update=up())
    elif name == "tiki-taka":
        cls = UnitCellRPUConfig
        cell = TransferCompound(
            unit_cell_devices=[dev(), dev()],
            transfer_forward=no_management(),
            transfer_update=up(),
            units_in_mbatch=True,
            construction_seed=construction_seed,
        )
        fields = dict(device=cell, update=up())
    elif name == "ttv2":
        cls = UnitCellRPUConfig
        cell = ChoppedTransferCompound(
            unit_cell_devices=[dev(), dev()],
            transfer_forward=no_management(),
            transfer_update=sd_update(),
            in_chop_prob=0.0,
            units_in_mbatch=False,
            auto_scale=False,
            construction_seed=construction_seed,
        )
        fields = dict(device=cell, update=up(desired_bl=5))
    elif name == "c-ttv2":
        cls = UnitCellRPUConfig
        cell = ChoppedTransferCompound(
            unit_cell_devices=[dev(), dev()],
            transfer_forward=no_management(),
            transfer_update=sd_update(),
            units_in_mbatch=False,
            fast_lr=0.1,
            auto_scale=True,
            construction_seed=construction_seed,
        )
        fields = dict(device=cell, update=up(desired_bl=5))
    elif name == "agad":
        cls = UnitCellRPUConfig
        cell = DynamicTransferCompound(
            unit_cell_devices=[dev(), dev()],
            transfer_forward=io(),
            transfer_update=up(desired_bl=1, update_bl_management=True, update_management=True),
            auto_scale=True,
            fast_lr=0.1,
            units_in_mbatch=False,
            construction_seed=construction_seed,
        )
        fields = dict(device=cell, update=up(desired_bl=5))
    else:  # "mp"
        cls = DigitalRankUpdateRPUConfig
        cell = MixedPrecisionCompound(device=dev(construction_seed=construction_seed))
        fields = dict(device=cell, update=up())
    unknown = set(kwargs) - {f for f in cls.__dataclass_fields__ if cls.__dataclass_fields__[f].init}
    if unknown:
        raise ArgumentError(
            f"{sorted(unknown)[0]}: not a field of {cls.__name__} (given as a keyword argument)"
        )
    return cls(**common, **fields, **kwargs).validate()


def construction_seed_of(rpu_config: ConfigBase) -> int:
    """The seed of a tile's device-to-device draws (spec/rpu_configs.md, "construction seed").

    The first non-zero ``construction_seed`` met walking down from ``rpu_config.device``: the
    device itself, then (for compounds) its inner device or its unit-cell devices in order.
    0 when there is none; the tile then uses its own seed.
    """
    stack = [getattr(rpu_config, "device", None)]
    while stack:
        node = stack.pop(0)
        if node is None:
            continue
        seed = getattr(node, "construction_seed", 0)
        if seed:
            return int(seed)
        if isinstance(node, UnitCell):
            stack.extend(node.unit_cell_devices)
        inner = getattr(node, "device", None)
        if isinstance(inner, ConfigBase):
            stack.append(inner)
    return 0


__all__ = ["ALGORITHMS", "build_config", "canonical_algorithm", "construction_seed_of",
           "ConfigError"]

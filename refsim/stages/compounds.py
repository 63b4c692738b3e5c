"""Compound devices: several device arrays (and digital state) behind one tile weight
(spec/compounds.md).

The framework every compound builds on:

* :class:`Context` — what a compound may use of its tile: namespace, dtype, shape, seeds, the
  tile's random streams (call counters), the compiled kernels when the tile uses them, and
  :meth:`Context.read`, an analog forward read through given IOParameters (transfer and refresh
  reads, IO directions ``transfer`` / ``refresh``).
* :class:`SubDevice` — one pulsed device array: its device-to-device parameters (drawn with the
  construction seed and ``device_index`` = its position, spec/devices.md §V6), its weights, and
  :meth:`SubDevice.pulse`, the pulsed update of refsim/stages/update.py (reference or compiled).
* :class:`Compound` — the interface the tile calls: ``weights()``, ``set_weights``, ``update``,
  ``decay``, ``diffuse``, ``reset``, ``state_dict`` / ``load_state_dict``.
* :func:`register` / :func:`build` — compound classes register under the config class name they
  implement (``VectorUnitCell``, ``TransferCompound``, ``MixedPrecisionCompound``, …).

Random streams: gradient cycles use the tile's ``update`` counter, exactly as a single device;
internal pulsed writes use prefix ``transfer`` (streams ``transfer.*`` and ``transfer.c2c``) with
the ``transfer`` counter; reads use ``io.transfer`` / ``io.refresh``; any other random choice of a
compound has its own registered stream ``compound.<name>``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Type

from refsim import rng
from refsim.configs import ConfigError, IOParameters, PulsedDevice, UpdateParameters
from refsim.stages import devices as device_stage
from refsim.stages import io as io_stage
from refsim.stages import update as update_stage


@dataclasses.dataclass
class Context:
    """A compound's view of its tile (see the module docstring)."""

    xp: Any
    dtype: Any
    device: Any
    shape: tuple
    seed: int
    construction_seed: int
    streams: rng.RandomStreams
    fast_update: Any = None  # refsim_fast.update, or None for the reference loop
    fast_io: Any = None  # refsim_fast.io, or None

    @property
    def draws(self) -> Any:
        """refsim.rng, or the same numbers from the compiled streams (refsim_fast.update) when the
        tile uses the fast backend: ``draws.uniform`` / ``draws.normal`` with refsim.rng's
        signature."""
        return rng if self.fast_update is None else self.fast_update

    def read(self, w: Any, x: Any, io: IOParameters, direction: str) -> Any:
        """``f(w x)`` for rows ``x`` (batch, n) of weights ``w`` (m, n) through ``io`` (spec/io.md,
        no periphery variation), drawing the next call of ``io.<direction>``."""
        if direction not in ("transfer", "refresh"):
            raise ValueError(f"direction: expected 'transfer' or 'refresh', got {direction!r}")
        halves = 2 if io.mv_type in io_stage.POS_NEG else 1
        draws = io_stage.Draws(self.seed, self.streams.next_call(f"io.{direction}"), direction,
                               x.shape[0], halves)
        y, _ = io_stage.mvm(self.xp, x, w, io, io_stage.Periphery(), draws, backward=False,
                            nm_running=None, impl=self.fast_io)
        return y

    # pickle / copy.deepcopy of a tile: its modules (namespace, compiled kernels) by name
    _MODULE_FIELDS = ("xp", "fast_update", "fast_io")

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        for name in self._MODULE_FIELDS:
            module = state[name]
            state[name] = None if module is None else module.__name__
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        import importlib

        state = dict(state)
        for name in self._MODULE_FIELDS:
            module = state[name]
            if module is None:
                continue
            try:
                state[name] = importlib.import_module(module)
            except ImportError:
                if name == "xp":
                    raise
                state[name] = None  # no compiled backend here: the reference (as a new tile)
        self.__dict__.update(state)


class SubDevice:
    """One pulsed device array of a compound (index = its device_index)."""

    def __init__(self, ctx: Context, cfg: PulsedDevice, index: int, where: str) -> None:
        if not device_stage.is_pulsed(cfg):
            raise ConfigError(f"{where}: expected a pulsed device, got {type(cfg).__name__}")
        device_stage.check_supported(cfg, where + ".")
        if getattr(cfg, "write_noise_std", 0.0) > 0.0 or cfg.count_pulses:
            raise ConfigError(f"{where}: write noise and pulse counting are not implemented for "
                              f"the devices of a compound")
        self.cfg, self.index = cfg, index
        self.params = device_stage.draw_device(ctx.xp, cfg, ctx.shape, ctx.construction_seed,
                                               index, dtype=ctx.dtype, device=ctx.device)
        self.w = ctx.xp.zeros(ctx.shape, dtype=ctx.dtype, device=ctx.device)
        self.granularity = device_stage.granularity(cfg)

    def set(self, ctx: Context, w: Any) -> None:
        """Store ``w`` clamped to the device bounds."""
        self.w = device_stage.clip_weights(ctx.xp, ctx.xp.astype(w, ctx.dtype), self.params)

    def pulse(self, ctx: Context, xs: Any, ds: Any, lr: float, up: UpdateParameters,
              first_call: int, prefix: str = "update", granularity: Optional[float] = None
              ) -> None:
        """One pulsed cycle per row of ``xs`` (batch, n) / ``ds`` (batch, m), W ← W − lr·dᵀx in
        expectation, cycle k with call ``first_call + k`` of the ``prefix`` streams; the pulse
        trains use ``granularity`` when given (else the device's own g)."""
        self.w, _, _ = update_stage.pulsed_cycles(
            ctx.xp, self.w, xs, ds, lr, self.cfg, up, self.params, ctx.seed, first_call,
            device_index=self.index, fast=ctx.fast_update, prefix=prefix,
            granularity=granularity)

    def decay(self, ctx: Context) -> None:
        if self.cfg.lifetime > 0.0:
            self.w = device_stage.decay_weights(ctx.xp, self.w, self.params)

    def diffuse(self, ctx: Context) -> None:
        if self.cfg.diffusion > 0.0:
            call = ctx.streams.next_call("device.diffusion_noise")
            self.w = device_stage.diffuse_weights(ctx.xp, self.w, self.params, ctx.seed, call,
                                                  ctx.draws)

    def reset(self, ctx: Context, prob: float) -> None:
        call = ctx.streams.next_call("device.reset_noise")
        self.w = device_stage.reset_weights(ctx.xp, self.w, self.params, self.cfg.reset_std, prob,
                                            ctx.seed, call, ctx.draws)


class Compound:
    """The interface between a tile and a compound (subclasses implement a config class)."""

    def __init__(self, ctx: Context, rpu_config: Any) -> None:
        self.ctx = ctx
        self.rpu_config = rpu_config

    def weights(self) -> Any:
        """The visible weight (m, n) that forward and backward use."""
        raise NotImplementedError

    def set_weights(self, w: Any) -> None:
        raise NotImplementedError

    def update(self, xs: Any, ds: Any, lr: float) -> None:
        """The gradient update of rows ``xs`` (batch, n), ``ds`` (batch, m) with learning rate lr
        (W ← W − lr·dᵀx in expectation, as for a single device)."""
        raise NotImplementedError

    def decay(self) -> None:
        for dev in self.devices():
            dev.decay(self.ctx)

    def diffuse(self) -> None:
        for dev in self.devices():
            dev.diffuse(self.ctx)

    def reset(self, prob: float) -> None:
        for dev in self.devices():
            dev.reset(self.ctx, prob)

    def devices(self) -> list:
        """The pulsed sub-devices (for decay, diffusion, reset)."""
        return []

    def state_dict(self) -> Dict[str, Any]:
        """The compound's state beyond the tile's (sub-device weights, buffers, counters);
        arrays stay in the tile's namespace."""
        raise NotImplementedError

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        raise NotImplementedError


_REGISTRY: Dict[str, Type[Compound]] = {}


def register(config_class: str) -> Callable[[Type[Compound]], Type[Compound]]:
    """Class decorator: the compound implementing device config class ``config_class``."""

    def wrap(cls: Type[Compound]) -> Type[Compound]:
        _REGISTRY[config_class] = cls
        return cls

    return wrap


def implemented() -> tuple:
    """The device config classes with a compound implementation."""
    _load()
    return tuple(sorted(_REGISTRY))


def _load() -> None:
    """Import the modules that register compounds (they import this one)."""
    import importlib

    for name in ("refsim.stages.unit_cells", "refsim.stages.transfer"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise


def build(ctx: Context, rpu_config: Any) -> Optional[Compound]:
    """The compound of a UnitCellRPUConfig / DigitalRankUpdateRPUConfig tile; raises
    NotImplementedError for a device class without an implementation."""
    _load()
    name = type(rpu_config.device).__name__
    cls = _REGISTRY.get(name)
    if cls is None:
        raise NotImplementedError(
            f"rpu_config.device: the compound {name} is not implemented yet (implemented: "
            f"{', '.join(sorted(_REGISTRY)) or 'none'})")
    return cls(ctx, rpu_config)


__all__ = ["Compound", "Context", "SubDevice", "build", "implemented", "register"]

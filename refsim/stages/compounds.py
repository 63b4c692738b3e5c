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
  ``decay``, ``diffuse``, ``reset``, ``drift``, ``state_dict`` / ``load_state_dict``.
* :func:`register` / :func:`build` — compound classes register under the config class name they
  implement (``VectorUnitCell``, ``TransferCompound``, ``MixedPrecisionCompound``, …).

Random streams: gradient cycles use the tile's ``update`` counter, exactly as a single device;
internal pulsed writes use prefix ``transfer`` (streams ``transfer.*`` and ``transfer.c2c``) with
the ``transfer`` counter; reads use ``io.transfer`` / ``io.refresh``; any other random choice of a
compound has its own registered stream ``compound.<name>``; drift (spec/drift.md §D5) draws
each drifting sub-device's ν from ``drift.nu_dtod`` (call = its device index) and its per-call
noise from its own call of the tile's ``drift`` counter.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, Optional, Type

from refsim import rng
from refsim.configs import ConfigError, IOParameters, PulsedDevice, UpdateParameters
from refsim.stages import devices as device_stage
from refsim.stages import drift as drift_stage
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
        y, _ = self._mvm(self.xp, x, w, io, io_stage.Periphery(), draws, backward=False)
        return y

    @property
    def _mvm(self) -> Any:
        """The IO driver: refsim.stages.io.mvm, or its compiled twin on the fast backend."""
        return io_stage.driver(self.fast_io)

    def read_each(self, w: Any, io: IOParameters, direction: str) -> Any:
        """The reads of ``w`` (m, R) column by column, as R calls of :meth:`read` with the one
        column and the input ``[[1]]`` would give them (each drawing its own call of
        ``io.<direction>``, in column order), in one pass of the IO stage (``Draws.row_calls``).
        Row b of the (R, m) result is the read of column b."""
        xp = self.xp
        count = w.shape[1]
        if direction not in ("transfer", "refresh"):
            raise ValueError(f"direction: expected 'transfer' or 'refresh', got {direction!r}")
        halves = 2 if io.mv_type in io_stage.POS_NEG else 1
        draws = io_stage.Draws(self.seed, self.streams.next_calls(f"io.{direction}", count),
                               direction, count, halves, row_calls=True)
        eye = xp.eye(count, dtype=w.dtype, device=self.device)
        y, _ = self._mvm(xp, eye, w, io, io_stage.Periphery(), draws, backward=False)
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
                                               index, dtype=ctx.dtype, device=ctx.device,
                                               draws=ctx.draws)
        self.w = ctx.xp.zeros(ctx.shape, dtype=ctx.dtype, device=ctx.device)
        self.granularity = device_stage.granularity(cfg)
        # drift (spec/drift.md §D5): the device's own DriftParameter (kept when a cell later
        # replaces cfg, e.g. OneSidedUnitCell copy_inverted), its ν_ij drawn now with the other
        # device-to-device quantities (call = the device index), and its state (None until the
        # first drift call)
        self.drift_cfg = getattr(cfg, "drift", None)
        self.nu: Any = None
        if self.drift_cfg is not None and drift_stage.is_active(self.drift_cfg):
            self.nu = drift_stage.drift_nu(ctx.xp, self.drift_cfg, tuple(ctx.shape),
                                           ctx.construction_seed, index, dtype=ctx.dtype,
                                           device=ctx.device, draws=ctx.draws)
        self.drift_state: Optional[drift_stage.DriftState] = None

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
            granularity=granularity, in_place=True)

    def pulse_reading(self, ctx: Context, xs: Any, ds: Any, lrs: Any, up: UpdateParameters,
                      first_call: int, lines: Any, columns: bool) -> Any:
        """:meth:`pulse` with one learning rate per cycle (``lrs``), returning the copies of
        line ``lines[b]`` taken right after cycle b for each b with ``lines[b] >= 0`` (S, ℓ)
        (refsim.stages.update.pulsed_cycles_reading)."""
        self.w, snaps = update_stage.pulsed_cycles_reading(
            ctx.xp, self.w, xs, ds, lrs, self.cfg, up, self.params, ctx.seed, first_call, lines,
            columns=columns, device_index=self.index, fast=ctx.fast_update, in_place=True)
        return snaps

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

    def drift(self, ctx: Context, delta_t: float) -> None:
        """One drift call of ``delta_t`` time units (spec/drift.md §D3, §D5) when the device's
        drift is active: its own ν, state and call of the ``drift`` counter, clamped to its
        bounds. Nothing (no call drawn) when its drift is inactive."""
        if self.nu is None:
            return
        xp = ctx.xp
        state = self.drift_state
        if state is None:
            state = drift_stage.initial_state(xp, self.w)
        call = ctx.streams.next_call("drift")
        out, state = drift_stage.drift_weights(
            xp, self.w, state, float(delta_t), self.drift_cfg, self.nu, ctx.seed, call,
            bounds=(self.params.b_min, self.params.b_max), draws=ctx.draws)
        self.w = out
        # `previous` must not alias the weights, which transfers and refreshes edit in place
        self.drift_state = dataclasses.replace(state, previous=xp.asarray(out, copy=True))

    def drift_state_dict(self, ctx: Context) -> Optional[drift_stage.DriftState]:
        """A copy of the drift state (None before the first drift call)."""
        state = self.drift_state
        if state is None:
            return None
        xp = ctx.xp
        return drift_stage.DriftState(w0=xp.asarray(state.w0, copy=True),
                                      t_start=xp.asarray(state.t_start, copy=True),
                                      previous=xp.asarray(state.previous, copy=True),
                                      tau=float(state.tau))

    def load_drift_state(self, ctx: Context, state: Any, path: str) -> None:
        """Restore a :meth:`drift_state_dict` (checked: a DriftState of (m, n) arrays and a
        finite τ >= 0, and only for a device whose drift is active; None = not drifted yet)."""
        if state is None:
            self.drift_state = None
            return
        if not isinstance(state, drift_stage.DriftState):
            raise ValueError(f"{path}: expected a DriftState or None")
        if self.nu is None:
            raise ValueError(f"{path}: a drift state for a device whose drift is inactive "
                             f"(drift.nu = 0)")
        xp = ctx.xp
        arrays = {}
        for name in ("w0", "t_start", "previous"):
            a = getattr(state, name)
            if not hasattr(a, "shape") or tuple(a.shape) != tuple(ctx.shape):
                raise ValueError(f"{path}.{name}: expected an array of shape {tuple(ctx.shape)}")
            arrays[name] = xp.astype(xp.asarray(a, copy=True), ctx.dtype, copy=True)
        tau = state.tau
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or \
                not math.isfinite(tau) or tau < 0:
            raise ValueError(f"{path}.tau: expected a finite float >= 0, got {tau!r}")
        self.drift_state = drift_stage.DriftState(tau=float(tau), **arrays)


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

    def drift(self, delta_t: float) -> None:
        """One drift call of ``delta_t`` (>= 0, finite) time units: every sub-device with active
        drift, in device order, each with its own DriftParameter, ν, state and call of the
        ``drift`` counter, clamped to its own bounds (spec/drift.md §D5); the digital state
        (buffers, χ, choppers) is not touched. The tile then reads :meth:`weights`."""
        for dev in self.devices():
            dev.drift(self.ctx, delta_t)

    def devices(self) -> list:
        """The pulsed sub-devices (for decay, diffusion, reset, drift)."""
        return []

    def state_dict(self) -> Dict[str, Any]:
        """The compound's state beyond the tile's (sub-device weights, buffers, counters);
        arrays stay in the tile's namespace."""
        raise NotImplementedError

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        raise NotImplementedError


def save_drift_states(ctx: Context, devs: list, state: Dict[str, Any]) -> Dict[str, Any]:
    """Add the drift states of the sub-devices ``devs`` to a compound's state dict ``state``
    (key ``drift``: copies, one per device in device order, None where a device has not drifted
    yet), but only when some device's drift is active, so that the states of compounds without
    drift keep their keys. Returns ``state``."""
    if any(dev.nu is not None for dev in devs):
        state["drift"] = [dev.drift_state_dict(ctx) for dev in devs]
    return state


def load_drift_states(ctx: Context, devs: list, states: Any, path: str) -> None:
    """Restore the ``drift`` entry of :func:`save_drift_states` onto ``devs``; a missing entry
    (None: no device drifts, or a state saved before compounds drifted) means that no device
    has drifted yet."""
    if states is None:
        states = [None] * len(devs)
    if not isinstance(states, (list, tuple)) or len(states) != len(devs):
        raise ValueError(f"{path}: expected a list of {len(devs)} drift states (or None)")
    for k, (dev, state) in enumerate(zip(devs, states)):
        dev.load_drift_state(ctx, state, f"{path}[{k}]")


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


__all__ = ["Compound", "Context", "SubDevice", "build", "implemented", "load_drift_states",
           "register", "save_drift_states"]

"""Unit cells and mixed precision: VectorUnitCell, OneSidedUnitCell and MixedPrecisionCompound
(spec/unit_cells.md).

Built on the compound framework of refsim/stages/compounds.py. A *cell* (:class:`SingleCell`,
:class:`VectorCell`, :class:`OneSidedCell`) is a set of pulsed device arrays behind one weight,
with the pulse routing of its class: :meth:`cycles` runs one pulsed update cycle per row of
(xs, ds) with given update parameters, calls and stream prefix. The registered compounds wrap a
cell for the gradient update of a UnitCellRPUConfig tile (prefix ``update``, the ``update``
counter), and MixedPrecisionCompound wraps one as its analog device, written by its transfers
(prefix ``transfer``, the ``transfer`` counter).

Random streams (besides those of the pulsed writes and reads, refsim/stages/compounds.py):
``compound.select`` (SingleRandom device choice), ``compound.reset_noise`` (one-sided refresh
resets), ``compound.x_round`` / ``compound.d_round`` (mixed-precision stochastic rounding),
``compound.column`` (mixed-precision random start row).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Dict, List, Optional

from refsim import rng
from refsim.configs import (
    ConfigError,
    OneSidedUnitCell,
    UpdateParameters,
    VectorUnitCell,
    VectorUnitCellUpdatePolicy,
)
from refsim.stages import devices as device_stage
from refsim.stages import io as io_stage
from refsim.stages import pulses as pulse_stage
from refsim.stages.compounds import (
    Compound,
    Context,
    SubDevice,
    load_drift_states,
    register,
    save_drift_states,
)

Policy = VectorUnitCellUpdatePolicy


def _draws(ctx: Context) -> Any:
    """refsim.rng, or the same numbers from the compiled streams on the fast backend."""
    return ctx.fast_update or rng


def check_pulsed_update(up: UpdateParameters, path: str) -> None:
    """The pulse type of a compound's pulsed writes must be a pulsed one."""
    if up.pulse_type not in pulse_stage.PULSED:
        raise ConfigError(f"{path}.pulse_type: {up.pulse_type.value!r} is not implemented for "
                          f"the devices of a compound (use a pulsed type, e.g. "
                          f"'StochasticCompressed')")


def _copy(xp: Any, a: Any, dtype: Any) -> Any:
    return xp.astype(xp.asarray(a, copy=True), dtype, copy=True)


def _check_weights(ctx: Context, a: Any, path: str) -> Any:
    """A copy of a saved (m, n) weight array in the tile's namespace and dtype."""
    if not hasattr(a, "shape") or tuple(a.shape) != tuple(ctx.shape):
        raise ValueError(f"{path}: expected an array of shape {tuple(ctx.shape)}")
    return _copy(ctx.xp, a, ctx.dtype)


def _check_count(value: Any, path: str, upper: Optional[int] = None) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0 and \
        (upper is None or value < upper)
    if not ok:
        bound = "" if upper is None else f" below {upper}"
        raise ValueError(f"{path}: expected an integer >= 0{bound}, got {value!r}")
    return value


# -- cells --------------------------------------------------------------------------------------


class Cell:
    """Pulsed device arrays behind one weight (see the module docstring)."""

    granularity: float

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def weights(self) -> Any:
        raise NotImplementedError

    def set_weights(self, w: Any) -> None:
        raise NotImplementedError

    def cycles(self, xs: Any, ds: Any, lr: float, up: UpdateParameters, first: int,
               prefix: str, batch: int) -> None:
        """One pulsed cycle per row of ``xs`` (rows, n) / ``ds`` (rows, m) (W ← W − lr·dᵀx in
        expectation), row k with call ``first + k`` of the ``prefix`` streams; ``batch`` is the
        mini-batch size of the schedules that count in mini-batches."""
        raise NotImplementedError

    def devices(self) -> List[SubDevice]:
        raise NotImplementedError

    def state_dict(self) -> Dict[str, Any]:
        xp = self.ctx.xp
        return save_drift_states(self.ctx, self.devices(),
                                 {"weights": [xp.asarray(d.w, copy=True) for d in self.devices()]})

    def load_state_dict(self, state: Dict[str, Any], path: str) -> None:
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected a dict")
        weights = state.get("weights")
        devs = self.devices()
        if not isinstance(weights, (list, tuple)) or len(weights) != len(devs):
            raise ValueError(f"{path}['weights']: expected a list of {len(devs)} weight arrays")
        for k, (dev, w) in enumerate(zip(devs, weights)):
            dev.w = _check_weights(self.ctx, w, f"{path}['weights'][{k}]")
        load_drift_states(self.ctx, devs, state.get("drift"), f"{path}['drift']")


class SingleCell(Cell):
    """One pulsed device (the analog device of a MixedPrecisionCompound)."""

    def __init__(self, ctx: Context, cfg: Any, where: str) -> None:
        super().__init__(ctx)
        self.dev = SubDevice(ctx, cfg, 0, where)
        self.granularity = self.dev.granularity

    def weights(self) -> Any:
        return self.dev.w

    def set_weights(self, w: Any) -> None:
        self.dev.set(self.ctx, w)

    def cycles(self, xs: Any, ds: Any, lr: float, up: UpdateParameters, first: int,
               prefix: str, batch: int) -> None:
        self.dev.pulse(self.ctx, xs, ds, lr, up, first, prefix)

    def devices(self) -> List[SubDevice]:
        return [self.dev]


def _sub_devices(ctx: Context, specs: list, where: str) -> List[SubDevice]:
    if not specs:
        raise ConfigError(f"{where}.unit_cell_devices: the cell has no devices (give at least "
                          f"one pulsed device)")
    return [SubDevice(ctx, cfg, k, f"{where}.unit_cell_devices[{k}]")
            for k, cfg in enumerate(specs)]


class VectorCell(Cell):
    """K devices, W = Σ_k γ_k·w_k; the update policy picks the device(s) of each update call."""

    def __init__(self, ctx: Context, cell: VectorUnitCell, where: str) -> None:
        super().__init__(ctx)
        self.devs = _sub_devices(ctx, cell.unit_cell_devices, where)
        k = len(self.devs)
        if cell.gamma_vec and len(cell.gamma_vec) != k:
            raise ConfigError(f"{where}.gamma_vec: must have one entry per device "
                              f"({len(cell.gamma_vec)} given, {k} devices)")
        if cell.first_update_idx >= k:
            raise ConfigError(f"{where}.first_update_idx: {cell.first_update_idx} is not a "
                              f"device index (the cell has {k} devices)")
        self.gamma = [float(v) for v in cell.gamma_vec] if cell.gamma_vec else [1.0 / k] * k
        # aihwkit's VectorRPUDevice: the mean of the devices' granularities
        self.granularity = math.fsum(d.granularity for d in self.devs) / k
        self.policy = cell.update_policy
        self.first_update_idx = cell.first_update_idx
        self.current = cell.first_update_idx

    def weights(self) -> Any:
        w = self.gamma[0] * self.devs[0].w
        for gamma, dev in zip(self.gamma[1:], self.devs[1:]):
            w = w + gamma * dev.w
        return w

    def set_weights(self, w: Any) -> None:
        # aihwkit's onSetWeights: counters reset; SingleFixed writes only its device
        self.current = self.first_update_idx
        for k, dev in enumerate(self.devs):
            if self.policy != Policy.SINGLE_FIXED or k == self.current:
                dev.set(self.ctx, w)

    def select(self, first: int) -> int:
        """The device of the update call whose first row has call ``first``."""
        k = len(self.devs)
        if self.policy == Policy.SINGLE_SEQUENTIAL:
            self.current = (self.current + 1) % k
        elif self.policy == Policy.SINGLE_RANDOM:
            u = _draws(self.ctx).uniform(self.ctx.seed, "compound.select", first, 1,
                                         xp=self.ctx.xp, device=self.ctx.device)
            self.current = min(int(math.floor(float(u[0]) * k)), k - 1)
        return self.current

    def cycles(self, xs: Any, ds: Any, lr: float, up: UpdateParameters, first: int,
               prefix: str, batch: int) -> None:
        if self.policy == Policy.ALL:
            targets = self.devs
        else:
            targets = [self.devs[self.select(first)]]
        for dev in targets:  # the same trains (same calls, same g), each device its own noise
            dev.pulse(self.ctx, xs, ds, lr, up, first, prefix, granularity=self.granularity)

    def devices(self) -> List[SubDevice]:
        return list(self.devs)

    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        state["current"] = self.current
        return state

    def load_state_dict(self, state: Dict[str, Any], path: str) -> None:
        super().load_state_dict(state, path)
        self.current = _check_count(state.get("current"), f"{path}['current']", len(self.devs))


#: Device models whose copy_inverted parameters are implemented (per-pulse rules that mirror).
_INVERTIBLE = ("ConstantStepDevice", "LinearStepDevice", "SoftBoundsDevice",
               "SoftBoundsPmaxDevice")


def inverted_params(xp: Any, params: device_stage.DeviceParams
                    ) -> device_stage.DeviceParams:
    """The parameters of the mirror image v = −w of a device: bounds mirrored, up and down
    steps (and the slopes of the LinearStep family, negated) swapped, reset bias negated; an up
    pulse on the mirror acts like a down pulse on the original."""
    extra = dict(params.extra)
    if "slope_up" in extra:
        extra["slope_up"], extra["slope_down"] = -params.extra["slope_down"], \
            -params.extra["slope_up"]
    return device_stage.DeviceParams(
        b_min=-params.b_max, b_max=-params.b_min, dw_up=params.dw_down, dw_down=params.dw_up,
        reset_bias=-params.reset_bias, kappa=params.kappa, rho=params.rho, extra=extra)


class OneSidedCell(Cell):
    """W = g⁺ − g⁻ with up pulses only, and the periodic refresh (aihwkit's OneSidedRPUDevice:
    device 0 is g⁻, device 1 is g⁺)."""

    def __init__(self, ctx: Context, cell: OneSidedUnitCell, where: str) -> None:
        super().__init__(ctx)
        specs = list(cell.unit_cell_devices)
        if len(specs) > 2:
            raise ConfigError(f"{where}.unit_cell_devices: a OneSidedUnitCell takes 1 or 2 "
                              f"devices ({len(specs)} given)")
        if len(specs) == 1:
            specs = [specs[0], specs[0]]
        devs = _sub_devices(ctx, specs, where)
        self.minus, self.plus = devs
        self.w_top = [abs(device_stage.effective(d.cfg)["w_max"]) for d in devs]
        if cell.copy_inverted:
            name = type(specs[0]).__name__
            if name not in _INVERTIBLE:
                raise ConfigError(f"{where}.copy_inverted: not implemented for {name} (only "
                                  f"{', '.join(_INVERTIBLE)})")
            self.plus.cfg = self.minus.cfg
            self.plus.params = inverted_params(ctx.xp, self.minus.params)
            self.plus.granularity = self.minus.granularity
            self.w_top[1] = abs(device_stage.effective(self.minus.cfg)["w_min"])
        if cell.refresh_every > 0 and min(self.w_top) <= 0.0:
            raise ConfigError(f"{where}.unit_cell_devices: the refresh test divides by the "
                              f"devices' upper bounds, which must be > 0")
        io_stage.check_supported(cell.refresh_forward, f"{where}.refresh_forward")
        check_pulsed_update(cell.refresh_update, f"{where}.refresh_update")
        self.cell = cell
        self.granularity = (self.minus.granularity + self.plus.granularity) / 2.0
        self.rows = 0  # update rows since set_weights (aihwkit's current_update_idx)
        self.refreshed = 0  # cells refreshed since creation (aihwkit's refresh_counter)

    def weights(self) -> Any:
        return self.plus.w - self.minus.w

    def set_weights(self, w: Any) -> None:
        xp = self.ctx.xp
        zero = xp.zeros_like(w)
        self.rows = 0
        self.plus.set(self.ctx, xp.where(w > 0, w, zero))
        self.minus.set(self.ctx, xp.where(w < 0, -w, zero))

    def cycles(self, xs: Any, ds: Any, lr: float, up: UpdateParameters, first: int,
               prefix: str, batch: int) -> None:
        ctx, xp = self.ctx, self.ctx.xp
        stream = pulse_stage.c2c_stream(prefix)
        period = self.cell.refresh_every * (batch if self.cell.units_in_mbatch else 1)
        for k in range(xs.shape[0]):
            call = first + k
            counts, plan = pulse_stage.coincidences(xp, xs[k, :], ds[k, :], lr, self.granularity,
                                                    up, ctx.seed, call, prefix)
            if plan.bl > 0:
                zero = xp.zeros_like(counts)
                for dev, c in ((self.plus, xp.where(counts > 0, counts, zero)),
                               (self.minus, xp.where(counts < 0, -counts, zero))):
                    dev.w = device_stage.apply_pulses(xp, dev.w, c, dev.params, dev.cfg, plan.bl,
                                                      ctx.seed, call, dev.index, stream)
            self.rows += 1
            if period > 0 and self.rows % period == 0:
                self.refresh()

    def refresh(self) -> None:
        """Read both devices, reset the pairs past the thresholds and rewrite their difference
        onto the larger one (spec/unit_cells.md)."""
        ctx, xp, cell = self.ctx, self.ctx.xp, self.cell
        n = ctx.shape[1]
        eye = xp.eye(n, dtype=ctx.dtype, device=ctx.device)
        p = xp.matrix_transpose(ctx.read(self.plus.w, eye, cell.refresh_forward, "refresh"))
        q = xp.matrix_transpose(ctx.read(self.minus.w, eye, cell.refresh_forward, "refresh"))
        up_t, low_t = cell.refresh_upper_thres, cell.refresh_lower_thres
        pn, qn = p / self.w_top[1], q / self.w_top[0]
        larger = p > q
        crit = xp.where(larger, (pn > up_t) & (qn > low_t), (pn > low_t) & (qn > up_t))
        if not bool(xp.any(crit)):
            return
        self.refreshed += int(xp.sum(xp.astype(crit, xp.int64)))
        call = ctx.streams.next_call("compound.reset_noise")
        m = ctx.shape[0]
        for dev in (self.plus, self.minus):
            new = dev.params.reset_bias
            if dev.cfg.reset_std > 0.0:
                new = new + dev.cfg.reset_std * _draws(ctx).normal(
                    ctx.seed, "compound.reset_noise", call, tuple(ctx.shape),
                    start=dev.index * m * n, xp=xp, dtype=ctx.dtype, device=ctx.device)
            new = device_stage.clip_weights(xp, new, dev.params)
            dev.w = xp.where(crit, new, dev.w)
        zero = xp.zeros_like(p)
        for dev, sel, diff in ((self.plus, crit & larger, p - q),
                               (self.minus, crit & ~larger, q - p)):
            cols = xp.nonzero(xp.any(sel, axis=0))[0]
            if cols.shape[0] == 0:
                continue
            ds = xp.take(xp.matrix_transpose(xp.where(sel, diff, zero)), cols, axis=0)
            xs = xp.take(eye, cols, axis=0)
            first = ctx.streams.next_calls("transfer", int(cols.shape[0]))
            dev.pulse(ctx, xs, ds, -1.0, cell.refresh_update, first, prefix="transfer")

    def devices(self) -> List[SubDevice]:
        return [self.minus, self.plus]

    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        state.update(rows=self.rows, refreshed=self.refreshed)
        return state

    def load_state_dict(self, state: Dict[str, Any], path: str) -> None:
        super().load_state_dict(state, path)
        self.rows = _check_count(state.get("rows"), f"{path}['rows']")
        self.refreshed = _check_count(state.get("refreshed"), f"{path}['refreshed']")


def make_cell(ctx: Context, spec: Any, where: str) -> Cell:
    """The cell of a device config: a pulsed device, a VectorUnitCell or a OneSidedUnitCell."""
    if type(spec) is VectorUnitCell:
        return VectorCell(ctx, spec, where)
    if type(spec) is OneSidedUnitCell:
        return OneSidedCell(ctx, spec, where)
    if device_stage.is_pulsed(spec):
        return SingleCell(ctx, spec, where)
    raise ConfigError(f"{where}: {type(spec).__name__} cannot be used here (a pulsed device, "
                      f"VectorUnitCell or OneSidedUnitCell)")


# -- compounds ----------------------------------------------------------------------------------


class _CellCompound(Compound):
    """A unit cell as the device of a UnitCellRPUConfig tile."""

    def __init__(self, ctx: Context, rpu_config: Any) -> None:
        super().__init__(ctx, rpu_config)
        check_pulsed_update(rpu_config.update, "update")
        self.cell = make_cell(ctx, rpu_config.device, "device")

    def weights(self) -> Any:
        return self.cell.weights()

    def set_weights(self, w: Any) -> None:
        self.cell.set_weights(w)

    def update(self, xs: Any, ds: Any, lr: float) -> None:
        batch = xs.shape[0]
        if batch == 0:
            return
        first = self.ctx.streams.next_calls("update", batch)
        self.cell.cycles(xs, ds, lr, self.rpu_config.update, first, "update", batch)

    def devices(self) -> list:
        return self.cell.devices()

    def state_dict(self) -> Dict[str, Any]:
        return {"cell": self.cell.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if not isinstance(state, dict):
            raise ValueError("state['compound']: expected a dict")
        self.cell.load_state_dict(state.get("cell"), "state['compound']['cell']")


@register("VectorUnitCell")
class VectorUnitCellCompound(_CellCompound):
    """VectorUnitCell (spec/unit_cells.md)."""


@register("OneSidedUnitCell")
class OneSidedUnitCellCompound(_CellCompound):
    """OneSidedUnitCell (spec/unit_cells.md)."""


@register("MixedPrecisionCompound")
class MixedPrecision(Compound):
    """MixedPrecisionCompound (spec/unit_cells.md): digital χ, thresholded pulsed transfers."""

    def __init__(self, ctx: Context, rpu_config: Any) -> None:
        super().__init__(ctx, rpu_config)
        cell = rpu_config.device
        check_pulsed_update(rpu_config.update, "update")
        self.cfg = cell
        self.inner = make_cell(ctx, cell.device, "device.device")
        self.g_hat = float(cell.granularity) if cell.granularity > 0 else self.inner.granularity
        if not self.g_hat > 0.0:
            raise ConfigError("device.granularity: the device has no positive granularity; "
                              "set granularity > 0")
        # aihwkit: the tile's update parameters with update and BL management forced on
        self.transfer_up = copy.deepcopy(rpu_config.update)
        self.transfer_up.update_management = True
        self.transfer_up.update_bl_management = True
        xp = ctx.xp
        self.chi = xp.zeros(ctx.shape, dtype=ctx.dtype, device=ctx.device)
        self.rows = 0  # update rows since set_weights (aihwkit's current_update_index)
        self.row = 0  # next row of χ to transfer (aihwkit's current_row_index)
        self.transfers = 0  # transfer events since creation

    def weights(self) -> Any:
        return self.inner.weights()

    def set_weights(self, w: Any) -> None:
        self.inner.set_weights(w)
        self.chi = self.ctx.xp.zeros_like(self.chi)
        self.rows = self.row = 0

    def _quantized(self, v: Any, bins: int, stochastic: bool, stream: str, call: int) -> Any:
        """v on the levels k·w, w = max abs(v)/⌊bins/2⌋ (1 for v = 0), |k| <= ⌊bins/2⌋."""
        if bins <= 0:
            return v
        xp, ctx = self.ctx.xp, self.ctx
        half = bins // 2
        amax = xp.max(xp.abs(v))
        width = xp.where(amax > 0, amax / half, xp.ones_like(amax))
        scaled = v / width
        if stochastic:
            u = _draws(ctx).uniform(ctx.seed, stream, call, v.shape[0], xp=xp, dtype=ctx.dtype,
                                    device=ctx.device)
            scaled = scaled + (u - 0.5)
        return xp.clip(xp.round(scaled), min=-float(half), max=float(half)) * width

    def update(self, xs: Any, ds: Any, lr: float) -> None:
        xp, cfg = self.ctx.xp, self.cfg
        batch = xs.shape[0]
        if batch == 0:
            return
        first = self.ctx.streams.next_calls("update", batch)
        every = cfg.transfer_every * batch
        qx = xp.stack([self._quantized(xs[k, :], cfg.n_x_bins, cfg.stoc_round_x,
                                       "compound.x_round", first + k) for k in range(batch)])
        qd = xp.stack([self._quantized(ds[k, :], cfg.n_d_bins, cfg.stoc_round_d,
                                       "compound.d_round", first + k) for k in range(batch)])
        scaled = lr * qd
        start = 0  # rows accumulated into χ so far
        for k in range(batch):
            # aihwkit's order: row k is added, then the transfer test, before the row counter
            # advances
            if self.rows > 0 and self.rows % every == 0:
                self._accumulate(scaled[start:k + 1, ...], qx[start:k + 1, ...])
                start = k + 1
                self.transfer(batch)
            self.rows += 1
        self._accumulate(scaled[start:, ...], qx[start:, ...])
        if not bool(xp.all(xp.isfinite(self.chi))):  # the tile undoes the call (spec/README.md)
            raise ValueError(f"x, d, lr: the digital accumulator chi += lr·q(d)q(x)ᵀ overflows "
                             f"{self.ctx.dtype} (lr = {lr!r}); spec/unit_cells.md")

    def _accumulate(self, a: Any, b: Any) -> None:
        """χ ← χ + a_k·b_kᵀ for the rows k of a (B, m) and b (B, n) in order, in place (χ is the
        compound's own array; the tile keeps copies to undo a call); compiled for numpy
        arrays on the fast backend (refsim_fast.update.outer_accumulate: the same numbers)."""
        xp, fast = self.ctx.xp, self.ctx.fast_update
        if a.shape[0] == 0:
            return
        if fast is not None:
            self.chi = fast.outer_accumulate(self.chi, a, b)
            return
        for k in range(a.shape[0]):
            self.chi += xp.reshape(a[k, :], (-1, 1)) * xp.reshape(b[k, :], (1, -1))

    def transfer(self, batch: int) -> None:
        """Move whole multiples of ĝ of the next rows of χ onto the device (spec/unit_cells.md)."""
        ctx, xp, cfg = self.ctx, self.ctx.xp, self.cfg
        m = ctx.shape[0]
        count = cfg.n_rows_per_transfer
        if count == 0 or cfg.transfer_lr == 0.0:
            return
        count = m if count < 0 else min(count, m)
        self.transfers += 1
        first = ctx.streams.next_calls("transfer", count)
        start = self.row
        if cfg.random_row and count < m:
            u = _draws(ctx).uniform(ctx.seed, "compound.column", first, 1, xp=xp,
                                    device=ctx.device)
            start = min(int(math.floor(float(u[0]) * m)), m - 1)
        order = [(start + r) % m for r in range(count)]
        eye = xp.eye(m, dtype=ctx.dtype, device=ctx.device)
        k_all = xp.trunc(self.chi / self.g_hat)
        if count < m:  # only the chosen rows move
            chosen = set(order)
            selected = xp.reshape(xp.asarray([r in chosen for r in range(m)],
                                             device=ctx.device), (-1, 1))
            k_all = xp.where(selected, k_all, xp.zeros_like(k_all))
        self.chi = self.chi - k_all * self.g_hat
        if order == list(range(m)):  # every row, in order
            xs, ds = k_all, eye
        else:
            rows = xp.asarray(order, dtype=xp.int64, device=ctx.device)
            xs, ds = xp.take(k_all, rows, axis=0), xp.take(eye, rows, axis=0)
        self.inner.cycles(xs, ds, self.g_hat * cfg.transfer_lr, self.transfer_up, first,
                          "transfer", count)
        self.row = (start + count) % m

    def devices(self) -> list:
        return self.inner.devices()

    def state_dict(self) -> Dict[str, Any]:
        xp = self.ctx.xp
        return {"cell": self.inner.state_dict(), "chi": xp.asarray(self.chi, copy=True),
                "rows": self.rows, "row": self.row, "transfers": self.transfers}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        path = "state['compound']"
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected a dict")
        self.inner.load_state_dict(state.get("cell"), f"{path}['cell']")
        self.chi = _check_weights(self.ctx, state.get("chi"), f"{path}['chi']")
        self.rows = _check_count(state.get("rows"), f"{path}['rows']")
        self.row = _check_count(state.get("row"), f"{path}['row']", self.ctx.shape[0])
        self.transfers = _check_count(state.get("transfers"), f"{path}['transfers']")


__all__ = ["Cell", "MixedPrecision", "OneSidedCell", "OneSidedUnitCellCompound", "SingleCell",
           "VectorCell", "VectorUnitCellCompound", "inverted_params", "make_cell"]

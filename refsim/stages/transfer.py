"""Transfer compounds: Tiki-taka v1 (``TransferCompound``), its buffered version v2
(``BufferedTransferCompound``), chopped TTv2 (``ChoppedTransferCompound``) and AGAD
(``DynamicTransferCompound``); spec/transfer.md.

Each class is a :class:`refsim.stages.compounds.Compound` registered under the config class it
implements. The devices are :class:`SubDevice` arrays ``D_0`` (fast, gradient pulses) …
``D_{K-1}``; the digital state (buffers, choppers, running maxima and means, counters, column
pointers) lives in arrays of the tile's namespace.

Work per transfer event: the read of its ``r`` lines is one analog read of an ``(ℓ, r)`` slice
of the source device (an O(ℓ·r) read, bit-identical to the read of the full array with one-hot
inputs for the IO settings in :func:`sliceable`), the buffer arithmetic touches O(ℓ·r) numbers,
and the pulsed writes of an update call are collected and applied per receiving device in one
batch of cycles (the same cycles, calls and order as writing them one by one, since nothing
reads the receiving device in between).
"""

from __future__ import annotations

import dataclasses
import math
import struct
from typing import Any, Dict, List, Tuple

from refsim.configs import (
    AnalogMVType,
    BoundManagementType,
    ConfigError,
    IOParameters,
    NoiseManagementType,
    PulseType,
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
from refsim.precision import real

#: Pulse types of ``transfer_update`` that write exactly (no pulses): the line is changed by
#: −lr·d·xᵀ, clamped to the device bounds for 'NoneWithDevice'.
EXACT_WRITES = (PulseType.NONE, PulseType.NONE_WITH_DEVICE)


# -- scalar helpers -------------------------------------------------------------------------------


def f32(value: float) -> float:
    """``value`` rounded to the nearest float32 (aihwkit evaluates the integer-valued schedule
    quantities in float32; refsim does the same so that e.g. ceil(0.1·30) is 3, not 4)."""
    try:
        return struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        return value


def round_half_away(value: float) -> int:
    """C ``roundf``: to the nearest integer, halves away from zero."""
    a = abs(value)
    r = math.floor(a)
    if a - r >= 0.5:
        r += 1
    return int(r) if value >= 0 else -int(r)


def chopper_period(prob: float) -> int:
    """N = max(ceil(1/p), 2) sweeps per chopper period (1/p in float32), 2 for p <= 0."""
    if prob <= 0.0:
        return 2
    return max(math.ceil(f32(1.0 / f32(prob))), 2)


def num_states(cfg: Any) -> float:
    """(w_max − w_min)/g of a device spec (its mean bounds, float32)."""
    eff = device_stage.effective(cfg)
    return f32(f32(f32(eff["w_max"]) - f32(eff["w_min"])) / f32(device_stage.granularity(cfg)))


def sliceable(io: IOParameters) -> bool:
    """True when the read of one-hot inputs e_c through ``io`` (noise and bound management off)
    depends only on the read lines of the array, so that reading an (ℓ, r) slice with the
    identity input gives bit for bit the read of the full array (spec/transfer.md §T3): no input
    noise, no IR drop and no stochastic input rounding (their numbers or values involve every
    input)."""
    if io.is_perfect or io.mv_type == AnalogMVType.IDEAL:
        return True
    sto = io.inp_sto_round and io_stage.resolution_step(io.inp_res, io.inp_bound) > 0.0
    return io.inp_noise <= 0.0 and io.ir_drop <= 0.0 and not sto


def _floats(xp: Any, a: Any) -> List[float]:
    """A 1-d array as a list of Python floats."""
    return [float(v) for v in io_stage._to_list(xp, a)]


# -- Tiki-taka v1 ---------------------------------------------------------------------------------


@register("TransferCompound")
class TransferCompound(Compound):
    """Tiki-taka v1 (spec/transfer.md §T1-§T4): gradient pulses on D_0, periodic transfers of
    lines of D_k onto D_{k+1}, visible weight W = Σ_k γ_k·D_k."""

    #: fixed number of devices of the rule (None: any K >= 2)
    n_devices: Any = None
    #: whether transfer learning rates carry the ratio γ_k/γ_{k+1} (buffered rules)
    gamma_ratio = False
    #: collect the pulsed writes of an update call per receiving device (False: apply each
    #: at once; the same result, tested)
    defer_writes = True

    def __init__(self, ctx: Context, rpu_config: Any) -> None:
        super().__init__(ctx, rpu_config)
        cell = rpu_config.device
        self.cell = cell
        k = len(cell.unit_cell_devices)
        if k < 2 or (self.n_devices is not None and k != self.n_devices):
            want = "at least 2" if self.n_devices is None else f"exactly {self.n_devices}"
            raise ConfigError(f"device.unit_cell_devices: {type(cell).__name__} needs {want} "
                              f"devices ({k} given)")
        self.K = k
        up = rpu_config.update
        if up.pulse_type not in pulse_stage.PULSED:
            raise ConfigError(f"update.pulse_type: a transfer compound updates its fast device "
                              f"with pulses; {up.pulse_type.value!r} is not a pulsed type")
        self.up = up
        # entry 0 is the fast device, entry 1 the spec of every slower device (as aihwkit)
        self.devs = [SubDevice(ctx, cell.unit_cell_devices[min(i, 1)], i,
                               f"device.unit_cell_devices[{min(i, 1)}]") for i in range(k)]
        self.g = [dev.granularity for dev in self.devs]
        self.gamma = [float(v) for v in cell.gamma_vec] if cell.gamma_vec else \
            [float(cell.gamma) ** (k - 1 - i) for i in range(k)]
        self.cols = bool(cell.transfer_columns)
        m, n = ctx.shape
        self.L, self.ell = (n, m) if self.cols else (m, n)  # lines, line length
        self.n_reads = min(int(cell.n_reads_per_transfer), self.L)
        self.io = dataclasses.replace(cell.transfer_forward,
                                      noise_management=NoiseManagementType.NONE,
                                      bound_management=BoundManagementType.NONE).frozen()
        io_stage.check_supported(self.io, "device.transfer_forward")
        self.sliced = sliceable(self.io)
        self.tu = cell.transfer_update
        self.transfer_lr = [float(v) for v in cell.transfer_lr_vec] if cell.transfer_lr_vec \
            else [float(cell.transfer_lr)] * k
        self.every = self._every()
        self.counter = 0  # update rows since the last set_weights
        self.pointers = [0] * k  # next line to read, per source device
        self.pending: Dict[int, list] = {}  # pulsed writes not yet applied, per device

    # -- configuration ----------------------------------------------------------------------------
    def _every(self) -> List[float]:
        """e_k, the period of the transfer out of D_k in the units of transfer_every."""
        cell = self.cell
        if cell.transfer_every_vec:
            return [float(v) for v in cell.transfer_every_vec]
        e, out = f32(float(cell.transfer_every)), []
        factor = f32(f32(float(self.L)) / f32(float(self.n_reads)))
        for _ in range(self.K):
            out.append(e)
            e = f32(e * factor)
        return out

    def _period(self, k: int, batch: int) -> int:
        """Update rows between transfers out of D_k (0: never), for a call of ``batch`` rows."""
        e = self.every[k]
        if self.cell.units_in_mbatch:
            return max(math.ceil(f32(f32(e) * float(batch))), 0)
        return max(round_half_away(f32(e)), 0)

    def _real(self) -> type:
        """The scalar type of the tile's dtype: learning-rate products are computed in it, in
        aihwkit's order (spec/agreement.md rule 7)."""
        return real(self.ctx.dtype)

    def _transfer_lr(self, k: int, eta: float) -> float:
        """Learning rate of the transfer out of D_k."""
        R = self._real()
        lr = R(self.transfer_lr[k])
        if self.cell.scale_transfer_lr:
            lr = lr * R(eta)
        g_from, g_to = self.gamma[k], self.gamma[k + 1]
        if self.gamma_ratio and g_from > 0.0 and g_to > 0.0:
            lr = lr * (R(g_from) / R(g_to))
        return float(lr)

    def _fast_lr(self, eta: float) -> float:
        """Pulse-count learning rate of the gradient update on D_0 (fast_lr rule)."""
        cell, R = self.cell, self._real()
        if cell.fast_lr > 0.0:
            return float(R(cell.fast_lr) * R(eta)) if cell.scale_fast_lr else \
                float(R(cell.fast_lr))
        return eta

    def _row_lrs(self, xs: Any, ds: Any, eta: float) -> List[float]:
        """The pulse-count learning rate of every row (and the state updates that go with it)."""
        return [self._fast_lr(eta)] * xs.shape[0]

    # -- the tile interface -----------------------------------------------------------------------
    def devices(self) -> list:
        return list(self.devs)

    def reset(self, prob: float) -> None:
        """Reset acts on the fast device only (as aihwkit's resetCols of transfer compounds)."""
        self.devs[0].reset(self.ctx, prob)

    def _terms(self) -> List[Tuple[int, Any]]:
        return [(i, dev.w) for i, dev in enumerate(self.devs)]

    def weights(self) -> Any:
        xp = self.ctx.xp
        total = None
        for i, w in self._terms():
            gamma = self.gamma[i]
            if gamma == 0.0:
                continue
            term = w if gamma == 1.0 else gamma * w
            total = term if total is None else total + term
        if total is None:
            return xp.zeros(self.ctx.shape, dtype=self.ctx.dtype, device=self.ctx.device)
        return xp.asarray(total, copy=True)

    def set_weights(self, w: Any) -> None:
        """Every device 0 (clamped), the last one W/γ_{K−1} (clamped); the row counter and the
        line pointers restart at 0. Buffers, choppers and running statistics are kept (as
        aihwkit's onSetWeights)."""
        xp = self.ctx.xp
        self.counter = 0
        self.pointers = [0] * self.K
        self.pending = {}
        zeros = xp.zeros(self.ctx.shape, dtype=self.ctx.dtype, device=self.ctx.device)
        for dev in self.devs[:-1]:
            dev.set(self.ctx, zeros)
        last = self.gamma[-1]
        self.devs[-1].set(self.ctx, w if last == 1.0 else w / last)

    def update(self, xs: Any, ds: Any, lr: float) -> None:
        ctx = self.ctx
        batch = xs.shape[0]
        first = ctx.streams.next_calls("update", batch)
        if batch == 0 or lr == 0.0:  # aihwkit skips a row with lr 0 entirely
            return
        periods = [self._period(k, batch) for k in range(self.K - 1)]
        row_lrs = self._row_lrs(xs, ds, lr)
        start = 0
        for r in range(batch):
            self.counter += 1
            due = [k for k, p in enumerate(periods) if p > 0 and self.counter % p == 0]
            if due or r == batch - 1 or row_lrs[r + 1] != row_lrs[r]:
                self._pulse_fast(xs[start:r + 1, ...], ds[start:r + 1, ...], row_lrs[r],
                                 first + start)
                start = r + 1
            for k in due:
                self._transfer(k, lr, row_lrs[r])
        for j in sorted(self.pending):
            self._flush(j)

    def _pulse_fast(self, xs: Any, ds: Any, lr: float, first_call: int) -> None:
        self.devs[0].pulse(self.ctx, xs, ds, lr, self.up, first_call)

    # -- transfers -----------------------------------------------------------------------------
    def _transfer(self, k: int, eta: float, count_lr: float) -> None:
        """One transfer event out of D_k (after the update row that made it due)."""
        lines = self._select_lines(k)
        lr = self._transfer_lr(k, eta)
        if lr == 0.0:
            return
        self._flush(k)
        self._read_and_write(k, lines, lr, count_lr)

    def _select_lines(self, k: int) -> List[int]:
        """The lines of the next event out of D_k (pointer or random start, §T3); advances the
        pointer."""
        ctx = self.ctx
        if self.cell.random_selection:
            call = ctx.streams.next_call("compound.column")
            u = float(ctx.draws.uniform(ctx.seed, "compound.column", call, 1, xp=ctx.xp,
                                        device=ctx.device)[0])
            start = min(int(math.floor(u * self.L)), self.L - 1)
        else:
            start = self.pointers[k]
        self.pointers[k] = (start + self.n_reads) % self.L
        return [(start + b) % self.L for b in range(self.n_reads)]

    def _read_and_write(self, k: int, lines: List[int], lr: float, count_lr: float) -> None:
        """TTv1: read the lines of D_k, optionally reset them, add lr·(read) to D_{k+1}."""
        ctx, xp = self.ctx, self.ctx.xp
        v = self._read(k, lines)
        p = float(self.cell.with_reset_prob)
        if p > 0.0:
            call = ctx.streams.next_call("compound.reset_prob")
            u = _floats(xp, ctx.draws.uniform(ctx.seed, "compound.reset_prob", call, len(lines),
                                              xp=xp, device=ctx.device))
            for b, c in enumerate(lines):
                if u[b] < p:
                    self._reset_line(k, c, call, b)
        self._write(k + 1, lines, -v, lr)

    def _reset_line(self, k: int, c: int, call: int, b: int) -> None:
        """Line c of D_k to β + reset_std·ξ (numbers b·ℓ + i of compound.reset_noise), clamped."""
        ctx, xp = self.ctx, self.ctx.xp
        dev = self.devs[k]
        params = dev.params
        new = self._line(params.reset_bias, c)
        std = float(dev.cfg.reset_std)
        if std > 0.0:
            new = new + std * ctx.draws.normal(ctx.seed, "compound.reset_noise", call, self.ell,
                                               start=b * self.ell, xp=xp, dtype=ctx.dtype,
                                               device=ctx.device)
        new = xp.clip(new, min=self._line(params.b_min, c), max=self._line(params.b_max, c))
        self._set_line(dev.w, c, new)

    # -- reads, writes and lines ------------------------------------------------------------------
    def _line(self, a: Any, c: int) -> Any:
        """A copy of line c (column c, or row c when transfer_columns is False) of ``a``."""
        line = a[:, c] if self.cols else a[c, :]
        return self.ctx.xp.asarray(line, copy=True)

    def _set_line(self, a: Any, c: int, values: Any) -> None:
        if self.cols:
            a[:, c] = values
        else:
            a[c, :] = values

    def _lines(self, a: Any, lines: List[int]) -> Any:
        """(R, ℓ): copies of the given lines of ``a``, row b = line lines[b]."""
        xp = self.ctx.xp
        idx = xp.asarray(lines, dtype=xp.int64, device=self.ctx.device)
        return xp.matrix_transpose(xp.take(a, idx, axis=1)) if self.cols else \
            xp.take(a, idx, axis=0)

    def _set_lines(self, a: Any, lines: List[int], values: Any) -> None:
        """Line lines[b] of ``a`` ← row b of ``values`` (distinct lines; a run of consecutive
        lines is one slice assignment)."""
        for lo, hi in _consecutive_runs(lines):
            part = values[lo:hi, ...]
            first, last = lines[lo], lines[hi - 1] + 1
            if self.cols:
                a[:, first:last] = self.ctx.xp.matrix_transpose(part)
            else:
                a[first:last, :] = part

    def _onehots(self, lines: List[int]) -> Any:
        """(r, L) rows e_c of the given lines, in the tile's dtype."""
        xp, ctx = self.ctx.xp, self.ctx
        idx = xp.asarray(lines, dtype=xp.int64, device=ctx.device)
        grid = xp.reshape(xp.arange(self.L, dtype=xp.int64, device=ctx.device), (1, -1))
        return xp.astype(grid == xp.reshape(idx, (-1, 1)), ctx.dtype)

    def _read(self, k: int, lines: List[int]) -> Any:
        """(r, ℓ): the lines of D_k read through transfer_forward with inputs e_c (one call of
        io.transfer; row b of the read is line lines[b])."""
        ctx, xp = self.ctx, self.ctx.xp
        w = self.devs[k].w
        if self.sliced:
            idx = xp.asarray(lines, dtype=xp.int64, device=ctx.device)
            part = xp.take(w, idx, axis=1) if self.cols else \
                xp.matrix_transpose(xp.take(w, idx, axis=0))
            eye = xp.eye(len(lines), dtype=ctx.dtype, device=ctx.device)
            return ctx.read(part, eye, self.io, "transfer")
        full = w if self.cols else xp.matrix_transpose(w)
        return ctx.read(full, self._onehots(lines), self.io, "transfer")

    def _write(self, j: int, lines: List[int], d: Any, lr: float) -> None:
        """Write lines of D_j: cycle b has x = e_c, d = d[b] (rows: x = d[b], d = e_r), learning
        rate lr, with transfer_update; pulsed writes take the next calls of ``transfer``."""
        if not lines:
            return
        ctx, xp = self.ctx, self.ctx.xp
        if self.tu.pulse_type in EXACT_WRITES:
            dev = self.devs[j]
            for b, c in enumerate(lines):
                new = self._line(dev.w, c) - lr * d[b, :]
                if self.tu.pulse_type == PulseType.NONE_WITH_DEVICE:
                    new = xp.clip(new, min=self._line(dev.params.b_min, c),
                                  max=self._line(dev.params.b_max, c))
                self._set_line(dev.w, c, new)
            return
        e = self._onehots(lines)
        xs, ds = (e, d) if self.cols else (d, e)
        call = ctx.streams.next_calls("transfer", len(lines))
        self.pending.setdefault(j, []).append((xs, ds, lr, call))
        if not self.defer_writes:
            self._flush(j)

    def _flush(self, j: int) -> None:
        """Apply the collected pulsed writes of D_j, in call order, runs of consecutive calls
        with one learning rate in one batch of cycles."""
        writes = self.pending.pop(j, [])
        xp = self.ctx.xp
        run: list = []
        for item in writes + [None]:
            if run and (item is None or item[2] != run[0][2] or
                        item[3] != run[-1][3] + run[-1][0].shape[0]):
                xs = xp.concat([w[0] for w in run], axis=0) if len(run) > 1 else run[0][0]
                ds = xp.concat([w[1] for w in run], axis=0) if len(run) > 1 else run[0][1]
                self.devs[j].pulse(self.ctx, xs, ds, run[0][2], self.tu, run[0][3],
                                   prefix="transfer")
                run = []
            if item is not None:
                run.append(item)

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        xp = self.ctx.xp
        return save_drift_states(self.ctx, self.devs, {
            "class": type(self.cell).__name__,
            "devices": [xp.asarray(dev.w, copy=True) for dev in self.devs],
            "counter": self.counter, "pointers": list(self.pointers)})

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("class") != type(self.cell).__name__:
            raise ValueError(f"state['compound']: expected the state of a "
                             f"{type(self.cell).__name__}")
        devices = state.get("devices")
        if not isinstance(devices, list) or len(devices) != self.K:
            raise ValueError(f"state['compound']['devices']: expected {self.K} weight arrays")
        for i, (dev, w) in enumerate(zip(self.devs, devices)):
            dev.w = self._array(w, f"devices[{i}]", self.ctx.shape)
        load_drift_states(self.ctx, self.devs, state.get("drift"), "state['compound']['drift']")
        self.counter = self._int(state.get("counter"), "counter")
        pointers = state.get("pointers")
        if not isinstance(pointers, list) or len(pointers) != self.K or \
                not all(isinstance(p, int) and 0 <= p < self.L for p in pointers):
            raise ValueError(f"state['compound']['pointers']: expected {self.K} line indices "
                             f"in [0, {self.L})")
        self.pointers = list(pointers)
        self.pending = {}

    def _array(self, a: Any, name: str, shape: tuple, dtype: Any = None) -> Any:
        xp = self.ctx.xp
        if not hasattr(a, "shape") or tuple(a.shape) != tuple(shape):
            raise ValueError(f"state['compound'][{name!r}]: expected an array of shape {shape}")
        return xp.asarray(xp.astype(a, self.ctx.dtype if dtype is None else dtype), copy=True)

    @staticmethod
    def _int(value: Any, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"state['compound'][{name!r}]: expected an integer >= 0")
        return value


# -- Tiki-taka v2 ---------------------------------------------------------------------------------


@register("BufferedTransferCompound")
class BufferedTransferCompound(TransferCompound):
    """TTv2 (spec/transfer.md §T5): reads of D_k accumulate in a digital buffer H_k; whole
    thresholds thres_scale·g_{k+1} are written to D_{k+1}."""

    gamma_ratio = True

    def __init__(self, ctx: Context, rpu_config: Any) -> None:
        super().__init__(ctx, rpu_config)
        xp = ctx.xp
        self.buffers = [xp.zeros(ctx.shape, dtype=ctx.dtype, device=ctx.device)
                        for _ in range(self.K - 1)]

    def _read_and_write(self, k: int, lines: List[int], lr: float, count_lr: float) -> None:
        xp = self.ctx.xp
        cell = self.cell
        v = self._read(k, lines)
        g_to = self.g[k + 1]
        thres = cell.thres_scale * g_to
        steps = float(self.tu.desired_bl)
        keep = 1.0 - min(max(cell.momentum, 0.0), 1.0)
        lam = abs(lr)
        buf = self.buffers[k]
        written, counts = [], []
        for b, c in enumerate(lines):
            h = self._line(buf, c) + v[b, :] * lam
            n = xp.clip(xp.trunc(h / thres), min=-steps, max=steps)
            nonzero = n != 0.0
            if cell.forget_buffer:
                h = xp.where(nonzero, h * cell.momentum, h)
            else:
                h = xp.where(nonzero, h - keep * n * thres, h)
            self._set_line(buf, c, h)
            if bool(xp.any(nonzero)):
                written.append(c)
                counts.append(-n)
        if written:
            self._write(k + 1, written, xp.stack(counts), cell.step * g_to)

    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        state["buffers"] = [self.ctx.xp.asarray(h, copy=True) for h in self.buffers]
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        buffers = state.get("buffers")
        if not isinstance(buffers, list) or len(buffers) != self.K - 1:
            raise ValueError(f"state['compound']['buffers']: expected {self.K - 1} arrays")
        self.buffers = [self._array(h, f"buffers[{i}]", self.ctx.shape)
                        for i, h in enumerate(buffers)]


# -- chopped TTv2 ---------------------------------------------------------------------------------


@register("ChoppedTransferCompound")
class ChoppedTransferCompound(TransferCompound):
    """TTv2 / c-TTv2 (spec/transfer.md §T6): A = D_0 with input/output choppers, buffer H in units
    of β, thresholded single-pulse writes onto C = D_1, optional auto-scaled fast lr."""

    n_devices = 2
    gamma_ratio = True
    #: run an update call as one batch of cycles on A with line copies (§T11); False: row by
    #: row (the slow twin: the same numbers, tested)
    batched = True

    def __init__(self, ctx: Context, rpu_config: Any) -> None:
        super().__init__(ctx, rpu_config)
        xp, cell = ctx.xp, self.cell
        if cell.auto_granularity > 0.0 and cell.transfer_every == 0.0:
            raise ConfigError("device.auto_granularity: needs transfer_every != 0 (the buffer "
                              "granularity is divided by n·abs(transfer_every))")
        self.buffer = xp.zeros(ctx.shape, dtype=ctx.dtype, device=ctx.device)
        self.chop_line = xp.ones((self.L,), dtype=ctx.dtype, device=ctx.device)
        self.chop_elem = xp.ones((self.ell,), dtype=ctx.dtype, device=ctx.device)
        self.m_x = self.m_d = 0.0
        self.sweep = 0  # completed sweeps over the lines of A
        self.n_chop = chopper_period(cell.in_chop_prob)
        self._ahead: List[float] = []  # compound.chop_in uniforms drawn ahead, next last

    def _every(self) -> List[float]:
        every = super()._every()
        if self.cell.transfer_every < 0.0:  # auto: num_states_A/n·abs(transfer_every) rows
            t = f32(f32(num_states(self.devs[0].cfg) / f32(float(self.L))) *
                    f32(abs(float(self.cell.transfer_every))))
            every[0] = float(max(1, round_half_away(t)))
        return every

    def _period(self, k: int, batch: int) -> int:
        if self.cell.transfer_every < 0.0:
            return int(self.every[0])  # update rows, whatever units_in_mbatch says
        return super()._period(k, batch)

    def _choppers(self) -> Tuple[Any, Any]:
        """(χ_x, χ_d): the signs applied to x (n) and to d (m) in the gradient update."""
        return (self.chop_line, self.chop_elem) if self.cols else (self.chop_elem, self.chop_line)

    def _terms(self) -> List[Tuple[int, Any]]:
        xp = self.ctx.xp
        a = self.devs[0].w
        if self.gamma[0] != 0.0:
            chi_x, chi_d = self._choppers()
            a = a * (xp.reshape(chi_d, (-1, 1)) * xp.reshape(chi_x, (1, -1)))
        return [(0, a), (1, self.devs[1].w)]

    def _row_lrs(self, xs: Any, ds: Any, eta: float) -> List[float]:
        cell = self.cell
        batch = xs.shape[0]
        if not cell.auto_scale:
            return [self._fast_lr(eta)] * batch
        xp, R = self.ctx.xp, self._real()
        x_max = _floats(xp, xp.max(xp.abs(xs), axis=1))
        d_max = _floats(xp, xp.max(xp.abs(ds), axis=1))
        tau = (R(1) - R(cell.auto_momentum)) / R(batch)
        out = []
        for xm, dm in zip(x_max, d_max):
            self.m_x = float(_running_max(R(self.m_x), R(xm), tau))
            self.m_d = float(_running_max(R(self.m_d), R(dm), tau))
            if cell.fast_lr > 0.0:
                # aihwkit's getPulseCountAutoLR: fast_lr·(desired_bl·g), then /(m_x·m_d)
                lr = R(cell.fast_lr) * (R(self.up.desired_bl) * R(self.g[0]))
                if self.m_x > 0.0 and self.m_d > 0.0:
                    lr = lr / (R(self.m_x) * R(self.m_d))
                if cell.scale_fast_lr:
                    lr = lr * R(eta)
                out.append(float(lr))
            else:
                out.append(self._fast_lr(eta))
        return out

    def _pulse_fast(self, xs: Any, ds: Any, lr: float, first_call: int) -> None:
        chi_x, chi_d = self._choppers()
        self.devs[0].pulse(self.ctx, xs * chi_x, ds * chi_d, lr, self.up, first_call)

    def _lr_scale(self, lr: float, count_lr: float) -> float:
        """λ: read value → buffer units (buffer_granularity, auto_granularity,
        correct_gradient_magnitudes)."""
        cell, R = self.cell, self._real()
        g_a, g_c = R(self.g[0]), R(self.g[1])
        bg = R(cell.buffer_granularity)
        if cell.auto_granularity > 0.0:
            bg = bg * (g_a * R(cell.auto_granularity) /
                       (R(self.L) * R(abs(float(cell.transfer_every)))))
        else:
            bg = bg * g_a
        if cell.correct_gradient_magnitudes:
            bg = bg * (g_c / g_a)
            return float(R(abs(lr)) / R(count_lr) / bg)
        return float(R(abs(lr)) / bg)

    def _threshold(self, h: Any) -> Tuple[Any, Any, Any]:
        """Counts k, the new buffer and the crossing mask of buffer values h
        (spec/transfer.md §T6, step 3)."""
        xp, cell = self.ctx.xp, self.cell
        steps = float(self.tu.desired_bl)
        cross = xp.abs(h) >= 1.0
        n = xp.where(cross, xp.clip(xp.trunc(h), min=-steps, max=steps), xp.zeros_like(h))
        if cell.forget_buffer:
            h = xp.where(cross, h * cell.momentum, h)
        else:
            h = xp.where(cross, h - (1.0 - min(max(cell.momentum, 0.0), 1.0)) * n, h)
        return n, h, cross

    # -- the update call: one batch of cycles on A, then the events' reads (§T11) ----------------
    def update(self, xs: Any, ds: Any, lr: float) -> None:
        """§T2 with every row's pulses on A in one batch of cycles: the events' lines are copied
        from A right after the rows that make them due, read in one pass, and absorbed in order
        (§T11). Needs a sliceable transfer_forward (else, and with ``batched`` False: row by
        row, the same numbers)."""
        self._ahead = []  # chopper uniforms drawn ahead (none left from an earlier call)
        if not (self.batched and self.sliced):
            super().update(xs, ds, lr)
            return
        ctx, xp = self.ctx, self.ctx.xp
        batch = xs.shape[0]
        first = ctx.streams.next_calls("update", batch)
        if batch == 0 or lr == 0.0:
            return
        period = self._period(0, batch)
        row_lrs = self._row_lrs(xs, ds, lr)
        tlr = self._transfer_lr(0, lr)
        due = 0 if period <= 0 or tlr == 0.0 else \
            sum(1 for r in range(1, batch + 1) if (self.counter + r) % period == 0)
        self._draw_in_chop_ahead(due)
        chi_x, chi_d, events = [], [], []
        for r in range(batch):  # the schedule: counters, lines and chopper signs (no data)
            cx, cd = self._choppers()
            chi_x.append(cx)
            chi_d.append(cd)
            self.counter += 1
            if period > 0 and self.counter % period == 0:
                c = self._select_lines(0)[0]
                if tlr != 0.0:
                    events.append(self._event(r, c, row_lrs[r]))
        lines = [-1] * batch
        for ev in events:
            lines[ev.row] = ev.line
        snaps = self.devs[0].pulse_reading(ctx, xs * xp.stack(chi_x), ds * xp.stack(chi_d),
                                           row_lrs, self.up, first, lines, self.cols)
        if events:
            reads = ctx.read_each(xp.matrix_transpose(snaps), self.io, "transfer")
            for lo, hi in _distinct_runs([ev.line for ev in events]):
                self._absorb(events[lo:hi], reads[lo:hi, ...], tlr)
        for j in sorted(self.pending):
            self._flush(j)

    def _read_and_write(self, k: int, lines: List[int], lr: float, count_lr: float) -> None:
        """One event, row by row (§T6): its schedule part, the read of line c, the absorption."""
        ev = self._event(-1, lines[0], count_lr)
        self._absorb([ev], self._read(0, [lines[0]]), lr)

    def _event(self, row: int, c: int, count_lr: float) -> "_Event":
        """The data-free part of an event on line c (§T6 steps 5–6): its chopper sign, then the
        chopper flips and the sweep counter. Flips replace the chopper arrays (copies), so that
        signs taken before stay as they were."""
        ctx, xp, cell = self.ctx, self.ctx.xp, self.cell
        ev = _Event(row, c, count_lr, self.chop_elem * self.chop_line[c], self.sweep)
        if cell.in_chop_prob > 0.0:
            if cell.in_chop_random:
                flip = self._in_chop_uniform() < cell.in_chop_prob
            else:
                flip = (self.sweep % self.n_chop) + 1 == self.n_chop
            if flip:
                self.chop_line = _flipped(xp, self.chop_line, c)
        if c == self.L - 1:
            if cell.out_chop_prob > 0.0:
                call = ctx.streams.next_call("compound.chop_out")
                u = ctx.draws.uniform(ctx.seed, "compound.chop_out", call, self.ell, xp=xp,
                                      device=ctx.device)
                self.chop_elem = xp.where(u < cell.out_chop_prob, -self.chop_elem,
                                          self.chop_elem)
            self.sweep += 1
        return ev

    def _draws_in_chop(self) -> bool:
        """Whether every event draws a call of ``compound.chop_in`` (§T6 step 5)."""
        return self.cell.in_chop_random and self.cell.in_chop_prob > 0.0

    def _draw_in_chop_ahead(self, events: int) -> None:
        """Number 0 of the next ``events`` calls of ``compound.chop_in``, drawn in one pass for
        the events of a batched call (the numbers the events would draw one by one)."""
        if events <= 0 or not self._draws_in_chop():
            return
        ctx, xp = self.ctx, self.ctx.xp
        first = ctx.streams.next_calls("compound.chop_in", events)
        calls = xp.arange(first, first + events, dtype=xp.int64, device=ctx.device)
        u = ctx.draws.uniform_calls(ctx.seed, "compound.chop_in", calls, xp=xp, device=ctx.device)
        self._ahead = _floats(xp, u)[::-1]

    def _in_chop_uniform(self) -> float:
        """Number 0 of the next call of ``compound.chop_in`` (drawn ahead, or now)."""
        if self._ahead:
            return self._ahead.pop()
        ctx = self.ctx
        call = ctx.streams.next_call("compound.chop_in")
        return float(ctx.draws.uniform(ctx.seed, "compound.chop_in", call, 1, xp=ctx.xp,
                                       device=ctx.device)[0])

    def _absorb(self, events: List["_Event"], v: Any, lr: float) -> None:
        """§T6 steps 2–4 for events on distinct lines, in order, with their reads v (R, ℓ)."""
        xp, cell = self.ctx.xp, self.cell
        lines = [ev.line for ev in events]
        lam = self._column([self._lr_scale(lr, ev.count_lr) for ev in events])
        sign = xp.stack([ev.sign for ev in events])
        old = xp.zeros_like(v) if cell.no_buffer else self._lines(self.buffer, lines)
        n, h, cross = self._threshold(old + sign * (v * lam))
        self._set_lines(self.buffer, lines, h)
        self._write_crossed(lines, n, xp.any(cross, axis=1))

    def _column(self, values: List[float]) -> Any:
        """(R, 1) in the tile's dtype: per-event scalars, rounded as a Python float is in an
        array expression of that dtype."""
        xp = self.ctx.xp
        return xp.reshape(xp.asarray(values, dtype=self.ctx.dtype, device=self.ctx.device),
                          (-1, 1))

    def _write_crossed(self, lines: List[int], n: Any, crossed: Any) -> None:
        """Write −n[b] to line lines[b] of C for the events b with ``crossed[b]``, in order."""
        xp = self.ctx.xp
        rows = [b for b, hit in enumerate(_bools(xp, crossed)) if hit]
        if rows:
            idx = xp.asarray(rows, dtype=xp.int64, device=self.ctx.device)
            self._write(1, [lines[b] for b in rows], -xp.take(n, idx, axis=0),
                        self.cell.step * self.g[1])

    def state_dict(self) -> Dict[str, Any]:
        xp = self.ctx.xp
        state = super().state_dict()
        state.update(buffer=xp.asarray(self.buffer, copy=True),
                     chop_in=xp.asarray(self.chop_line, copy=True),
                     chop_out=xp.asarray(self.chop_elem, copy=True),
                     m_x=self.m_x, m_d=self.m_d, sweep=self.sweep)
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.buffer = self._array(state.get("buffer"), "buffer", self.ctx.shape)
        self.chop_line = self._signs(state.get("chop_in"), "chop_in", self.L)
        self.chop_elem = self._signs(state.get("chop_out"), "chop_out", self.ell)
        for name in ("m_x", "m_d"):
            value = state.get(name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not math.isfinite(value) or value < 0:
                raise ValueError(f"state['compound'][{name!r}]: expected a finite float >= 0")
            setattr(self, name, float(value))
        self.sweep = self._int(state.get("sweep"), "sweep")

    def _signs(self, a: Any, name: str, size: int) -> Any:
        xp = self.ctx.xp
        a = self._array(a, name, (size,))
        if not bool(xp.all(xp.abs(a) == 1.0)):
            raise ValueError(f"state['compound'][{name!r}]: expected signs ±1")
        return a


@dataclasses.dataclass
class _Event:
    """The data-free facts of one chopped transfer event (§T11): the update row that made it
    due (−1 row by row), its line, that row's pulse-count learning rate, the chopper sign
    χ_line,c·χ_elem at the event, the sweep counter s, and for AGAD q and σ_c."""

    row: int
    line: int
    count_lr: float
    sign: Any
    sweep: int
    q: int = 0
    switched: bool = False


def _flipped(xp: Any, signs: Any, c: int) -> Any:
    """A copy of ``signs`` with entry c negated."""
    out = xp.asarray(signs, copy=True)
    out[c] = -out[c]
    return out


def _bools(xp: Any, a: Any) -> List[bool]:
    """A 1-d boolean array as a list of Python bools."""
    return [bool(v) for v in io_stage._to_list(xp, a)]


def _distinct_runs(lines: List[int]) -> List[Tuple[int, int]]:
    """[lo, hi) ranges splitting ``lines`` in order into maximal runs without a repeated line
    (events on distinct lines are independent: each touches only its own line)."""
    runs, lo, seen = [], 0, set()
    for b, c in enumerate(lines):
        if c in seen:
            runs.append((lo, b))
            lo, seen = b, set()
        seen.add(c)
    if lines:
        runs.append((lo, len(lines)))
    return runs


def _consecutive_runs(lines: List[int]) -> List[Tuple[int, int]]:
    """[lo, hi) ranges of ``lines`` whose entries are consecutive increasing integers."""
    runs, lo = [], 0
    for b in range(1, len(lines) + 1):
        if b == len(lines) or lines[b] != lines[b - 1] + 1:
            runs.append((lo, b))
            lo = b
    return runs


def _running_max(m: float, value: float, tau: float) -> float:
    """aihwkit's updateAutoScale: the first positive value initialises, zeros are skipped."""
    if m <= 0.0:
        return value
    if value <= 0.0:
        return m
    return (1.0 - tau) * m + tau * value


# -- AGAD -----------------------------------------------------------------------------------------


@register("DynamicTransferCompound")
class DynamicTransferCompound(ChoppedTransferCompound):
    """AGAD (spec/transfer.md §T7): chopped transfer against a dynamic reference P, the running
    mean M of the reads taken when a line's chopper switches; writes after a warm-up."""

    def __init__(self, ctx: Context, rpu_config: Any) -> None:
        super().__init__(ctx, rpu_config)
        xp = ctx.xp
        self.mean = xp.zeros(ctx.shape, dtype=ctx.dtype, device=ctx.device)
        self.past = xp.zeros(ctx.shape, dtype=ctx.dtype, device=ctx.device)
        self.switched = xp.zeros((self.L,), dtype=xp.bool, device=ctx.device)

    def _draws_in_chop(self) -> bool:
        """AGAD draws a call of ``compound.chop_in`` on every event in random mode (§T7 step 7)."""
        return bool(self.cell.in_chop_random)

    def _event(self, row: int, c: int, count_lr: float) -> "_Event":
        """§T7 steps 2 (the flag), 7 and 8, without data: the sign, q and σ_c of the event."""
        xp, cell = self.ctx.xp, self.cell
        big_n = self.n_chop
        q = (self.sweep % big_n) + 1
        ev = _Event(row, c, count_lr, self.chop_elem * self.chop_line[c], self.sweep, q,
                    bool(self.switched[c]))
        self.switched[c] = False
        switch = q == big_n
        if cell.in_chop_random and self._in_chop_uniform() < cell.in_chop_prob:
            switch = True
        if switch:
            self.chop_line = _flipped(xp, self.chop_line, c)
            self.switched[c] = True
        if c == self.L - 1:
            self.sweep += 1
        return ev

    def _absorb(self, events: List["_Event"], v: Any, lr: float) -> None:
        """§T7 steps 2–6 for events on distinct lines, in order, with their reads v (R, ℓ)."""
        xp, cell = self.ctx.xp, self.cell
        big_n = self.n_chop
        mu = min(cell.tail_weightening / big_n, 1.0)
        lines = [ev.line for ev in events]
        lams = []
        for ev in events:
            lam = self._lr_scale(lr, ev.count_lr)
            if cell.experimental_correct_accumulation:
                lam /= min(float(ev.q), 1.0 / self.g[0])
            lams.append(lam)
        switched = xp.reshape(xp.asarray([ev.switched for ev in events], dtype=xp.bool,
                                         device=self.ctx.device), (-1, 1))
        mean = self._lines(self.mean, lines)
        past = xp.where(switched, mean, self._lines(self.past, lines))
        sign = xp.stack([ev.sign for ev in events])
        h = self._lines(self.buffer, lines) + (sign * (v - past)) * self._column(lams)
        n, h, cross = self._threshold(h)
        cap = float(self.tu.desired_bl) * cell.buffer_cap
        if not cell.forget_buffer and cap > 0.0:
            h = xp.where(cross, xp.clip(h, min=-cap, max=cap), h)
        self._set_lines(self.buffer, lines, h)
        self._set_lines(self.past, lines, past)
        self._set_lines(self.mean, lines, mean * (1.0 - mu) + v * mu)
        warm = xp.asarray([ev.sweep > big_n for ev in events], dtype=xp.bool,
                          device=self.ctx.device)
        self._write_crossed(lines, n, xp.any(cross, axis=1) & warm)

    def state_dict(self) -> Dict[str, Any]:
        xp = self.ctx.xp
        state = super().state_dict()
        state.update(running_mean=xp.asarray(self.mean, copy=True),
                     past_mean=xp.asarray(self.past, copy=True),
                     switched=xp.asarray(self.switched, copy=True))
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        xp = self.ctx.xp
        self.mean = self._array(state.get("running_mean"), "running_mean", self.ctx.shape)
        self.past = self._array(state.get("past_mean"), "past_mean", self.ctx.shape)
        self.switched = self._array(state.get("switched"), "switched", (self.L,), xp.bool)


__all__ = ["BufferedTransferCompound", "ChoppedTransferCompound", "DynamicTransferCompound",
           "TransferCompound", "chopper_period", "f32", "num_states", "round_half_away",
           "sliceable"]

"""The pulsed update of one device array: pulse trains (refsim/stages/pulses.py) and the device
rule (refsim/stages/devices.py) for every cycle of a batch (spec/pulses.md, spec/devices.md §V3).

:func:`pulsed_cycles` is the one entry point the tile and the compound devices use; it runs the
reference cycle loop, or the compiled one of ``refsim_fast.update`` when given (numpy arrays).
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

from refsim.configs import PulsedDevice, UpdateParameters
from refsim.stages import devices as device_stage
from refsim.stages import pulses as pulse_stage


def pulsed_cycles(xp: Any, w: Any, xs: Any, ds: Any, lr: Any, cfg: PulsedDevice,
                  up: UpdateParameters, params: device_stage.DeviceParams, seed: int,
                  first_call: int, *, device_index: int = 0, fast: Any = None,
                  track_touch: bool = False, count: bool = False, prefix: str = "update",
                  granularity: Optional[float] = None, in_place: bool = False
                  ) -> tuple[Any, Optional[Any], Optional[Any]]:
    """The weights ``w`` (m, n) after one update cycle per row of ``xs`` (batch, n) and ``ds``
    (batch, m); cycle ``k`` uses call ``first_call + k`` of the update streams and number offset
    ``device_index`` of the per-pulse noise (spec/devices.md §V6).

    ``lr`` is the learning rate of every cycle, or a sequence of one per cycle. Returns
    ``(w, last_touch, pulse_counts)``: ``last_touch`` (m, n) int64, the call of the last
    cycle with a non-zero count per element (−1 if none), when ``track_touch``; ``pulse_counts``
    (2, m, n) int64, the down ([0]) and up ([1]) pulses of these cycles, when ``count``.
    ``fast`` is the ``refsim_fast.update`` module to use, or None for the reference loop;
    ``prefix`` names the streams (``update``, or ``transfer`` for a compound's internal writes);
    ``granularity`` replaces the device's own g in the pulse trains (a unit cell's mean g,
    spec/compounds.md). ``in_place`` lets the compiled loop write into ``w`` (a compound's
    device, whose state the tile snapshots as copies); the reference returns new arrays.
    """
    w, last_touch, pulses, _ = _cycles(xp, w, xs, ds, lr, cfg, up, params, seed, first_call,
                                       device_index, fast, track_touch, count, prefix,
                                       granularity, in_place, None, True)
    return w, last_touch, pulses


def pulsed_cycles_reading(xp: Any, w: Any, xs: Any, ds: Any, lr: Any, cfg: PulsedDevice,
                          up: UpdateParameters, params: device_stage.DeviceParams, seed: int,
                          first_call: int, lines: Sequence[int], *, columns: bool = True,
                          device_index: int = 0, fast: Any = None, prefix: str = "update",
                          granularity: Optional[float] = None, in_place: bool = False
                          ) -> tuple[Any, Any]:
    """:func:`pulsed_cycles`, and copies of lines of the weights between cycles: returns
    ``(w, snapshots)``, where row s of ``snapshots`` (S, ℓ) is line ``lines[b]`` (a column when
    ``columns``, else a row) of the weights right after cycle b, for the S cycles b with
    ``lines[b] >= 0`` in order. A compound reads these lines (its transfers) without stopping the
    cycles there (spec/transfer.md §T11)."""
    lines = [int(c) for c in lines]
    if len(lines) != xs.shape[0]:
        raise ValueError(f"lines: expected one entry per cycle ({xs.shape[0]}), got {len(lines)}")
    w, _, _, snaps = _cycles(xp, w, xs, ds, lr, cfg, up, params, seed, first_call, device_index,
                             fast, False, False, prefix, granularity, in_place, lines, columns)
    return w, snaps


def _cycles(xp: Any, w: Any, xs: Any, ds: Any, lr: Any, cfg: PulsedDevice, up: UpdateParameters,
            params: device_stage.DeviceParams, seed: int, first_call: int, device_index: int,
            fast: Any, track_touch: bool, count: bool, prefix: str,
            granularity: Optional[float], in_place: bool, lines: Optional[List[int]],
            columns: bool) -> tuple[Any, Optional[Any], Optional[Any], Optional[Any]]:
    m, n = w.shape
    g = device_stage.granularity(cfg) if granularity is None else float(granularity)
    per_cycle = isinstance(lr, (list, tuple)) or getattr(lr, "ndim", 0) > 0
    if per_cycle:
        lr = [float(v) for v in lr]
        if len(lr) != xs.shape[0]:
            raise ValueError(f"lr: expected one learning rate or one per cycle "
                             f"({xs.shape[0]}), got {len(lr)}")
    wanted = [] if lines is None else [b for b, c in enumerate(lines) if c >= 0]
    size = m if columns else n
    if any(not 0 <= lines[b] < (n if columns else m) for b in wanted):  # type: ignore[index]
        raise ValueError(f"lines: expected indices in [0, {n if columns else m}) or -1")
    if fast is not None:
        import numpy as np

        last_touch = np.full((m, n), -1, dtype=np.int64) if track_touch else None
        counters = (np.zeros((m, n), np.int64), np.zeros((m, n), np.int64)) if count else None
        snaps = None
        snapshots = None
        if lines is not None:
            snaps = np.empty((len(wanted), size), dtype=np.asarray(w).dtype)
            slot = np.full(len(lines), -1, dtype=np.int64)
            slot[wanted] = np.arange(len(wanted))
            snapshots = (slot, np.asarray(lines, dtype=np.int64), snaps, columns)
        w = fast.pulsed_update(w, xs, ds, np.asarray(lr) if per_cycle else lr, cfg, up, params,
                               g, seed, first_call, device_index=device_index,
                               last_touch=last_touch, prefix=prefix, pulse_counters=counters,
                               in_place=in_place, snapshots=snapshots)
        return w, last_touch, (np.stack(counters[::-1]) if count else None), snaps
    from refsim import rng

    device = rng.device_of(w)
    last_touch = xp.full((m, n), -1, dtype=xp.int64, device=device) if track_touch else None
    pulses = xp.zeros((2, m, n), dtype=xp.int64, device=device) if count else None
    taken: list = []
    if not (track_touch or count):
        w = _cycles_by_rows(xp, w, xs, ds, lr if per_cycle else [lr] * xs.shape[0], g, cfg, up,
                            params, seed, first_call, device_index, prefix, lines, columns,
                            taken)
    else:
        for k in range(xs.shape[0]):
            call = first_call + k
            counts, plan = pulse_stage.coincidences(xp, xs[k, :], ds[k, :],
                                                    lr[k] if per_cycle else lr, g, up, seed,
                                                    call, prefix)
            if plan.bl > 0:
                w = device_stage.apply_pulses(xp, w, counts, params, cfg, plan.bl, seed, call,
                                              device_index, pulse_stage.c2c_stream(prefix))
                if track_touch:
                    last_touch = xp.where(counts != 0, xp.full_like(last_touch, call),
                                          last_touch)
                if count:
                    pulses = pulses + device_stage.pulse_counts(xp, counts)
            if lines is not None and lines[k] >= 0:
                taken.append(xp.asarray(w[:, lines[k]] if columns else w[lines[k], :],
                                        copy=True))
    snaps = None
    if lines is not None:
        snaps = xp.stack(taken) if taken else xp.zeros((0, size), dtype=w.dtype, device=device)
    return w, last_touch, pulses, snaps


#: Cycles whose pulsed rows differ are applied together by the reference (False: one by one,
#: the slow twin the tests compare with).
BATCH_DISJOINT_ROWS = True


def _cycles_by_rows(xp: Any, w: Any, xs: Any, ds: Any, lrs: List[float], g: float,
                    cfg: PulsedDevice, up: UpdateParameters, params: device_stage.DeviceParams,
                    seed: int, first_call: int, device_index: int, prefix: str,
                    lines: Optional[List[int]], columns: bool, taken: list) -> Any:
    """The reference's cycles, each cycle's pulses applied as soon as a later cycle's rows meet
    them (or a line is read): consecutive cycles that pulse different rows (a compound's
    transfer writes one row per cycle) are applied in one pass
    (device_stage.apply_pulses_rows), which gives the numbers of applying them one after
    another, since no pulse reads another row (spec/devices.md §V3). Appends the line copies
    to ``taken``."""
    m = w.shape[0]
    stream = pulse_stage.c2c_stream(prefix)
    busy = bytearray(m)  # rows of the pending cycles
    pending: list = []  # (lo, block, bl, call)

    def each_row(k: int) -> Any:
        """Field k of every pending cycle, repeated over the cycle's rows (int64)."""
        return xp.concat([xp.full((entry[1].shape[0],), entry[k], dtype=xp.int64,
                                  device=device) for entry in pending])

    def flush(w: Any) -> Any:
        if pending:
            rows = xp.concat([xp.arange(lo, lo + b.shape[0], dtype=xp.int64, device=device)
                              for lo, b, _, _ in pending])
            if len(pending) == 1:  # the cycle's train length and call
                bl, call = pending[0][2], pending[0][3]
            else:  # one of each per row
                bl, call = each_row(2), each_row(3)
            w = device_stage.apply_pulses_rows(xp, w, rows,
                                               xp.concat([b for _, b, _, _ in pending]), params,
                                               cfg, bl, seed, call, device_index, stream)
        pending.clear()
        busy[:] = bytes(m)
        return w

    from refsim import rng

    device = rng.device_of(w)
    for k in range(xs.shape[0]):
        call = first_call + k
        lo, block, plan = pulse_stage.coincidence_rows(xp, xs[k, :], ds[k, :], lrs[k], g, up,
                                                       seed, call, prefix)
        hi = lo + block.shape[0]
        if plan.bl > 0 and hi > lo:
            if busy.find(1, lo, hi) != -1 or not BATCH_DISJOINT_ROWS:
                w = flush(w)
            pending.append((lo, block, plan.bl, call))
            busy[lo:hi] = b"\x01" * (hi - lo)
        if lines is not None and lines[k] >= 0:
            w = flush(w)
            taken.append(xp.asarray(w[:, lines[k]] if columns else w[lines[k], :], copy=True))
    return flush(w)


__all__ = ["BATCH_DISJOINT_ROWS", "pulsed_cycles", "pulsed_cycles_reading"]

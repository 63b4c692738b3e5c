"""The pulsed update of one device array: pulse trains (refsim/stages/pulses.py) and the device
rule (refsim/stages/devices.py) for every cycle of a batch (spec/pulses.md, spec/devices.md §V3).

:func:`pulsed_cycles` is the one entry point the tile and the compound devices use; it runs the
reference cycle loop, or the compiled one of ``refsim_fast.update`` when given (numpy arrays).
"""

from __future__ import annotations

from typing import Any, Optional

from refsim.configs import PulsedDevice, UpdateParameters
from refsim.stages import devices as device_stage
from refsim.stages import pulses as pulse_stage


def pulsed_cycles(xp: Any, w: Any, xs: Any, ds: Any, lr: float, cfg: PulsedDevice,
                  up: UpdateParameters, params: device_stage.DeviceParams, seed: int,
                  first_call: int, *, device_index: int = 0, fast: Any = None,
                  track_touch: bool = False, count: bool = False, prefix: str = "update",
                  granularity: Optional[float] = None, in_place: bool = False
                  ) -> tuple[Any, Optional[Any], Optional[Any]]:
    """The weights ``w`` (m, n) after one update cycle per row of ``xs`` (batch, n) and ``ds``
    (batch, m); cycle ``k`` uses call ``first_call + k`` of the update streams and number offset
    ``device_index`` of the per-pulse noise (spec/devices.md §V6).

    Returns ``(w, last_touch, pulse_counts)``: ``last_touch`` (m, n) int64, the call of the last
    cycle with a non-zero count per element (−1 if none), when ``track_touch``; ``pulse_counts``
    (2, m, n) int64, the down ([0]) and up ([1]) pulses of these cycles, when ``count``.
    ``fast`` is the ``refsim_fast.update`` module to use, or None for the reference loop;
    ``prefix`` names the streams (``update``, or ``transfer`` for a compound's internal writes);
    ``granularity`` replaces the device's own g in the pulse trains (a unit cell's mean g,
    spec/compounds.md). ``in_place`` lets the compiled loop write into ``w`` (a compound's
    device, whose state the tile snapshots as copies); the reference returns new arrays.
    """
    m, n = w.shape
    device = getattr(w, "device", None) if fast is None else None
    g = device_stage.granularity(cfg) if granularity is None else float(granularity)
    if fast is not None:
        import numpy as np

        last_touch = np.full((m, n), -1, dtype=np.int64) if track_touch else None
        counters = (np.zeros((m, n), np.int64), np.zeros((m, n), np.int64)) if count else None
        w = fast.pulsed_update(w, xs, ds, lr, cfg, up, params, g, seed, first_call,
                               device_index=device_index, last_touch=last_touch, prefix=prefix,
                               pulse_counters=counters, in_place=in_place)
        return w, last_touch, (np.stack(counters[::-1]) if count else None)
    from refsim import rng

    device = rng.device_of(w)
    last_touch = xp.full((m, n), -1, dtype=xp.int64, device=device) if track_touch else None
    pulses = xp.zeros((2, m, n), dtype=xp.int64, device=device) if count else None
    for k in range(xs.shape[0]):
        call = first_call + k
        counts, plan = pulse_stage.coincidences(xp, xs[k, :], ds[k, :], lr, g, up, seed, call,
                                                prefix)
        if plan.bl == 0:
            continue
        w = device_stage.apply_pulses(xp, w, counts, params, cfg, plan.bl, seed, call,
                                      device_index, pulse_stage.c2c_stream(prefix))
        if track_touch:
            last_touch = xp.where(counts != 0, xp.full_like(last_touch, call), last_touch)
        if count:
            pulses = pulses + device_stage.pulse_counts(xp, counts)
    return w, last_touch, pulses


__all__ = ["pulsed_cycles"]

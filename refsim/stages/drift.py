"""Power-law conductance drift with restart on weight change (spec/drift.md, "Stage semantics",
§D1-§D4).

Pure array-API functions: the per-element drift coefficients drawn once (:func:`drift_nu`), the
initial state (:func:`initial_state`) and one drift call (:func:`drift_weights`), which returns the
new weights and the new state without mutating its inputs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Tuple

from refsim import rng
from refsim.configs import DriftParameter, SimpleDriftParameter


@dataclasses.dataclass(frozen=True)
class DriftState:
    """Drift state of one weight array (spec/drift.md §D2): the weights at the last restart
    ``w0``, the restart times ``t_start`` and the current time ``tau`` (in units of ``t_0``), and
    the weights left by the last drift call ``previous`` (to detect changes)."""

    w0: Any
    t_start: Any
    previous: Any
    tau: float = 0.0


def is_active(drift: SimpleDriftParameter) -> bool:
    """Drift acts only when ``nu > 0`` (spec/drift.md §D1); otherwise every drift field is inert."""
    return drift.nu > 0.0


def drift_nu(xp: Any, drift: SimpleDriftParameter, shape: Tuple[int, int], seed: int,
             device_index: int = 0, dtype: Any = None, device: Any = None,
             draws: Any = rng) -> Any:
    """Per-element coefficients ``ν_ij = ν·(1 + nu_dtod·ξ_ij)`` (spec/drift.md §D1), drawn once
    from stream ``drift.nu_dtod``, call ``device_index``, number ``i·n + j`` under the construction
    seed. A SimpleDriftParameter (no ``nu_dtod``) gives ``ν`` everywhere."""
    dtype = xp.float64 if dtype is None else dtype
    nu = xp.full(shape, drift.nu, dtype=dtype, device=device)
    dtod = getattr(drift, "nu_dtod", 0.0)
    if dtod > 0:
        xi = draws.normal(seed, "drift.nu_dtod", device_index, shape, xp=xp, dtype=dtype,
                          device=device)
        nu = nu * (1.0 + dtod * xi)
    return nu


def initial_state(xp: Any, weights: Any) -> DriftState:
    """The state before the first drift call: every element starts now, at its current weight."""
    return DriftState(w0=weights, t_start=xp.zeros_like(weights), previous=weights, tau=0.0)


def drift_weights(xp: Any, weights: Any, state: DriftState, dt: float,
                  drift: SimpleDriftParameter, nu: Any, seed: int, call: int,
                  bounds: Optional[Tuple[Any, Any]] = None,
                  draws: Any = rng) -> Tuple[Any, DriftState]:
    """One drift call after ``dt`` time units (spec/drift.md §D3). Returns the drifted weights
    and the new state. ``nu`` comes from :func:`drift_nu`; ``bounds`` (lower, upper arrays) clamp
    the result (pulsed devices); ``call`` numbers this call in streams ``drift.nu_std`` and
    ``drift.w_noise`` (number ``i·n + j``); ``draws`` provides ``normal`` with refsim.rng's
    signature (refsim_fast.update passes its compiled one: the same numbers)."""
    device = rng.device_of(weights)
    shape = tuple(weights.shape)
    tau = state.tau + dt / drift.t_0
    changed = xp.abs(state.previous - weights) > drift.reset_tol
    t_start = xp.where(changed, xp.full_like(state.t_start, tau), state.t_start)
    w0 = xp.where(changed, weights, state.w0)

    coeff = nu
    if getattr(drift, "nu_std", 0.0) > 0:
        xi = draws.normal(seed, "drift.nu_std", call, shape, xp=xp, dtype=weights.dtype,
                          device=device)
        coeff = coeff + drift.nu_std * coeff * xi
    nu_k = getattr(drift, "nu_k", 0.0)
    if nu_k != 0.0:
        conductance = (weights - drift.w_offset) / drift.wg_ratio + drift.g_offset
        if bool(xp.any((conductance <= 0) & xp.logical_not(changed))):
            raise ValueError(
                "drift.nu_k: the conductance (w - w_offset)/wg_ratio + g_offset must be > 0 "
                "wherever the weight drifts (set g_offset / w_offset accordingly)"
            )
        safe = xp.where(conductance > 0, conductance, xp.ones_like(conductance))
        coeff = coeff - nu_k * xp.log(safe) + nu_k * drift.log_g0
    elapsed = xp.clip(tau - t_start, min=1.0)
    scale = elapsed ** (-coeff)
    offset = (getattr(drift, "g_offset", 0.0) * getattr(drift, "wg_ratio", 1.0)
              + getattr(drift, "w_offset", 0.0))
    if abs(offset) < drift.reset_tol:
        offset = 0.0
    drifted = w0 * scale + offset * (scale - 1.0) if offset else w0 * scale
    out = xp.where(changed, weights, drifted)
    if getattr(drift, "w_noise_std", 0.0) > 0:
        out = out + drift.w_noise_std * draws.normal(seed, "drift.w_noise", call, shape, xp=xp,
                                                     dtype=weights.dtype, device=device)
    if bounds is not None:
        out = xp.clip(out, min=bounds[0], max=bounds[1])
    return out, DriftState(w0=w0, t_start=t_start, previous=out, tau=tau)


def stream_names() -> Tuple[str, ...]:
    """Every stream name this stage draws from."""
    return ("drift", "drift.nu_dtod", "drift.nu_std", "drift.w_noise")


__all__ = ["DriftState", "DriftParameter", "drift_nu", "drift_weights", "initial_state",
           "is_active", "stream_names"]

"""Fast inference stage: :func:`program` and :func:`drift` of :mod:`refsim.stages.inference` with
compiled kernels (numpy only).

The same functions and arguments as the reference (spec/inference.md §I1-§I3). The conversion
to conductances, the programming noise, the drift coefficients' fit, the drift, the read noise
and the conversion back run in ``_inference``'s OpenMP loops over fixed chunks of elements, with
their normals drawn in place from the compiled streams; the logarithm of the drift coefficients
and the two powers of the drift stay the reference's numpy expressions between the passes (the
C library's ``log``/``pow`` round differently from numpy's vectorized ones). The results are
the reference's with the compiled streams' normals (``draws=refsim_fast.update``, as the tile's
fast backend draws) bit for bit, for any thread count (spec/agreement.md rule 5).

Examples
--------
>>> import numpy as np
>>> from refsim.configs import PCMLikeNoiseModel
>>> from refsim.stages import inference as reference
>>> import refsim_fast.inference as fast
>>> import refsim_fast.update as fast_draws
>>> w = np.linspace(-0.5, 0.5, 12, dtype=np.float32).reshape(3, 4)
>>> model = PCMLikeNoiseModel()
>>> a = fast.program(np, w, model, seed=1, call=0)
>>> b = reference.program(np, w, model, seed=1, call=0, draws=fast_draws)
>>> bool((a.weights == b.weights).all() and (a.nu[1] == b.nu[1]).all())
True
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from refsim import rng as _rng_ref
from refsim.configs import PCMLikeNoiseModel
from refsim.stages import inference as _ref

from . import _inference
from .pool import element_blocks, parallel
from .rng import resolve_threads

__all__ = ["drift", "num_threads", "program"]

#: Threads of the kernels (OpenMP's default unless set); results do not depend on it.
num_threads: int = resolve_threads(None)

_SIDS = {name: _rng_ref.stream_id(name) for name in _ref.STREAMS}
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
#: Below this many elements a call runs on one thread.
_SERIAL_WORK = 8192
#: Elements per block of the numpy passes between the kernels (the blocks are taken by
#: ``num_threads`` Python threads; numpy releases the GIL in them).
_NUMPY_BLOCK = 1 << 17

def _weights(w: Any, name: str) -> np.ndarray:
    """``w`` as a C-contiguous float32 / float64 matrix (converted once, at the boundary)."""
    w = np.asarray(w)
    dtype = w.dtype.newbyteorder("=") if w.dtype.kind == "f" else w.dtype
    if dtype not in (_F32, _F64):
        raise TypeError(f"{name}: expected a float32 or float64 array, got {w.dtype}")
    if w.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array, got shape {w.shape}")
    return np.require(w, dtype=dtype, requirements=("C", "A"))


def _threads(count: int, threads: Optional[int]) -> int:
    if threads is not None:
        return resolve_threads(threads)
    return 1 if count < _SERIAL_WORK else num_threads


def _conductances(w: np.ndarray, r: _ref.Ranges, ratio: Optional[str],
                  threads: int) -> tuple:
    """(G⁺, G⁻) as a (2, N) array, the scale s, and the per-slice ratio the caller asked for
    ('log-input': max(abs(G/g_max), 1e-7); 'abs': abs(G)/g_max with 1 for 0; None)."""
    R = w.dtype.type
    scale = _ref.conversion_scale(np, w, r)
    g = np.empty((2, w.size), dtype=w.dtype)
    out = None if ratio is None else np.empty((2, w.size), dtype=w.dtype)
    _inference.conductances(w.reshape(-1), R(scale), R(r.g_max), R(r.g_min), g, out,
                            ratio == "abs", threads)
    return g, scale, out


def _transcendentals(power: Optional[np.ndarray], decay: Optional[np.ndarray], ratio: float,
                     threads: int) -> None:
    """In place, the reference's numpy powers of §I3: ``power`` ← power^0.65 (the read noise's
    (abs(G)/g_max)^0.65; the zeros of abs(G)/g_max are 1 here and 0 again in the kernel, see
    _inference.conductances) and ``decay`` (−ν) ← (t/t₀)^(−ν), in blocks on ``threads``
    threads. The scalar operand is given as a full block: numpy then takes its vectorized loop
    for two contiguous arrays (0.35 instead of 0.93 ms for 512² pairs), whose values are those
    of the scalar-operand loop of the reference's ``** 0.65`` and ``(t/t₀) ** (−ν)`` (element
    by element the same function; tests/test_inference_fast.py compares them bit for bit)."""
    arrays = [a.reshape(-1) for a in (power, decay) if a is not None]
    if not arrays:
        return
    count = arrays[0].size
    width = min(_NUMPY_BLOCK, count)
    dtype = arrays[0].dtype
    exponent = np.full(width, 0.65, dtype=dtype) if power is not None else None
    base = np.full(width, ratio, dtype=dtype) if decay is not None else None

    def one(b: slice) -> None:
        size = b.stop - b.start
        if power is not None:
            flat = arrays[0]
            np.power(flat[b], exponent[:size], out=flat[b])
        if decay is not None:
            flat = arrays[-1]
            np.power(base[:size], flat[b], out=flat[b])

    parallel(one, element_blocks(count, _NUMPY_BLOCK), threads)


def program(xp: Any, w: Any, model: PCMLikeNoiseModel, seed: int, call: int,
            draws: Any = None, *, num_threads: Optional[int] = None) -> _ref.Programmed:
    """:func:`refsim.stages.inference.program` (§I2) by the compiled passes; ``draws`` is
    accepted for the signature (the normals are the compiled streams')."""
    w = _weights(w, "w")
    R, (m, n) = w.dtype.type, w.shape
    threads = _threads(w.size, num_threads)
    r = _ref.ranges(model)
    drifting = model.drift_scale != 0.0
    g, scale, log_rel = _conductances(w, r, "log-input" if drifting else None, threads)
    if drifting:
        flat = log_rel.reshape(-1)
        parallel(lambda b: np.log(flat[b], out=flat[b]), element_blocks(flat.size, _NUMPY_BLOCK),
                 threads)
    coeff = np.array([float(c) for c in model.prog_coeff], dtype=w.dtype)
    weights = np.empty(w.size, dtype=w.dtype)
    nu = np.empty((2, w.size), dtype=w.dtype)
    _inference.program(g, log_rel, coeff, R(r.g_max), R(r.g_min),
                       R(r.g_max / r.prog_reference), R(model.prog_noise_scale),
                       R(model.drift_scale), R(scale), seed, _SIDS["inference.prog_noise"],
                       _SIDS["inference.drift_nu"], call, weights, nu, threads)
    return _ref.Programmed(weights.reshape(m, n), [nu[0].reshape(m, n), nu[1].reshape(m, n)])


def drift(xp: Any, programmed: _ref.Programmed, t_inference: float, model: PCMLikeNoiseModel,
          seed: int, call: int, draws: Any = None, *,
          num_threads: Optional[int] = None) -> np.ndarray:
    """:func:`refsim.stages.inference.drift` (§I3) by the compiled passes."""
    t = _ref.check_total_time(t_inference, model)
    w = _weights(programmed.weights, "programmed.weights")
    R, (m, n) = w.dtype.type, w.shape
    threads = _threads(w.size, num_threads)
    r = _ref.ranges(model)
    noisy = model.read_noise_scale != 0.0
    g, scale, power = _conductances(w, r, "abs" if noisy else None, threads)
    decay = None
    if t > model.t_0:
        decay = np.empty((2, w.size), dtype=w.dtype)
        for k, nu in enumerate(programmed.nu):
            nu = np.asarray(nu)
            if nu.shape != (m, n) or nu.dtype != w.dtype:
                raise ValueError(f"programmed.nu[{k}]: expected a {w.dtype} array of shape "
                                 f"{(m, n)}, got {nu.dtype} {nu.shape}")
            np.negative(nu.reshape(-1), out=decay[k])
    _transcendentals(power, decay, t / model.t_0, threads)
    out = np.empty(w.size, dtype=w.dtype)
    _inference.drift(g, decay, power, R(r.g_max), R(r.g_min), R(model.read_noise_scale),
                     R(_ref.read_spread(t, model)), R(scale), seed,
                     _SIDS["inference.read_noise"], call, out, threads)
    return out.reshape(m, n)

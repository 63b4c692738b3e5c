"""Fast random streams: the numbers of :mod:`refsim.rng`, computed in C with OpenMP.

Same functions and arguments as the reference (numpy arrays only), plus ``num_threads``.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from refsim.rng import (MAX_CALL, MAX_INDEX, Shape, _check_address, _check_int, _check_shape,
                        normal16_table)

from . import _rng

__all__ = ["normal", "normal16", "random_words", "uniform", "uniform_calls"]


def resolve_threads(num_threads: Optional[int]) -> int:
    """``num_threads`` checked, or OpenMP's default when None."""
    if num_threads is None:
        return _rng.max_threads()
    return _check_int(num_threads, "num_threads", 1, 1024)


def _real_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(np.float64 if dtype is None else dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype: expected float32 or float64, got {dt}")
    return dt


def random_words(seed: int, stream: str, call: int, start: int, count: int, *,
                 num_threads: Optional[int] = None) -> np.ndarray:
    """Words ``start .. start+count-1`` of a call (uint32); see :func:`refsim.rng.random_words`."""
    seed, sid, call = _check_address(seed, stream, call)
    start = _check_int(start, "start", 0, MAX_INDEX)
    count = _check_int(count, "count", 0, MAX_INDEX)
    out = np.empty(count, dtype=np.uint32)
    _rng.fill_words(seed, sid, call, start, out, _draw_threads(count, num_threads))
    return out


#: Draws of fewer numbers run on one thread: waking a sleeping OpenMP team costs more than they
#: take (a c-TTv2 step draws one chopper uniform per row: 0.12 → 0.01 ms each). The numbers do
#: not depend on the thread count.
SERIAL_DRAW = 16384


def _draw_threads(count: int, num_threads: Optional[int]) -> int:
    threads = resolve_threads(num_threads)  # checked whatever the size
    return 1 if count < SERIAL_DRAW else threads


def _draw(kernel: Any, seed: int, stream: str, call: int, shape: Shape, start: int, dtype: Any,
          num_threads: Optional[int]) -> np.ndarray:
    seed, sid, call = _check_address(seed, stream, call)
    dims = _check_shape(shape)
    start = _check_int(start, "start", 0, MAX_INDEX)
    out = np.empty(dims, dtype=_real_dtype(dtype))
    kernel(seed, sid, call, start, out.reshape(-1), _draw_threads(out.size, num_threads))
    return out


def uniform(seed: int, stream: str, call: int, shape: Shape, *, start: int = 0,
            dtype: Any = None, num_threads: Optional[int] = None) -> np.ndarray:
    """Uniforms on [0, 1); see :func:`refsim.rng.uniform`."""
    return _draw(_rng.fill_uniform, seed, stream, call, shape, start, dtype, num_threads)


def normal(seed: int, stream: str, call: int, shape: Shape, *, start: int = 0,
           dtype: Any = None, num_threads: Optional[int] = None) -> np.ndarray:
    """Standard normals (Box-Muller); see :func:`refsim.rng.normal`."""
    return _draw(_rng.fill_normal, seed, stream, call, shape, start, dtype, num_threads)


def normal16(seed: int, stream: str, call: int, shape: Shape, *, start: int = 0,
             dtype: Any = None, num_threads: Optional[int] = None) -> np.ndarray:
    """16-bit normals (two per word, table lookup); see :func:`refsim.rng.normal16`."""
    table = normal16_table()

    def kernel(seed_, sid, call_, start_, out, threads):
        _rng.fill_normal16(seed_, sid, call_, start_, out, table, threads)

    return _draw(kernel, seed, stream, call, shape, start, dtype, num_threads)


def uniform_calls(seed: int, stream: str, calls: Any, *, start: int = 0, xp: Any = None,
                  device: Any = None) -> np.ndarray:
    """:func:`refsim.rng.uniform_calls` (number ``start`` of each call), in C."""
    calls = np.asarray(calls).reshape(-1)
    if calls.dtype.kind not in "iu":
        raise TypeError(f"calls: expected integers, got {calls.dtype}")
    seed, sid, _ = _check_address(seed, stream, 0)
    if calls.size and (int(calls.min()) < 0 or int(calls.max()) > MAX_CALL):
        raise ValueError(f"calls: expected call numbers in [0, {MAX_CALL}]")
    start = _check_int(start, "start", 0, MAX_INDEX)
    words = np.empty(calls.size, dtype=np.uint32)
    _rng.words_of_calls(seed, sid, np.ascontiguousarray(calls, dtype=np.uint64), start, words)
    return (words >> np.uint32(8)).astype(np.float64) * (1.0 / 16777216.0)

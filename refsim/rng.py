"""Counter-based random streams: the reference implementation of spec/rng.md.

Every random number of refsim is a pure function of ``(seed, stream, call, index)``:

* ``seed``   -- an integer in [0, 2**32), the tile's (or the user's) seed;
* ``stream`` -- the name of the random quantity (e.g. ``"io.out_noise"``), hashed to a 32-bit id;
* ``call``   -- the call counter of that stream, an integer in [0, 2**64);
* ``index``  -- the element index within the call, an integer in [0, 2**63).

The words come from Philox4x32-10 (Salmon et al., SC'11) with key ``(seed, stream_id)`` and
counter ``(block_lo, block_hi, call_lo, call_hi)``; element ``i`` of a draw is made from word
``i`` alone (a 24-bit uniform, or the AS241 normal quantile of a 32-bit uniform; spec/rng.md
sections 3-4). This module computes them with array-API integer operations
only, so numpy, torch, cupy and array-api-strict give bit-identical words and uniforms; unsigned
32-bit arithmetic is emulated inside int64 (torch has no usable uint32).
"""

from __future__ import annotations

import functools
import math
import numbers
import re
import zlib
from typing import Any, Dict, Sequence, Tuple, Union

import array_api_compat

__all__ = [
    "STREAMS",
    "RandomStreams",
    "normal",
    "normal16",
    "normal16_rows",
    "normal16_table",
    "normal_at",
    "normal_at_calls",
    "philox4x32",
    "random_words",
    "random_words_at",
    "random_words_rows",
    "stream_id",
    "uniform_calls",
    "uniform",
    "uniform_at",
]

#: Philox4x32 round multipliers and key increments (Weyl constants), spec/rng.md section 1.
PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
PHILOX_ROUNDS = 10

MASK32 = 0xFFFFFFFF
MAX_SEED = 2**32 - 1
MAX_CALL = 2**64 - 1
MAX_INDEX = 2**62  # element indices stay well inside int64 after block arithmetic

#: The registered stream names (spec/rng.md section 5). Stages add theirs here; a test checks
#: that their 32-bit ids are distinct.
STREAMS: Tuple[str, ...] = (
    "test.a",
    "test.b",
    # the IO stage (spec/io.md §S8): call counters, per-call noise, fixed periphery variation
    # ("transfer", "refresh": the compounds' reads, spec/compounds.md)
    *(f"io.{d}" for d in ("forward", "backward", "transfer", "refresh")),
    *(f"io.{d}.{q}" for d in ("forward", "backward", "transfer", "refresh")
      for q in ("inp_sto_round", "inp_noise", "w_noise", "out_noise", "out_sto_round",
                "v_offset", "out_nonlinearity", "w_read_asymmetry", "out_noise_std")),
    # the pulse trains of the update (spec/update.md §U5): cycle counter, bits, sto rounding
    "update", "update.x_bits", "update.d_bits", "update.x_sto_round", "update.d_sto_round",
    # the compounds' internal pulsed writes (spec/compounds.md): the same, and their c2c noise
    "transfer", "transfer.x_bits", "transfer.d_bits", "transfer.x_sto_round",
    "transfer.d_sto_round", "transfer.c2c",
    # refsim.nn and refsim.data: initial weights, per-layer seeds, shuffling, the digits split
    "nn.init_weight", "nn.init_bias", "nn.tile_seed", "nn.layer_seed", "nn.shuffle",
    # refsim.torch: the per-layer seeds of convert_to_analog(seed=...)
    "torch.layer_seed",
    "data.digits_split",
    # the compounds' own random choices (spec/compounds.md)
    *(f"compound.{q}" for q in ("select", "chop_in", "chop_out", "column", "reset_prob",
                                "reset_noise", "x_round", "d_round")),
    # drift (spec/drift.md §D4): call counter, per-element coefficients, per-call noise
    "drift", "drift.nu_dtod", "drift.nu_std", "drift.w_noise",
    # the device stage (spec/devices.md §V6): device-to-device draws, per-call noise
    *(f"device.{q}" for q in ("w_max", "w_min", "dw_min", "up_down", "corrupt", "corrupt_value",
                              "diffusion", "reset", "lifetime", "gamma_up", "gamma_down",
                              "slope_up", "slope_down", "reference", "pow_gamma", "pow_up_down",
                              "c2c", "diffusion_noise", "reset_noise", "reset_prob",
                              "write_noise", "write_noise_all")),
    # inference (spec/inference.md §I5): programming, drift coefficients, read noise, counters
    "inference.prog_noise", "inference.drift_nu", "inference.read_noise", "inference.program",
    "inference.drift",
    # hardware-aware training (spec/modifiers.md §M3, §M4): the step counter and the modifier's
    # draws ('PCMNoise': one stream per random quantity)
    "modifier", "modifier.noise", "modifier.sto_round", "modifier.drop",
    *(f"modifier.pcm_{q}" for q in ("reset", "gmax", "gmax_sign", "random", "random_value",
                                    "prog", "drift", "read")),
)

_NAME = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")

Shape = Union[int, Sequence[int]]


def stream_id(name: str) -> int:
    """The 32-bit id of a stream: CRC-32 (zlib) of its UTF-8 name (spec/rng.md section 2)."""
    if not isinstance(name, str):
        raise ValueError(f"stream: {name!r} is not a valid stream name (a str of dotted "
                         f"lower-case words, e.g. 'io.out_noise')")
    return _valid_stream_id(name)


@functools.lru_cache(maxsize=1024)
def _valid_stream_id(name: str) -> int:
    """stream_id of a str (remembered: a tile draws from a few dozen streams, many times)."""
    if not _NAME.match(name):
        raise ValueError(
            f"stream: {name!r} is not a valid stream name (dotted lower-case words, "
            f"e.g. 'io.out_noise')"
        )
    return zlib.crc32(name.encode("utf-8")) & MASK32


# -- argument checks ------------------------------------------------------------------------------


def _check_int(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__}")
    value = int(value)
    if not lo <= value <= hi:
        raise ValueError(f"{name}: {value} is outside [{lo}, {hi}]")
    return value


def _check_shape(shape: Shape) -> Tuple[int, ...]:
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (int(shape),)
    try:
        dims = tuple(shape)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"shape: expected an int or a tuple of ints, got {shape!r}") from None
    for d in dims:
        _check_int(d, "shape", 0, MAX_INDEX)
    return dims


def _namespace(xp: Any) -> Any:
    """The array-API-compatible namespace of ``xp`` (a namespace module), numpy by default."""
    if xp is None:
        import numpy

        xp = numpy
    try:
        return array_api_compat.array_namespace(xp.asarray([0]))
    except (AttributeError, TypeError):
        raise TypeError(f"xp: expected an array namespace such as numpy or torch, got {xp!r}") \
            from None


def _check_address(seed: Any, stream: str, call: Any) -> Tuple[int, int, int]:
    return (
        _check_int(seed, "seed", 0, MAX_SEED),
        stream_id(stream),
        _check_int(call, "call", 0, MAX_CALL),
    )


# -- Philox4x32-10 --------------------------------------------------------------------------------


def _mulhilo(a: Any, m: int) -> Tuple[Any, Any]:
    """High and low 32-bit words of ``a * m`` (a: int64 array of uint32 values, m: uint32).

    The 64-bit product does not fit int64, so ``m`` is split into 16-bit halves:
    ``a*m = (a*m_hi) * 2**16 + a*m_lo`` with both partial products below 2**48.
    """
    t_lo = a * (m & 0xFFFF)
    t_hi = a * (m >> 16)
    s = t_lo + ((t_hi & 0xFFFF) << 16)
    return (t_hi >> 16) + (s >> 32), s & MASK32


#: On numpy, Philox runs over at most this many blocks at a time, so that the temporaries of its
#: ten rounds stay in the CPU cache (262144 blocks: 39 → 15 ms); the words do not depend on it.
NUMPY_PHILOX_RUN = 8192


def philox4x32(xp: Any, counter: Sequence[Any], key: Tuple[int, int]) -> Tuple[Any, Any, Any, Any]:
    """Philox4x32-10 on arrays: four int64 arrays of 32-bit counter words -> four output words."""
    n = counter[0].shape[0] if counter[0].ndim == 1 else 0
    if n > NUMPY_PHILOX_RUN and array_api_compat.is_numpy_namespace(xp):
        runs = [_philox_rounds(xp, tuple(c[i:i + NUMPY_PHILOX_RUN] for c in counter), key)
                for i in range(0, n, NUMPY_PHILOX_RUN)]
        return tuple(xp.concat([run[j] for run in runs]) for j in range(4))  # type: ignore
    return _philox_rounds(xp, counter, key)


def _philox_rounds(xp: Any, counter: Sequence[Any],
                   key: Tuple[int, int]) -> Tuple[Any, Any, Any, Any]:
    if array_api_compat.is_numpy_namespace(xp):
        return _philox_rounds_uint64(xp, counter, key)
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(PHILOX_ROUNDS):
        if r:
            k0 = (k0 + PHILOX_W0) & MASK32
            k1 = (k1 + PHILOX_W1) & MASK32
        hi0, lo0 = _mulhilo(c0, PHILOX_M0)
        hi1, lo1 = _mulhilo(c2, PHILOX_M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def _philox_rounds_uint64(xp: Any, counter: Sequence[Any],
                          key: Tuple[int, int]) -> Tuple[Any, Any, Any, Any]:
    """:func:`_philox_rounds` for numpy: the 32×32-bit products in uint64, where they fit (one
    multiplication instead of :func:`_mulhilo`'s two); the same integers, back as int64."""
    c0, c1, c2, c3 = (xp.astype(c, xp.uint64) for c in counter)
    k0, k1 = key
    m0, m1, mask = xp.uint64(PHILOX_M0), xp.uint64(PHILOX_M1), xp.uint64(MASK32)
    shift = xp.uint64(32)
    for r in range(PHILOX_ROUNDS):
        if r:
            k0 = (k0 + PHILOX_W0) & MASK32
            k1 = (k1 + PHILOX_W1) & MASK32
        p0 = c0 * m0
        p1 = c2 * m1
        c0, c1, c2, c3 = ((p1 >> shift) ^ c1 ^ xp.uint64(k0), p1 & mask,
                          (p0 >> shift) ^ c3 ^ xp.uint64(k1), p0 & mask)
    return tuple(xp.astype(c, xp.int64) for c in (c0, c1, c2, c3))  # type: ignore[return-value]


def _blocks(xp: Any, seed: int, sid: int, call: int, first: int, count: int,
            device: Any) -> Tuple[Any, Any, Any, Any]:
    """The four words of Philox blocks ``first .. first+count-1`` of one call."""
    block = xp.arange(first, first + count, dtype=xp.int64, device=device)
    lo = block & MASK32
    hi = block >> 32
    c2 = xp.full_like(block, call & MASK32)
    c3 = xp.full_like(block, call >> 32)
    return philox4x32(xp, (lo, hi, c2, c3), (seed, sid))


def _interleave(xp: Any, parts: Sequence[Any]) -> Any:
    """[a0, b0, ..., a1, b1, ...] from equally long 1-D arrays a, b, ..."""
    return xp.reshape(xp.stack(tuple(parts), axis=1), (-1,))


# -- public draws ---------------------------------------------------------------------------------


def random_words(seed: int, stream: str, call: int, start: int, count: int, *,
                 xp: Any = None, device: Any = None) -> Any:
    """Words ``start .. start+count-1`` of a call, as int64 values in [0, 2**32).

    Word ``j`` is lane ``j % 4`` of Philox block ``j // 4`` (spec/rng.md section 2).
    """
    xp = _namespace(xp)
    seed, sid, call = _check_address(seed, stream, call)
    start = _check_int(start, "start", 0, MAX_INDEX)
    count = _check_int(count, "count", 0, MAX_INDEX)
    first = start // 4
    nblocks = (start + count + 3) // 4 - first
    words = _interleave(xp, _blocks(xp, seed, sid, call, first, nblocks, device))
    offset = start - 4 * first
    return words[offset : offset + count]


def random_words_at(seed: int, stream: str, call: int, index: Any, *, xp: Any = None) -> Any:
    """Words at arbitrary indices: ``index`` is an integer array (any shape) of word indices.

    The same numbers as :func:`random_words` at those positions; used where a stage draws for a
    subset of rows (spec/rng.md section 2).
    """
    xp = _namespace(xp)
    seed, sid, call = _check_address(seed, stream, call)
    if not xp.isdtype(index.dtype, "integral"):
        raise TypeError("index: expected an integer array")
    index = xp.astype(index, xp.int64)
    if math.prod(index.shape) and int(xp.min(index)) < 0:
        raise ValueError("index: word indices must be >= 0")
    block = index >> 2
    lane = index & 3
    c2 = xp.full_like(block, call & MASK32)
    c3 = xp.full_like(block, call >> 32)
    w0, w1, w2, w3 = philox4x32(xp, (block & MASK32, block >> 32, c2, c3), (seed, sid))
    return xp.where(lane == 0, w0, xp.where(lane == 1, w1, xp.where(lane == 2, w2, w3)))


def random_words_rows(seed: int, stream: str, call: int, starts: Any, width: int, *,
                      xp: Any = None, calls: Any = None) -> Any:
    """Words of equal-length runs: row ``r`` of the (R, width) result holds words
    ``starts[r] .. starts[r] + width - 1`` of call ``call`` (of call ``calls[r]`` when the
    integer array ``calls`` (R,) is given). The same numbers as :func:`random_words_at`, but
    each Philox block is computed once (the IO stage draws whole rows this way)."""
    xp = _namespace(xp)
    seed, sid, call = _check_address(seed, stream, call)
    width = _check_int(width, "width", 0, MAX_INDEX)
    starts = xp.astype(starts, xp.int64)
    rows = starts.shape[0]
    if rows and int(xp.min(starts)) < 0:
        raise ValueError("starts: word indices must be >= 0")
    if calls is not None:
        calls = xp.astype(calls, xp.int64)
        if tuple(calls.shape) != (rows,):
            raise ValueError(f"calls: expected shape ({rows},), got {tuple(calls.shape)}")
        if rows and (int(xp.min(calls)) < 0 or int(xp.max(calls)) > MAX_CALL):
            raise ValueError(f"calls: expected call numbers in [0, {MAX_CALL}]")
    nblocks = (width + 3) // 4 + 1  # enough for any alignment of a run
    first = xp.reshape(starts >> 2, (-1, 1))
    block = first + xp.reshape(xp.arange(nblocks, dtype=xp.int64, device=device_of(starts)),
                               (1, -1))
    block = xp.reshape(block, (-1,))
    if calls is not None:  # each row's call, repeated over its blocks
        per_block = xp.reshape(xp.reshape(calls, (-1, 1)) +
                               xp.zeros((1, nblocks), dtype=xp.int64, device=device_of(starts)),
                               (-1,))
        c2, c3 = per_block & MASK32, per_block >> 32
    else:
        c2 = xp.full_like(block, call & MASK32)
        c3 = xp.full_like(block, call >> 32)
    words = _interleave(xp, philox4x32(xp, (block & MASK32, block >> 32, c2, c3), (seed, sid)))
    offset = xp.reshape(starts & 3, (-1, 1))
    row_base = xp.reshape(xp.arange(rows, dtype=xp.int64, device=device_of(starts)) * (4 * nblocks),
                          (-1, 1))
    pick = row_base + offset + xp.reshape(xp.arange(width, dtype=xp.int64,
                                                    device=device_of(starts)), (1, -1))
    return xp.reshape(xp.take(words, xp.reshape(pick, (-1,)), axis=0), (rows, width))


def uniform_calls(seed: int, stream: str, calls: Any, *, start: int = 0, xp: Any = None,
                  device: Any = None) -> Any:
    """Uniform number ``start`` of each call of ``calls`` (a 1-D integer array), float64: the
    numbers that one draw per call gives (a compound's per-event draws, taken at once)."""
    xp = _namespace(xp)
    calls = xp.reshape(xp.astype(xp.asarray(calls, device=device), xp.int64), (-1,))
    start = _check_int(start, "start", 0, MAX_INDEX)
    first = int(calls[0]) if calls.shape[0] else 0
    words = random_words_rows(seed, stream, first, calls * 0 + start, 1, xp=xp, calls=calls)
    return xp.reshape(uniform_from_words(xp, words), (-1,))


def device_of(a: Any) -> Any:
    """The device of an array (array_api_compat.device)."""
    return array_api_compat.device(a)


def uniform_at(seed: int, stream: str, call: int, index: Any, *, xp: Any = None,
               dtype: Any = None) -> Any:
    """Uniforms at word indices ``index`` (see :func:`random_words_at`)."""
    xp = _namespace(xp)
    out = uniform_from_words(xp, random_words_at(seed, stream, call, index, xp=xp))
    return out if dtype is None or dtype == xp.float64 else xp.astype(out, dtype)


def normal_at(seed: int, stream: str, call: int, index: Any, *, xp: Any = None,
              dtype: Any = None) -> Any:
    """Standard normals at word indices ``index`` (see :func:`random_words_at`)."""
    xp = _namespace(xp)
    out = normal_from_words(xp, random_words_at(seed, stream, call, index, xp=xp))
    return out if dtype is None or dtype == xp.float64 else xp.astype(out, dtype)


def normal_at_calls(seed: int, stream: str, calls: Any, index: Any, *, xp: Any = None,
                    dtype: Any = None) -> Any:
    """Standard normals where element ``k`` is number ``index[k]`` of call ``calls[k]``
    (``calls`` and ``index`` integer arrays of one shape): element ``k`` equals
    ``normal_at(seed, stream, calls[k], index[k])``, computed in one pass (the device stage's
    write noise draws each element at the call of its last update cycle this way)."""
    xp = _namespace(xp)
    seed = _check_int(seed, "seed", 0, MAX_SEED)
    sid = stream_id(stream)
    for name, a in (("calls", calls), ("index", index)):
        if not xp.isdtype(a.dtype, "integral"):
            raise TypeError(f"{name}: expected an integer array")
    if tuple(calls.shape) != tuple(index.shape):
        raise ValueError(f"calls, index: shapes differ ({tuple(calls.shape)} and "
                         f"{tuple(index.shape)})")
    calls, index = xp.astype(calls, xp.int64), xp.astype(index, xp.int64)
    if math.prod(index.shape) and (int(xp.min(index)) < 0 or int(xp.min(calls)) < 0):
        raise ValueError("calls, index: expected values >= 0")
    block, lane = index >> 2, index & 3
    w0, w1, w2, w3 = philox4x32(xp, (block & MASK32, block >> 32, calls & MASK32, calls >> 32),
                                (seed, sid))
    words = xp.where(lane == 0, w0, xp.where(lane == 1, w1, xp.where(lane == 2, w2, w3)))
    out = normal_from_words(xp, words)
    return out if dtype is None or dtype == xp.float64 else xp.astype(out, dtype)


#: Wichura's AS241 rational approximation of the normal quantile (Appl. Statist. 37, 1988),
#: coefficients from the highest power down (spec/rng.md section 4).
AS241_CENTRAL_NUM = (
    2.5090809287301226727e3, 3.3430575583588128105e4, 6.7265770927008700853e4,
    4.5921953931549871457e4, 1.3731693765509461125e4, 1.9715909503065514427e3,
    1.3314166789178437745e2, 3.3871328727963666080e0,
)
AS241_CENTRAL_DEN = (
    5.2264952788528545610e3, 2.8729085735721942674e4, 3.9307895800092710610e4,
    2.1213794301586595867e4, 5.3941960214247511077e3, 6.8718700749205790830e2,
    4.2313330701600911252e1, 1.0,
)
AS241_TAIL_NUM = (
    7.74545014278341407640e-4, 2.27238449892691845833e-2, 2.41780725177450611770e-1,
    1.27045825245236838258e0, 3.64784832476320460504e0, 5.76949722146069140550e0,
    4.63033784615654529590e0, 1.42343711074968357734e0,
)
AS241_TAIL_DEN = (
    1.05075007164441684324e-9, 5.47593808499534494600e-4, 1.51986665636164571966e-2,
    1.48103976427480074590e-1, 6.89767334985100004550e-1, 1.67638483018380384940e0,
    2.05319162663775882187e0, 1.0,
)


def _horner(coeffs: Sequence[float], r: Any) -> Any:
    acc = coeffs[0] * r + coeffs[1]
    for c in coeffs[2:]:
        acc = acc * r + c
    return acc


def uniform_from_words(xp: Any, words: Any) -> Any:
    """Uniforms on [0, 1) from words: ``(w >> 8) * 2**-24`` (exact in float32 and float64)."""
    return xp.astype(words >> 8, xp.float64) * (2.0**-24)


def normal_from_words(xp: Any, words: Any) -> Any:
    """Standard normals from words: the AS241 quantile of ``v = (2w + 1) * 2**-33``.

    ``v`` lies in (0, 1) and is symmetric about 1/2, so ``abs(z) <= 6.3380`` and the third
    branch of AS241 (``r > 5``) is never reached.
    """
    v = xp.astype(xp.reshape(words, (-1,)) * 2 + 1, xp.float64) * (2.0**-33)
    return xp.reshape(as241_quantile(xp, v), words.shape)


def as241_quantile(xp: Any, v: Any) -> Any:
    """Wichura's AS241 normal quantile of a float64 vector ``v`` with ``min(v, 1 − v) >= e^-25``
    (so its third branch is never needed). The tail branch (15 % of uniform ``v``) is evaluated
    only where it applies."""
    q = v - 0.5
    r = 0.180625 - q * q
    z = _horner(AS241_CENTRAL_NUM, r) * q / _horner(AS241_CENTRAL_DEN, r)
    in_tail = xp.abs(q) > 0.425
    if bool(xp.any(in_tail)):
        where_tail = xp.nonzero(in_tail)[0]
        vt, qt = xp.take(v, where_tail, axis=0), xp.take(q, where_tail, axis=0)
        rt = xp.sqrt(-xp.log(xp.where(qt <= 0.0, vt, 1.0 - vt))) - 1.6
        tail = _horner(AS241_TAIL_NUM, rt) / _horner(AS241_TAIL_DEN, rt)
        tail = xp.where(qt < 0.0, -tail, tail)
        position = xp.cumulative_sum(xp.astype(in_tail, xp.int64)) - 1
        z = xp.where(in_tail, xp.take(tail, xp.where(in_tail, position, 0), axis=0), z)
    return z


_NORMAL16_TABLE: Any = None


def normal16_table() -> Any:
    """The 65536 values of the 16-bit normals (spec/rng.md §4b), a read-only numpy float64 array:
    ``T[h]`` = AS241 quantile of ``(2h + 1)·2^-17``. Computed once, with numpy, and copied into
    other namespaces, so every namespace and the fast backend use the same values."""
    global _NORMAL16_TABLE
    if _NORMAL16_TABLE is None:
        import numpy

        ns = _namespace(numpy)
        h = ns.arange(65536, dtype=ns.float64)
        table = numpy.asarray(as241_quantile(ns, (2.0 * h + 1.0) * (2.0**-17)))
        table.flags.writeable = False
        _NORMAL16_TABLE = table
    return _NORMAL16_TABLE


def normal16(seed: int, stream: str, call: int, shape: Shape, *, start: int = 0, xp: Any = None,
             dtype: Any = None, device: Any = None) -> Any:
    """16-bit normals (spec/rng.md §4b), two per word: number ``i`` is ``T[h]`` with ``h`` the low
    (even ``i``) or high (odd ``i``) 16 bits of word ``i >> 1``. Cheaper than :func:`normal` (half
    a word, no transcendental); truncated at ``abs(z) <= 4.3250``. Used for per-pulse noise."""
    xp = _namespace(xp)
    dims = _check_shape(shape)
    start = _check_int(start, "start", 0, MAX_INDEX)
    n = math.prod(dims)
    first = start >> 1
    words = random_words(seed, stream, call, first, (start + n + 1) // 2 - first, xp=xp,
                         device=device)
    halves = _interleave(xp, (words & 0xFFFF, words >> 16))
    offset = start - 2 * first
    table = normal16_table()
    if not xp.__name__.endswith("numpy"):  # other namespaces get a (writable) copy
        import numpy

        table = numpy.array(table)
    table = xp.asarray(table, device=device)
    flat = xp.take(table, halves[offset : offset + n], axis=0)
    return _finish(xp, flat, dims, dtype)


def normal16_rows(seed: int, stream: str, call: int, starts: Any, width: int, *, xp: Any = None,
                  dtype: Any = None, device: Any = None, calls: Any = None) -> Any:
    """(R, width) 16-bit normals of equal-length runs: row ``r`` holds numbers ``starts[r] ..
    starts[r] + width - 1`` of :func:`normal16`'s numbering (the per-pulse noise of rows of a
    tile, each drawing only as many numbers as its pulses need), of call ``call`` (of call
    ``calls[r]`` when the integer array ``calls`` (R,) is given)."""
    xp = _namespace(xp)
    width = _check_int(width, "width", 0, MAX_INDEX)
    starts = xp.astype(starts, xp.int64)
    rows = starts.shape[0]
    words = random_words_rows(seed, stream, call, starts >> 1, width // 2 + 1, xp=xp,
                              calls=calls)
    halves = xp.reshape(xp.stack((words & 0xFFFF, words >> 16), axis=2),
                        (rows, 2 * (width // 2 + 1)))
    odd = starts & 1
    if rows and int(xp.min(odd)) == int(xp.max(odd)):  # one parity: a slice
        picked = halves[:, int(odd[0]):int(odd[0]) + width]
    else:
        pick = xp.reshape(odd, (-1, 1)) + \
            xp.reshape(xp.arange(width, dtype=xp.int64, device=device_of(starts)), (1, -1))
        picked = xp.take_along_axis(halves, pick, axis=1)
    table = normal16_table()
    if not xp.__name__.endswith("numpy"):  # other namespaces get a (writable) copy
        import numpy

        table = numpy.array(table)
    table = xp.asarray(table, device=device)
    flat = xp.take(table, xp.reshape(picked, (-1,)), axis=0)
    return _finish(xp, flat, (rows, width), dtype)


def _finish(xp: Any, flat: Any, shape: Tuple[int, ...], dtype: Any) -> Any:
    out = xp.reshape(flat, shape)
    if dtype is not None and dtype != xp.float64:
        out = xp.astype(out, dtype)
    return out


def _element_words(xp: Any, seed: int, stream: str, call: int, shape: Shape, start: int,
                   device: Any) -> Tuple[Any, Tuple[int, ...]]:
    shape = _check_shape(shape)
    words = random_words(seed, stream, call, start, math.prod(shape), xp=xp, device=device)
    return words, shape


def uniform(seed: int, stream: str, call: int, shape: Shape, *, start: int = 0, xp: Any = None,
            dtype: Any = None, device: Any = None) -> Any:
    """Uniforms on [0, 1) (spec/rng.md section 3): element ``i`` of the C-ordered ``shape`` is
    made from word ``start + i`` of the call. Float64 unless ``dtype`` says otherwise (the values
    are exact in float32 too)."""
    xp = _namespace(xp)
    words, shape = _element_words(xp, seed, stream, call, shape, start, device)
    return _finish(xp, uniform_from_words(xp, words), shape, dtype)


def normal(seed: int, stream: str, call: int, shape: Shape, *, start: int = 0, xp: Any = None,
           dtype: Any = None, device: Any = None) -> Any:
    """Standard normals (spec/rng.md section 4): element ``i`` of the C-ordered ``shape`` is the
    AS241 normal quantile of word ``start + i`` of the call, computed in float64 and then cast
    to ``dtype``."""
    xp = _namespace(xp)
    words, shape = _element_words(xp, seed, stream, call, shape, start, device)
    return _finish(xp, normal_from_words(xp, words), shape, dtype)


# -- the per-tile state ---------------------------------------------------------------------------


class RandomStreams:
    """A seed and one call counter per stream: the whole random state of a tile (spec/rng.md
    section 5). Each draw uses the stream's current counter, then advances it by one."""

    def __init__(self, seed: int) -> None:
        self.seed = _check_int(seed, "seed", 0, MAX_SEED)
        self.calls: Dict[str, int] = {}

    def next_call(self, stream: str) -> int:
        """The counter for the next draw of ``stream`` (and advance it)."""
        stream_id(stream)
        call = self.calls.get(stream, 0)
        self.calls[stream] = call + 1
        return call

    def next_calls(self, stream: str, count: int) -> int:
        """The first of ``count`` consecutive counters of ``stream`` (and advance past them)."""
        stream_id(stream)
        count = _check_int(count, "count", 0, MAX_CALL)
        call = self.calls.get(stream, 0)
        self.calls[stream] = call + count
        return call

    def uniform(self, stream: str, shape: Shape, **kwargs: Any) -> Any:
        return uniform(self.seed, stream, self.next_call(stream), shape, **kwargs)

    def normal(self, stream: str, shape: Shape, **kwargs: Any) -> Any:
        return normal(self.seed, stream, self.next_call(stream), shape, **kwargs)

    def state_dict(self) -> Dict[str, Any]:
        return {"seed": self.seed, "calls": dict(sorted(self.calls.items()))}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if not isinstance(state, dict):
            raise ValueError(f"state: expected the dict of RandomStreams.state_dict(), got "
                             f"{type(state).__name__}")
        seed = _check_int(state.get("seed"), "state['seed']", 0, MAX_SEED)
        calls = state.get("calls")
        if not isinstance(calls, dict):
            raise ValueError("state['calls']: expected a dict of stream name -> call counter")
        checked = {}
        for name, call in calls.items():
            stream_id(name)
            checked[name] = _check_int(call, f"state['calls'][{name!r}]", 0, MAX_CALL)
        self.seed, self.calls = seed, checked

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RandomStreams) and self.state_dict() == other.state_dict()

    def __repr__(self) -> str:
        return f"RandomStreams(seed={self.seed}, calls={self.calls})"

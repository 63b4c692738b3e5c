"""The random-stream stage (spec/rng.md): known answers, agreement across namespaces, backends and
thread counts, statistics, independence, and bad input."""

import math
import statistics
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import OTHER_NAMESPACES, to_numpy
from refsim import rng

# Philox4x32-10 known-answer vectors of Random123 (kat_vectors): counter, key -> output.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]

addresses = st.tuples(
    st.integers(0, 2**32 - 1),                       # seed
    st.sampled_from(rng.STREAMS),                    # stream
    st.integers(0, 2**64 - 1),                       # call
    st.integers(0, 2**40),                           # start
    st.integers(0, 300),                             # count
)


@pytest.mark.parametrize("counter, key, expected", KAT)
def test_philox_known_answers(xp, counter, key, expected):
    ns = rng._namespace(xp)
    words = rng.philox4x32(ns, [ns.asarray([c], dtype=ns.int64) for c in counter], key)
    assert tuple(int(to_numpy(w)[0]) for w in words) == expected


@pytest.mark.parametrize("counter, key, expected", KAT)
def test_philox_known_answers_fast(fast, counter, key, expected):
    assert fast._rng.philox4x32_10(*counter, *key) == expected


def test_word_layout_is_block_lanes():
    """Word j of a call is lane j % 4 of block j // 4 (spec/rng.md section 2)."""
    ns = rng._namespace(None)
    words = to_numpy(rng.random_words(5, "test.a", 9, 0, 12))
    for block in range(3):
        counter = [ns.asarray([v], dtype=ns.int64) for v in (block, 0, 9, 0)]
        lanes = rng.philox4x32(ns, counter, (5, rng.stream_id("test.a")))
        assert [int(v[0]) for v in lanes] == list(words[4 * block : 4 * block + 4])


def test_stream_ids_are_crc32_and_distinct():
    ids = [rng.stream_id(name) for name in rng.STREAMS]
    assert len(set(ids)) == len(ids)
    assert rng.stream_id("io.out_noise") == zlib.crc32(b"io.out_noise")


@pytest.mark.parametrize("xp", OTHER_NAMESPACES)
@given(addresses)
def test_words_and_uniforms_bit_identical_across_namespaces(xp, address):
    seed, stream, call, start, count = address
    ref = to_numpy(rng.random_words(seed, stream, call, start, count))
    got = to_numpy(rng.random_words(seed, stream, call, start, count, xp=xp))
    assert np.array_equal(ref, got)
    ref_u = to_numpy(rng.uniform(seed, stream, call, count, start=start))
    got_u = to_numpy(rng.uniform(seed, stream, call, count, start=start, xp=xp))
    assert np.array_equal(ref_u, got_u)


@pytest.mark.parametrize("xp", OTHER_NAMESPACES)
@given(addresses)
def test_normals_agree_across_namespaces(xp, address):
    """spec/agreement.md: float64 normals within 1e-14 (the central branch is exact)."""
    seed, stream, call, start, count = address
    ref = to_numpy(rng.normal(seed, stream, call, count, start=start))
    got = to_numpy(rng.normal(seed, stream, call, count, start=start, xp=xp))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-14)
    central = np.abs(to_numpy(rng.uniform(seed, stream, call, count, start=start)) - 0.5) < 0.42
    assert np.array_equal(got[central], ref[central])


@given(addresses, st.sampled_from([1, 2, 4]))
def test_fast_words_uniforms_normals_match_reference(fast, address, threads):
    seed, stream, call, start, count = address
    f = fast.rng
    assert np.array_equal(
        f.random_words(seed, stream, call, start, count, num_threads=threads),
        to_numpy(rng.random_words(seed, stream, call, start, count)),
    )
    for dtype in (np.float64, np.float32):
        ref_u = rng.uniform(seed, stream, call, count, start=start, dtype=dtype)
        got_u = f.uniform(seed, stream, call, count, start=start, dtype=dtype, num_threads=threads)
        assert got_u.dtype == dtype and np.array_equal(got_u, ref_u)
    ref = rng.normal(seed, stream, call, count, start=start)
    got = f.normal(seed, stream, call, count, start=start, num_threads=threads)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-14)
    got32 = f.normal(seed, stream, call, count, start=start, dtype=np.float32,
                     num_threads=threads)
    ref32 = rng.normal(seed, stream, call, count, start=start, dtype=np.float32)
    ulp = np.spacing(np.abs(ref32).astype(np.float32))
    assert np.all(np.abs(got32 - ref32) <= ulp)


@pytest.mark.parametrize("kind", ["random_words", "uniform", "normal"])
def test_fast_is_bit_identical_for_any_thread_count(fast, kind):
    """Large enough for many chunks (8192 elements each), with an unaligned start."""
    draw = getattr(fast.rng, kind)
    args = (11, "test.b", 7, 3, 100_003) if kind == "random_words" else (11, "test.b", 7, 100_003)
    kwargs = {} if kind == "random_words" else {"start": 3}
    outs = [draw(*args, **kwargs, num_threads=t) for t in (1, 2, 3, 4)]
    for out in outs[1:]:
        assert np.array_equal(out, outs[0])


def test_draws_are_addressed_by_start_index():
    """Drawing [0, n) at once equals drawing pieces with the matching ``start``."""
    whole = rng.normal(3, "test.a", 2, 50)
    parts = np.concatenate([rng.normal(3, "test.a", 2, 7, start=s) for s in range(0, 49, 7)])
    assert np.array_equal(whole[:49], parts)
    grid = rng.uniform(3, "test.a", 2, (5, 10))
    assert np.array_equal(grid.reshape(-1), rng.uniform(3, "test.a", 2, 50))


def test_uniform_values_are_exact_24_bit_and_in_range():
    u = rng.uniform(1, "test.a", 0, 100_000)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert np.array_equal(u * 2**24, np.floor(u * 2**24))
    assert np.array_equal(rng.uniform(1, "test.a", 0, 10, dtype=np.float32).astype(np.float64),
                          u[:10])


def test_normal_extremes_and_symmetry():
    """Words 0 and 2**32-1 give the extreme normals, mirror images of each other."""
    ns = rng._namespace(None)
    z = to_numpy(rng.normal_from_words(ns, ns.asarray([0, 2**32 - 1, 2**31 - 1, 2**31],
                                                      dtype=ns.int64)))
    assert z[0] == -z[1] and z[2] == -z[3]
    exact = statistics.NormalDist().inv_cdf(2.0**-33)
    assert abs(z[0] - exact) < 1e-9 and abs(z[2]) < 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["reference", "fast"])
def test_statistics_of_a_million_draws(backend, fast):
    from scipy import stats

    n = 2_000_000
    module = rng if backend == "reference" else fast.rng
    u = module.uniform(2024, "test.a", 1, n)
    z = module.normal(2024, "test.b", 1, n)
    tol = 5 / math.sqrt(n)
    # moments
    assert abs(u.mean() - 0.5) < tol and abs(u.var() - 1 / 12) < tol
    assert abs(z.mean()) < 5 * tol and abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs(stats.skew(z)) < 5 * math.sqrt(6 / n)
    assert abs(stats.kurtosis(z)) < 5 * math.sqrt(24 / n)
    # distribution
    assert stats.kstest(u, "uniform").pvalue > 1e-4
    assert stats.kstest(z, "norm").pvalue > 1e-4
    # tail frequencies: P(|z| > 3) = 0.0027
    expected = 2 * stats.norm.sf(3) * n
    assert abs((np.abs(z) > 3).sum() - expected) < 5 * math.sqrt(expected)


def _pair_chi2(a, b, bins=16):
    counts, _, _ = np.histogram2d(a, b, bins=bins, range=[[0, 1], [0, 1]])
    expected = a.size / bins**2
    return ((counts - expected) ** 2 / expected).sum()


@pytest.mark.parametrize(
    "other",
    [
        dict(seed=8, stream="test.a", call=0),   # another seed
        dict(seed=7, stream="test.b", call=0),   # another stream
        dict(seed=7, stream="test.a", call=1),   # the next call
        dict(seed=7, stream="test.a", call=2**32),  # a call differing only in the high word
    ],
)
def test_streams_seeds_and_calls_are_independent(fast, other):
    from scipy import stats

    n = 1_000_000
    a = fast.rng.uniform(7, "test.a", 0, n)
    b = fast.rng.uniform(other["seed"], other["stream"], other["call"], n)
    assert not np.array_equal(a[:100], b[:100])
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / math.sqrt(n)
    # joint distribution of (a_i, b_i) is uniform on the unit square
    assert stats.chi2.sf(_pair_chi2(a, b), 16**2 - 1) > 1e-4
    # lagged pairs inside one stream too
    assert stats.chi2.sf(_pair_chi2(a[:-1], a[1:]), 16**2 - 1) > 1e-4


@pytest.mark.parametrize(
    "kwargs, exc, word",
    [
        (dict(seed=-1), ValueError, "seed"),
        (dict(seed=2**32), ValueError, "seed"),
        (dict(seed=1.5), TypeError, "seed"),
        (dict(seed=True), TypeError, "seed"),
        (dict(stream="No Such"), ValueError, "stream"),
        (dict(stream=3), ValueError, "stream"),
        (dict(call=-1), ValueError, "call"),
        (dict(call=2**64), ValueError, "call"),
        (dict(shape=(2, -1)), ValueError, "shape"),
        (dict(shape="x"), TypeError, "shape"),
        (dict(start=-2), ValueError, "start"),
    ],
)
@pytest.mark.parametrize("backend", ["reference", "fast"])
def test_bad_arguments_name_the_argument(kwargs, exc, word, backend, fast):
    module = rng if backend == "reference" else fast.rng
    args = dict(seed=1, stream="test.a", call=0, shape=(3,))
    args.update(kwargs)
    start = args.pop("start", 0)
    with pytest.raises(exc, match=word):
        module.uniform(args["seed"], args["stream"], args["call"], args["shape"], start=start)


def test_fast_rejects_bad_dtype_and_threads(fast):
    with pytest.raises(TypeError, match="dtype"):
        fast.rng.normal(1, "test.a", 0, 3, dtype=np.int32)
    with pytest.raises(ValueError, match="num_threads"):
        fast.rng.normal(1, "test.a", 0, 3, num_threads=0)


def test_random_streams_state_round_trip():
    streams = rng.RandomStreams(42)
    first = [streams.normal("test.a", 4), streams.uniform("test.b", 2), streams.normal("test.a", 4)]
    state = streams.state_dict()
    assert state == {"seed": 42, "calls": {"test.a": 2, "test.b": 1}}
    resumed = rng.RandomStreams(0)
    resumed.load_state_dict(state)
    later = rng.RandomStreams(42)
    for name, n in [("test.a", 2), ("test.b", 1)]:
        for _ in range(n):
            later.next_call(name)
    assert np.array_equal(resumed.normal("test.a", 5), later.normal("test.a", 5))
    assert not np.array_equal(first[0], first[2])
    with pytest.raises(ValueError, match="calls"):
        resumed.load_state_dict({"seed": 1, "calls": {"test.a": -1}})


def test_fast_reports_openmp(fast):
    facts = fast.info()
    assert facts["openmp"] is True, "refsim_fast was built without OpenMP"
    assert facts["max_threads"] >= 1


@given(st.lists(st.integers(0, 2**45), min_size=0, max_size=6), st.integers(0, 40),
       st.integers(0, 2**64 - 1))
def test_draws_at_indices_and_rows_match_contiguous_draws(xp, starts, width, call):
    """random_words_at / random_words_rows give the numbers of the same word indices."""
    ns = rng._namespace(xp)
    s = ns.asarray(starts, dtype=ns.int64)
    rows = to_numpy(rng.random_words_rows(4, "test.b", call, s, width, xp=xp))
    assert rows.shape == (len(starts), width)
    for r, start in enumerate(starts):
        expected = to_numpy(rng.random_words(4, "test.b", call, start, width))
        assert np.array_equal(rows[r], expected)
    if starts and width:
        index = ns.reshape(s, (-1, 1)) + ns.reshape(ns.arange(width, dtype=ns.int64), (1, -1))
        assert np.array_equal(to_numpy(rng.random_words_at(4, "test.b", call, index, xp=xp)),
                              rows)
        z = to_numpy(rng.normal_at(4, "test.b", call, index, xp=xp))
        ref = np.stack([rng.normal(4, "test.b", call, width, start=st_) for st_ in starts])
        np.testing.assert_allclose(z, ref, rtol=0, atol=1e-14)


def test_draws_at_reject_bad_indices():
    with pytest.raises(ValueError, match="index"):
        rng.random_words_at(1, "test.a", 0, np.asarray([-1]))
    with pytest.raises(TypeError, match="index"):
        rng.random_words_at(1, "test.a", 0, np.asarray([1.5]))
    with pytest.raises(ValueError, match="starts"):
        rng.random_words_rows(1, "test.a", 0, np.asarray([-4]), 3)


def test_io_streams_are_registered():
    from refsim.stages import io

    assert set(io.stream_names()) <= set(rng.STREAMS)


def _rng_vectors():
    import json
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "spec" / "vectors" / "rng.json"
    return json.loads(path.read_text())


@pytest.mark.parametrize("case", _rng_vectors()["cases"], ids=lambda c: f"{c['stream']}-{c['call']}")
def test_golden_rng_vectors(case, fast):
    """spec/vectors/rng.json: words and uniforms exactly, normals within the contract, on both
    backends; the stream id is CRC-32 of the name."""
    args = (case["seed"], case["stream"], case["call"])
    start, count = case["start"], case["count"]
    assert rng.stream_id(case["stream"]) == case["stream_id"]
    for module in (rng, fast.rng):
        assert [int(w) for w in module.random_words(*args, start, count)] == case["words"]
        assert list(module.uniform(*args, count, start=start)) == case["uniforms"]
        np.testing.assert_allclose(module.normal(*args, count, start=start), case["normals"],
                                   rtol=0, atol=1e-14)


def test_golden_rng_vectors_are_current():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "spec" / "vectors" / "make_rng_vectors.py"
    spec = importlib.util.spec_from_file_location("make_rng_vectors", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.build() == _rng_vectors()


def test_normal16_table_is_the_as241_quantile_and_symmetric():
    table = rng.normal16_table()
    assert table.shape == (65536,) and not table.flags.writeable
    assert np.array_equal(table[::-1], -table)
    exact = [statistics.NormalDist().inv_cdf((2 * h + 1) / 2**17) for h in (0, 1000, 32767, 65535)]
    np.testing.assert_allclose(table[[0, 1000, 32767, 65535]], exact, rtol=1e-13, atol=1e-15)
    assert abs(table.max() - 4.3249) < 1e-4 and abs((table**2).mean() - 1) < 3e-5


@given(addresses, st.sampled_from([1, 2, 4]))
def test_normal16_bit_identical_everywhere(xp, address, threads):
    """spec/rng.md §4b: the table is computed once and copied, so every namespace and the fast
    backend give the same numbers bit for bit."""
    seed, stream, call, start, count = address
    ref = rng.normal16(seed, stream, call, count, start=start)
    assert np.array_equal(to_numpy(rng.normal16(seed, stream, call, count, start=start, xp=xp)),
                          ref)
    import refsim_fast.rng as fast_rng

    got = fast_rng.normal16(seed, stream, call, count, start=start, num_threads=threads)
    assert np.array_equal(got, ref)
    # number i is half (i & 1) of word i >> 1
    first = start >> 1
    words = rng.random_words(seed, stream, call, first, (start + count + 1) // 2 - first)
    halves = np.stack([words & 0xFFFF, words >> 16], axis=1).reshape(-1)
    assert np.array_equal(rng.normal16_table()[halves[start - 2 * first:][:count]], ref)


@pytest.mark.slow
def test_normal16_statistics(fast):
    from scipy import stats

    n = 2_000_000
    z = fast.rng.normal16(77, "test.a", 3, n)
    assert abs(z.mean()) < 5 / math.sqrt(n) and abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert stats.kstest(z, "norm").pvalue > 1e-4


# -- the compiled boundary (spec/pulses.md, "Compiled kernels"): refsim_fast._rng called
#    directly with runs that would wrap around the index range, bad tables or thread counts
#    (CI runs these under ASan/UBSan: .ci/sanitize) ---------------------------------------------


@pytest.mark.parametrize("kernel", ["fill_words", "fill_uniform", "fill_normal", "fill_normal16"])
def test_fast_kernels_refuse_runs_past_the_index_range(fast, kernel):
    r = fast._rng
    out = np.zeros(9, dtype=np.uint32 if kernel == "fill_words" else np.float64)

    def call(start, threads=1):
        if kernel == "fill_normal16":
            r.fill_normal16(1, 2, 3, start, out, rng.normal16_table(), threads)
        else:
            getattr(r, kernel)(1, 2, 3, start, out, threads)

    for start in (2**64 - 1, 2**64 - 9, 2**63 - 8):
        with pytest.raises(ValueError, match="start"):
            call(start)
    assert not out.any()
    call(2**63 - 9)  # the run ends exactly at 2^63
    call(5, 1)
    want = out.copy()
    assert want.any()
    for threads in (0, -3):  # at least one thread
        out[:] = 0
        call(5, threads)
        np.testing.assert_array_equal(out, want)


def test_fast_normal16_checks_its_table(fast):
    out = np.zeros(4)
    for table in (np.zeros(65535), np.zeros(65537), np.zeros(0), None):
        with pytest.raises(ValueError, match="table"):
            fast._rng.fill_normal16(1, 2, 3, 0, out, table, 1)
    with pytest.raises(ValueError, match="contiguous"):
        fast._rng.fill_normal16(1, 2, 3, 0, out, np.zeros(2 * 65536)[::2], 1)


def test_long_runs_equal_their_pieces():
    """A run longer than NUMPY_PHILOX_RUN blocks (computed in runs of that many blocks on numpy)
    equals the same words drawn in pieces with other alignments, and the compiled streams."""
    count = 4 * rng.NUMPY_PHILOX_RUN * 3 + 5
    whole = np.asarray(rng.random_words(3, "test.long", 2, 7, count))
    pieces = [np.asarray(rng.random_words(3, "test.long", 2, 7 + s, min(1001, count - s)))
              for s in range(0, count, 1001)]
    np.testing.assert_array_equal(whole, np.concatenate(pieces))
    strict = pytest.importorskip("array_api_strict")
    np.testing.assert_array_equal(
        whole, np.asarray(rng.random_words(3, "test.long", 2, 7, count, xp=strict)))
    fast = pytest.importorskip("refsim_fast.rng")
    np.testing.assert_array_equal(whole, fast.random_words(3, "test.long", 2, 7, count))


@pytest.mark.parametrize("starts", [[0, 6, 12], [1, 9, 17], [0, 7, 2, 3], [5]])
@pytest.mark.parametrize("width", [1, 2, 5])
def test_normal16_rows_are_runs_of_normal16(starts, width):
    """normal16_rows: row r = numbers starts[r] .. starts[r] + width - 1 of normal16, for rows
    of one start parity (a slice) and of mixed parities (a gather)."""
    got = rng.normal16_rows(3, "device.c2c", 7, np.array(starts), width)
    want = np.stack([rng.normal16(3, "device.c2c", 7, width, start=s) for s in starts])
    np.testing.assert_array_equal(got, want)
    assert rng.normal16_rows(3, "device.c2c", 7, np.zeros(0, np.int64), width).shape == (0, width)


@pytest.mark.parametrize("start", [0, 5])
def test_uniform_calls_are_one_number_of_each_call(start):
    """rng.uniform_calls (and the compiled one): number ``start`` of each call, the numbers of
    one draw per call; calls in any order, repeated, and near the end of the call range."""
    calls = np.array([7, 3, 3, 2**64 - 1, 0, 123456789012], dtype=np.uint64)
    want = np.array([rng.uniform(4, "compound.chop_in", int(c), 1, start=start)[0]
                     for c in calls])
    got = rng.uniform_calls(4, "compound.chop_in", calls.astype(np.int64)[:3], start=start)
    np.testing.assert_array_equal(got, want[:3])
    pytest.importorskip("refsim_fast.rng")
    from refsim_fast import rng as fast_rng

    np.testing.assert_array_equal(fast_rng.uniform_calls(4, "compound.chop_in", calls,
                                                         start=start), want)
    assert fast_rng.uniform_calls(4, "compound.chop_in", np.zeros(0, np.int64)).shape == (0,)
    with pytest.raises(TypeError, match="calls"):
        fast_rng.uniform_calls(4, "compound.chop_in", np.zeros(2))


def _as241_with_c_log(word: int) -> float:
    """One normal by Python floats and math.log (the C library's log, as the compiled kernels
    take it), the operations of spec/rng.md §4 in order."""
    v = ((2 * word + 1) * 2.0**-33)
    q = v - 0.5
    if abs(q) <= 0.425:
        r = 0.180625 - q * q
        return rng._horner(rng.AS241_CENTRAL_NUM, r) * q / rng._horner(rng.AS241_CENTRAL_DEN, r)
    r = math.sqrt(-math.log(v if q <= 0.0 else 1.0 - v)) - 1.6
    z = rng._horner(rng.AS241_TAIL_NUM, r) / rng._horner(rng.AS241_TAIL_DEN, r)
    return -z if q < 0.0 else z


@pytest.mark.parametrize("count", [1, 15, 16, 17, 255, 256, 257, 600, 4099])
def test_fast_normals_are_the_element_formula_at_block_edges(fast, count):
    """The compiled normals compact the tail positions of each block of 256 words (16 at a
    time with AVX-512) and scatter them back: every value lands at its own position and is
    the formula's with the C library's log, bit for bit (spec/rng.md §4)."""
    words = to_numpy(rng.random_words(5, "test.a", 9, 3, count))
    got = fast.rng.normal(5, "test.a", 9, count, start=3, num_threads=1)
    want = np.array([_as241_with_c_log(int(w)) for w in words])
    assert np.array_equal(got, want)
    if count >= 15:  # the case has tail words (about 15 % of them)
        assert np.count_nonzero(np.abs(words.astype(np.float64) * 2.0**-32 - 0.5) > 0.43) > 0

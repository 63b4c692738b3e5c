"""Conformance of refsim's float32 IO stage (forward and backward) with aihwkit 1.1.0 (issue 10).

refsim's float32 tiles (reference and compiled backend, ``refsim.verify.RefsimAdapter``) against
aihwkit's float32 tiles, bit for bit (``np.array_equal``), on deterministic settings: inp_noise,
out_noise, w_noise and every ``*_std`` / ``*_dtod`` 0, no stochastic rounding
(``refsim.verify.make_deterministic``). Each request is a fresh tile (spec/verify.md §1); weights
lie inside the device bounds, since aihwkit's set_weights clamps (deviations.md §3).

aihwkit is reached through tests/aihwkit_peer.py (one line-mode adapter process for the module);
without it every test here is skipped.

**Data.** The product Σ_j W_ij·x̃_j is summed in another order by refsim (numpy's matmul: sgemv
for one row, sgemm for a batch) than by aihwkit (one sgemv per batch row), so with arbitrary
float32 data a batch of more than one row differs in the last bits (characterised in
:func:`test_product_summation_order`). The exact tests therefore use weights on the grid 2⁻¹⁰ and
inputs on the grid 2⁻⁶ (:func:`grid_data`), for which the prepared inputs keep the products short
enough to be summed without rounding in the cases below; :func:`test_general_data_one_row` runs
arbitrary float32 data one row at a time, where both sides use sgemv.

Groups: ``forward`` (noise_management × bound_management 'None'/'Iterative' × mv_type),
``backward`` (noise_management × mv_type), ``settings`` (one field at a time: is_perfect,
out_scale, resolutions, bounds, nm_thres, max_bm_factor, max_bm_res, r_series, v_offset_w_min,
out_nonlinearity, inp_asymmetry; the InferenceRPUConfig and FloatingPointRPUConfig tiles).
"""

from __future__ import annotations

import itertools
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest

from aihwkit_peer import start
from refsim import configs, fast_info, verify

BACKENDS = ["reference"] + (["fast"] if fast_info()["available"] else [])

NOISE_MANAGEMENT = ["None", "AbsMax", "AbsMaxNPSum", "Max", "Constant", "AverageAbsMax"]
BOUND_MANAGEMENT = ["None", "Iterative"]        # 'IterativeWorstCase': deviations.md §3
MV_TYPES = ["OnePass", "PosNegSeparate", "PosNegSeparateDigitalSum"]


@pytest.fixture(scope="module")
def aihwkit():
    adapter = start("float32")
    yield adapter
    adapter.close()


@pytest.fixture(scope="module")
def refsim_adapters():
    return {b: verify.RefsimAdapter(b, dtype="float32") for b in BACKENDS}


# -- configs and data -------------------------------------------------------------------------------


def config(base: str = "single", **fields: Any) -> Dict[str, Any]:
    """A deterministic config dict (``to_dict()`` form) of ``base`` with IO fields set: a key
    ``forward__x`` / ``backward__x`` sets one direction, a plain ``x`` both."""
    if base == "single":
        rpu = configs.SingleRPUConfig(device=configs.ConstantStepDevice())
    elif base == "inference":
        rpu = configs.InferenceRPUConfig()
    else:
        rpu = configs.FloatingPointRPUConfig()
    d = verify.make_deterministic(rpu.to_dict())
    for key, value in fields.items():
        directions = [key.split("__")[0]] if "__" in key else ["forward", "backward"]
        name = key.split("__")[-1]
        for direction in directions:
            if direction in d and "is_perfect" in d[direction]:
                d[direction][name] = value
    return d


def grid_data(seed: Any, m: int, n: int, batch: int, scale: float, direction: str
              ) -> Tuple[np.ndarray, np.ndarray]:
    """Weights (m, n), multiples of 2⁻¹⁰ in [−0.5, 0.5], and inputs (batch, n or m), multiples
    of 2⁻⁶ in [−scale, scale]: exact in float32, short products."""
    r = np.random.default_rng(seed)
    w = r.integers(-512, 513, (m, n)) / 1024.0
    size = n if direction == "forward" else m
    x = r.integers(-int(64 * scale), int(64 * scale) + 1, (batch, size)) / 64.0
    return w, x


def float32_data(seed: Any, m: int, n: int, batch: int, scale: float, direction: str
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Arbitrary float32 weights in ±0.5 and inputs in ±scale (as float64 arrays)."""
    r = np.random.default_rng(seed)
    w = r.uniform(-0.5, 0.5, (m, n)).astype(np.float32).astype(np.float64)
    size = n if direction == "forward" else m
    x = r.uniform(-scale, scale, (batch, size)).astype(np.float32).astype(np.float64)
    return w, x


_CACHE: Dict[Tuple[str, str], np.ndarray] = {}


def call(adapter: Any, direction: str, cfg: Dict[str, Any], w: np.ndarray,
         x: np.ndarray) -> np.ndarray:
    return np.asarray(getattr(adapter, direction)(cfg, w, x), dtype=np.float64)


def aihwkit_call(aihwkit: Any, key: str, direction: str, cfg: Dict[str, Any], w: np.ndarray,
                 x: np.ndarray) -> np.ndarray:
    """aihwkit's answer, asked once per case (both backends compare with it)."""
    if (key, direction) not in _CACHE:
        _CACHE[(key, direction)] = call(aihwkit, direction, cfg, w, x)
    return _CACHE[(key, direction)]


def assert_same(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert actual.shape == expected.shape, what
    if not np.array_equal(actual, expected):
        diff = np.abs(actual - expected)
        i = np.unravel_index(np.argmax(diff), diff.shape)
        raise AssertionError(
            f"{what}: aihwkit differs from refsim at {i}: {actual[i]!r} against {expected[i]!r} "
            f"({int(np.sum(actual != expected))} of {actual.size} elements; max |diff| "
            f"{diff[i]:.3g})")


# -- the matrix of management types ------------------------------------------------------------------

#: (ident, direction, config fields). Bound management cases use out_bound 0.5 and a first
#: batch row that drives output 0 far beyond it (:func:`bm_data`), so that the loop iterates
#: (checked below); 'AbsMaxNPSum' keeps the outputs within out_bound whenever its scale is not
#: capped, so there max_bm_res is 0.1 (the cap amax·max_bm_res/step_in then acts).
def _matrix() -> List[Tuple[str, str, Dict[str, Any]]]:
    cases = []
    for nm, bm, mv in itertools.product(NOISE_MANAGEMENT, BOUND_MANAGEMENT, MV_TYPES):
        fields: Dict[str, Any] = {"noise_management": nm, "bound_management": bm, "mv_type": mv}
        if nm == "Constant":
            fields["nm_thres"] = 2.0
        if bm != "None":
            fields["out_bound"] = 0.5
            if nm == "AbsMaxNPSum":
                fields["max_bm_res"] = 0.1
        cases.append((f"forward-nm_{nm}-bm_{bm}-{mv}", "forward", fields))
    for nm, mv in itertools.product(NOISE_MANAGEMENT, MV_TYPES):
        fields = {"noise_management": nm, "mv_type": mv}
        if nm == "Constant":
            fields["nm_thres"] = 2.0
        cases.append((f"backward-nm_{nm}-{mv}", "backward", fields))
    return cases


def bm_data(seed: Any, m: int, n: int, batch: int) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`grid_data` (inputs in ±4) with weight row 0 all 0.5 and batch row 0 all 4: output
    0 of row 0 is far beyond out_bound 0.5 in the first pass (in both halves of a pos/neg mode)."""
    w, x = grid_data(seed, m, n, batch, 4.0, "forward")
    w[0] = 0.5
    x[0] = 4.0
    return w, x


MATRIX = _matrix()


def _sizes(ident: str) -> Tuple[int, int, int]:
    r = np.random.default_rng(list(ident.encode()))
    return int(r.integers(2, 7)), int(r.integers(6, 17)), int(r.integers(1, 5))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ident, direction, fields", MATRIX, ids=[c[0] for c in MATRIX])
def test_management_matrix(aihwkit, refsim_adapters, backend, ident, direction, fields):
    """Every noise_management × bound_management × mv_type (forward), noise_management × mv_type
    (backward): bit-equal, batches of 1–4 rows."""
    m, n, batch = _sizes(ident)
    bm = fields.get("bound_management", "None") != "None"
    w, x = bm_data(list(ident.encode()), m, n, batch) if bm else \
        grid_data(list(ident.encode()), m, n, batch, 2.0, direction)
    cfg = config(**{f"{direction}__{k}": v for k, v in fields.items()})
    ours = call(refsim_adapters[backend], direction, cfg, w, x)
    assert_same(aihwkit_call(aihwkit, ident, direction, cfg, w, x), ours, ident)
    if bm:   # bound management acts: the same config without it gives another result
        off = config(**{f"{direction}__{k}": v for k, v in
                        {**fields, "bound_management": "None"}.items()})
        assert not np.array_equal(call(refsim_adapters[backend], direction, off, w, x), ours)


# -- one setting at a time ---------------------------------------------------------------------------

def _settings() -> List[Tuple[str, str, str, Dict[str, Any]]]:
    """(ident, direction, base, fields)."""
    both = []
    for direction in ("forward", "backward"):
        both += [
            ("is_perfect", direction, "single", {"is_perfect": True}),
            ("is_perfect-out_scale_2", direction, "single", {"is_perfect": True, "out_scale": 2.0}),
            ("out_scale_0.5", direction, "single", {"out_scale": 0.5}),
            ("out_scale_-1.5", direction, "single", {"out_scale": -1.5}),
            ("out_scale_3-AbsMaxNPSum", direction, "single",
             {"out_scale": 3.0, "noise_management": "AbsMaxNPSum"}),
            ("inp_res_1_15", direction, "single", {"inp_res": 1 / 15}),
            ("inp_res_1_63", direction, "single", {"inp_res": 1 / 63}),
            ("inp_res_0.1", direction, "single", {"inp_res": 0.1}),
            ("inp_res_1", direction, "single", {"inp_res": 1.0}),
            ("inp_res_31_steps", direction, "single", {"inp_res": 31.0}),
            ("inp_res_64_steps", direction, "single", {"inp_res": 64.0}),
            ("inp_res_2.5_steps", direction, "single", {"inp_res": 2.5}),
            ("inp_res_0_off", direction, "single",
             {"inp_res": 0.0, "noise_management": "None", "out_res": -1.0}),
            ("inp_res_-1_off", direction, "single",
             {"inp_res": -1.0, "noise_management": "None", "out_res": -1.0}),
            ("out_res_1_15", direction, "single", {"out_res": 1 / 15}),
            ("out_res_0.01", direction, "single", {"out_res": 0.01}),
            ("out_res_63_steps", direction, "single", {"out_res": 63.0}),
            ("out_res_255_steps", direction, "single", {"out_res": 255.0}),
            ("out_res_0_off", direction, "single", {"out_res": 0.0, "inp_res": 1 / 64}),
            ("out_res_-1_off", direction, "single", {"out_res": -1.0, "inp_res": 1 / 64}),
            ("inp_bound_0.5", direction, "single", {"inp_bound": 0.5, "noise_management": "None"}),
            ("inp_bound_2", direction, "single", {"inp_bound": 2.0, "noise_management": "None"}),
            ("inp_bound_-1_off", direction, "single",
             {"inp_bound": -1.0, "noise_management": "None"}),
            ("out_bound_0.5", direction, "single", {"out_bound": 0.5}),
            ("out_bound_2-out_res_63_steps", direction, "single",
             {"out_bound": 2.0, "out_res": 63.0}),
            ("out_bound_0_off", direction, "single", {"out_bound": 0.0, "inp_res": 1 / 64}),
            ("out_bound_-1_off", direction, "single", {"out_bound": -1.0, "inp_res": 1 / 64}),
            ("nm_thres_0.5-AbsMax", direction, "single",
             {"nm_thres": 0.5, "noise_management": "AbsMax"}),
            ("nm_thres_0.5-Max", direction, "single", {"nm_thres": 0.5, "noise_management": "Max"}),
            ("nm_thres_0.25-AbsMaxNPSum", direction, "single",
             {"nm_thres": 0.25, "noise_management": "AbsMaxNPSum"}),
            ("nm_thres_0.5-Constant", direction, "single",
             {"nm_thres": 0.5, "noise_management": "Constant"}),
            ("nm_thres_0.5-AverageAbsMax_ignored", direction, "single",
             {"nm_thres": 0.5, "noise_management": "AverageAbsMax"}),
            ("r_series_0.05", direction, "single", {"r_series": 0.05}),
            ("r_series_0.2-v_offset_w_min_0", direction, "single",
             {"r_series": 0.2, "v_offset_w_min": 0.0}),
            ("r_series_0.2-v_offset_w_min_-0.5", direction, "single",
             {"r_series": 0.2, "v_offset_w_min": -0.5}),
            ("v_offset_w_min_0-inert", direction, "single", {"v_offset_w_min": 0.0}),
            ("v_offset_w_min_-0.5-inert", direction, "single", {"v_offset_w_min": -0.5}),
            ("out_nonlinearity_0.8", direction, "single", {"out_nonlinearity": 0.8}),
            ("out_nonlinearity_1-out_bound_2", direction, "single",
             {"out_nonlinearity": 1.0, "out_bound": 2.0}),
            ("out_nonlinearity_0.5-slope_calibration_0.5", direction, "single",
             {"out_nonlinearity": 0.5, "slope_calibration": 0.5}),
            ("inp_asymmetry_0.1-PosNegSeparate", direction, "single",
             {"inp_asymmetry": 0.1, "mv_type": "PosNegSeparate"}),
            ("inp_asymmetry_0.3-PosNegSeparateDigitalSum", direction, "single",
             {"inp_asymmetry": 0.3, "mv_type": "PosNegSeparateDigitalSum"}),
            ("inp_asymmetry_-0.5-PosNegSeparate", direction, "single",
             {"inp_asymmetry": -0.5, "mv_type": "PosNegSeparate"}),
            ("mv_type_Ideal", direction, "single", {"mv_type": "Ideal"}),
            ("inference-defaults", direction, "inference", {}),
            ("floating_point", direction, "floating_point", {}),
        ]
    forward_only = [
        ("max_bm_factor_2", "forward", "single",
         {"max_bm_factor": 2, "out_bound": 0.5, "bound_management": "Iterative"}),
        ("max_bm_factor_4", "forward", "single",
         {"max_bm_factor": 4, "out_bound": 0.5, "bound_management": "Iterative"}),
        ("max_bm_res_0.05", "forward", "single",
         {"max_bm_res": 0.05, "out_bound": 0.5, "bound_management": "Iterative", "inp_res": 1 / 63}),
        ("max_bm_res_0.5", "forward", "single",
         {"max_bm_res": 0.5, "out_bound": 0.5, "bound_management": "Iterative", "inp_res": 1 / 63}),
        ("max_bm_res_0.25-inp_res_31_steps", "forward", "single",
         {"out_bound": 0.5, "bound_management": "Iterative", "inp_res": 31.0}),
        ("bm_Iterative-inp_res_off", "forward", "single",
         {"out_bound": 0.5, "bound_management": "Iterative", "inp_res": -1.0}),
        ("bm_Iterative-AbsMaxNPSum-max_bm_res_0.1-out_scale_2", "forward", "single",
         {"out_bound": 0.5, "bound_management": "Iterative", "noise_management": "AbsMaxNPSum",
          "max_bm_res": 0.1, "out_scale": 2.0}),
        ("inference-bm_Iterative", "forward", "inference",
         {"out_bound": 1.0, "bound_management": "Iterative"}),
    ]
    return [(f"{d}-{ident}", d, base, fields) for ident, d, base, fields in both] + [
        (f"{d}-{ident}", d, base, fields) for ident, d, base, fields in forward_only]


SETTINGS = _settings()


def _setting_case(ident: str, direction: str, base: str, fields: Dict[str, Any]):
    m, n, batch = _sizes(ident)
    if fields.get("bound_management") == "Iterative":
        w, x = bm_data(list(ident.encode()), m, n, batch)
    else:
        w, x = grid_data(list(ident.encode()), m, n, batch, 2.0, direction)
    cfg = config(base, **{f"{direction}__{k}": v for k, v in fields.items()})
    return cfg, w, x


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ident, direction, base, fields", SETTINGS, ids=[c[0] for c in SETTINGS])
def test_one_setting(aihwkit, refsim_adapters, backend, ident, direction, base, fields):
    """One IO field (with the companions it needs) on the deterministic base config."""
    cfg, w, x = _setting_case(ident, direction, base, fields)
    ours = call(refsim_adapters[backend], direction, cfg, w, x)
    assert_same(aihwkit_call(aihwkit, ident, direction, cfg, w, x), ours, ident)


def test_settings_act(refsim_adapters):
    """The settings above change the result where they should (so the comparison tests them), and
    v_offset_w_min alone is inert: with v_offset_std = 0 and r_series = 0 there is no
    voltage-offset stage (spec/io.md §S5, aihwkit's ``hasVoltageOffsets``)."""
    ref = refsim_adapters["reference"]
    inert = {"v_offset_w_min_0-inert", "v_offset_w_min_-0.5-inert",
             "nm_thres_0.5-AverageAbsMax_ignored"}
    unchanged = {"inference-defaults", "floating_point"}       # the base itself
    for ident, direction, base, fields in SETTINGS:
        short = ident.split("-", 1)[1]
        if short in unchanged:
            continue
        cfg, w, x = _setting_case(ident, direction, base, fields)
        if fields.get("bound_management") == "Iterative":
            plain = config(base, **{f"{direction}__{k}": v for k, v in
                                    {**fields, "bound_management": "None"}.items()})
        elif short.startswith("nm_thres"):
            plain = config(base, **{f"{direction}__noise_management": fields["noise_management"]})
        else:
            plain = config(base)
        same = np.array_equal(call(ref, direction, cfg, w, x), call(ref, direction, plain, w, x))
        assert same == (short in inert), ident
    # is_perfect is the exact product (times out_scale)
    for direction in ("forward", "backward"):
        cfg, w, x = _setting_case(f"{direction}-is_perfect-out_scale_2", direction, "single",
                                  {"is_perfect": True, "out_scale": 2.0})
        exact = (x @ w.T if direction == "forward" else x @ w) * 2.0
        assert np.array_equal(call(ref, direction, cfg, w, x), exact.astype(np.float32))


def test_zero_rows_and_max_without_positive(aihwkit, refsim_adapters):
    """Zero short-cuts (spec/io.md §S3): an all-zero row with 'AbsMax', a row without a positive
    element with 'Max' (α ≤ 0), forward and backward, in one batch with ordinary rows."""
    w, x = grid_data([7], 4, 6, 4, 2.0, "forward")
    x[1] = 0.0
    x[2] = -np.abs(x[2])
    for nm in ("AbsMax", "Max", "AbsMaxNPSum", "AverageAbsMax"):
        for direction in ("forward", "backward"):
            xs = x if direction == "forward" else x[:, :4]
            cfg = config(**{f"{direction}__noise_management": nm})
            theirs = call(aihwkit, direction, cfg, w, xs)
            for backend in BACKENDS:
                assert_same(theirs, call(refsim_adapters[backend], direction, cfg, w, xs),
                            f"{nm} {direction} {backend}")


# -- arbitrary float32 data, and the summation order of the product ---------------------------------

GENERAL = [
    ("defaults", {}),
    ("AbsMax-OnePass", {"noise_management": "AbsMax"}),
    ("AbsMax-PosNegSeparate", {"noise_management": "AbsMax", "mv_type": "PosNegSeparate"}),
    ("AbsMax-PosNegSeparateDigitalSum",
     {"noise_management": "AbsMax", "mv_type": "PosNegSeparateDigitalSum"}),
    ("Max", {"noise_management": "Max"}),
    ("AverageAbsMax", {"noise_management": "AverageAbsMax"}),
    ("inp_res_31_steps-out_res_off", {"inp_res": 31.0, "out_res": -1.0}),
    ("bm_Iterative", {"bound_management": "Iterative", "out_bound": 1.0}),
    ("out_scale_0.7", {"out_scale": 0.7}),
    ("r_series_0.1", {"r_series": 0.1}),
    ("out_nonlinearity_0.3", {"out_nonlinearity": 0.3}),
    ("no_quantization", {"inp_res": -1.0, "out_res": -1.0}),
]


GENERAL_CASES = [(d, ident, fields) for d in ("forward", "backward") for ident, fields in GENERAL
                 if d == "forward" or "bound_management" not in fields]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("direction, ident, fields", GENERAL_CASES,
                         ids=[f"{d}-{i}" for d, i, _ in GENERAL_CASES])
def test_general_data_one_row(aihwkit, refsim_adapters, backend, direction, ident, fields):
    """Arbitrary float32 weights and inputs, one row per call, tiles with 2–8 outputs (then both
    sides sum the product with sgemv): bit-equal."""
    for k in range(3):
        key = f"general-{ident}-{direction}-{k}"
        r = np.random.default_rng(list(key.encode()))
        m, n = int(r.integers(2, 9)), int(r.integers(2, 17))
        w, x = float32_data(list(key.encode()), m, n, 1, 3.0, direction)
        cfg = config(**{f"{direction}__{f}": v for f, v in fields.items()})
        assert_same(aihwkit_call(aihwkit, key, direction, cfg, w, x),
                    call(refsim_adapters[backend], direction, cfg, w, x), key)


def test_product_summation_order(aihwkit, refsim_adapters):
    """Characterisation of the one difference of the clean product (no quantization, no
    management, is the plain Σ_j W_ij·x_j in float32): aihwkit sums each batch row with
    OpenBLAS's sgemv. refsim's ``x @ Wᵀ`` is numpy's sgemv for one row with m ≥ 2 outputs (the
    same sums, bit-equal for every row length measured, 1–512), numpy's sdot for one row with
    one output (differs from sgemv for rows of 4 or more inputs), and sgemm for a batch of
    several rows (differs from the per-row sgemv for rows of 2 or more inputs). Those
    differences are rounding: within 1e-6 of the row's largest output (spec/verify.md §3's
    float32 tolerance)."""
    cfg = config(noise_management="None", bound_management="None", inp_res=-1.0, out_res=-1.0)
    ref = refsim_adapters["reference"]
    for n in (1, 2, 3, 8, 16, 64, 512):
        for m, batch in ((2, 1), (5, 1), (1, 1), (1, 3), (3, 3), (8, 4)):
            w, x = float32_data([n, m, batch], m, n, batch, 2.0, "forward")
            theirs = call(aihwkit, "forward", cfg, w, x)
            ours = call(ref, "forward", cfg, w, x)
            if m >= 2 and batch == 1:
                assert_same(theirs, ours, f"{m}x{n} batch 1")
            else:
                tol = verify.F32_RTOL * np.max(np.abs(ours), axis=1, keepdims=True)
                assert np.all(np.abs(theirs - ours) <= tol), (m, n, batch)
            # refsim row by row (sgemv) reproduces aihwkit's batch for m ≥ 2
            if m >= 2:
                rows = np.concatenate([call(ref, "forward", cfg, w, x[i:i + 1])
                                       for i in range(batch)])
                assert_same(theirs, rows, f"{m}x{n} batch {batch} row by row")


def test_abs_max_np_sum_sums_in_aihwkit_order(aihwkit, refsim_adapters):
    """'AbsMaxNPSum' (spec/io.md §S3): aihwkit forms P = Σ max(x_j, 0) and N = Σ min(x_j, 0) by
    one sequential float32 loop over j (``computeNoiseManagement`` in
    src/rpucuda/rpu_forward_backward_pass.cpp); refsim sums with the namespace's ``sum`` (numpy:
    pairwise in blocks of 8), which rounds differently for rows of 8 or more inputs. A 2×8 tile
    where only the scale α = 0.6·P (out_bound ≤ 0 counts as 1) differs."""
    x = np.array([[0.3, 0.4930003583431244, 0.282927542924881, 0.392448365688324,
                   0.8255937695503235, 0.38480687141418457, 0.2341347187757492,
                   0.7286607623100281]]).astype(np.float32).astype(np.float64)
    w = np.zeros((2, 8))
    w[0, 0] = 0.5
    cfg = config(forward__noise_management="AbsMaxNPSum", forward__bound_management="None",
                 forward__inp_res=-1.0, forward__out_res=-1.0, forward__out_bound=-1.0)
    sequential = np.float32(0)
    for v in x[0].astype(np.float32):
        sequential = np.float32(sequential + v)
    assert sequential != np.sum(x[0].astype(np.float32))    # the two orders round differently
    theirs = call(aihwkit, "forward", cfg, w, x)
    for backend in BACKENDS:
        assert_same(theirs, call(refsim_adapters[backend], "forward", cfg, w, x),
                    f"AbsMaxNPSum {backend}")

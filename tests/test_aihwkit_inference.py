"""refsim's inference stage (spec/inference.md §I1-§I5) side by side with aihwkit 1.1.0's
``InferenceTile`` and ``PCMLikeNoiseModel`` (float32, CPU).

Three groups:

* **noise-free** (prog_noise_scale = read_noise_scale = drift_scale = 0; a perfect forward pass or
  the clean analog one: no noise, no DAC/ADC, noise and bound management 'None'): program_weights,
  drift_weights(t) and the forward pass in evaluation mode agree bit for bit (the weights, the
  drift-compensation baseline λ₀ and factor α, one-row forward passes). refsim rounds the
  conversion scale as aihwkit does, fl(fl(1/a)·(g_max − g_min)) (torch evaluates ``float /
  tensor`` as ``tensor.reciprocal() * float``; before issue 11 refsim divided once, one ulp apart
  for about a quarter of all abs-max values: :func:`test_conversion_scale_rounding_of_aihwkit`).
  aihwkit's conversion round trip W → (G⁺, G⁻) → W is itself not exact (at most one ulp of max
  abs(W), 2.98e-8 for max abs(W) = 0.5), and refsim's is the same round trip. A batch of rows
  differs in the last bits only because refsim's matmul sums a batch in another order (sgemm)
  than aihwkit (one sgemv per row); tests/test_aihwkit_io.py characterises that. The readout floor
  1e-4 is taken in the readout's dtype on both sides (:func:`test_readout_floor`).
* **statistical** (noise on): aihwkit draws its noise from torch's global generator, refsim from
  its addressed streams (deviations.md §3), so only distributions can agree. On one 128×128
  float32 weight matrix, ``REPS`` aihwkit tiles (torch.manual_seed(0)) and ``REPS`` refsim tiles
  (seeds 100…, 200…) give per-tile statistics; the means of the two samples must lie within
  ``Z_MAX`` standard errors of their difference (the standard error from the spread over tiles).
  The statistics: mean, sign-weighted mean (the shrink of the idle device's noise) and standard
  deviation of programmed − target weights; mean and standard deviation of ν; Σ abs W(t) /
  Σ abs W_p at t = 3600 s and 1 year with read noise off and on; the read-noise spread (the standard
  deviation of the difference of two drifts to the same t, over √2: each drift starts from the same
  programmed state and draws new read noise, in both); the drift-compensation factor α after
  drift_weights(86400) with the default forward IO.
* **deviation**: aihwkit's drift_weights programs the weights implicitly when they are not
  programmed; refsim raises ValueError naming program_weights (deviations.md §3).

aihwkit runs as a separate process with its own Python (tests/aihwkit_peer.py ``run_script``); the
weights travel as .npy files. Without aihwkit the module is skipped.
"""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import pytest

from aihwkit_peer import aihwkit_python, run_script
from refsim import configs, fast_info, rng, verify
from refsim.tile import AnalogTile

pytestmark = pytest.mark.skipif(aihwkit_python() is None,
                                reason="aihwkit is not installed beside refsim "
                                       "($REFSIM_AIHWKIT_PYTHON)")

BACKENDS = ["reference"] + (["fast"] if fast_info()["available"] else [])
YEAR = 365 * 86400.0
TIMES = (0.0, 3600.0, YEAR)

# -- noise-free ---------------------------------------------------------------------------------------

#: name -> settings of a noise-free case: the forward pass ("perfect" or "clean" analog), the
#: converter's range, the model's g_max, drift compensation, and the scale of the weights.
NOISE_FREE: Dict[str, Dict[str, Any]] = {
    "perfect": dict(io="perfect", g_max=None, g_min=None, model_g_max=None, compensation=True,
                    scale=1.0),
    "clean-analog-gmin": dict(io="clean", g_max=30.0, g_min=2.0, model_g_max=None,
                              compensation=True, scale=1.0),
    "model-g_max-no-compensation": dict(io="perfect", g_max=None, g_min=None, model_g_max=40.0,
                                        compensation=False, scale=3.0),
    "tiny-weights": dict(io="clean", g_max=None, g_min=None, model_g_max=None, compensation=True,
                         scale=1e-8),   # max abs(W) below the 1e-7 clip: λ at its 1e-4 floor
}

AIHWKIT_NOISE_FREE = """
import json, numpy as np, torch
from aihwkit.simulator.configs import InferenceRPUConfig
from aihwkit.simulator.parameters.enums import NoiseManagementType, BoundManagementType
from aihwkit.simulator.tiles import InferenceTile
from aihwkit.inference import PCMLikeNoiseModel, SinglePairConductanceConverter
case = json.loads({case!r})
w = torch.from_numpy(np.load({w!r})); x = torch.from_numpy(np.load({x!r}))
c = InferenceRPUConfig()
if not case['compensation']:
    c.drift_compensation = None
f = c.forward
if case['io'] == 'perfect':
    f.is_perfect = True
else:
    f.noise_management = NoiseManagementType.NONE; f.bound_management = BoundManagementType.NONE
    f.inp_res = -1.0; f.out_res = -1.0; f.out_noise = 0.0
kw = dict(prog_noise_scale=0.0, read_noise_scale=0.0, drift_scale=0.0)
if case['g_max'] is not None:
    kw['g_converter'] = SinglePairConductanceConverter(g_max=case['g_max'], g_min=case['g_min'])
if case['model_g_max'] is not None:
    kw['g_max'] = case['model_g_max']
c.noise_model = PCMLikeNoiseModel(**kw)
t = InferenceTile(w.shape[0], w.shape[1], c)
t.set_weights(w)
t.program_weights()
out = dict(programmed=t.get_weights()[0].tolist(),
           baseline=None if t.drift_baseline is None else float(t.drift_baseline), drifts=[])
for ti in {times!r}:
    t.drift_weights(ti)
    t.eval()
    out['drifts'].append(dict(weights=t.get_weights()[0].tolist(), alpha=float(t.alpha),
                              rows=[t.forward(x[i:i + 1])[0].tolist() for i in range(len(x))],
                              batch=t.forward(x).tolist()))
    t.train()
print(json.dumps(out))
"""


def _noise_free_config(case: Dict[str, Any]) -> configs.InferenceRPUConfig:
    cfg = configs.InferenceRPUConfig()
    if not case["compensation"]:
        cfg.drift_compensation = None
    if case["io"] == "perfect":
        cfg.forward.is_perfect = True
    else:
        cfg.forward.noise_management = "None"
        cfg.forward.bound_management = "None"
        cfg.forward.inp_res = -1.0
        cfg.forward.out_res = -1.0
        cfg.forward.out_noise = 0.0
    kw: Dict[str, Any] = dict(prog_noise_scale=0.0, read_noise_scale=0.0, drift_scale=0.0)
    if case["g_max"] is not None:
        kw["g_converter"] = configs.SinglePairConductanceConverter(g_max=case["g_max"],
                                                                   g_min=case["g_min"])
    if case["model_g_max"] is not None:
        kw["g_max"] = case["model_g_max"]
    cfg.noise_model = configs.PCMLikeNoiseModel(**kw)
    return cfg


def _save(tmp_path: Any, **arrays: np.ndarray) -> Dict[str, str]:
    paths = {}
    for name, a in arrays.items():
        paths[name] = str(tmp_path / f"{name}.npy")
        np.save(paths[name], a)
    return paths


def _scales(w: np.ndarray, g_range: float) -> tuple:
    """The conversion scale s of ``w`` as aihwkit computes it and as refsim does: aihwkit's
    ``(g_max - g_min) / abs_max`` is a Python float divided by a float32 tensor, which torch
    evaluates as ``abs_max.reciprocal() * (g_max - g_min)`` (``Tensor.__rtruediv__``), two
    roundings; refsim does the same since issue 11 (spec/inference.md §I1; it divided once
    before, one ulp apart for about a quarter of all abs-max values)."""
    a = np.maximum(np.max(np.abs(w)), np.float32(1e-7)).astype(np.float32)
    g = np.float32(g_range)
    return np.float32(np.float32(1.0) / a) * g, np.float32(np.float32(1.0) / a) * g


def _g_range(case: Dict[str, Any]) -> float:
    g_max = case["model_g_max"] or case["g_max"] or 25.0
    return g_max - (case["g_min"] or 0.0)


@pytest.mark.parametrize("name", list(NOISE_FREE))
def test_noise_free_program_drift_forward(name, tmp_path):
    """Noise-free: programmed and drifted weights agree with aihwkit's within 2 ulp of
    max abs(W), and bit for bit whenever the two ways of rounding the conversion scale (see
    :func:`_scales`) give the same float32 number (for the programming: the scale of W; for a
    drift: also that of the programmed weights); λ₀ and α agree (λ₀ to float32: see
    :func:`test_readout_floor`); one-row forward passes in evaluation mode agree bit for bit when
    the weights do, a batch to float32 summation order. The round trip through the conductances
    is within one ulp of max abs(W) of the target on both sides (and not exact: aihwkit's own)."""
    case = NOISE_FREE[name]
    w = ((rng.uniform(3, "test.a", 0, (64, 48)) - 0.5) * case["scale"]).astype(np.float32)
    x = (rng.uniform(3, "test.b", 0, (16, 48)) * 2 - 1).astype(np.float32)
    paths = _save(tmp_path, w=w, x=x)
    import json
    theirs = run_script(AIHWKIT_NOISE_FREE.format(case=json.dumps(case), times=TIMES, **paths))
    ulp = float(np.spacing(np.max(np.abs(w))))
    a_programmed = np.asarray(theirs["programmed"], dtype=np.float32)
    assert 0.0 < np.max(np.abs(a_programmed - w)) <= ulp        # aihwkit: not exact, ≤ 1 ulp
    g_range = _g_range(case)
    # refsim rounds the conversion scale as aihwkit does (spec/inference.md §I1): always exact
    exact_program = exact_drift = bool(_scales(w, g_range)[0] == _scales(w, g_range)[1])
    for backend in BACKENDS:
        tile = AnalogTile(64, 48, _noise_free_config(case), seed=7, dtype=np.float32,
                          backend=backend)
        tile.set_weights(w)
        tile.program_weights()
        programmed = tile.get_weights()
        assert np.max(np.abs(programmed - w)) <= ulp
        assert np.max(np.abs(programmed - a_programmed)) <= 2 * ulp, (backend, "programmed")
        assert np.array_equal(programmed, a_programmed) or not exact_program, backend
        baseline = tile.inference_state.baseline
        if theirs["baseline"] is None:
            assert baseline is None
        else:
            assert np.float32(baseline) == np.float32(theirs["baseline"]), (backend, baseline)
        for t, drift in zip(TIMES, theirs["drifts"]):
            tile.drift_weights(t)
            tile.eval()
            drifted, a_drifted = tile.get_weights(), np.asarray(drift["weights"], np.float32)
            assert np.max(np.abs(drifted - a_drifted)) <= 2 * ulp, (backend, t)
            assert np.array_equal(drifted, a_drifted) or not exact_drift, (backend, t)
            assert np.max(np.abs(drifted - w)) <= 2 * ulp
            assert tile.drift_compensation_factor == drift["alpha"] == 1.0, (backend, t)
            rows = np.stack([tile.forward(x[i]) for i in range(len(x))])
            a_rows = np.asarray(drift["rows"], np.float64)
            bound = np.abs(x).astype(np.float64) @ np.abs(drifted).T.astype(np.float64)
            if np.array_equal(drifted, a_drifted):
                assert np.array_equal(rows, a_rows), (backend, t)
            assert np.all(np.abs(rows - a_rows) <= 48 * 2.0 ** -24 * bound + 2 * ulp * 48)
            batch = tile.forward(x)
            a_batch = np.asarray(drift["batch"], np.float64)
            assert np.all(np.abs(batch - a_batch) <= 48 * 2.0 ** -24 * bound + 2 * ulp * 48), \
                (backend, t)
            tile.train()


AIHWKIT_ONE_WEIGHT = """
import json, torch
from aihwkit.simulator.configs import InferenceRPUConfig
from aihwkit.simulator.tiles import InferenceTile
from aihwkit.inference import PCMLikeNoiseModel
c = InferenceRPUConfig()
c.forward.is_perfect = True
c.noise_model = PCMLikeNoiseModel(prog_noise_scale=0.0, read_noise_scale=0.0, drift_scale=0.0)
t = InferenceTile(1, 2, c)
t.set_weights(torch.tensor([[1.5, 0.3]]))
t.program_weights()
g, params = c.noise_model.g_converter.convert_to_conductances(torch.tensor([[1.5, 0.3]]))
print(json.dumps(dict(programmed=t.get_weights()[0].tolist(), g_plus=g[0].tolist(),
                      scale=params['scale_ratio'].item())))
"""


def _one_weight_refsim(backend: str) -> np.ndarray:
    cfg = configs.InferenceRPUConfig(noise_model=configs.PCMLikeNoiseModel(
        prog_noise_scale=0.0, read_noise_scale=0.0, drift_scale=0.0))
    cfg.forward.is_perfect = True
    tile = AnalogTile(1, 2, cfg, dtype=np.float32, backend=backend)
    tile.set_weights(np.array([[1.5, 0.3]], dtype=np.float32))
    tile.program_weights()
    return tile.get_weights()


def test_conversion_scale_rounding_of_aihwkit():
    """The minimal case of the one systematic disagreement found: W = [[1.5, 0.3]] noise-free.
    aihwkit's scale 25/1.5 is fl(fl(1/1.5)·25) = 16.666668 (torch's ``float / tensor`` is
    ``tensor.reciprocal() * float``), one ulp above fl(25/1.5) = 16.666666, which refsim uses:
    so aihwkit's G⁺ of the largest weight, 25.000002, is clipped to g_max = 25 and the weight
    reads back as 1.4999999 (one ulp low), and 0.3 converts to 5.0000005 µS (refsim: 1.5 and
    5.0). For about a quarter of all float32 abs-max values the two scales differ by one ulp,
    and then noise-free programmed (and drifted) weights differ in the last bit."""
    theirs = run_script(AIHWKIT_ONE_WEIGHT)
    aih_scale, ref_scale = _scales(np.array([[1.5, 0.3]], dtype=np.float32), 25.0)
    assert theirs["scale"] == float(aih_scale) == float(np.float32(16.666668))
    assert float(ref_scale) == theirs["scale"]  # refsim rounds the same way (since issue 11)
    assert theirs["g_plus"] == [[25.0, float(np.float32(5.0000005))]]
    assert theirs["programmed"] == [[float(np.float32(1.4999999)), float(np.float32(0.3))]]
    for backend in BACKENDS:
        assert _one_weight_refsim(backend).tolist() == theirs["programmed"]


def test_noise_free_programming_bit_exact_for_any_abs_max():
    """refsim rounds the conversion scale as aihwkit does: bit-exact for any abs-max."""
    theirs = run_script(AIHWKIT_ONE_WEIGHT)
    for backend in BACKENDS:
        assert _one_weight_refsim(backend).tolist() == theirs["programmed"]


AIHWKIT_FLOOR = """
import json, torch
from aihwkit.simulator.configs import InferenceRPUConfig
from aihwkit.simulator.tiles import InferenceTile
from aihwkit.inference import PCMLikeNoiseModel
c = InferenceRPUConfig()
c.forward.is_perfect = True
c.noise_model = PCMLikeNoiseModel(prog_noise_scale=0.0, read_noise_scale=0.0, drift_scale=0.0)
t = InferenceTile(1, 1, c)
t.set_weights(torch.tensor([[1e-5]]))
t.program_weights()
print(json.dumps(float(t.drift_baseline)))
"""


def test_readout_floor():
    """GlobalDriftCompensation's readout floor: aihwkit clamps the float32 mean to 1e-4, which is
    float32(1e-4) = 9.9999997e-05; refsim's λ is a Python float floored at 1e-4 (float64). Only
    visible in λ₀ itself. refsim floors at 1e-4 in the dtype of the readout, as aihwkit."""
    assert run_script(AIHWKIT_FLOOR) == float(np.float32(1e-4))
    cfg = configs.InferenceRPUConfig(noise_model=configs.PCMLikeNoiseModel(
        prog_noise_scale=0.0, read_noise_scale=0.0, drift_scale=0.0))
    cfg.forward.is_perfect = True
    for backend in BACKENDS:
        tile = AnalogTile(1, 1, cfg, dtype=np.float32, backend=backend)
        tile.set_weights(np.array([[1e-5]], dtype=np.float32))
        tile.program_weights()
        assert tile.inference_state.baseline == float(np.float32(1e-4))


# -- statistical agreement with noise on -------------------------------------------------------------

SIZE = 128
REPS = 10
Z_MAX = 4.0

AIHWKIT_STATISTICS = """
import json, numpy as np, torch
from aihwkit.simulator.configs import InferenceRPUConfig
from aihwkit.simulator.tiles import InferenceTile
from aihwkit.inference import PCMLikeNoiseModel
torch.manual_seed(0)
w = torch.from_numpy(np.load({w!r})).double()
YEAR = {year!r}

def tile_of(model):
    c = InferenceRPUConfig()
    c.noise_model = model
    t = InferenceTile(w.shape[0], w.shape[1], c)
    t.set_weights(w.float())
    t.program_weights()
    return t, t.get_weights()[0].double()

out = []
for rep in range({reps}):
    t, wp = tile_of(PCMLikeNoiseModel())
    e = wp - w
    nu = torch.stack(t.drift_noise_parameters).double()
    row = dict(err_mean=float(e.mean()), err_shrink=float((e * torch.sign(w)).mean()),
               err_std=float(e.std()), nu_mean=float(nu.mean()), nu_std=float(nu.std()))
    t.drift_weights(86400.0)
    row['alpha'] = float(t.alpha)
    for name, ti in (('hour', 3600.0), ('year', YEAR)):
        t.drift_weights(ti); w1 = t.get_weights()[0].double()
        t.drift_weights(ti); w2 = t.get_weights()[0].double()
        row['ratio_read_' + name] = float(w1.abs().sum() / wp.abs().sum())
        row['spread_' + name] = float((w1 - w2).std() / 2 ** 0.5)
    t, wp = tile_of(PCMLikeNoiseModel(read_noise_scale=0.0))
    for name, ti in (('hour', 3600.0), ('year', YEAR)):
        t.drift_weights(ti)
        row['ratio_' + name] = float(t.get_weights()[0].double().abs().sum() / wp.abs().sum())
    out.append(row)
print(json.dumps(out))
"""


def _refsim_statistics(w: np.ndarray, rep: int, backend: str = "auto") -> Dict[str, float]:
    """The statistics of AIHWKIT_STATISTICS for refsim tiles with seeds 100 + rep (noise model
    defaults) and 200 + rep (read noise off)."""
    w64 = w.astype(np.float64)

    def tile_of(model: configs.PCMLikeNoiseModel, seed: int) -> Any:
        tile = AnalogTile(SIZE, SIZE, configs.InferenceRPUConfig(noise_model=model), seed=seed,
                          dtype=np.float32, backend=backend)
        tile.set_weights(w)
        tile.program_weights()
        return tile, tile.get_weights().astype(np.float64)

    tile, wp = tile_of(configs.PCMLikeNoiseModel(), 100 + rep)
    e = wp - w64
    nu = np.stack(tile.inference_state.programmed.nu).astype(np.float64)
    row = dict(err_mean=e.mean(), err_shrink=(e * np.sign(w64)).mean(), err_std=e.std(ddof=1),
               nu_mean=nu.mean(), nu_std=nu.std(ddof=1))
    tile.drift_weights(86400.0)
    row["alpha"] = tile.drift_compensation_factor
    for name, t in (("hour", 3600.0), ("year", YEAR)):
        tile.drift_weights(t)
        w1 = tile.get_weights().astype(np.float64)
        tile.drift_weights(t)
        w2 = tile.get_weights().astype(np.float64)
        row["ratio_read_" + name] = np.abs(w1).sum() / np.abs(wp).sum()
        row["spread_" + name] = (w1 - w2).std(ddof=1) / np.sqrt(2.0)
    tile, wp = tile_of(configs.PCMLikeNoiseModel(read_noise_scale=0.0), 200 + rep)
    for name, t in (("hour", 3600.0), ("year", YEAR)):
        tile.drift_weights(t)
        row["ratio_" + name] = np.abs(tile.get_weights().astype(np.float64)).sum() / \
            np.abs(wp).sum()
    return {k: float(v) for k, v in row.items()}


@pytest.fixture(scope="module")
def statistics(tmp_path_factory):
    """Per-tile statistics: {'aihwkit': [row, …], 'refsim': [row, …], 'w': weights}."""
    w = (rng.uniform(5, "test.a", 0, (SIZE, SIZE)) - 0.5).astype(np.float32)
    path = str(tmp_path_factory.mktemp("inference") / "w.npy")
    np.save(path, w)
    theirs = run_script(AIHWKIT_STATISTICS.format(w=path, year=YEAR, reps=REPS), timeout=600)
    ours = [_refsim_statistics(w, rep) for rep in range(REPS)]
    return {"aihwkit": theirs, "refsim": ours, "w": w}


def _compare(statistics: Dict[str, Any], keys: List[str]) -> Dict[str, tuple]:
    """key -> (aihwkit mean, refsim mean, z); asserts |z| ≤ Z_MAX for each key."""
    out = {}
    for key in keys:
        a = np.array([r[key] for r in statistics["aihwkit"]])
        r = np.array([r[key] for r in statistics["refsim"]])
        se = np.sqrt(a.var(ddof=1) / len(a) + r.var(ddof=1) / len(r))
        z = (r.mean() - a.mean()) / se
        out[key] = (a.mean(), r.mean(), z)
        assert abs(z) <= Z_MAX, (f"{key}: aihwkit {a.mean():.6g}, refsim {r.mean():.6g}, "
                                 f"{z:+.2f} standard errors")
    return out


def test_programming_noise_statistics(statistics):
    """Programmed − target weights (mean, sign-weighted mean, standard deviation) and the drift
    coefficients ν (mean, standard deviation) of both slices."""
    got = _compare(statistics, ["err_mean", "err_shrink", "err_std", "nu_mean", "nu_std"])
    # the measured effects are there on both sides: the idle device's clipped noise shrinks
    # every weight (≈ −0.1 µS/50 per µS of scale), σ of ≈ 0.9 µS in weight units, ν ≈ 0.076
    for side in (0, 1):
        assert got["err_shrink"][side] < -1.5e-3
        assert 0.015 < got["err_std"][side] < 0.022
        assert 0.07 < got["nu_mean"][side] < 0.08


def test_drift_without_read_noise(statistics):
    """Σ abs W(t) / Σ abs W_p after drift_weights(3600) and drift_weights(1 year) with
    read_noise_scale = 0."""
    got = _compare(statistics, ["ratio_hour", "ratio_year"])
    for side in (0, 1):
        assert 0.7 < got["ratio_hour"][side] < 0.85
        assert 0.45 < got["ratio_year"][side] < got["ratio_hour"][side]


def test_drift_with_read_noise(statistics):
    """With read noise on: the same ratios, and the read-noise spread at 3600 s and 1 year."""
    got = _compare(statistics, ["ratio_read_hour", "ratio_read_year", "spread_hour",
                                "spread_year"])
    for side in (0, 1):
        assert got["spread_hour"][side] > got["spread_year"][side] > 0.005


def test_drift_compensation_factor(statistics):
    """α = λ₀/λ_t after drift_weights(86400), default forward IO (noise, DAC/ADC, management)."""
    got = _compare(statistics, ["alpha"])
    for side in (0, 1):
        assert 1.3 < got["alpha"][side] < 1.7


def test_statistics_are_the_same_on_both_backends(statistics):
    """The statistics above come from the default backend; the reference backend draws the same
    numbers (one tile each, same seeds), up to float32 summation order in the readout's forward
    pass (α)."""
    if len(BACKENDS) == 1:
        pytest.skip("one backend only")
    rows = {b: _refsim_statistics(statistics["w"], 0, backend=b) for b in BACKENDS}
    for key, value in rows["reference"].items():
        assert value == pytest.approx(rows["fast"][key], rel=1e-6, abs=1e-9), key


# -- deviation: drift before programming -------------------------------------------------------------

AIHWKIT_IMPLICIT = """
import json, numpy as np, torch
from aihwkit.simulator.configs import InferenceRPUConfig
from aihwkit.simulator.tiles import InferenceTile
from aihwkit.inference import PCMLikeNoiseModel
w = torch.tensor([[0.5, -0.25], [0.125, 0.0]])
c = InferenceRPUConfig()
c.forward.is_perfect = True
c.noise_model = PCMLikeNoiseModel(read_noise_scale=0.0, drift_scale=0.0)
t = InferenceTile(2, 2, c)
t.set_weights(w)
before = t.programmed_weights is None
t.drift_weights(3600.0)
print(json.dumps(dict(before=before, programmed=t.programmed_weights is not None,
                      reference=t.reference_combined_weights.tolist(),
                      weights=t.get_weights()[0].tolist(),
                      programmed_weights=t.programmed_weights.tolist(),
                      baseline=None if t.drift_baseline is None else float(t.drift_baseline))))
"""


def test_drift_before_programming():
    """Row "inference `drift_weights` before `program_weights`": aihwkit programs implicitly
    (programming noise on, drift and read noise off: the drifted weights are the programmed ones,
    not the set ones, and a baseline exists); refsim raises ValueError naming program_weights
    and changes nothing."""
    w = np.array([[0.5, -0.25], [0.125, 0.0]], dtype=np.float32)
    theirs = run_script(AIHWKIT_IMPLICIT)
    assert theirs["before"] and theirs["programmed"] and theirs["baseline"] is not None
    assert np.array_equal(theirs["reference"], w)
    # the drift re-converts the programmed weights: equal up to that round trip
    assert np.allclose(theirs["weights"], theirs["programmed_weights"], rtol=0, atol=6e-8)
    assert not np.array_equal(theirs["weights"], w)                   # programming noise
    cfg = configs.InferenceRPUConfig(
        noise_model=configs.PCMLikeNoiseModel(read_noise_scale=0.0, drift_scale=0.0))
    cfg.forward.is_perfect = True
    for backend in BACKENDS:
        tile = AnalogTile(2, 2, cfg, dtype=np.float32, backend=backend)
        tile.set_weights(w)
        with pytest.raises(ValueError, match="program_weights"):
            tile.drift_weights(3600.0)
        assert np.array_equal(tile.get_weights(), w) and tile.inference_state is None
        tile.program_weights()
        tile.drift_weights(3600.0)               # the explicit call: then as aihwkit
        assert np.allclose(tile.get_weights(), tile.inference_state.programmed.weights,
                           rtol=0, atol=6e-8)
    rows = verify.deviation_rows("drift_weights")
    assert any("before" in r and "program_weights" in r for r in rows)

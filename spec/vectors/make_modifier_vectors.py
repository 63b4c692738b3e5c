"""Golden vectors of hardware-aware training (spec/modifiers.md, "Stage semantics" §M1-§M5):
writes spec/vectors/modifiers/*.json.

Regenerate (from the repository root):

    .venv/bin/python spec/vectors/make_modifier_vectors.py

Each case builds an ``AnalogTile`` with an InferenceRPUConfig (reference backend) whose clip, remap
and modifier fields are the case's, sets weights made from refsim uniforms (stream ``test.a``,
exact binary fractions), reads a probe batch (stream ``test.b``) once, then runs a few optimizer
steps — ``update(x, d, lr)`` (the exact floating-point update of an InferenceRPUConfig),
``post_update_step()`` (clip, remap, modifier) and a training-mode forward of the probe — and stores
after each step the stored weights W_s, the modified weights Ŵ, the output scales α and the
forward outputs; at the end it reads the probe in evaluation mode. The forward pass is perfect
(an exact product) unless a case says otherwise, so the numbers show the modifier's work alone;
they follow from the seed. The format is in spec/vectors/README.md; tests/test_modifiers_golden.py
replays the files on both backends and checks that this builder reproduces them.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, Dict, Optional

import numpy as np

from refsim import configs, rng
from refsim.tile import AnalogTile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from vector_json import file_text, write_vectors  # noqa: E402,F401  (file_text: used by the tests)

OUT_DIR = pathlib.Path(__file__).resolve().parent / "modifiers"
SHAPE = (4, 6)
BATCH = 2
PROBE = 3
STEPS = 3
LR = 0.2


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    description: str
    modifier: Dict[str, Any] = dataclasses.field(default_factory=lambda: {"type": "None"})
    clip: Optional[Dict[str, Any]] = None
    remap: Optional[Dict[str, Any]] = None
    perfect: bool = True
    dtype: str = "float64"
    seed: int = 5
    #: what the case is for, checked on the result (the builder refuses a case that shows nothing)
    check: Optional[Callable[[Dict[str, Any]], bool]] = None


def config(case: Case) -> Any:
    cfg = configs.InferenceRPUConfig()
    cfg.forward.is_perfect = case.perfect
    cfg.modifier = configs.WeightModifierParameter(**case.modifier)
    if case.clip is not None:
        cfg.clip = configs.WeightClipParameter(**case.clip)
    if case.remap is not None:
        cfg.remap = configs.WeightRemapParameter(**case.remap)
    return cfg


# -- what each case must show -------------------------------------------------------------------


def _steps(rec: Dict[str, Any], key: str) -> list:
    return [np.asarray(s[key], dtype=np.float64) for s in rec["steps"]]


def _modified_differs(rec: Dict[str, Any]) -> bool:
    return all(not np.array_equal(m, w) for m, w in zip(_steps(rec, "modified"),
                                                        _steps(rec, "weights")))


def _clipped(bound: Optional[float] = None) -> Callable[[Dict[str, Any]], bool]:
    """Clipping acted at every step: several weights sit at the same largest magnitude ±c (at
    ``bound`` when given); updates alone would give distinct values."""
    def check(rec: Dict[str, Any]) -> bool:
        for w in _steps(rec, "weights"):
            top = float(np.max(np.abs(w)))
            if np.sum(np.abs(w) == top) < 2 or (bound is not None and top != bound):
                return False
        return True
    return check


def _levels(rec: Dict[str, Any]) -> bool:
    """Ŵ takes few distinct values (quantized)."""
    return all(len(np.unique(m)) <= m.size // 2 for m in _steps(rec, "modified"))


def _last_column_kept(rec: Dict[str, Any]) -> bool:
    return all(np.array_equal(m[:, -1], w[:, -1]) and not np.array_equal(m, w)
               for m, w in zip(_steps(rec, "modified"), _steps(rec, "weights")))


def _drops(rec: Dict[str, Any]) -> bool:
    return all(np.any((m == 0) & (w != 0)) for m, w in zip(_steps(rec, "modified"),
                                                           _steps(rec, "weights")))


def _scaled(rec: Dict[str, Any]) -> bool:
    return all(not np.all(a == 1.0) for a in _steps(rec, "out_scales"))


def _unmodified(rec: Dict[str, Any]) -> bool:
    return all(s["modified"] is None for s in rec["steps"])


def _sign_kept(rec: Dict[str, Any]) -> bool:
    return _modified_differs(rec) and all(
        np.all(m * w >= 0) for m, w in zip(_steps(rec, "modified"), _steps(rec, "weights")))


def _all(*checks: Callable[[Dict[str, Any]], bool]) -> Callable[[Dict[str, Any]], bool]:
    return lambda rec: all(c(rec) for c in checks)


PCM_ALL = dict(type="PCMNoise", std_dev=1.0, g_max=20.0, pcm_zero_thres=1.0,
               pcm_t_inference=3600.0, pcm_prob_at_reset=0.1, pcm_prob_at_gmax=0.1,
               pcm_prob_at_random=0.1, pcm_t0=10.0)

CASES = [
    # clipping (§M1)
    Case("clip_fixed_value", "clip 'FixedValue' 0.3 after every step, no modifier",
         clip=dict(type="FixedValue", fixed_value=0.3),
         check=_all(_clipped(0.3), _unmodified)),
    Case("clip_layer_gaussian", "clip 'LayerGaussian' sigma 1.2 (unbiased std of W)",
         clip=dict(type="LayerGaussian", sigma=1.2),
         check=_all(_clipped(), _unmodified)),
    Case("clip_average_channel_max", "clip 'AverageChannelMax' capped by fixed_value 0.35",
         clip=dict(type="AverageChannelMax", fixed_value=0.35),
         check=_clipped()),
    # remapping (§M5)
    Case("remap_layerwise", "remap 'LayerwiseSymmetric' to remapped_wmax 0.4: one scale",
         remap=dict(type="LayerwiseSymmetric", remapped_wmax=0.4),
         check=lambda rec: _scaled(rec) and all(
             abs(float(np.max(np.abs(w))) - 0.4) < 1e-15 for w in _steps(rec, "weights"))),
    Case("remap_channelwise", "remap 'ChannelwiseSymmetric': every row's max abs becomes 1",
         remap=dict(type="ChannelwiseSymmetric"),
         check=lambda rec: _scaled(rec) and all(
             np.allclose(np.max(np.abs(w), axis=1), 1.0, rtol=1e-15)
             for w in _steps(rec, "weights"))),
    Case("remap_channelwise_max_scale_range", "remap 'ChannelwiseSymmetric' with max_scale_range "
         "1.5 and max_scale_ref 0.3: the scales are capped, capped rows keep weights above 1",
         remap=dict(type="ChannelwiseSymmetric", max_scale_range=1.5, max_scale_ref=0.3),
         check=lambda rec: _scaled(rec) and any(
             float(np.max(np.abs(w))) > 1.0 for w in _steps(rec, "weights"))),
    # deterministic modifiers (§M3)
    Case("discretize", "'Discretize' res 0.1, rounding to nearest (sto_round False)",
         modifier=dict(type="Discretize", res=0.1, sto_round=False), check=_levels),
    Case("discretize_res_steps", "'Discretize' with res 6 read as 6 steps (res' = 1/6), "
         "assumed_wmax 0.4 (rel_to_actual_wmax False)",
         modifier=dict(type="Discretize", res=6.0, rel_to_actual_wmax=False, assumed_wmax=0.4),
         check=_levels),
    Case("dorefa", "'DoReFa' res 0.125, dorefa_clip 0.8",
         modifier=dict(type="DoReFa", res=0.125, dorefa_clip=0.8), check=_levels),
    Case("copy", "'Copy' without pdrop: the modifier is inactive, Ŵ is never built",
         modifier=dict(type="Copy"), check=_unmodified),
    # seeded-random modifiers (§M3)
    Case("discretize_sto_round", "'Discretize' res 0.1 with stochastic rounding",
         modifier=dict(type="Discretize", res=0.1, sto_round=True), check=_levels),
    Case("dorefa_sto_round", "'DoReFa' res 0.1 with stochastic rounding",
         modifier=dict(type="DoReFa", res=0.1, sto_round=True), check=_levels),
    Case("add_normal", "'AddNormal' std_dev 0.05 (relative to A)",
         modifier=dict(type="AddNormal", std_dev=0.05), check=_modified_differs),
    Case("mult_normal", "'MultNormal' std_dev 0.1",
         modifier=dict(type="MultNormal", std_dev=0.1), check=_modified_differs),
    Case("discretize_add_normal", "'DiscretizeAddNormal' res 0.05, std_dev 0.02, sto_round",
         modifier=dict(type="DiscretizeAddNormal", res=0.05, std_dev=0.02, sto_round=True),
         check=_modified_differs),
    Case("poly", "'Poly' std_dev 0.2 with four coefficients",
         modifier=dict(type="Poly", std_dev=0.2, coeffs=[0.02, 0.1, -0.05, 0.03]),
         check=_modified_differs),
    Case("prog_noise", "'ProgNoise' std_dev 2, g_max 10 (sign of W kept)",
         modifier=dict(type="ProgNoise", std_dev=2.0, g_max=10.0), check=_sign_kept),
    Case("pcm_noise", "'PCMNoise' std_dev 1 at pcm_t_inference 0: programming and read noise",
         modifier=dict(type="PCMNoise", std_dev=1.0), check=_sign_kept),
    Case("pcm_noise_all", "'PCMNoise' with every option: g_max 20, zero threshold, drift to 1 h "
         "from t0 10 s, stuck at reset / g_max / random (0.1 each)",
         modifier=PCM_ALL, check=_modified_differs),
    Case("pcm_noise_assumed_wmax", "'PCMNoise' with assumed_wmax 0.3 (W clipped to A first), "
         "faults at g_max, drift only (std_dev 0)",
         modifier=dict(type="PCMNoise", rel_to_actual_wmax=False, assumed_wmax=0.3,
                       pcm_prob_at_gmax=0.2, pcm_t_inference=1e5),
         check=_modified_differs),
    Case("drop_connect", "'DropConnect' pdrop 0.3", modifier=dict(type="DropConnect", pdrop=0.3),
         check=_drops),
    Case("add_normal_pdrop_copy_last_column", "'AddNormal' 0.1 with pdrop 0.3 and "
         "copy_last_column (the last column is excluded from A and kept)",
         modifier=dict(type="AddNormal", std_dev=0.1, pdrop=0.3, copy_last_column=True),
         check=_all(_last_column_kept, _drops)),
    Case("enable_during_test", "'AddNormal' 0.1 with enable_during_test: evaluation reads Ŵ too",
         modifier=dict(type="AddNormal", std_dev=0.1, enable_during_test=True),
         check=lambda rec: rec["eval_outputs"] == rec["steps"][-1]["outputs"]),
    # everything together
    Case("clip_remap_pcm_noise", "clip 'LayerGaussian' 2, remap 'ChannelwiseSymmetric', then "
         "'PCMNoise' with every option, pdrop 0.1 and copy_last_column, and the default "
         "(noisy) forward IO",
         clip=dict(type="LayerGaussian", sigma=2.0), remap=dict(type="ChannelwiseSymmetric"),
         modifier=dict(PCM_ALL, pdrop=0.1, copy_last_column=True), perfect=False,
         check=_all(_scaled, _last_column_kept)),
    Case("clip_remap_pcm_noise_float32", "the same modifier, clip 'FixedValue' 0.6 and remap "
         "'LayerwiseSymmetric' to 0.5 in a float32 tile, perfect forward",
         clip=dict(type="FixedValue", fixed_value=0.6),
         remap=dict(type="LayerwiseSymmetric", remapped_wmax=0.5),
         modifier=dict(PCM_ALL, pdrop=0.1, copy_last_column=True), dtype="float32",
         check=_all(_scaled, _last_column_kept)),
]


def _matrix(a: Any) -> Optional[list]:
    if a is None:
        return None
    a = np.asarray(a, dtype=np.float64)
    return [float(v) for v in a] if a.ndim == 1 else [[float(v) for v in row] for row in a]


def data(case: Case) -> tuple:
    """The initial weights, the probe batch and the (x, d) of every step (exact binary
    fractions)."""
    dt = np.dtype(case.dtype)
    m, n = SHAPE
    w = np.asarray(0.5 * (2.0 * rng.uniform(case.seed, "test.a", 0, SHAPE) - 1.0), dtype=dt)
    probe = np.asarray(2.0 * rng.uniform(case.seed, "test.b", 0, (PROBE, n)) - 1.0, dtype=dt)
    steps = [(np.asarray(2.0 * rng.uniform(case.seed, "test.b", 2 * k + 1, (BATCH, n)) - 1.0,
                         dtype=dt),
              np.asarray(2.0 * rng.uniform(case.seed, "test.b", 2 * k + 2, (BATCH, m)) - 1.0,
                         dtype=dt))
             for k in range(STEPS)]
    return w, probe, steps


def run_case(case: Case, backend: str = "reference") -> Dict[str, Any]:
    cfg = config(case)
    dt = np.dtype(case.dtype)
    tile = AnalogTile(*SHAPE, cfg, seed=case.seed, dtype=dt.type, backend=backend)
    w, probe, updates = data(case)
    tile.set_weights(w)
    initial = _matrix(tile.forward(probe))
    steps = []
    for x, d in updates:
        tile.update(x, d, LR)
        tile.post_update_step()
        steps.append({"update": {"x": _matrix(x), "d": _matrix(d), "lr": LR},
                      "weights": _matrix(tile.get_weights(apply_weight_scaling=False)),
                      "out_scales": _matrix(tile.out_scales),
                      "modified": _matrix(tile.modified_weights),
                      "outputs": _matrix(tile.forward(probe)),
                      "rng_calls": dict(tile.streams.state_dict()["calls"])})
    tile.eval()
    return {"format": "refsim-modifier-vectors", "version": 1, "name": case.name,
            "description": case.description, "rpu_config": cfg.to_dict(), "seed": case.seed,
            "dtype": case.dtype, "shape": list(SHAPE), "weights": _matrix(w),
            "probe": _matrix(probe), "initial_outputs": initial, "steps": steps,
            "eval_outputs": _matrix(tile.forward(probe))}


def checked_run(case: Case) -> Dict[str, Any]:
    rec = run_case(case)
    assert case.check is None or case.check(rec), f"{case.name}: does not show what it is for"
    return rec


def main(argv: Sequence[str] = ()) -> int:
    return write_vectors(OUT_DIR, CASES, checked_run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

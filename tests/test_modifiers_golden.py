"""Golden vectors of hardware-aware training (spec/vectors/modifiers, spec/modifiers.md §M1-§M5):
the reference and the fast backend replay every file, and the builder
(spec/vectors/make_modifier_vectors.py) reproduces them.

Comparison rule (as tests/test_inference_golden.py): the replay's weights, output scales, modified
weights and forward outputs equal the stored ones bit for bit on the machine that wrote them;
elsewhere within float64 1e-12 (float32 1e-6) relative to each row's largest magnitude
(spec/agreement.md §1 rule 3: libm's tanh/exp/log/pow may differ in the last bit between
machines). Whether Ŵ exists (null or not) and the call counters must match exactly."""

import json
import pathlib

import numpy as np
import pytest

from golden_support import backends, load_script

VECTOR_DIR = pathlib.Path(__file__).resolve().parent.parent / "spec" / "vectors"
MODIFIER_DIR = VECTOR_DIR / "modifiers"
NAMES = sorted(p.stem for p in MODIFIER_DIR.glob("*.json"))
RTOL = {"float64": 1e-12, "float32": 1e-6}


def builder():
    return load_script(VECTOR_DIR / "make_modifier_vectors.py", "_refsim_make_modifier_vectors")


def _stored(name):
    return json.loads((MODIFIER_DIR / f"{name}.json").read_text())


def _close(actual, expected, dtype, what):
    assert (actual is None) == (expected is None), what
    if expected is None:
        return
    a, e = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, what
    scale = np.max(np.abs(e), axis=-1, keepdims=True)
    assert np.all(np.abs(a - e) <= RTOL[dtype] * np.maximum(scale, 1e-300)), what


def test_every_case_has_a_file():
    assert sorted(case.name for case in builder().CASES) == NAMES, (
        "spec/vectors/modifiers/ is out of date: run spec/vectors/make_modifier_vectors.py")
    assert len(NAMES) >= 20


def test_the_cases_cover_every_type_and_option():
    """Every clip type, remap type and modifier type (but 'None', the default of the clip and
    remap cases) and every modifier option appears in a stored vector, in float64 and float32."""
    seen = {"clip": set(), "remap": set(), "modifier": set(), "options": set(), "dtype": set()}
    for name in NAMES:
        rec = _stored(name)
        cfg = rec["rpu_config"]
        seen["clip"].add(cfg["clip"]["type"])
        seen["remap"].add(cfg["remap"]["type"])
        seen["modifier"].add(cfg["modifier"]["type"])
        seen["dtype"].add(rec["dtype"])
        mod = cfg["modifier"]
        for key in ("sto_round", "copy_last_column", "enable_during_test"):
            if mod[key]:
                seen["options"].add(key)
        for key, default in (("pdrop", 0.0), ("pcm_zero_thres", 0.0), ("pcm_t_inference", 0.0),
                             ("pcm_prob_at_reset", 0.0), ("pcm_prob_at_gmax", 0.0),
                             ("pcm_prob_at_random", 0.0), ("pcm_t0", 20.0),
                             ("rel_to_actual_wmax", True), ("max_scale_range", 0.0)):
            where = cfg["remap"] if key == "max_scale_range" else mod
            if where[key] != default:
                seen["options"].add(key)
    assert seen["clip"] == {"None", "FixedValue", "LayerGaussian", "AverageChannelMax"}
    assert seen["remap"] == {"None", "LayerwiseSymmetric", "ChannelwiseSymmetric"}
    assert seen["modifier"] == {"None", "Discretize", "MultNormal", "AddNormal",
                                "DiscretizeAddNormal", "DoReFa", "Poly", "PCMNoise", "ProgNoise",
                                "DropConnect", "Copy"}
    assert seen["options"] == {"sto_round", "copy_last_column", "enable_during_test", "pdrop",
                               "pcm_zero_thres", "pcm_t_inference", "pcm_prob_at_reset",
                               "pcm_prob_at_gmax", "pcm_prob_at_random", "pcm_t0",
                               "rel_to_actual_wmax", "max_scale_range"}
    assert seen["dtype"] == {"float64", "float32"}


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("name", NAMES)
def test_backend_reproduces_vector(name, backend):
    stored = _stored(name)
    make = builder()
    case = next(c for c in make.CASES if c.name == name)
    fresh = make.run_case(case, backend)
    dtype = stored["dtype"]
    _close(fresh["initial_outputs"], stored["initial_outputs"], dtype, f"{name} initial outputs")
    assert len(fresh["steps"]) == len(stored["steps"])
    for k, (a, e) in enumerate(zip(fresh["steps"], stored["steps"])):
        assert a["update"] == e["update"], f"{name} step {k} inputs"
        for key in ("weights", "out_scales", "modified", "outputs"):
            _close(a[key], e[key], dtype, f"{name} step {k} {key}")
        assert a["rng_calls"] == e["rng_calls"], f"{name} step {k} rng_calls"
    _close(fresh["eval_outputs"], stored["eval_outputs"], dtype, f"{name} eval outputs")


@pytest.mark.parametrize("name", NAMES)
def test_builder_reproduces_stored_file(name):
    make = builder()
    case = next(c for c in make.CASES if c.name == name)
    rec = make.checked_run(case)  # also: the case shows what it is for
    text = make.file_text(rec)
    stored = (MODIFIER_DIR / f"{name}.json").read_text()
    if text != stored:  # another machine's libm: the numbers obey the comparison rule
        test_backend_reproduces_vector(name, "reference")


def test_stored_modified_weights_follow_the_spec():
    """Independent checks on the stored numbers: Ŵ of 'Discretize' is a multiple of 2·res'·A
    within half a step of W; the last column of copy_last_column is W's; 'ProgNoise' and
    'PCMNoise' keep the sign of W; 'Copy' without pdrop builds no Ŵ; the perfect training forward
    is probe·Ŵᵀ times the output scales."""
    rec = _stored("discretize")
    for step in rec["steps"]:
        w, m = np.asarray(step["weights"]), np.asarray(step["modified"])
        width = 2 * 0.1 * float(np.max(np.abs(w)))
        np.testing.assert_allclose(m / width, np.round(m / width), atol=1e-9)
        assert np.all(np.abs(m - w) <= width / 2 * (1 + 1e-12))
    rec = _stored("discretize_res_steps")  # res 6 → res' = 1/6, A = assumed_wmax 0.4
    for step in rec["steps"]:
        m = np.asarray(step["modified"]) / (2 * 0.4 / 6)
        np.testing.assert_allclose(m, np.round(m), atol=1e-9)
    for name in ("add_normal_pdrop_copy_last_column", "clip_remap_pcm_noise"):
        for step in _stored(name)["steps"]:
            assert np.asarray(step["modified"])[:, -1].tolist() == \
                np.asarray(step["weights"])[:, -1].tolist()
    for name in ("prog_noise", "pcm_noise"):
        for step in _stored(name)["steps"]:
            assert np.all(np.asarray(step["modified"]) * np.asarray(step["weights"]) >= 0)
    assert all(step["modified"] is None for step in _stored("copy")["steps"])
    # the perfect forward reads Ŵ in training: y = probe·Ŵᵀ (scaled by α)
    for name in ("pcm_noise_all", "remap_layerwise", "add_normal"):
        rec = _stored(name)
        probe = np.asarray(rec["probe"])
        for step in rec["steps"]:
            w = step["modified"] if step["modified"] is not None else step["weights"]
            y = probe @ np.asarray(w).T
            if step["out_scales"] is not None:
                y = y * np.asarray(step["out_scales"])
            np.testing.assert_allclose(step["outputs"], y, rtol=1e-13, atol=1e-15)

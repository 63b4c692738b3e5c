"""Golden vectors of the inference stage (spec/vectors/inference, spec/inference.md §I1-§I5):
the reference and the fast backend replay every file, and the builder
(spec/vectors/make_inference_vectors.py) reproduces them.

Comparison rule: the replay's weights, compensation factors and evaluation outputs equal the stored
ones bit for bit on the machine that wrote them; elsewhere within float64 1e-12 (float32 1e-6)
relative to each row's largest magnitude (spec/agreement.md §1 rule 3: libm's exp/log/pow may differ
in the last bit between machines)."""

import json
import pathlib

import numpy as np
import pytest

from golden_support import load_script

VECTOR_DIR = pathlib.Path(__file__).resolve().parent.parent / "spec" / "vectors"
INFERENCE_DIR = VECTOR_DIR / "inference"
NAMES = sorted(p.stem for p in INFERENCE_DIR.glob("*.json"))
RTOL = {"float64": 1e-12, "float32": 1e-6}


def builder():
    return load_script(VECTOR_DIR / "make_inference_vectors.py", "_refsim_make_inference_vectors")


def _close(actual, expected, dtype, what):
    a, e = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, what
    scale = np.max(np.abs(e), axis=-1, keepdims=True) if e.ndim else np.abs(e)
    assert np.all(np.abs(a - e) <= RTOL[dtype] * np.maximum(scale, 1e-300)), what


def test_every_case_has_a_file():
    assert sorted(case.name for case in builder().CASES) == NAMES, (
        "spec/vectors/inference/ is out of date: run spec/vectors/make_inference_vectors.py")
    assert len(NAMES) >= 4


@pytest.mark.parametrize("backend", ["reference", "fast"])
@pytest.mark.parametrize("name", NAMES)
def test_backend_reproduces_vector(name, backend):
    stored = json.loads((INFERENCE_DIR / f"{name}.json").read_text())
    make = builder()
    case = next(c for c in make.CASES if c.name == name)
    fresh = make.run_case(case, backend)
    dtype = stored["dtype"]
    for k, (a, e) in enumerate(zip(fresh["steps"], stored["steps"])):
        assert a["op"] == e["op"] and a.get("t_inference") == e.get("t_inference")
        _close(a["weights"], e["weights"], dtype, f"{name} step {k} weights")
        _close(a["factor"], e["factor"], dtype, f"{name} step {k} factor")
    _close(fresh["eval_outputs"], stored["eval_outputs"], dtype, f"{name} eval outputs")


@pytest.mark.parametrize("name", NAMES)
def test_builder_reproduces_stored_file(name):
    make = builder()
    case = next(c for c in make.CASES if c.name == name)
    text = make.file_text(make.run_case(case))
    stored = (INFERENCE_DIR / f"{name}.json").read_text()
    if text != stored:  # another machine's libm: the numbers obey the comparison rule
        test_backend_reproduces_vector(name, "reference")


def test_the_noise_free_case_gives_the_weights_back():
    stored = json.loads((INFERENCE_DIR / "noise_free.json").read_text())
    for step in stored["steps"]:
        _close(step["weights"], stored["weights"], "float64", step["op"])

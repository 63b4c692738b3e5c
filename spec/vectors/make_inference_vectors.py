"""Golden vectors of the inference stage (spec/inference.md, "Stage semantics" §I1-§I5): writes
spec/vectors/inference/*.json.

Regenerate (from the repository root):

    .venv/bin/python spec/vectors/make_inference_vectors.py

Each case builds an ``AnalogTile`` with an InferenceRPUConfig (reference backend), sets weights
made from refsim uniforms (stream ``test.a``, exact binary fractions), runs ``program_weights()``
and a sequence of ``drift_weights(t)`` calls, and stores after each operation the tile's weights
and its drift-compensation factor; at the end it evaluates inputs (stream ``test.b``) in
evaluation mode. The numbers are seeded-random (programming, drift and read noise, the IO noise of
the reads) and follow from the seed alone; one case has every noise scale at 0. The format is in
spec/vectors/README.md; tests/test_inference_golden.py replays the files on both backends and
checks that this builder reproduces them.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from refsim import configs, rng
from refsim.tile import AnalogTile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from vector_json import file_text, write_vectors  # noqa: E402,F401  (file_text: used by the tests)

OUT_DIR = pathlib.Path(__file__).resolve().parent / "inference"
SHAPE = (5, 7)
TIMES = (0.0, 1.0, 3600.0, 86400.0, 3.15e7)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    description: str
    config: Callable[[], Any]
    dtype: str = "float64"
    seed: int = 11
    times: Sequence[float] = TIMES


def _model(compensation: bool = True, **fields: Any) -> Callable[[], Any]:
    """An InferenceRPUConfig whose noise model has ``fields``; without drift compensation when
    ``compensation`` is False."""
    def make() -> Any:
        cfg = configs.InferenceRPUConfig(noise_model=configs.PCMLikeNoiseModel(**dict(fields)))
        if not compensation:
            cfg.drift_compensation = None
        return cfg
    return make


CASES = [
    Case("pcm_default", "the default PCMLikeNoiseModel and GlobalDriftCompensation: programming "
         "noise, drift and read noise at t = 0 s, 1 s, 1 h, 1 day, 1 year", _model()),
    Case("pcm_default_float32", "the same in a float32 tile", _model(), dtype="float32"),
    Case("noise_free", "every noise scale 0: programming and drift give the weights back (to "
         "rounding); the compensation factor is the ratio of two noisy reads",
         _model(prog_noise_scale=0.0, read_noise_scale=0.0, drift_scale=0.0)),
    Case("pcm_custom", "custom prog_coeff with prog_coeff_g_max_reference 20, converter g_max 30 "
         "and g_min 2, t_0 10 s, t_read 1 µs, noise scales 0.5 / 2 / 1.5, no drift compensation",
         _model(prog_coeff=[0.1, 1.0, -0.5, 0.2], prog_coeff_g_max_reference=20.0,
                g_converter=configs.SinglePairConductanceConverter(g_max=30.0, g_min=2.0),
                t_0=10.0, t_read=1e-6, prog_noise_scale=0.5, read_noise_scale=2.0,
                drift_scale=1.5, compensation=False)),
]


def _matrix(a: Any) -> list:
    return [[float(v) for v in row] for row in np.asarray(a, dtype=np.float64)]


def inputs(case: Case) -> tuple[Any, Any]:
    """The weights and the evaluation inputs of a case (exact binary fractions)."""
    w = 2.0 * rng.uniform(case.seed, "test.a", 0, SHAPE) - 1.0
    x = 2.0 * rng.uniform(case.seed, "test.b", 0, (3, SHAPE[1])) - 1.0
    dt = np.dtype(case.dtype)
    return np.asarray(w * 0.5, dtype=dt), np.asarray(x, dtype=dt)


def run_case(case: Case, backend: str = "reference") -> dict[str, Any]:
    cfg = case.config()
    dt = np.dtype(case.dtype)
    tile = AnalogTile(*SHAPE, cfg, seed=case.seed, dtype=dt.type, backend=backend)
    w, x = inputs(case)
    tile.set_weights(w)
    steps = []
    tile.program_weights()
    steps.append({"op": "program", "weights": _matrix(tile.get_weights()),
                  "factor": tile.drift_compensation_factor})
    for t in case.times:
        tile.drift_weights(t)
        steps.append({"op": "drift", "t_inference": t, "weights": _matrix(tile.get_weights()),
                      "factor": tile.drift_compensation_factor})
    tile.eval()
    return {"description": case.description, "rpu_config": cfg.to_dict(), "seed": case.seed,
            "dtype": case.dtype, "shape": list(SHAPE), "weights": _matrix(w), "steps": steps,
            "eval_inputs": _matrix(x), "eval_outputs": _matrix(tile.forward(x))}


def main(argv: Sequence[str] = ()) -> int:
    return write_vectors(OUT_DIR, CASES, run_case)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

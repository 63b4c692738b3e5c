"""Results do not depend on the thread count (spec/agreement.md rule 5).

One subprocess per thread count (OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = MKL_NUM_THREADS = 1, 2,
4; the environment's other variables, e.g. OPENBLAS_CORETYPE, are inherited) runs forward,
backward and update of a tile of every config kind, float32 and float64, on the reference and the
fast backend, and prints a hash of every result; the hashes must be equal bit for bit. The shapes
are large enough that OpenBLAS threads its GEMMs (m·n·k above 4·65536 per thread) and the fast
kernels run on more than one thread; before the products were held at one BLAS thread, float32
backward and update differed between 1 and 2 threads.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

#: (out_size, in_size, batch) of the cases: a product of 128·256·64 elements.
SHAPE = (128, 256, 64)
#: Rows of an update of a pulsed device on the reference backend (its cycle loop is slow; the
#: pulsed update has no floating-point product, only exact coincidence counts).
PULSED_REFERENCE_ROWS = 4
THREADS = (1, 2, 4)


def _kinds() -> list:
    from refsim.configs import (
        ConstantStepDevice,
        FloatingPointRPUConfig,
        InferenceRPUConfig,
        PulseType,
        SingleRPUConfig,
        SoftBoundsReferenceDevice,
        UpdateParameters,
        build_config,
    )

    mp = build_config("mp", SoftBoundsReferenceDevice)
    mp.device.n_rows_per_transfer = 4  # (all 128 rows: seconds per transfer on the reference)
    kinds = [  # (name, config, pulsed update)
        ("floating-point", FloatingPointRPUConfig(), False),
        ("inference", InferenceRPUConfig(), False),
        ("single-constant-step", SingleRPUConfig(device=ConstantStepDevice()), True),
        ("single-soft-bounds-reference", SingleRPUConfig(device=SoftBoundsReferenceDevice()),
         True),
        ("single-none-with-device", SingleRPUConfig(
            device=ConstantStepDevice(),
            update=UpdateParameters(pulse_type=PulseType.NONE_WITH_DEVICE)), False),
        ("mp", mp, False),
    ]
    kinds += [(alg, build_config(alg, SoftBoundsReferenceDevice), True)
              for alg in ("tiki-taka", "ttv2", "c-ttv2", "agad")]
    return kinds


def _worker() -> None:
    """Print {case: [hash of forward, backward, weights after update, ...]} as JSON."""
    import numpy as np

    from refsim.tile import AnalogTile

    def digest(a: np.ndarray) -> str:
        return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]

    m, n, batch = SHAPE
    out = {}
    for name, config, pulsed in _kinds():
        for dtype in (np.float32, np.float64):
            for backend in ("reference", "fast"):
                rows = PULSED_REFERENCE_ROWS if pulsed and backend == "reference" else batch
                g = np.random.default_rng(1)
                tile = AnalogTile(m, n, config, seed=3, dtype=dtype, backend=backend)
                tile.set_weights(g.uniform(-0.5, 0.5, (m, n)).astype(dtype))
                hashes = []
                for _ in range(2):
                    x = g.uniform(-1.0, 1.0, (batch, n)).astype(dtype)
                    d = g.uniform(-1.0, 1.0, (batch, m)).astype(dtype)
                    hashes += [digest(tile.forward(x)), digest(tile.backward(d))]
                    tile.update(x[:rows], d[:rows], 0.01)
                    hashes.append(digest(tile.get_weights()))
                out[f"{name}/{np.dtype(dtype).name}/{backend}"] = hashes
    print(json.dumps(out))


def test_results_do_not_depend_on_the_thread_count():
    pytest.importorskip("refsim_fast.io")
    procs = {}
    for t in THREADS:
        env = dict(os.environ, OMP_NUM_THREADS=str(t), OPENBLAS_NUM_THREADS=str(t),
                   MKL_NUM_THREADS=str(t))
        procs[t] = subprocess.Popen([sys.executable, __file__], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
    results = {}
    for t, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{t} threads: worker failed\n{stderr}"
        results[t] = json.loads(stdout.strip().splitlines()[-1])
    base = results[THREADS[0]]
    assert len(base) == 10 * 2 * 2
    labels = ("forward", "backward", "update")
    for t in THREADS[1:]:
        assert results[t].keys() == base.keys()
        differing = [f"{case}: {labels[i % 3]} {i // 3}" for case, hashes in base.items()
                     for i, h in enumerate(hashes) if results[t][case][i] != h]
        assert not differing, f"{t} threads vs {THREADS[0]}: " + ", ".join(differing)


if __name__ == "__main__":
    _worker()

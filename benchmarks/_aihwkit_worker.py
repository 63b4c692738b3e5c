"""Runs inside aihwkit's own environment (see "aihwkit beside refsim" in the README) and prints
one JSON line of median timings. Called by the benchmarks as a separate process; never imported.

Cases of kind "forward"/"backward" (bench_io.py) time a pass on random inputs; cases of kind
"update" (bench_update.py) time ``AnalogTile.update`` on the inputs bench_update.py wrote; a spec
with mode "train" (bench_train.py) times one training step per build_config algorithm; cases of
kind "inference" (bench_inference.py) time program_weights + drift_weights(t_inference) of a
default InferenceTile and the forward pass after that drift in evaluation mode.

Threads: the caller sets OMP_NUM_THREADS / OPENBLAS_NUM_THREADS. aihwkit's CPU simulator
(rpu_base) links its own copies of libgomp and OpenBLAS, which read them when loaded, and torch
takes its intra-op thread count from OMP_NUM_THREADS; torch.set_num_threads would not reach
rpu_base's OpenMP runtime. aihwkit 1.1.0's CPU update of a single device runs on one thread."""

import json
import sys
import warnings

warnings.filterwarnings("ignore")

import numpy as np
import torch
from _timing import median_seconds as median  # this script's folder is on sys.path
from aihwkit.simulator import configs
from aihwkit.simulator.tiles import AnalogTile, InferenceTile
from bench_update import WORKLOADS, input_paths, time_update


def _time_pass(case: dict, spec: dict) -> float:
    """Median seconds of a forward (InferenceTile) or backward (AnalogTile) pass."""
    size, batch = case["size"], case["batch"]
    weights = torch.rand(size, size) - 0.5
    inputs = torch.rand(batch, size) * 2 - 1
    if case["kind"] == "forward":
        tile = InferenceTile(size, size, configs.InferenceRPUConfig())
        tile.set_weights(weights)
        return median(lambda: tile.forward(inputs), spec["repeat"])
    tile = AnalogTile(size, size, configs.SingleRPUConfig())
    tile.set_weights(weights)
    return median(lambda: tile.backward(inputs), spec["repeat"])


def _time_update(case: dict, spec: dict) -> dict:
    """The update W <- W - lr * d^T x, one pulsed cycle per batch row, timed as bench_update.py
    times refsim's. aihwkit takes the learning rate apart from the update call: a positive lr
    given to set_learning_rate means gradient descent, the same sign as refsim's
    ``update(x, d, lr)``. set_weights clips to the device bounds."""
    size, batch = case["size"], case["batch"]
    files = input_paths(spec["data"], case["workload"], size)
    x = torch.from_numpy(np.load(files["x"])[:batch])
    d = torch.from_numpy(np.load(files["d"])[:batch])
    device = getattr(configs, case["device"])()
    weights = torch.from_numpy(np.load(files["w"]))
    tile = AnalogTile(size, size, configs.SingleRPUConfig(device=device))
    tile.set_weights(weights)
    tile.set_learning_rate(WORKLOADS[case["workload"]][0])
    return time_update(tile.update, lambda: tile.set_weights(weights), x, d, spec, batch)


def _time_inference(case: dict, spec: dict) -> dict:
    """Median seconds of program_weights() + drift_weights(t_inference) (each repeat programs the
    same reference weights again) and of the forward pass after the drift in evaluation mode, on
    a default InferenceRPUConfig tile (PCMLikeNoiseModel, GlobalDriftCompensation)."""
    size, batch = case["size"], case["batch"]
    weights = torch.rand(size, size) - 0.5
    inputs = torch.rand(batch, size) * 2 - 1
    tile = InferenceTile(size, size, configs.InferenceRPUConfig())
    tile.set_weights(weights)

    def program_drift():
        tile.program_weights()
        tile.drift_weights(case["t_inference"])

    program = median(program_drift, spec["repeat"])
    tile.eval()
    forward = median(lambda: tile.forward(inputs), spec["repeat"])
    return {"program+drift": program, "forward (eval)": forward}


def _time_train(spec: dict) -> list:
    """One step (forward, backward, update) per build_config algorithm on bench_train.py's
    inputs; median seconds."""
    x, d, w = (torch.from_numpy(np.load(spec["paths"][k])) for k in ("x", "d", "w"))
    rows = []
    for algorithm in spec["algorithms"]:
        config = configs.build_config(algorithm, getattr(configs, spec["device"]))
        tile = config.tile_class(w.shape[0], w.shape[1], config)
        tile.set_weights(w)
        tile.set_learning_rate(spec["lr"])

        def step():
            tile.forward(x)
            tile.backward(d)
            tile.update(x, d)

        rows.append({"algorithm": algorithm, "seconds": median(step, spec["repeat"])})
    return rows


def main():
    spec = json.loads(sys.argv[1])
    torch.manual_seed(0)
    if spec.get("mode") == "train":
        print(json.dumps(_time_train(spec)))
        return
    out = []
    for case in spec["cases"]:
        if case["kind"] == "update":
            out.append({**case, **_time_update(case, spec)})
        elif case["kind"] == "inference":
            out.append({**case, "seconds": _time_inference(case, spec)})
        else:
            out.append({**case, "seconds": _time_pass(case, spec)})
    print(json.dumps(out))


if __name__ == "__main__":
    main()

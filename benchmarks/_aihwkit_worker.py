"""Runs inside aihwkit's own environment (see ../shared/reference/aihwkit-setup.md) and prints one
JSON line of median timings. Called by the benchmarks as a separate process; never imported."""

import json
import sys
import warnings

warnings.filterwarnings("ignore")

import torch  # noqa: E402
from aihwkit.simulator.configs import InferenceRPUConfig, SingleRPUConfig  # noqa: E402
from aihwkit.simulator.tiles import AnalogTile, InferenceTile  # noqa: E402

from _timing import median_seconds as median  # noqa: E402  (this script's folder is on sys.path)


def main():
    spec = json.loads(sys.argv[1])
    torch.manual_seed(0)
    out = []
    for case in spec["cases"]:
        size, batch, kind = case["size"], case["batch"], case["kind"]
        weights = torch.rand(size, size) - 0.5
        inputs = torch.rand(batch, size) * 2 - 1
        if kind == "forward":
            tile = InferenceTile(size, size, InferenceRPUConfig())
            tile.set_weights(weights)
            seconds = median(lambda: tile.forward(inputs), spec["repeat"])
        else:
            tile = AnalogTile(size, size, SingleRPUConfig())
            tile.set_weights(weights)
            seconds = median(lambda: tile.backward(inputs), spec["repeat"])
        out.append(dict(case, seconds=seconds))
    print(json.dumps(out))


if __name__ == "__main__":
    main()

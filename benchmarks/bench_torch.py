"""Benchmark of one training step of torch models on analog layers: refsim.torch against aihwkit.

A step is ``zero_grad``, the forward pass, the loss, ``loss.backward()`` and ``AnalogSGD.step()``
(lr 0.01), float32, on CPU tensors. Models, each under SingleRPUConfig(device=ConstantStepDevice())
and under the default InferenceRPUConfig (the same config in both simulators):

* ``cnn``: AnalogConv2d(1→8, 3×3, padding 1), ReLU, 2×2 max-pool, AnalogConv2d(8→16, 3×3,
  padding 1), ReLU, 2×2 max-pool, AnalogLinear(16·(s/4)²→10) on s×s images (s = 16), batch 32,
  cross-entropy;
* ``linear``: AnalogLinear(512→512) with a digital bias, batch 64, x uniform in ±1 and the loss
  ``(y·g).sum()`` with g normal with std 0.1, so that the update gets bench_train.py's "typical" d.

The same script runs as the worker in both environments, with only its imports chosen by the
framework: ``refsim.torch`` / ``refsim.configs`` here, ``aihwkit.nn`` / ``aihwkit.optim`` /
``aihwkit.simulator.configs`` in aihwkit's (see "aihwkit beside refsim" in the README; its column
is empty when that environment is absent). refsim.torch is timed twice: as a ported script runs
(torch imported first, so OpenMP's idle threads busy-wait) and with OMP_WAIT_POLICY=PASSIVE set
before Python starts.

A last table times the fast backend's analog forward pass of a 512² InferenceRPUConfig tile,
batch 256 (as bench_io.py), in a process that imports only refsim and in one that imports torch
first, with OpenMP's default and with the passive wait policy.

Threads (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS) are set per process.

    python benchmarks/bench_torch.py [--threads 2] [--repeat R] [--image 16] [--aihwkit PYTHON]
"""

import argparse
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_AIHWKIT = pathlib.Path.home() / ".venvs" / "aihwkit" / "bin" / "python"
CASES = [("cnn", "SingleRPUConfig(ConstantStepDevice)"), ("cnn", "InferenceRPUConfig"),
         ("linear", "SingleRPUConfig(ConstantStepDevice)"), ("linear", "InferenceRPUConfig")]
LR = 0.01


def _framework(name: str) -> tuple:
    """(AnalogConv2d, AnalogLinear, AnalogSequential, AnalogSGD, configs module) of a framework:
    the only lines a port changes."""
    if name == "refsim":
        from refsim import configs
        from refsim.torch import AnalogConv2d, AnalogLinear, AnalogSequential, AnalogSGD
    else:
        import warnings

        warnings.filterwarnings("ignore")
        from aihwkit.nn import AnalogConv2d, AnalogLinear, AnalogSequential
        from aihwkit.optim import AnalogSGD
        from aihwkit.simulator import configs
    return AnalogConv2d, AnalogLinear, AnalogSequential, AnalogSGD, configs


def _config(configs, name: str):
    if name == "InferenceRPUConfig":
        return configs.InferenceRPUConfig()
    return configs.SingleRPUConfig(device=configs.ConstantStepDevice())


def _time_steps(spec: dict) -> list:
    """Median seconds of one training step per case, in this process."""
    import torch

    sys.path.insert(0, str(HERE))
    from _timing import median_seconds

    conv2d, linear, sequential, sgd, configs = _framework(spec["framework"])
    torch.manual_seed(0)
    s = spec["image"]
    out = []
    for model_name, config_name in spec["cases"]:
        if model_name == "cnn":
            model = sequential(
                conv2d(1, 8, 3, padding=1, rpu_config=_config(configs, config_name)),
                torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                conv2d(8, 16, 3, padding=1, rpu_config=_config(configs, config_name)),
                torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                linear(16 * (s // 4) ** 2, 10, rpu_config=_config(configs, config_name)))
            x, target = torch.rand(32, 1, s, s), torch.randint(0, 10, (32,))
            loss_fn = torch.nn.functional.cross_entropy
        else:
            model = linear(512, 512, rpu_config=_config(configs, config_name))
            x, target = 2 * torch.rand(64, 512) - 1, 0.1 * torch.randn(64, 512)

            def loss_fn(y, g):  # its gradient is g: bench_train.py's "typical" d
                return (y * g).sum()
        optimizer = sgd(model.parameters(), lr=LR)
        optimizer.regroup_param_groups(model)

        def step():
            optimizer.zero_grad()
            loss = loss_fn(model(x), target)
            loss.backward()
            optimizer.step()

        out.append({"model": model_name, "config": config_name,
                    "seconds": median_seconds(step, spec["repeat"], warmup=2)})
    return out


def _time_forward(spec: dict) -> dict:
    """Median seconds of the fast backend's forward pass (512², batch 256), torch imported
    first or not at all."""
    if spec["torch_first"]:
        import torch  # noqa: F401  (starts OpenMP before refsim_fast does)
    import numpy as np

    sys.path.insert(0, str(HERE))
    from _timing import median_seconds

    import refsim_fast
    from refsim import configs, rng
    from refsim.tile import AnalogTile

    size, batch = spec["size"], spec["batch"]
    weights = (rng.uniform(1, "test.a", 0, (size, size)) - 0.5).astype(np.float32)
    inputs = (rng.uniform(1, "test.b", 0, (batch, size)) * 2 - 1).astype(np.float32)
    tile = AnalogTile(size, size, configs.InferenceRPUConfig(), seed=1, dtype=np.float32,
                      backend="fast")
    tile.set_weights(weights)
    return {"seconds": median_seconds(lambda: tile.forward(inputs), spec["repeat"], warmup=2),
            "torch_loaded": "torch" in sys.modules, **refsim_fast.info()}


def _worker(spec: dict) -> object:
    return _time_forward(spec) if spec["mode"] == "forward" else _time_steps(spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--image", type=int, default=16, help="image side of the CNN (÷4)")
    parser.add_argument("--aihwkit", default=str(DEFAULT_AIHWKIT),
                        help="python of an environment with aihwkit (skipped if missing)")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from _timing import print_table, run_worker

    have_aihwkit = pathlib.Path(args.aihwkit).exists()
    steps = {"mode": "steps", "cases": CASES, "repeat": args.repeat, "image": args.image}
    step_rows, forward_rows = [], []

    def ms(value):
        return "—" if value is None else f"{value * 1e3:.2f}"

    def ratio(a, b):
        return "—" if a is None or b is None else f"{a / b:.2f}"

    for threads in args.threads:
        print(f"# timing refsim.torch, {threads} thread(s) ...", file=sys.stderr)
        ours = run_worker(threads, dict(steps, framework="refsim"), sys.executable, __file__)
        passive = run_worker(threads, dict(steps, framework="refsim"), sys.executable, __file__,
                             wait_policy="PASSIVE")
        theirs = [None] * len(ours)
        if have_aihwkit:
            print(f"# timing aihwkit, {threads} thread(s) ...", file=sys.stderr)
            theirs = run_worker(threads, dict(steps, framework="aihwkit"), args.aihwkit,
                                __file__)
        for mine, calm, other in zip(ours, passive, theirs):
            aih = other["seconds"] if other else None
            model = (f"CNN {args.image}×{args.image}, batch 32" if mine["model"] == "cnn"
                     else "Linear 512→512, batch 64")
            step_rows.append([model, mine["config"], threads, ms(mine["seconds"]),
                              ms(calm["seconds"]), ms(aih), ratio(aih, mine["seconds"]),
                              ratio(aih, calm["seconds"])])
        print(f"# timing the fast forward pass with and without torch, {threads} thread(s) ...",
              file=sys.stderr)
        forward = {"mode": "forward", "size": 512, "batch": 256, "repeat": 3 * args.repeat}
        for label, torch_first, policy in (("refsim only", False, "inherit"),
                                           ("import torch first", True, "inherit"),
                                           ("import torch first, OMP_WAIT_POLICY=PASSIVE",
                                            True, "PASSIVE")):
            row = run_worker(threads, dict(forward, torch_first=torch_first), sys.executable,
                             __file__, wait_policy=policy)
            forward_rows.append([label, threads, row["spinning_openmp"], ms(row["seconds"])])

    print(f"# bench_torch: one training step (zero_grad, forward, loss, backward, AnalogSGD "
          f"step, lr {LR}), float32, CPU; medians in ms; aihwkit "
          f"{'from ' + args.aihwkit if have_aihwkit else 'absent'}")
    print_table(["model", "rpu_config", "threads", "refsim.torch", "refsim.torch (PASSIVE)",
                 "aihwkit", "aihwkit/refsim", "aihwkit/refsim (PASSIVE)"], step_rows)
    print()
    print("# the fast backend's analog forward pass, 512² InferenceRPUConfig tile, batch 256, "
          "float32; median in ms")
    print_table(["process", "threads", "refsim_fast spinning_openmp", "forward"], forward_rows)


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1].startswith("{"):
        print(json.dumps(_worker(json.loads(sys.argv[1]))))
    else:
        main()

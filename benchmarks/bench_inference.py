"""Benchmark of the inference stage (spec/inference.md): programming and drift, and the forward
pass of a drifted tile in evaluation mode.

Workloads (float32, as aihwkit): a default InferenceRPUConfig tile (PCMLikeNoiseModel with
programming noise, drift and read noise; GlobalDriftCompensation; the default forward IO) of
size × size, weights uniform in ±0.5, inputs uniform in ±1:

* ``program+drift``: program_weights() then drift_weights(86400) (each with the compensation's
  readout, a forward pass of eye(size)); every repeat programs the same reference again;
* ``forward (eval)``: the forward pass of a batch after that drift, in evaluation mode (the
  outputs scaled by α).

Columns: refsim fast backend, refsim reference (numpy), aihwkit's InferenceTile (when its
environment exists; a separate process), and the ratios. Thread counts are set per process
through OMP_NUM_THREADS / OPENBLAS_NUM_THREADS.

OMP_WAIT_POLICY is PASSIVE in both processes unless the environment sets it (``--wait-policy``
changes it; ``--wait-policy inherit`` leaves it unset): the aihwkit process runs two OpenMP
runtimes (torch's, for the noise model's tensor operations, and rpu_base's own libgomp, for the
analog pass), and with their default spinning waits on a 2-core machine its timings were bimodal
(program+drift 42 or 165–760 ms, forward 6 or 40 ms from one run to the next); passive waits
give the lower mode steadily.

    python benchmarks/bench_inference.py [--threads 1 2] [--repeat R] [--rounds K] [--size 512]
        [--batch 256] [--aihwkit PYTHON] [--wait-policy PASSIVE]

With ``--rounds K`` the refsim and aihwkit processes run alternately K times per thread count and
the table shows the medians over rounds: the machine's speed drifts over minutes, and a ratio
should compare one moment of it, not two.
"""

import argparse
import json
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_AIHWKIT = pathlib.Path.home() / ".venvs" / "aihwkit" / "bin" / "python"
T_INFERENCE = 86400.0
STEPS = ("program+drift", "forward (eval)")


def _worker(spec: dict) -> list:
    """Time refsim (fast, reference) in this process."""
    import numpy as np

    sys.path.insert(0, str(HERE))
    from _timing import median_seconds, pass_operands
    from refsim import configs
    from refsim.tile import AnalogTile

    out = []
    for case in spec["cases"]:
        size, batch = case["size"], case["batch"]
        weights, inputs = pass_operands(size, batch)
        row = dict(case)
        for backend in ("fast", "reference"):
            try:
                tile = AnalogTile(size, size, configs.InferenceRPUConfig(), seed=1,
                                  dtype=np.float32, backend=backend)
            except ValueError as err:
                row[backend] = None
                row[backend + "_error"] = str(err)
                continue
            tile.set_weights(weights)

            def program_drift():
                tile.program_weights()
                tile.drift_weights(T_INFERENCE)

            repeat = spec["repeat"] if backend == "fast" else max(3, spec["repeat"] // 2)
            program = median_seconds(program_drift, repeat)
            tile.eval()
            forward = median_seconds(lambda: tile.forward(inputs), repeat)
            row[backend] = {"program+drift": program, "forward (eval)": forward}
        out.append(row)
    # the floor of the forward pass, the bare float32 GEMM it contains, after every refsim
    # timing: OpenBLAS's worker threads busy-wait for about 0.1 s after a threaded product
    for case, row in zip(spec["cases"], out):
        weights, inputs = pass_operands(case["size"], case["batch"])
        wt = np.ascontiguousarray(weights.T)
        row["floor"] = {"program+drift": None,
                        "forward (eval)": median_seconds(lambda: inputs @ wt, spec["repeat"] * 3)}
    return out


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(_worker(json.loads(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--aihwkit", default=str(DEFAULT_AIHWKIT),
                        help="python of an environment with aihwkit (skipped if missing)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate refsim and aihwkit this many times (medians of rounds)")
    parser.add_argument("--wait-policy", default="PASSIVE",
                        help="OMP_WAIT_POLICY unless the environment sets it ('inherit': none)")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from _timing import median_of, print_table, run_worker

    cases = [dict(kind="inference", size=args.size, batch=args.batch, t_inference=T_INFERENCE)]
    spec = dict(cases=cases, repeat=args.repeat)
    have_aihwkit = pathlib.Path(args.aihwkit).exists()

    def ms(v):
        return "—" if v is None else f"{v * 1e3:.3f}"

    def ratio(a, b):
        return "—" if a is None or b is None else f"{a / b:.2f}"

    rows = []
    for threads in args.threads:
        ours_rounds, theirs_rounds = [], []
        for k in range(max(args.rounds, 1)):
            print(f"# timing refsim, {threads} thread(s), round {k + 1} ...", file=sys.stderr,
                  flush=True)
            # (re-enters this script as --worker)
            ours_rounds.append(run_worker(threads, spec, sys.executable, f"{__file__}",
                                          args.wait_policy))
            if have_aihwkit:
                print(f"# timing aihwkit, {threads} thread(s), round {k + 1} ...",
                      file=sys.stderr, flush=True)
                theirs_rounds.append(run_worker(threads, spec, args.aihwkit,
                                                str(HERE / "_aihwkit_worker.py"),
                                                args.wait_policy))
        for i, mine in enumerate(ours_rounds[0]):
            others = [r[i] for r in theirs_rounds]
            for step in STEPS:
                fast = median_of([r[i]["fast"][step] for r in ours_rounds if r[i]["fast"]])
                ref = median_of([r[i]["reference"][step] for r in ours_rounds
                               if r[i]["reference"]])
                aih = median_of([o["seconds"][step] for o in others if o])
                batch = mine["batch"] if step == "forward (eval)" else "—"
                floor = mine["floor"][step]
                rows.append([step, f"{mine['size']}²", batch, threads, ms(fast), ms(ref), ms(aih),
                             ms(floor), ratio(aih, fast), ratio(ref, fast),
                             ratio(fast, floor)])
    policy = os.environ.get("OMP_WAIT_POLICY", args.wait_policy)
    print(f"# bench_inference: medians in ms; drift to t = {T_INFERENCE:g} s; OMP_WAIT_POLICY "
          f"{policy}; aihwkit {'from ' + args.aihwkit if have_aihwkit else 'absent'}"
          + (f" (median of {args.rounds} alternating rounds)" if args.rounds > 1 else ""))
    print_table(["step", "tile", "batch", "threads", "fast", "reference", "aihwkit",
                 "GEMM floor", "aihwkit/fast", "reference/fast", "fast/floor"], rows)
    print("program+drift is element-wise work and random numbers: it has no BLAS floor (—).")


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1].startswith("{"):
        sys.argv = [sys.argv[0], "--worker", sys.argv[1]]
    main()

"""Benchmark of the IO stage (spec/io.md): the analog forward and backward pass.

Workloads (float32, as aihwkit): default InferenceRPUConfig forward and SingleRPUConfig backward,
weights uniform in ±0.5, inputs uniform in ±1; tiles 256² and 512², batches 1, 64, 256; 1 and 2
threads. Columns: refsim fast backend, refsim reference (numpy), aihwkit (when its environment
exists; a separate process), and the floor: a bare float32 numpy GEMM of the same shape. Thread
counts are set per process through OMP_NUM_THREADS / OPENBLAS_NUM_THREADS.

    python benchmarks/bench_io.py [--repeat R] [--aihwkit PYTHON] [--sizes 256 512] [--batches 1 64 256]
"""

import argparse
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_AIHWKIT = pathlib.Path.home() / ".venvs" / "aihwkit" / "bin" / "python"


def _worker(spec: dict) -> list:
    """Time refsim (fast, reference) and the GEMM floor in this process."""
    import numpy as np

    sys.path.insert(0, str(HERE))
    from _timing import median_seconds, pass_operands
    from refsim import configs
    from refsim.tile import AnalogTile

    out = []
    for case in spec["cases"]:
        size, kind = case["size"], case["kind"]
        weights, inputs = pass_operands(size, case["batch"])
        config = configs.InferenceRPUConfig() if kind == "forward" else configs.SingleRPUConfig()
        row = dict(case)
        for backend in ("fast", "reference"):
            try:
                tile = AnalogTile(size, size, config, seed=1, dtype=np.float32, backend=backend)
            except ValueError as err:
                row[backend] = None
                row[backend + "_error"] = str(err)
                continue
            tile.set_weights(weights)
            call = tile.forward if kind == "forward" else tile.backward
            repeat = spec["repeat"] if backend == "fast" else max(3, spec["repeat"] // 2)
            row[backend] = median_seconds(lambda: call(inputs), repeat)
        out.append(row)
    # The floors last: after a product on several BLAS threads, OpenBLAS's worker threads
    # busy-wait for about 0.1 s and would take a core from the next case's timing.
    for case, row in zip(spec["cases"], out):
        weights, inputs = pass_operands(case["size"], case["batch"])
        wt = np.ascontiguousarray(weights.T)
        row["gemm"] = median_seconds(lambda: inputs @ wt, spec["repeat"] * 3)
    return out


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(_worker(json.loads(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate refsim and aihwkit this many times (medians of rounds)")
    parser.add_argument("--aihwkit", default=str(DEFAULT_AIHWKIT),
                        help="python of an environment with aihwkit (skipped if missing)")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from _timing import median_of, print_table, run_worker

    cases = [dict(kind=k, size=s, batch=b) for k in ("forward", "backward")
             for s in args.sizes for b in args.batches]
    spec = dict(cases=cases, repeat=args.repeat)
    have_aihwkit = pathlib.Path(args.aihwkit).exists()
    rows = []
    for threads in args.threads:
        ours_rounds, theirs_rounds = [], []
        for _ in range(max(args.rounds, 1)):
            # (re-enters this script as --worker)
            ours_rounds.append(run_worker(threads, spec, sys.executable, f"{__file__}"))
            if have_aihwkit:
                theirs_rounds.append(run_worker(threads, spec, args.aihwkit,
                                                str(HERE / "_aihwkit_worker.py")))
        for i, mine in enumerate(ours_rounds[0]):
            aih = median_of([t[i]["seconds"] for t in theirs_rounds if t[i]])
            fast, ref, gemm = (median_of([r[i][key] for r in ours_rounds])
                               for key in ("fast", "reference", "gemm"))

            def ms(v):
                return "—" if v is None else f"{v * 1e3:.3f}"

            def ratio(a, b):
                return "—" if a is None or b is None else f"{a / b:.2f}"

            rows.append([mine["kind"], f"{mine['size']}²", mine["batch"], threads, ms(fast),
                         ms(ref), ms(aih), ms(gemm), ratio(aih, fast), ratio(fast, gemm),
                         ratio(ref, aih)])
    print(f"# bench_io: medians in ms; aihwkit {'from ' + args.aihwkit if have_aihwkit else 'absent'}"
          + (f" (median of {args.rounds} alternating rounds)" if args.rounds > 1 else ""))
    print_table(["pass", "tile", "batch", "threads", "fast", "reference", "aihwkit", "GEMM",
                 "aihwkit/fast", "fast/GEMM", "reference/aihwkit"], rows)


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1].startswith("{"):
        sys.argv = [sys.argv[0], "--worker", sys.argv[1]]
    main()

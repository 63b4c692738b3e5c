"""Benchmark of one analog training step per build_config algorithm: forward, backward and the
update of a 512 → 512 tile (an AnalogLinear without bias), batch 64, float32.

Workload ("typical", as bench_update.py): x uniform in ±1, d normal with std 0.1, lr 0.01;
device SoftBoundsReferenceDevice with its default variations for every algorithm, the rest of the
config as build_config makes it. Columns: refsim fast backend, refsim reference (numpy), aihwkit
(when its environment exists; a separate process with the same inputs), ratios. Threads are set
per process through OMP_NUM_THREADS / OPENBLAS_NUM_THREADS.

    python benchmarks/bench_train.py [--threads 1 2] [--repeat R] [--rounds K] [--algorithms sgd mp ...]

With ``--rounds K`` the refsim and aihwkit processes run alternately K times per thread count
(the reference only in the first round) and the table gives the median of the K medians of each:
on a shared machine whose speed drifts over minutes this keeps the ratio from comparing two
different moments.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_AIHWKIT = pathlib.Path.home() / ".venvs" / "aihwkit" / "bin" / "python"
ALGORITHMS = ["sgd", "mp", "tiki-taka", "ttv2", "c-ttv2", "agad"]
DEVICE = "SoftBoundsReferenceDevice"
LR = 0.01


def write_inputs(folder: str, size: int, batch: int) -> dict:
    """x, d and the initial weights as .npy files (refsim.rng streams), shared by every process."""
    import numpy as np

    from refsim import rng

    paths = {k: str(pathlib.Path(folder) / f"train_{k}.npy") for k in ("x", "d", "w")}
    np.save(paths["x"], (2 * rng.uniform(5, "test.a", 0, (batch, size)) - 1).astype(np.float32))
    np.save(paths["d"], (0.1 * rng.normal(5, "test.b", 0, (batch, size))).astype(np.float32))
    np.save(paths["w"], (0.2 * rng.uniform(5, "test.a", 1, (size, size)) - 0.1).astype(np.float32))
    return paths


def _worker(spec: dict) -> list:
    """Time refsim's step (fast and reference) in this process."""
    import numpy as np

    sys.path.insert(0, str(HERE))
    from _timing import median_seconds, median_seconds_within

    from refsim import configs
    from refsim.tile import AnalogTile

    x, d, w = (np.load(spec["paths"][k]) for k in ("x", "d", "w"))
    rows = []
    for algorithm in spec["algorithms"]:
        row = {"algorithm": algorithm}
        for backend in ("fast", "reference") if spec.get("reference", True) else ("fast",):
            try:
                config = configs.build_config(algorithm, getattr(configs, DEVICE))
                tile = AnalogTile(w.shape[0], w.shape[1], config, seed=1, dtype=np.float32,
                                  backend=backend)
                tile.set_weights(w, clip=True)

                def step():
                    tile.forward(x)
                    tile.backward(d)
                    tile.update(x, d, LR)

                # the reference: up to 5 timed steps within about 3 s (one for a slow step)
                row[backend] = median_seconds(step, spec["repeat"]) if backend == "fast" else \
                    median_seconds_within(step, 3.0)
            except (NotImplementedError, ValueError) as err:
                row[backend] = None
                row[backend + "_error"] = f"{type(err).__name__}: {err}"[:120]
        rows.append(row)
    return rows


def _aihwkit(python: str, spec: dict, env: dict) -> list:
    proc = subprocess.run([python, str(HERE / "_aihwkit_worker.py"),
                           json.dumps(dict(spec, mode="train", device=DEVICE, lr=LR))],
                          env=env, capture_output=True, text=True, cwd=str(HERE))
    if proc.returncode != 0:
        return [{"algorithm": a, "error": proc.stderr.strip().splitlines()[-1:]}
                for a in spec["algorithms"]]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--algorithms", nargs="+", default=ALGORITHMS, choices=ALGORITHMS)
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate refsim and aihwkit this many times (medians of rounds)")
    parser.add_argument("--aihwkit", default=str(DEFAULT_AIHWKIT))
    args = parser.parse_args()
    if len(sys.argv) == 2 and sys.argv[1].startswith("{"):
        return
    sys.path.insert(0, str(HERE))
    from _timing import median_of

    with tempfile.TemporaryDirectory() as folder:
        paths = write_inputs(folder, args.size, args.batch)
        spec = {"paths": paths, "algorithms": args.algorithms, "repeat": args.repeat}
        table = []
        for threads in args.threads:
            env = dict(os.environ, OMP_NUM_THREADS=str(threads),
                       OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            ours_rounds, theirs_rounds = [], []
            for k in range(max(args.rounds, 1)):
                print(f"# timing refsim, {threads} thread(s), round {k + 1} ...", file=sys.stderr)
                proc = subprocess.run([sys.executable, __file__, "--worker",
                                       json.dumps(dict(spec, reference=k == 0))],
                                      env=env, capture_output=True, text=True, check=True)
                ours_rounds.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                if pathlib.Path(args.aihwkit).exists():
                    print(f"# timing aihwkit, {threads} thread(s), round {k + 1} ...",
                          file=sys.stderr)
                    theirs_rounds.append({r["algorithm"]: r.get("seconds")
                                          for r in _aihwkit(args.aihwkit, spec, env)})
            for i, row in enumerate(ours_rounds[0]):
                row["fast"] = median_of([r[i].get("fast") for r in ours_rounds])
                row["threads"] = threads
                row["aihwkit"] = median_of([t.get(row["algorithm"]) for t in theirs_rounds])
                table.append(row)

    def ms(value):
        return "n/a" if value is None else f"{1e3 * value:.1f}"

    def ratio(a, b):
        return "n/a" if a is None or b is None else f"{a / b:.2f}"

    print(f"# bench_train: one step (forward + backward + update) of a {args.size}→{args.size} "
          f"tile, batch {args.batch}, float32, {DEVICE}, lr {LR}; medians in ms"
          + (f" (median of {args.rounds} alternating rounds)" if args.rounds > 1 else ""))
    print("| algorithm | threads | fast | reference | aihwkit | aihwkit/fast | reference/fast |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['algorithm']} | {r['threads']} | {ms(r.get('fast'))} | "
              f"{ms(r.get('reference'))} | {ms(r['aihwkit'])} | "
              f"{ratio(r['aihwkit'], r.get('fast'))} | {ratio(r.get('reference'), r.get('fast'))} |")
    for r in table:
        for backend in ("fast", "reference"):
            if r.get(backend + "_error"):
                print(f"# {r['algorithm']} {backend}: {r[backend + '_error']}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(_worker(json.loads(sys.argv[2]))))
    else:
        main()

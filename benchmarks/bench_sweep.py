"""Benchmark of `refsim sweep` (refsim/sweep.py) on Dask: how a sweep scales with the number of
worker processes, and what the engine costs per point against the point's own run time.

Workloads: a sweep of ``--points`` (16) points of the training demo, ``sgd`` on
SoftBoundsReferenceDevice (``--epochs`` 3, 64 hidden units, the full digits; seeds 1..16), and
the same number of *tiny* points (one epoch on 16 images, 4 hidden units, a few ms each), which
show the engine's cost alone. Each is run

* serially in this process (``workers=0``, no Dask; the compiled backend with this process's
  OpenMP threads),
* on a fresh local Dask cluster of 1 and of 2 worker processes (one thread each; Dask sets
  OMP_NUM_THREADS=1 in its workers), started before the clock runs (its start-up time is a
  column of its own) and reached through ``scheduler=``, as a sweep on an existing cluster is.

Columns: the cluster's start-up, the sweep's wall time, the sum of the points' own run times
(``elapsed_s`` of the rows, measured inside the task), and the engine's overhead per point,
``(workers·wall − Σ elapsed) / points`` — everything a worker spends on a point beyond running
it: submitting, scheduling, sending the job and the row, writing the table, the worker's first
import of refsim, and any time it waits idle at the end.

    python benchmarks/bench_sweep.py [--points 16] [--epochs 3] [--workers 1 2]
"""

import argparse
import logging
import os
import sys
import tempfile
import time

from _timing import print_table

from refsim import sweep


def _spec(points: int, tiny: bool, epochs: int) -> dict:
    base = ({"algorithm": "sgd", "epochs": 1, "hidden": 4, "limit": 16} if tiny else
            {"algorithm": "sgd", "epochs": epochs, "hidden": 64})
    return {"base": base, "grid": {"seed": list(range(1, points + 1))}}


def _measure(spec: dict, workers: int) -> dict:
    """Run the sweep once (serially when ``workers`` is 0, else on a fresh local cluster of
    that many processes) and return its timings."""
    startup = 0.0
    with tempfile.TemporaryDirectory() as out:
        if workers == 0:
            start = time.perf_counter()
            sweep.run(spec, out, workers=0, progress=False)
            wall = time.perf_counter() - start
        else:
            import distributed

            start = time.perf_counter()
            with distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                          processes=True, host="127.0.0.1",
                                          dashboard_address=":0",
                                          silence_logs=logging.ERROR) as cluster:
                startup = time.perf_counter() - start
                start = time.perf_counter()
                sweep.run(spec, out, scheduler=cluster.scheduler_address, progress=False)
                wall = time.perf_counter() - start
        rows = sweep.load_results(out)
    assert all(row["status"] == "ok" for row in rows), [r["error"] for r in rows]
    busy = sum(row["elapsed_s"] for row in rows)
    return {"startup": startup, "wall": wall, "busy": busy,
            "overhead": (max(workers, 1) * wall - busy) / len(rows), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"refsim sweep benchmark: {args.points} points, {os.cpu_count()} CPUs, "
          f"python {sys.version.split()[0]}")
    table = []
    for tiny in (False, True):
        spec = _spec(args.points, tiny, args.epochs)
        name = "tiny (1 epoch, 16 images)" if tiny else f"sgd, {args.epochs} epochs, full data"
        results = {}
        for workers in [0, *args.workers]:
            r = _measure(spec, workers)
            results[workers] = r
            table.append([name, "serial (no Dask)" if workers == 0 else f"{workers} workers",
                          f"{r['startup']:.2f}", f"{r['wall']:.2f}", f"{r['busy']:.2f}",
                          f"{r['busy'] / len(r['rows']) * 1e3:.0f}",
                          f"{r['overhead'] * 1e3:.0f}"])
        # the numbers do not depend on where a point ran
        numbers = {w: {row["point_id"]: (row["metrics"], row["history"]) for row in r["rows"]}
                   for w, r in results.items()}
        assert all(n == numbers[0] for n in numbers.values()), "results differ between runs"
        if 1 in results and 2 in results:
            table.append([name, "speed-up, 1 → 2 workers", "",
                          f"{results[1]['wall'] / results[2]['wall']:.2f}×", "", "", ""])
    print_table(["workload", "run", "cluster start (s)", "sweep wall (s)", "Σ point run (s)",
                 "point run (ms)", "overhead / point (ms)"], table)


if __name__ == "__main__":
    main()

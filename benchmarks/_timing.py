"""Shared timing helpers for the benchmarks: medians of repeated runs, and a table printer."""

import statistics
import time
from typing import Callable, List, Optional, Sequence


def median_seconds(fn: Callable[[], object], repeat: int, warmup: int = 1,
                   least: float = 0.05) -> float:
    """Median wall time of ``fn()`` over at least ``repeat`` runs, after ``warmup`` untimed runs:
    a short call is timed until the timed runs add up to ``least`` seconds (at most 10 000 runs)
    and warmed up for a tenth of that, so that a call of tens of microseconds is not judged by
    its first few, cold runs."""
    if warmup:
        start, done = time.perf_counter(), 0
        while done < warmup or (time.perf_counter() - start < least / 10 and done < 1000):
            fn()
            done += 1
    times: List[float] = []
    while len(times) < repeat or (sum(times) < least and len(times) < 10_000):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def median_seconds_within(fn: Callable[[], object], budget: float, most: int = 5) -> float:
    """Median wall time of ``fn()`` over as many runs (1 to ``most``) as fit in about
    ``budget`` seconds, after one untimed run that sizes them: slow calls (a reference step of
    seconds) are timed once, fast ones several times."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    repeat = max(1, min(most, int(budget / max(first, 1e-9))))
    return median_seconds(fn, repeat, warmup=0)


def print_table(header: Sequence[str], rows: List[Sequence[object]]) -> None:
    """A GitHub-markdown table (pasted into closing notes as is)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for k, row in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if k == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def run_worker(threads: int, spec: dict, python: str, script: str,
               wait_policy: str = "inherit") -> list:
    """Run a benchmark worker ``python script '<spec JSON>'`` with the BLAS/OpenMP thread
    variables set to ``threads`` (and OMP_WAIT_POLICY unless ``wait_policy`` is 'inherit'); its
    last stdout line, parsed as JSON. Exits with the worker's stderr when it fails."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    if wait_policy != "inherit":
        env.setdefault("OMP_WAIT_POLICY", wait_policy)
    proc = subprocess.run([python, script, json.dumps(spec)], env=env, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{python} {script} failed ({threads} thread(s)):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_of(values: Sequence[object]) -> Optional[float]:
    """The median of the values that are not None (None if there are none): a table cell over
    alternating rounds."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def pass_operands(size: int, batch: int) -> tuple:
    """The weights (size, size), uniform in ±0.5, and inputs (batch, size), uniform in ±1, of
    bench_io's and bench_inference's passes: float32, from refsim.rng's test streams."""
    import numpy as np

    from refsim import rng

    weights = (rng.uniform(1, "test.a", 0, (size, size)) - 0.5).astype(np.float32)
    inputs = (rng.uniform(1, "test.b", 0, (batch, size)) * 2 - 1).astype(np.float32)
    return weights, inputs

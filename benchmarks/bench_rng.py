"""Benchmark of the random-stream stage (spec/rng.md).

Times, for N = 10**7 numbers (normals, 16-bit normals, uniforms): the fast generator
(refsim_fast.rng, 1 and 2 threads), the reference (refsim.rng on numpy) and numpy's own
``Generator(Philox)`` (its standard_normal for both normal kinds); prints medians (ns per number)
and ratios. numpy's generator runs on one thread, so "per thread" compares fast/1 thread with it.

    python benchmarks/bench_rng.py [--n N] [--repeat R]
"""

import argparse
import os
import platform

import numpy as np

from _timing import median_seconds, print_table
from refsim import rng
import refsim_fast
from refsim_fast import rng as fast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10**7)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--reference-repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.n
    print(f"# bench_rng: n = {n:,}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, refsim_fast {refsim_fast.info()}")
    numpy_gen = np.random.Generator(np.random.Philox(1))
    rows = []
    for kind in ("normal", "normal16", "uniform"):
        timings = {}
        timings["numpy Generator(Philox)"] = median_seconds(
            (lambda: numpy_gen.random(n)) if kind == "uniform" else
            (lambda: numpy_gen.standard_normal(n)), args.repeat)
        for threads in (1, 2):
            draw = getattr(fast, kind)
            timings[f"refsim_fast, {threads} thread(s)"] = median_seconds(
                lambda: draw(1, "test.a", 0, n, num_threads=threads), args.repeat)
        timings["refsim reference (numpy)"] = median_seconds(
            lambda: getattr(rng, kind)(1, "test.a", 0, n), args.reference_repeat)
        base = timings["numpy Generator(Philox)"]
        fast1 = timings["refsim_fast, 1 thread(s)"]
        for name, seconds in timings.items():
            rows.append([kind, name, f"{seconds * 1e3:.1f}", f"{seconds / n * 1e9:.2f}",
                         f"{seconds / base:.2f}", f"{seconds / fast1:.2f}"])
    print_table(["draw", "generator", "median ms", "ns/number", "× numpy", "× fast/1 thread"],
                rows)


if __name__ == "__main__":
    main()

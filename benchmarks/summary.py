"""The speed table of the project's targets in one command: every benchmark whose figures the
speed issues quote, on 2 threads, side by side with aihwkit when its environment exists.

Runs, one after the other, each printing its own table with medians and ratios:

* ``bench_train.py`` at 512→512, batch 64 and at 256→256, batch 16 (every build_config
  algorithm);
* ``bench_io.py``: forward and backward of a 512² tile at batches 1 and 256;
* ``bench_update.py``: the pulsed update of a 512² tile, typical and saturated workloads;
* ``bench_inference.py``: programming + drift of a 512² tile and the forward pass after drift.

bench_train, bench_io and bench_inference alternate refsim and aihwkit over ``--rounds`` rounds
(medians of rounds).

    python benchmarks/summary.py [--rounds K] [--threads T] [--quick]

``--quick`` runs one round and fewer repeats (a first look, not figures to quote). The machine
these run on is shared: quote ranges over runs, not one run.
"""

import argparse
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent


def _runs(rounds: int, threads: str, quick: bool) -> list:
    repeat = ["--repeat", "3" if quick else "7"]
    t = ["--threads", threads]
    return [
        ("training step, 512→512, batch 64",
         ["bench_train.py", *t, *repeat, "--rounds", str(rounds)]),
        ("training step, 256→256, batch 16",
         ["bench_train.py", *t, *repeat, "--rounds", str(rounds), "--size", "256",
          "--batch", "16"]),
        ("forward and backward, 512²",
         ["bench_io.py", *t, *repeat, "--rounds", str(rounds), "--sizes", "512", "--batches", "1",
          "256"]),
        ("pulsed update, 512²",
         ["bench_update.py", *t, *repeat, "--sizes", "512", "--batches", "64", "256"]),
        ("programming, drift and the forward pass after drift, 512²",
         ["bench_inference.py", *t, *repeat, "--rounds", str(rounds)]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating refsim/aihwkit rounds of bench_train, bench_io and "
                             "bench_inference")
    parser.add_argument("--threads", default="2")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    for title, command in _runs(rounds, args.threads, args.quick):
        start = time.perf_counter()
        print(f"\n## {title}\n", flush=True)
        proc = subprocess.run([sys.executable, str(HERE / command[0]), *command[1:]],
                              capture_output=True, text=True, check=False)
        print(proc.stdout.rstrip())
        if proc.returncode != 0:
            print(f"# {command[0]} failed (exit {proc.returncode}): "
                  f"{proc.stderr.strip().splitlines()[-1:]}")
        print(f"# ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

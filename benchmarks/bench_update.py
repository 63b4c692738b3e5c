"""Benchmark of the pulsed weight update (spec/devices.md, spec/pulses.md): AnalogTile.update.

Workloads (float32, SingleRPUConfig with default UpdateParameters): ConstantStepDevice and
SoftBoundsReferenceDevice with their default device-to-device variations, weights uniform in ±0.1
(clipped to the device bounds, as aihwkit's set_weights does); tiles 256² and 512², batches 1, 64,
256; 1 and 2 threads. An update call is W ← W − lr·dᵀx with one pulsed update cycle per batch row.

* typical:   lr 0.01, x uniform in ±1, d normal with std 0.1 (most devices get few pulses);
* saturated: lr 0.1, x and d standard normal (most devices get all 31 pulses of a cycle).

Columns: refsim fast backend, refsim reference (numpy), aihwkit (when its environment exists; a
separate process) and the floor: a bare float32 numpy rank-B update ``W -= lr * (D.T @ X)``. The
inputs come from refsim.rng streams, are written once to a temporary folder and read by every
process, so all columns update with the same inputs; every timed call starts from the same
weights (set again, untimed). Thread counts are set per process through OMP_NUM_THREADS /
OPENBLAS_NUM_THREADS / MKL_NUM_THREADS.

The reference loops over the rows in Python and costs up to ~0.5 s per row at 512²: it is timed on
the first --ref-rows rows of a batch and scaled by batch/rows (the rows are drawn alike, so a
cycle costs about the same for each); the table marks such numbers with *. A refsim call that
would take longer than --max-call seconds is shortened the same way. Each cell is the median of
up to --repeat timed calls; a call longer than --budget/--repeat seconds gets fewer timed calls
(at least one).

    python benchmarks/bench_update.py [--repeat R] [--sizes 256 512] [--batches 1 64 256]
        [--workloads typical saturated] [--devices ConstantStepDevice SoftBoundsReferenceDevice]
        [--threads 1 2] [--ref-rows N] [--budget S] [--max-call S] [--aihwkit PYTHON]
"""

import argparse
import importlib.util
import json
import pathlib
import statistics
import sys
import tempfile
import time

from _timing import median_seconds, print_table, run_worker  # this script's folder is on sys.path

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_AIHWKIT = pathlib.Path.home() / ".venvs" / "aihwkit" / "bin" / "python"
DEVICES = ("ConstantStepDevice", "SoftBoundsReferenceDevice")
SHORT = {"ConstantStepDevice": "ConstantStep", "SoftBoundsReferenceDevice": "SoftBoundsRef"}
# name: (learning rate, x distribution, std of d)
WORKLOADS = {"typical": (0.01, "uniform", 0.1), "saturated": (0.1, "normal", 1.0)}


# -- shared with _aihwkit_worker.py (stdlib only at module level) ---------------------------------
def input_paths(data: str, workload: str, size: int) -> dict:
    """The .npy files of one (workload, size): weights, x and d with the largest batch's rows."""
    folder = pathlib.Path(data)
    return {"w": folder / f"w{size}.npy", "x": folder / f"{workload}_{size}_x.npy",
            "d": folder / f"{workload}_{size}_d.npy"}


def time_update(update, reset, x, d, spec: dict, max_rows: int) -> dict:
    """Median seconds of ``update(x, d)`` for the whole batch of ``x`` / ``d``.

    ``reset()`` sets the tile's starting weights again before every call (untimed), so every
    timed call does the same work from the same state. Two one-row calls run first: they warm
    the tile up, and the second, clocked, estimates the cost of a row. The timed calls take the
    first ``max_rows`` rows (fewer where a call would exceed ``spec["max_call"]`` seconds) and
    are scaled to the whole batch; as many are timed as fit in ``spec["budget"]`` seconds,
    between 1 and ``spec["repeat"]``, after an untimed full-size call when that fits too."""
    batch = x.shape[0]
    update(x[:1], d[:1])  # a first call may set things up
    start = time.perf_counter()
    update(x[:1], d[:1])
    per_row = max(time.perf_counter() - start, 1e-9)
    rows = max(1, min(batch, max_rows, int(spec["max_call"] / per_row)))
    xs, ds = x[:rows], d[:rows]
    estimate = per_row * rows
    calls = max(1, min(spec["repeat"], int(spec["budget"] / estimate)))
    warmup = 1 if estimate * (calls + 1) <= spec["budget"] else 0
    times = []
    for k in range(warmup + calls):
        reset()
        start = time.perf_counter()
        update(xs, ds)
        if k >= warmup:
            times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times) * batch / rows, "rows": rows, "batch": batch,
            "calls": calls}


# -- the refsim process ---------------------------------------------------------------------------
def _fast_update_missing(tile) -> str:
    """Why ``tile`` (backend='fast') would not run a compiled update; '' when it would."""
    hook = getattr(tile, "_fast_update_module", None)  # the tile's dispatch point, where it has one
    if hook is not None:
        return "" if hook() is not None else "the fast tile's update has no compiled kernel yet " \
            "(it runs the reference loop)"
    if importlib.util.find_spec("refsim_fast.update") is None:
        return "refsim_fast.update is not installed (a fast tile runs the reference loop)"
    return ""


def _time_refsim(backend: str, case: dict, spec: dict, weights, x, d) -> dict:
    """One cell of the refsim columns: {"seconds", "rows", "batch", "calls"} or {"error"}."""
    import numpy as np

    from refsim import configs
    from refsim.tile import AnalogTile

    size, lr = case["size"], WORKLOADS[case["workload"]][0]
    config = configs.SingleRPUConfig(device=getattr(configs, case["device"])())
    try:
        tile = AnalogTile(size, size, config, seed=1, dtype=np.float32, backend=backend)
    except ValueError as err:
        return {"error": str(err)}
    missing = _fast_update_missing(tile) if backend == "fast" else ""
    if missing:
        return {"error": missing}
    max_rows = spec["ref_rows"] if backend == "reference" else x.shape[0]
    try:
        return time_update(lambda xs, ds: tile.update(xs, ds, lr),
                           lambda: tile.set_weights(weights, clip=True), x, d, spec, max_rows)
    except NotImplementedError as err:
        return {"error": f"NotImplementedError: {err}"}


def _time_floor(case: dict, spec: dict, weights, x, d) -> dict:
    """The floor: a float32 rank-B update W -= lr * (D.T @ X) in numpy, in place."""
    import numpy as np

    w, lr = weights.copy(), np.float32(WORKLOADS[case["workload"]][0])
    calls = 3 * spec["repeat"]
    seconds = median_seconds(lambda: np.subtract(w, lr * (d.T @ x), out=w), calls)
    return {"seconds": seconds, "rows": x.shape[0], "batch": x.shape[0], "calls": calls}


def _worker(spec: dict) -> list:
    """Time refsim (fast, reference) and the floor in this process."""
    import numpy as np

    out = []
    for case in spec["cases"]:
        files = input_paths(spec["data"], case["workload"], case["size"])
        weights = np.load(files["w"])
        x, d = np.load(files["x"])[:case["batch"]], np.load(files["d"])[:case["batch"]]
        row = dict(case)
        for backend in ("fast", "reference"):
            row[backend] = _time_refsim(backend, case, spec, weights, x, d)
        # the floor after refsim's timings (never before one): OpenBLAS's worker threads
        # busy-wait for about 0.1 s after a product on several threads
        row["floor"] = _time_floor(case, spec, weights, x, d)
        out.append(row)
    return out


# -- the driver -----------------------------------------------------------------------------------
def _write_inputs(data: str, sizes: list, batches: list, workloads: list) -> None:
    """Weights and inputs from refsim.rng streams (test.a: weights and d; test.b: x)."""
    import numpy as np

    from refsim import rng

    rows = max(batches)
    for size in sizes:
        w = rng.uniform(1, "test.a", 0, (size, size)) * 0.2 - 0.1
        np.save(input_paths(data, "", size)["w"], w.astype(np.float32))
        for workload in workloads:
            files = input_paths(data, workload, size)
            _, x_kind, d_std = WORKLOADS[workload]
            call = 1 + list(WORKLOADS).index(workload)
            x = rng.uniform(1, "test.b", call, (rows, size)) * 2 - 1 if x_kind == "uniform" \
                else rng.normal(1, "test.b", call, (rows, size))
            np.save(files["x"], x.astype(np.float32))
            np.save(files["d"], (rng.normal(1, "test.a", call, (rows, size)) * d_std)
                    .astype(np.float32))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(_worker(json.loads(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed calls per cell at most")
    parser.add_argument("--budget", type=float, default=3.0,
                        help="seconds of timed calls per cell beyond which fewer calls are timed")
    parser.add_argument("--ref-rows", type=int, default=8,
                        help="rows per call on which the reference is timed (then scaled)")
    parser.add_argument("--max-call", type=float, default=30.0,
                        help="seconds beyond which a refsim call is timed on fewer rows (scaled)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--devices", nargs="+", choices=DEVICES, default=list(DEVICES))
    parser.add_argument("--aihwkit", default=str(DEFAULT_AIHWKIT),
                        help="python of an environment with aihwkit (skipped if missing)")
    args = parser.parse_args()
    cases = [{"kind": "update", "device": v, "workload": k, "size": s, "batch": b}
             for v in args.devices for k in args.workloads for s in args.sizes
             for b in args.batches]
    have_aihwkit = pathlib.Path(args.aihwkit).exists()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_update.") as data:
        _write_inputs(data, args.sizes, args.batches, args.workloads)
        spec = {"cases": cases, "repeat": args.repeat, "budget": args.budget,
                "ref_rows": args.ref_rows, "max_call": args.max_call, "data": data}
        for threads in args.threads:
            print(f"# timing refsim, {threads} thread(s) ...", file=sys.stderr, flush=True)
            ours = run_worker(threads, spec, sys.executable, f"{__file__}")  # re-enters as --worker
            if have_aihwkit:
                print(f"# timing aihwkit, {threads} thread(s) ...", file=sys.stderr, flush=True)
                theirs = run_worker(threads, spec, args.aihwkit, str(HERE / "_aihwkit_worker.py"))
            else:
                theirs = [None] * len(ours)
            for mine, other in zip(ours, theirs):
                results[(mine["device"], mine["workload"], mine["size"], mine["batch"],
                         threads)] = (mine, other)

    def ms(cell):
        if cell is None:
            return "n/a"
        return f"{cell['seconds'] * 1e3:.3f}" + ("*" if cell["rows"] < cell["batch"] else "")

    def ratio(a, b):
        return "—" if a is None or b is None else f"{a['seconds'] / b['seconds']:.2f}"

    def order(item):
        device, workload, *rest = item[0]
        return DEVICES.index(device), list(WORKLOADS).index(workload), *rest

    rows, notes, calls, scaled = [], {}, {}, False
    for (device, workload, size, batch, threads), (mine, other) in sorted(results.items(),
                                                                          key=order):
        cells = {"fast": mine["fast"], "reference": mine["reference"],
                 "aihwkit": other or {"error": ""},  # no aihwkit: noted once, below
                 "floor": mine["floor"]}
        for name, cell in cells.items():
            if "error" in cell:
                if cell["error"]:
                    notes.setdefault(f"{name}: {cell['error']}", None)
                cells[name] = None
                continue
            calls.setdefault(name, []).append(cell["calls"])
            scaled = scaled or cell["rows"] < cell["batch"]
        aih = cells["aihwkit"]
        rows.append([SHORT[device], workload, f"{size}²", batch, threads,
                     *(ms(cell) for cell in cells.values()), ratio(aih, cells["fast"]),
                     ratio(cells["fast"], cells["floor"]), ratio(cells["reference"], aih)])
    print(f"# bench_update: medians in ms per update call of the whole batch (float32, one pulsed "
          f"cycle per row); aihwkit {'from ' + args.aihwkit if have_aihwkit else 'absent'}")
    print_table(["device", "workload", "tile", "batch", "threads", "fast", "reference", "aihwkit",
                 "floor", "aihwkit/fast", "fast/floor", "reference/aihwkit"], rows)
    print()
    if scaled:
        print(f"* timed on the first rows of the batch only (the reference on {args.ref_rows}, any "
              f"call that would exceed {args.max_call:g} s on as many as fit) and scaled by "
              f"batch/rows: an estimate, not a measurement of the whole batch.")
    print("floor: W -= lr * (D.T @ X) in float32 numpy (one GEMM; no devices, no pulses).")
    print("ratios are of times: aihwkit/fast > 1 means the fast backend is faster than aihwkit.")
    print("timed calls per cell (median of): " + ", ".join(
        f"{name} {min(n)}–{max(n)}" for name, n in calls.items()))
    for text in notes:
        print("n/a — " + text)
    if not have_aihwkit:
        print(f"n/a — aihwkit: no environment at {args.aihwkit}")


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1].startswith("{"):
        sys.argv = [sys.argv[0], "--worker", sys.argv[1]]
    main()

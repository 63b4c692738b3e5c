"""`refsim sweep` and refsim.sweep: the SPEC (grid, zip, options, config fields, errors naming the
key), the append-only results table, resume, failed points, the same numbers as `refsim demo`
and on any number of Dask workers, a worker killed mid-sweep, Ctrl-C, the plot, the CLI."""

import doctest
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from refsim import configs, sweep
from refsim.cli import main

#: A point of about 0.05 s: sgd, one epoch on 60 images, 8 hidden units.
TINY = {"algorithm": "sgd", "epochs": 1, "hidden": 8, "limit": 60}
#: Points of about a second each (for the fault tests, where a task must be running).
SLOW = {"algorithm": "sgd", "epochs": 4, "hidden": 16}

ERROR_LINE = re.compile(r"refsim sweep: error: (.+), see 'refsim sweep --help'")


def _ids(rows):
    return sorted(row["point_id"] for row in rows)


def _numbers(rows):
    """What must be bit-identical between runs of a point: everything but time and place."""
    return {row["point_id"]: (row["status"], row["config_hash"], row["metrics"], row["history"])
            for row in rows}


def _table_lines(out):
    with open(os.path.join(out, sweep.TABLE), encoding="utf-8") as handle:
        return handle.read().splitlines()


# -- the SPEC --------------------------------------------------------------------------------------

def test_points_cross_the_grid_in_key_order_and_zip_groups():
    spec = {"base": TINY, "grid": {"lr": [0.1, 0.2], "forward.out_noise": [0.0, 0.02],
                                   "batch-size": [8, 16]},
            "zip": [["lr", "batch-size"]]}
    points = sweep.expand(spec)
    assert [(p.params["lr"], p.params["forward.out_noise"], p.params["batch_size"])
            for p in points] == [(0.1, 0.0, 8), (0.1, 0.02, 8), (0.2, 0.0, 16), (0.2, 0.02, 16)]
    assert points[0].options["algorithm"] == "sgd" and points[0].options["epochs"] == 1
    assert points[0].options["seed"] == 1 and points[0].options["device"] == \
        "SoftBoundsReferenceDevice"                          # the demo's defaults fill in
    assert points[1].fields == {"forward.out_noise": 0.02}
    assert len({p.point_id for p in points}) == 4
    # the id depends on the run, not on the spec it came from
    again = sweep.expand({"base": {**TINY, "batch_size": 16, "lr": 0.2},
                          "grid": {"forward.out_noise": [0.02]}})
    assert again[0].point_id == points[3].point_id


@pytest.mark.parametrize("spec, key", [
    ({"task": "nope", "grid": {"seed": [1]}}, "task"),
    ({"grid": {"seed": [1]}, "extra": 1}, "extra"),
    ({"grid": {}}, "grid"),
    ({"grid": {"colour": [1]}}, 'grid["colour"]'),
    ({"grid": {"seed": [1, -1]}}, 'grid["seed"][1]'),
    ({"grid": {"epochs": [0]}}, 'grid["epochs"][0]'),
    ({"grid": {"algorithm": ["sgd", "bogus"]}}, 'grid["algorithm"][1]'),
    ({"grid": {"device": ["NoDevice"]}}, 'grid["device"][0]'),
    ({"grid": {"seed": []}}, 'grid["seed"]'),
    ({"grid": {"seed": [1, 1]}}, 'grid["seed"][1]'),
    ({"grid": {"seed": [1]}, "base": {"lr": -1}}, 'base["lr"]'),
    ({"task": "inference", "grid": {"algorithm": ["sgd"]}}, 'grid["algorithm"]'),
    ({"grid": {"seed": [1, 2], "lr": [0.1]}, "zip": [["seed", "lr"]]}, "zip[0]"),
    ({"grid": {"seed": [1, 2]}, "zip": [["seed", "hidden"]]}, "zip[0]"),
    ({"grid": {"algorithm": ["c-ttv2", "chopped-ttv2"]}}, "grid"),
    ({"base": TINY, "grid": {"forward.out_nois": [0.0]}}, 'grid["forward.out_nois"]'),
    ({"base": TINY, "grid": {"device..dw_min": [0.0]}}, 'grid["device..dw_min"]'),
])
def test_a_bad_spec_raises_naming_its_key(spec, key, tmp_path):
    with pytest.raises(ValueError) as err:
        sweep.run(spec, tmp_path / "out", workers=0)
    assert str(err.value).startswith(key), str(err.value)
    assert not (tmp_path / "out").exists()               # nothing written


def test_the_options_and_defaults_are_the_demo_s():
    from refsim import cli

    parsed = vars(cli._parser().parse_args(["demo"]))
    for task, hidden, repeats in (("train", 64, None), ("inference", 32, 5)):
        defaults = sweep._option_defaults(task)
        assert defaults.pop("hidden") == hidden and defaults.pop("repeats", None) == repeats
        assert defaults == {k: parsed[k] for k in defaults}


def test_config_fields_by_path():
    config = configs.build_config("c-ttv2", configs.ConstantStepDevice)
    sweep.set_field(config, "device.unit_cell_devices[*].dw_min", 0.003)
    sweep.set_field(config, "device.unit_cell_devices[1].dw_min_std", 0.0)
    sweep.set_field(config, "forward.out_noise", 0.01)
    devices = config.device.unit_cell_devices
    assert [d.dw_min for d in devices] == [0.003, 0.003] and devices[1].dw_min_std == 0.0
    assert config.forward.out_noise == 0.01
    with pytest.raises(sweep.FieldMissing, match=r"unit_cell_devices\[\*\]\.dw_min sets each"):
        sweep.set_field(config, "device.dw_min", 0.001)
    with pytest.raises(sweep.FieldMissing, match=r"has 2 items, no \[2\]"):
        sweep.set_field(config, "device.unit_cell_devices[2].dw_min", 0.001)


def test_the_module_examples_run():
    assert doctest.testmod(sweep).failed == 0


# -- serial runs: the table, the demo's numbers, failures, resume -----------------------------------

def test_a_point_gives_the_demo_s_numbers(capsys, tmp_path):
    """A sweep point is `refsim demo` with the same options: the same losses and accuracies
    (the demo prints them rounded to 6 digits; the table keeps every bit)."""
    options = {"algorithm": "agad", "epochs": 2, "hidden": 8, "limit": 80, "seed": 3}
    sweep.run({"base": options, "grid": {"lr": [0.2]}}, tmp_path, workers=0)
    [row] = sweep.load_results(tmp_path)
    assert main(["demo", "--algorithm", "agad", "--epochs", "2", "--hidden", "8", "--limit", "80",
                 "--seed", "3", "--lr", "0.2", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert row["status"] == "ok" and row["seed"] == 3 and row["params"] == {"lr": 0.2}
    for key in ("loss", "train_accuracy", "test_accuracy"):
        assert round(row["metrics"][key], 6) == summary[key]
    assert [{k: round(v, 6) for k, v in h.items()} for h in row["history"]] == \
        [{k: v for k, v in h.items() if k != "seconds"} for h in summary["history"]]
    # the row's config is the demo's (with DEMO_TUNING), stored by its hash
    with open(tmp_path / "configs" / f"{row['config_hash']}.json") as handle:
        stored = configs.from_dict(json.load(handle))
    assert stored.device.fast_lr == 1.0 and stored.device.transfer_update.desired_bl == 5
    assert json.loads((tmp_path / "spec.json").read_text())["base"]["algorithm"] == "agad"


def test_the_inference_task_gives_the_demo_s_numbers(capsys, tmp_path):
    options = {"task": "inference", "base": {"epochs": 1, "hidden": 8, "limit": 60, "repeats": 1},
               "grid": {"seed": [2], "modifier.std_dev": [0.1, 0.2]}}
    sweep.run(options, tmp_path, workers=0)
    rows = {row["params"]["modifier.std_dev"]: row for row in sweep.load_results(tmp_path)}
    assert main(["demo", "--task", "inference", "--epochs", "1", "--hidden", "8", "--limit",
                 "60", "--repeats", "1", "--seed", "2", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    metrics = rows[0.1]["metrics"]                       # 0.1 is the demo's own std_dev
    assert round(metrics["hwa+compensation@trained"], 6) == summary["trained"]["hwa+compensation"]
    assert round(metrics["plain@1year"], 6) == summary["accuracy"]["plain"]["31536000.0"][0]
    assert metrics["plain@1year_std"] == 0.0
    assert [round(h["hwa@loss"], 6) for h in rows[0.1]["history"]] == summary["loss"]["hwa"]
    # the field reaches the configs: hwa trains otherwise, plain (no modifier) does not
    assert rows[0.2]["metrics"]["plain@1s"] == metrics["plain@1s"]
    assert rows[0.2]["history"][0]["hwa@loss"] != rows[0.1]["history"][0]["hwa@loss"]


def test_failing_points_record_why_and_the_others_finish(monkeypatch, tmp_path):
    real = sweep._run_train

    def flaky(options, config):
        if options["seed"] == 2:
            raise RuntimeError("the device caught fire")
        return real(options, config)

    monkeypatch.setattr(sweep, "_run_train", flaky)
    spec = {"base": TINY, "grid": {"algorithm": ["sgd", "agad"], "device.dw_min": [0.001],
                                   "forward.out_noise": [0.0, -1.0], "seed": [1, 2]}}
    summary = sweep.run(spec, tmp_path, workers=0)
    rows = sweep.load_results(tmp_path)
    assert (summary["ok"], summary["failed"], len(rows)) == (1, 7, 8)
    why = {(r["params"]["algorithm"], r["params"]["forward.out_noise"], r["seed"]): r["error"]
           for r in rows if r["status"] == "failed"}
    assert "forward.out_noise: -1.0 is out of range" in why[("sgd", -1.0, 1)]
    assert "DynamicTransferCompound" in why[("agad", 0.0, 1)]       # agad's device is a compound
    assert "unit_cell_devices[*].dw_min" in why[("agad", 0.0, 1)]
    assert why[("sgd", 0.0, 2)].startswith("RuntimeError: the device caught fire (at ")
    # --resume skips every complete row; --retry-failed runs the failed ones again
    monkeypatch.setattr(sweep, "_run_train", real)
    assert sweep.run(spec, tmp_path, workers=0, resume=True)["skipped"] == 8
    again = sweep.run(spec, tmp_path, workers=0, resume=True, retry_failed=True)
    assert (again["skipped"], again["ok"], again["failed"]) == (1, 1, 6)
    assert len(sweep.load_results(tmp_path, latest=False)) == 15
    latest = {(r["params"]["algorithm"], r["params"]["forward.out_noise"], r["seed"]): r["status"]
              for r in sweep.load_results(tmp_path)}
    assert latest[("sgd", 0.0, 2)] == "ok" and latest[("sgd", -1.0, 2)] == "failed"


def test_the_table_is_only_appended_and_a_cut_line_is_run_again(tmp_path):
    """A crash mid-write leaves a partial last line: it is not a complete row, so --resume runs
    its point again, after ending that line; nothing written before changes."""
    spec = {"base": TINY, "grid": {"seed": [1, 2, 3]}}
    sweep.run(spec, tmp_path, workers=0)
    table = tmp_path / sweep.TABLE
    text = table.read_text()
    assert text.splitlines()[0] == ",".join(sweep.COLUMNS)
    cut = text[:len(text) - 40]                          # the last row loses its end
    table.write_text(cut)
    assert len(sweep.load_results(tmp_path)) == 2
    summary = sweep.run(spec, tmp_path, workers=0, resume=True)
    assert (summary["skipped"], summary["ok"]) == (2, 1)
    assert table.read_text().startswith(cut + "\n")
    rows = sweep.load_results(tmp_path, latest=False)
    assert _ids(rows) == sorted(p.point_id for p in sweep.expand(spec))   # each exactly once


def test_an_out_folder_holds_one_sweep(tmp_path):
    spec = {"base": TINY, "grid": {"seed": [1]}}
    sweep.run(spec, tmp_path, workers=0)
    with pytest.raises(ValueError, match="already holds a sweep"):
        sweep.run(spec, tmp_path, workers=0)
    with pytest.raises(ValueError, match="another spec"):
        sweep.run({"base": TINY, "grid": {"seed": [2]}}, tmp_path, workers=0, resume=True)
    (tmp_path / sweep.TABLE).write_text("a,b\n")
    with pytest.raises(ValueError, match="not a refsim sweep table"):
        sweep.run(spec, tmp_path, workers=0, resume=True)


def test_without_dask_a_clear_error_and_workers_0_still_runs(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)      # `import distributed` fails
    spec = {"base": TINY, "grid": {"seed": [1]}}
    with pytest.raises(ImportError, match=r"pip install 'refsim\[sweep\]'"):
        sweep.run(spec, tmp_path / "a", workers=2)
    assert not (tmp_path / "a").exists()
    assert sweep.run(spec, tmp_path / "b", workers=0)["ok"] == 1


def test_the_core_does_not_import_dask():
    code = ("import sys, refsim, refsim.tile, refsim.nn, refsim.cli, refsim.sweep; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- Dask ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    """A local Dask cluster of two worker processes, shared by the tests that bring their own
    (``scheduler=``)."""
    distributed = pytest.importorskip("distributed")
    import logging

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=":0",
                                  silence_logs=logging.ERROR) as local:
        with distributed.Client(local) as client:
            yield local, client


def test_two_workers_give_the_serial_numbers_bit_for_bit(cluster, tmp_path):
    """The same point gives the same row numbers on a new 2-worker cluster, serially in this
    process, and on another cluster with the grid in another order."""
    grid = {"algorithm": ["sgd", "c-ttv2"], "forward.out_noise": [0.0, 0.06], "seed": [1, 2]}
    spec = {"base": {**TINY, "limit": 100}, "grid": grid}
    two = sweep.run(spec, tmp_path / "two", workers=2)
    serial = sweep.run(spec, tmp_path / "serial", workers=0)
    assert two["ok"] == serial["ok"] == 8
    rows = sweep.load_results(tmp_path / "two")
    assert _numbers(rows) == _numbers(sweep.load_results(tmp_path / "serial"))
    assert all(row["worker"].startswith("tcp://") for row in rows)
    backwards = {"base": spec["base"], "grid": {k: v[::-1] for k, v in reversed(grid.items())}}
    sweep.run(backwards, tmp_path / "other", scheduler=cluster[0].scheduler_address)
    assert _numbers(sweep.load_results(tmp_path / "other")) == _numbers(rows)


def test_a_killed_worker_s_point_is_run_again_once(cluster, tmp_path):
    """A worker process killed while it runs a point: Dask runs the point again on a worker
    (the nanny restarts the dead one), and the table holds every point exactly once, ok."""
    local, client = cluster
    spec = {"base": SLOW, "grid": {"seed": [1, 2, 3, 4, 5, 6]}}
    killed = []

    def kill_one_running_worker():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            busy = {w: ks for w, ks in client.processing().items()
                    if any(str(k).startswith("refsim-point-") for k in ks)}
            if busy:
                time.sleep(0.3)                           # well inside the task
                address = next(iter(busy))
                pid = client.run(os.getpid, workers=[address])[address]
                os.kill(pid, signal.SIGKILL)
                killed.append((address, pid))
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_running_worker, daemon=True)
    killer.start()
    summary = sweep.run(spec, tmp_path, scheduler=local.scheduler_address)
    killer.join(timeout=5)
    assert killed, "no worker was killed"
    rows = sweep.load_results(tmp_path, latest=False)
    assert summary["ok"] == 6 and [r["status"] for r in rows] == ["ok"] * 6, \
        [r["error"] for r in rows if r["status"] != "ok"]
    assert _ids(rows) == sorted(p.point_id for p in sweep.expand(spec))
    client.wait_for_workers(2, timeout=60)                # the nanny has restarted it


def test_ctrl_c_keeps_the_finished_rows_and_resume_completes_the_sweep(cluster, tmp_path):
    """Ctrl-C in a terminal (SIGINT to the process group) stops `refsim sweep` on a local
    cluster: exit 130, one message line, the finished rows kept; --resume runs only the rest."""
    spec_file = tmp_path / "spec.json"
    spec = {"base": SLOW, "grid": {"seed": list(range(1, 9))}}
    spec_file.write_text(json.dumps(spec))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "refsim", "sweep", str(spec_file), "--out",
                             str(out), "--workers", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / sweep.TABLE).exists() and len(_table_lines(out)) >= 3:   # header + 2 rows
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    kept = sweep.load_results(out, latest=False)
    assert 2 <= len(kept) < 8 and len(stdout.splitlines()) <= len(kept)
    assert stderr == (f"refsim sweep: interrupted; {out / sweep.TABLE} keeps {len(kept)} "
                      f"finished points of 8 (--resume continues)\n")
    summary = sweep.run(spec_file, out, scheduler=cluster[0].scheduler_address, resume=True)
    assert summary["skipped"] == len(kept) and summary["ok"] == 8 - len(kept)
    rows = sweep.load_results(out, latest=False)
    assert _ids(rows) == sorted(p.point_id for p in sweep.expand(spec))   # none lost or twice


# -- the command line and the plot -----------------------------------------------------------------

def test_cli_runs_a_sweep_and_plots_it(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"base": TINY, "grid": {"forward.out_noise": [0.0, 0.06],
                                                       "algorithm": ["sgd", "mp"],
                                                       "seed": [1, 2]}}))
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--out", str(out), "--workers", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 9 and lines[0].startswith("ok ") and "test_accuracy" in lines[0]
    assert json.loads(lines[-1])["ok"] == 8
    assert main(["sweep", "--plot", str(out), "test_accuracy", "forward.out_noise"]) == 0
    image = json.loads(capsys.readouterr().out)["plot"]
    assert image == str(out / "test_accuracy-vs-forward.out_noise.png")
    assert open(image, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    xs, lines = sweep.plot_data(sweep.load_results(out), sweep.load_spec(out / "spec.json"),
                                "loss", "forward.out_noise")
    assert xs == [0.0, 0.06] and sorted(lines) == ["algorithm=mp", "algorithm=sgd"]
    assert all(len(values) == 2 for per in lines.values() for values in per.values())   # seeds


def test_cli_exit_1_when_a_point_failed(capsys, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"base": TINY, "grid": {"forward.out_noise": [0.0, -1.0]}}))
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--workers", "0",
                 "--quiet"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert (summary["ok"], summary["failed"]) == (1, 1)


@pytest.mark.parametrize("args, word", [
    ([], "give SPEC and --out"),
    (["SPEC"], "give SPEC and --out"),
    (["SPEC", "--out", "D", "--workers", "2", "--scheduler", "tcp://x:1"], "not allowed"),
    (["SPEC", "--out", "D", "--workers", "-1"], "--workers"),
    (["SPEC", "--out", "D", "--retry-failed"], "--retry-failed goes with --resume"),
    (["SPEC", "--out", "D", "--image", "x.png"], "--image goes with --plot"),
    (["/nonexistent/spec.json", "--out", "D", "--workers", "0"], "SPEC: cannot read"),
    (["--plot", "D", "test_accuracy", "seed", "--workers", "2"], "--workers does not go"),
    (["--plot", "/nonexistent-dir", "test_accuracy", "seed"], "--plot"),
])
def test_cli_bad_arguments_exit_2_with_one_line(capsys, args, word):
    with pytest.raises(SystemExit) as exc:
        main(["sweep", *args])
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    [line] = err.splitlines()
    assert out == "" and ERROR_LINE.fullmatch(line) and word in line, line


def test_cli_a_bad_spec_names_its_key(capsys, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"grid": {"forward.out_nois": [0.0]}}))
    with pytest.raises(SystemExit) as exc:
        main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--workers", "0"])
    assert exc.value.code == 2
    assert 'grid["forward.out_nois"]: no point\'s config has this field' in capsys.readouterr().err


def test_a_row_lost_in_transfer_is_run_again_a_few_times():
    """A connection error while fetching a finished point's row (its worker died) submits the
    point again under a new key, at most RESUBMISSIONS times."""

    class Client:
        def __init__(self):
            self.keys = []

        def submit(self, fn, job, key, pure):
            assert fn is sweep.run_point and job["point_id"] == "p1" and pure is False
            self.keys.append(key)
            return key

    client, counts = Client(), {}
    job = {"point_id": "p1"}
    again = [sweep._resubmit(client, job, "n0", counts) for _ in range(sweep.RESUBMISSIONS + 1)]
    assert again[:-1] == [f"refsim-point-p1-n0-{i}" for i in range(1, sweep.RESUBMISSIONS + 1)]
    assert again[-1] is None and len(set(client.keys)) == sweep.RESUBMISSIONS

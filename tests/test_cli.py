"""The command line: `refsim config`, `refsim mvm`, `refsim info`, `refsim demo`; bad input exits
with code 2 and a one-line message of one form naming the subcommand's help; a reader that closes
the pipe early ends the output quietly (exit 141); a `--plot` that cannot be written fails before
training."""

import json
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from refsim import configs
from refsim import cli
from refsim.cli import main


def _run(*args):
    return subprocess.run([sys.executable, "-m", "refsim", *args], capture_output=True, text=True,
                          cwd="/")


def test_config_prints_the_built_config(capsys):
    assert main(["config", "c-ttv2", "--device", "SoftBoundsReferenceDevice", "--seed", "4"]) == 0
    text = capsys.readouterr().out
    assert configs.from_json(text) == configs.build_config(
        "c-ttv2", configs.SoftBoundsReferenceDevice, construction_seed=4)


def test_mvm_reports_the_error(capsys):
    assert main(["mvm", "--out-size", "16", "--in-size", "8", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "analog error" in out and "rms" in out


def test_info_reports_the_fast_backend(capsys):
    assert main(["info"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["refsim_fast"]["available"] is True
    assert facts["refsim_fast"]["openmp"] is True


#: The one form of every command-line error (refsim.cli._error_text).
ERROR_LINE = re.compile(r"(refsim(?: [a-z]+)?): error: (.+), see '\1 --help'")


@pytest.mark.parametrize("args, prog, word", [
    (["config", "nope"], "refsim config", "algorithm"),
    (["config", "bogus"], "refsim config", "'bogus'"),
    (["config"], "refsim config", "algorithm"),
    (["config", "sgd", "--device", "Nope"], "refsim config", "--device"),
    (["config", "sgd", "--seed", "-1"], "refsim config", "construction_seed"),
    (["config", "sgd", "--n-devices", "x"], "refsim config", "n-devices"),
    (["config", "sgd", "surplus"], "refsim config", "surplus"),
    (["mvm", "--batch", "0"], "refsim mvm", "batch"),
    (["mvm", "--out-size", "-3"], "refsim mvm", "out-size"),
    (["mvm", "--seed", "-1"], "refsim mvm", "seed"),
    (["info", "--bogus"], "refsim info", "--bogus"),
    (["frobnicate"], "refsim", "invalid choice"),
    ([], "refsim", "command"),
    (["demo", "--algorithm", "nope"], "refsim demo", "--algorithm"),
    (["demo", "--algorithm", "bogus"], "refsim demo", "--algorithm"),
    (["demo", "--device", "Nope"], "refsim demo", "--device"),
    (["demo", "--epochs", "0"], "refsim demo", "--epochs"),
    (["demo", "--lr", "abc"], "refsim demo", "--lr"),
    (["demo", "--batch-size", "0"], "refsim demo", "--batch-size"),
    (["demo", "--seed", "4294967296"], "refsim demo", "--seed"),
    (["demo", "--backend", "gpu"], "refsim demo", "--backend"),
    (["demo", "--plot", "/nonexistent-refsim-dir/sub/curve.png"], "refsim demo", "--plot"),
    (["demo", "--plot", "/"], "refsim demo", "--plot"),
])
def test_bad_arguments_exit_2_with_one_line_of_one_form(args, prog, word):
    """Every subcommand's errors: exit 2, exactly one stderr line
    ``PROG: error: WHAT, see 'PROG --help'`` naming the subcommand's own help, nothing on stdout."""
    proc = _run(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    match = ERROR_LINE.fullmatch(lines[0])
    assert match, lines[0]
    assert match.group(1) == prog
    assert word in match.group(2)
    assert proc.stdout == ""


def test_help_documents_the_exit_codes(capsys):
    for args in ([], ["config"], ["mvm"], ["info"], ["demo"], ["sweep"]):
        with pytest.raises(SystemExit) as exc:
            main([*args, "--help"])
        assert exc.value.code == 0
        assert "141" in capsys.readouterr().out


# -- a reader that closes the pipe early (`refsim config ... | head`) ------------------------------

def _read_one_line_then_close(*args):
    """Start ``python -m refsim ARGS``, read one line of its stdout, close the pipe, and return
    (exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "refsim", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd="/")
    first = proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert first, stderr
    return proc.wait(timeout=300), stderr


def test_closed_pipe_ends_config_quietly():
    """The output (about 170 kB with --indent 200) exceeds the pipe's buffer, so the writer is
    still writing when the reader closes: always the broken-pipe case. No traceback, exit 141."""
    for _ in range(3):
        code, stderr = _read_one_line_then_close("config", "c-ttv2", "--device",
                                                 "SoftBoundsReferenceDevice", "--indent", "200")
        assert stderr == ""
        assert code == cli.EXIT_BROKEN_PIPE == 141


def test_closed_pipe_default_config_never_raises():
    """The issue's case: the default output (8 kB) sometimes fits the pipe before the reader
    closes (exit 0), sometimes not (exit 141); never a traceback."""
    for _ in range(5):
        code, stderr = _read_one_line_then_close("config", "c-ttv2", "--device",
                                                 "SoftBoundsReferenceDevice")
        assert stderr == ""
        assert code in (0, 141)


def test_closed_pipe_stops_the_demo_quietly():
    """`refsim demo | head -1`: the reader closes after the first line, long before the first
    epoch ends; the demo stops at its next line (not after 50 epochs), without a traceback."""
    for _ in range(2):
        code, stderr = _read_one_line_then_close("demo", "--algorithm", "sgd", "--epochs", "50")
        assert stderr == ""
        assert code == 141


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("head") is None,
                    reason="needs bash and head")
def test_shell_pipeline_into_head():
    refsim = f"'{sys.executable}' -m refsim"
    script = (f"{refsim} config c-ttv2 --indent 200 | head -1 >/dev/null; s=${{PIPESTATUS[0]}}; "
              f"{refsim} --help | head -1 >/dev/null; echo $s ${{PIPESTATUS[0]}}")
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd="/")
    assert proc.stderr == ""
    first, help_code = proc.stdout.split()
    assert first == "141" and help_code in ("0", "141")


# -- --plot -----------------------------------------------------------------------------------------

def _no_training(*args, **kwargs):
    raise AssertionError("the demo started training")


def test_plot_without_matplotlib_fails_before_training(monkeypatch, capsys, tmp_path):
    import refsim.nn

    monkeypatch.setitem(sys.modules, "matplotlib", None)     # `import matplotlib` fails
    monkeypatch.setattr(refsim.nn, "train_epoch", _no_training)
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--algorithm", "sgd", "--epochs", "1", "--plot", str(tmp_path / "c.png")])
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    match = ERROR_LINE.fullmatch(line)
    assert match and match.group(1) == "refsim demo"
    assert match.group(2).startswith("--plot: matplotlib is not installed")
    assert not (tmp_path / "c.png").exists()


def test_plot_without_matplotlib_subprocess(tmp_path):
    """The same in a fresh interpreter: exit 2 and one stderr line, nothing printed on stdout
    (the demo's first line would come before training)."""
    code = ("import sys; sys.modules['matplotlib'] = None; from refsim.cli import main; "
            f"raise SystemExit(main(['demo', '--plot', {str(tmp_path / 'c.png')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert proc.returncode == 2
    assert proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert ERROR_LINE.fullmatch(line) and "--plot" in line and "matplotlib" in line


@pytest.mark.parametrize("where", ["missing-dir/c.png", "missing/deeper/c.png", "."])
def test_plot_to_a_bad_path_fails_before_training(monkeypatch, capsys, tmp_path, where):
    import refsim.nn

    monkeypatch.setattr(refsim.nn, "train_epoch", _no_training)
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--algorithm", "sgd", "--plot", str(tmp_path / where)])
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    match = ERROR_LINE.fullmatch(line)
    assert match and match.group(1) == "refsim demo" and match.group(2).startswith("--plot: ")


def test_plot_in_a_read_only_directory_fails(monkeypatch, capsys, tmp_path):
    import os

    import refsim.nn

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):          # root writes anyway: take a read-only file system
        if not os.path.isdir("/sys"):
            pytest.skip("no read-only directory to write into")
        folder = pathlib.Path("/sys")
    monkeypatch.setattr(refsim.nn, "train_epoch", _no_training)
    try:
        with pytest.raises(SystemExit) as exc:
            main(["demo", "--plot", str(folder / "c.png")])
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert exc.value.code == 2
    assert "--plot: cannot write in directory" in capsys.readouterr().err


def test_plot_with_an_unknown_format_fails_before_training(monkeypatch, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    import refsim.nn

    monkeypatch.setattr(refsim.nn, "train_epoch", _no_training)
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--plot", str(tmp_path / "c.nosuchformat")])
    assert exc.value.code == 2
    assert "'nosuchformat'" in capsys.readouterr().err


def test_plot_is_written(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curve.png"
    assert main(["demo", "--algorithm", "sgd", "--epochs", "2", "--limit", "32", "--quiet",
                 "--plot", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert json.loads(out)["plot"] == str(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_that_fails_after_training_is_an_error(monkeypatch, capsys, tmp_path):
    """Checked up front, a plot can still fail at the end (a full disk): the summary is printed,
    then one error line, exit 2."""
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli, "_plot_problem", lambda path: None)
    monkeypatch.setattr(cli, "_plot", full_disk)
    assert main(["demo", "--algorithm", "sgd", "--epochs", "1", "--limit", "16", "--quiet",
                 "--plot", str(tmp_path / "c.png")]) == 2
    out, err = capsys.readouterr()
    assert "plot" not in json.loads(out)
    [line] = err.splitlines()
    assert ERROR_LINE.fullmatch(line) and "No space left on device" in line


def test_demo_runs_as_a_module():
    proc = _run("demo", "--algorithm", "sgd", "--epochs", "1", "--limit", "32", "--quiet")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["algorithm"] == "sgd" and summary["device"] == "SoftBoundsReferenceDevice"
    assert len(summary["history"]) == 1


def test_demo_default_algorithm_runs():
    """c-ttv2 (the default) with the demo's config changes, as a subprocess: exit 0, one JSON
    line that records the changes."""
    proc = _run("demo", "--epochs", "1", "--limit", "16", "--quiet")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["algorithm"] == "c-ttv2"
    assert summary["config_changes"] == cli.DEMO_TUNING["c-ttv2"]


def test_inference_demo_prints_the_table_and_json(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "inference.png"
    assert main(["demo", "--task", "inference", "--epochs", "1", "--repeats", "2",
                 "--hidden", "8", "--limit", "120", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "| t | plain | plain+compensation | hwa | hwa+compensation |" in out
    assert "| 1 year |" in out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["repeats"] == 2 and summary["plot"] == str(plot) and plot.stat().st_size > 0
    assert set(summary["accuracy"]) == {"plain", "plain+compensation", "hwa",
                                        "hwa+compensation"}
    assert all(len(v) == 2 for per in summary["accuracy"].values() for v in per.values())


@pytest.mark.parametrize("args, word", [
    (["--task", "inference", "--algorithm", "sgd"], "--algorithm"),
    (["--task", "inference", "--analog-bias"], "--analog-bias"),
    (["--repeats", "3"], "--repeats"),
])
def test_inference_demo_refuses_options_that_do_not_apply(capsys, args, word):
    with pytest.raises(SystemExit) as exc:
        main(["demo", *args])
    assert exc.value.code == 2 and word in capsys.readouterr().err

"""The command line: `refsim config`, `refsim mvm`, `refsim info`, `refsim demo`; bad input exits
with code 2 and a one-line message."""

import json
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


@pytest.mark.parametrize("args, word", [
    (["config", "nope"], "algorithm"),
    (["config", "sgd", "--device", "Nope"], "--device"),
    (["config", "sgd", "--seed", "-1"], "construction_seed"),
    (["config", "sgd", "--n-devices", "x"], "n-devices"),
    (["mvm", "--batch", "0"], "batch"),
    (["mvm", "--out-size", "-3"], "out-size"),
    (["frobnicate"], "invalid choice"),
    (["demo", "--algorithm", "nope"], "--algorithm"),
    (["demo", "--device", "Nope"], "--device"),
    (["demo", "--epochs", "0"], "--epochs"),
    (["demo", "--lr", "abc"], "--lr"),
    (["demo", "--batch-size", "0"], "--batch-size"),
    (["demo", "--seed", "4294967296"], "--seed"),
    (["demo", "--backend", "gpu"], "--backend"),
])
def test_bad_arguments_exit_2_with_a_message(args, word):
    proc = _run(*args)
    assert proc.returncode == 2
    assert word in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


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

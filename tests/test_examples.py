"""The example scripts of examples/ run as written (``python examples/NN_name.py``) and print the
evidence that training works: every loss they report falls, the classifiers reach a clear test
accuracy."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(EXAMPLES.glob("[0-9][0-9]_*.py"))
LOSS = re.compile(r"^(.+): loss (\d+\.\d+) -> (\d+\.\d+)", re.M)
ACCURACY = re.compile(r"test accuracy (\d+\.\d) %")

#: Per script: the number of "name: loss first -> last" lines it prints and the least factor by
#: which each loss falls (the examples are seeded, so these are fixed numbers, not averages).
LOSS_LINES = {"01_simple_layer.py": (1, 20.0), "02_multiple_layers.py": (1, 10.0),
              "04_devices.py": (4, 4.0), "05_tiki_taka.py": (2, 5.0),
              "06_mixed_precision.py": (2, 5.0)}


def _run(script: Path, tmp_path: Path) -> str:
    # torch, imported first, starts OpenMP with busy-waiting threads, which slow the scripts
    # several-fold when other processes share the cores; sleeping threads give the same numbers
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300, env=env)
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_the_examples_are_there():
    names = {s.name for s in SCRIPTS}
    assert set(LOSS_LINES) | {"03_hardware_aware_training.py", "07_cnn_digits.py"} <= names


@pytest.mark.parametrize("script", [s for s in SCRIPTS if s.name in LOSS_LINES],
                         ids=lambda s: s.stem)
def test_example_loss_falls(script, tmp_path):
    out = _run(script, tmp_path)
    lines, factor = LOSS_LINES[script.name]
    found = LOSS.findall(out)
    assert len(found) == lines, out
    for name, first, last in found:
        assert float(last) * factor < float(first), f"{name}: {first} -> {last}\n{out}"


def test_hardware_aware_training_keeps_its_accuracy_under_drift(tmp_path):
    out = _run(EXAMPLES / "03_hardware_aware_training.py", tmp_path)
    accuracies = [float(a) for a in ACCURACY.findall(out)]
    assert len(accuracies) == 5, out  # trained, then 1 s, 1 h, 1 day, 1 year after programming
    assert accuracies[0] > 90.0 and min(accuracies[1:]) > 85.0, out
    epochs = [float(v) for v in re.findall(r"training loss (\d+\.\d+)", out)]
    assert epochs[-1] < epochs[0] / 2, out


def test_the_cnn_learns_the_digits(tmp_path):
    out = _run(EXAMPLES / "07_cnn_digits.py", tmp_path)
    accuracies = [float(a) for a in ACCURACY.findall(out)]
    assert accuracies and accuracies[-1] > 80.0, out

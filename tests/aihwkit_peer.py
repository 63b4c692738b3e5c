"""aihwkit as a peer of the test suite (spec/verify.md §1; README, "aihwkit beside refsim").

aihwkit lives in its own environment; tests talk to it through refsim's aihwkit adapter script,
one long-running process in the line mode (``refsim.verify.aihwkit_adapter``). Its Python is
``$REFSIM_AIHWKIT_PYTHON``, else ``~/.venvs/aihwkit/bin/python`` (the path of
../shared/reference/aihwkit-setup.md). Tests that use the ``aihwkit`` fixture are skipped when
neither runs aihwkit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

DEFAULT_PYTHON = Path.home() / ".venvs" / "aihwkit" / "bin" / "python"


def aihwkit_python() -> Optional[str]:
    """The Python of aihwkit's environment, or None when there is none here."""
    python = os.environ.get("REFSIM_AIHWKIT_PYTHON") or str(DEFAULT_PYTHON)
    return python if os.path.isfile(python) and os.access(python, os.X_OK) else None


def start(dtype: str = "float32") -> Any:
    """A line-mode adapter to aihwkit's float32 tiles (skips the test when aihwkit is absent)."""
    from refsim import verify

    python = aihwkit_python()
    if python is None:
        pytest.skip("aihwkit is not installed beside refsim ($REFSIM_AIHWKIT_PYTHON)")
    try:
        return verify.aihwkit_adapter(python, dtype=dtype)
    except ValueError as err:
        pytest.skip(f"aihwkit not usable: {err}")


def f32(a: Any) -> np.ndarray:
    """``a`` rounded to float32 and widened back: the values a float32 tile holds exactly."""
    return np.asarray(a, dtype=np.float64).astype(np.float32).astype(np.float64)


def run_script(source: str, timeout: float = 180.0) -> Any:
    """Run ``source`` with aihwkit's Python (skips the test when there is none) and return the
    JSON value of the last line it prints: for sequences of calls on one aihwkit tile, which the
    one-request-per-tile adapter protocol cannot express. The script starts with warnings off."""
    import json
    import subprocess

    python = aihwkit_python()
    if python is None:
        pytest.skip("aihwkit is not installed beside refsim ($REFSIM_AIHWKIT_PYTHON)")
    prelude = "import warnings\nwarnings.filterwarnings('ignore')\n"
    proc = subprocess.run([python, "-c", prelude + source], capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        raise AssertionError(f"the aihwkit script failed ({proc.returncode}): {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])

"""Command adapters of ``refsim verify`` for other simulators (spec/verify.md §1).

Each module here is a standalone script, run by ``refsim verify`` with the Python of the other
simulator's environment; it imports only the standard library, numpy, torch and that simulator,
never refsim. :func:`script_path` gives the installed path of one.
"""

from __future__ import annotations

import pathlib


def script_path(name: str) -> str:
    """The installed path of the adapter script ``NAME.py`` of this package."""
    return str(pathlib.Path(__file__).resolve().parent / f"{name}.py")

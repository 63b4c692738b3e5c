"""Helpers shared by the golden-vector tests (tests/test_io_golden.py, tests/test_update_golden.py)."""

import importlib.util
import sys

import pytest


def load_script(path, name: str):
    """A vector builder script of spec/vectors/ (not part of the package), imported once."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def fast_missing() -> str:
    """Why the fast backend cannot be tested ('' when it can)."""
    try:
        import refsim_fast  # noqa: F401  (conftest requires it unless REFSIM_ALLOW_NO_FAST=1)
    except ImportError as err:
        return f"refsim_fast is not importable ({err})"
    return ""


def backends() -> list:
    """The backends a golden vector is replayed on: the reference, and the fast one unless it is
    missing (then skipped with the reason)."""
    reason = fast_missing()
    return ["reference", pytest.param("fast", marks=pytest.mark.skipif(bool(reason), reason=reason))]

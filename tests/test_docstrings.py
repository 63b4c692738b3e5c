"""The numpydoc ``Examples`` of refsim's and refsim_fast's modules run (as the README's code
blocks do in test_readme.py), so that documentation cannot drift from the code."""

import doctest
import importlib
import pkgutil

import pytest

import refsim

_SKIP = {"refsim.__main__"}


def _modules():
    names = [m.name for m in pkgutil.walk_packages(refsim.__path__, "refsim.")
             if m.name not in _SKIP]
    return ["refsim"] + names + ["refsim_fast.io", "refsim_fast.pool", "refsim_fast.inference",
                                 "refsim_fast.rng", "refsim_fast.update"]


@pytest.mark.parametrize("name", _modules())
def test_module_examples_run(name):
    try:
        module = importlib.import_module(name)
    except ImportError as err:  # an optional extra (torch, dask, matplotlib, refsim_fast)
        pytest.skip(f"{name}: {err}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed"

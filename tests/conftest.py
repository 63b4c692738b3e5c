"""Shared test setup: Hypothesis profiles, array namespaces, and the compiled-backend check.

Profiles: ``dev`` (default: quick) and ``ci`` (fixed example budget, no deadline, derandomized;
selected by HYPOTHESIS_PROFILE=ci or when CI is set).
"""

import os
import pathlib

try:  # before torch (imported below): refsim_fast sets the OpenMP wait policy (spec/torch.md §T4)
    import refsim_fast  # noqa: F401
except ImportError:
    pass

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev",
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_report_header(config):
    import refsim

    return [
        f"refsim {refsim.__version__} from {pathlib.Path(refsim.__file__).parent}",
        f"refsim_fast: {refsim.fast_info()}",
        f"hypothesis profile: {settings._current_profile}",
    ]


def pytest_configure(config):
    """The compiled backend must be present: otherwise every agreement test would be skipped and
    the suite would pass without testing it. Set REFSIM_ALLOW_NO_FAST=1 to test the reference
    alone (e.g. on a machine without a compiler)."""
    import refsim

    facts = refsim.fast_info()
    if not facts["available"] and os.environ.get("REFSIM_ALLOW_NO_FAST") != "1":
        raise pytest.UsageError(
            "refsim_fast is not importable ({}); install the package with `pip install .` and run "
            "pytest from the installed environment, or set REFSIM_ALLOW_NO_FAST=1".format(
                facts.get("reason")
            )
        )


def _namespaces():
    import numpy

    found = [pytest.param(numpy, id="numpy")]
    for name in ("array_api_strict", "torch", "cupy"):
        try:
            module = __import__(name)
        except ImportError:
            found.append(pytest.param(None, id=name, marks=pytest.mark.skip(f"{name} missing")))
            continue
        found.append(pytest.param(module, id=name))
    return found


NAMESPACES = _namespaces()
#: The namespaces an agreement test compares with its numpy reference run: every one but numpy
#: (numpy against numpy through the same code would compare nothing).
OTHER_NAMESPACES = NAMESPACES[1:]


@pytest.fixture(params=NAMESPACES)
def xp(request):
    """Each array namespace refsim supports (numpy, array-api-strict, torch, cupy)."""
    return request.param


@pytest.fixture
def fast():
    """The compiled backend (skipped only when REFSIM_ALLOW_NO_FAST=1 and it is missing)."""
    return pytest.importorskip("refsim_fast")


def to_numpy(a):
    """Any supported array as a numpy array (host copy)."""
    import numpy

    if hasattr(a, "get"):  # cupy
        return a.get()
    if type(a).__module__.startswith("torch"):
        return a.detach().cpu().numpy()
    if type(a).__module__.startswith("array_api_strict"):
        return numpy.from_dlpack(a)
    return numpy.asarray(a)


def assert_same_state(a, b, where="state"):
    """Two state_dicts (nested dicts, lists, arrays, numbers) are identical: arrays bit for bit,
    everything else equal; ``where`` names the first difference."""
    import numpy

    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{k}]")
    elif hasattr(a, "shape"):
        numpy.testing.assert_array_equal(to_numpy(a), to_numpy(b), err_msg=where)
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"

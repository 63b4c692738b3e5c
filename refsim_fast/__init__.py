"""refsim_fast: optional Cython/OpenMP kernels for refsim's hot stages.

Each module mirrors a reference module of refsim with the same function names and arguments
(numpy arrays in and out, plus ``num_threads``); results agree with the reference under the
contract of spec/agreement.md and do not depend on the thread count.
"""

import os

# Idle OpenMP threads of libgomp spin by default and steal the cores that BLAS needs between two
# parallel kernels (measured: the 2-thread forward pass twice as slow); let them sleep instead.
# Set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    from . import _rng
except ImportError as err:  # the source tree, or a failed build
    raise ImportError(
        "refsim_fast's compiled extension is missing: this is probably the source directory "
        "(run from outside it after `pip install .`), or the build failed"
    ) from err
from . import rng

__all__ = ["info", "openmp_enabled", "max_threads", "rng"]


def openmp_enabled() -> bool:
    """True if the extension was compiled with OpenMP (otherwise every kernel runs serially)."""
    return _rng.openmp_enabled()


def max_threads() -> int:
    """Threads a kernel uses when ``num_threads`` is not given (OMP_NUM_THREADS, else cores)."""
    return _rng.max_threads()


def info() -> dict:
    """Build facts: OpenMP on or off, and the default thread count."""
    return {"openmp": openmp_enabled(), "max_threads": max_threads()}

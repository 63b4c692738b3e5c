"""refsim_fast: optional Cython/OpenMP kernels for refsim's hot stages.

Each module mirrors a reference module of refsim with the same function names and arguments
(numpy arrays in and out, plus ``num_threads``); results agree with the reference under the
contract of spec/agreement.md and do not depend on the thread count.
"""

import os
import sys


def _openmp_loaded_before() -> bool:
    """Whether a GNU OpenMP runtime (libgomp) is already in this process (Linux: its memory map)
    while nobody chose a wait policy: then it started with its default busy-waiting threads and
    refsim_fast, which shares it, cannot make them sleep (torch imported before refsim_fast)."""
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return any("/libgomp" in line for line in maps)
    except OSError:
        return False


#: True when the OpenMP runtime refsim_fast uses was started by another library (typically torch,
#: imported first) with its default busy-waiting threads. It is a fact for ``refsim info``; the
#: kernels keep every thread. Measured on 2 idle cores (benchmarks/bench_torch.py), a torch-first
#: process is then as fast as one without torch (a pulsed 512→512 step 35 vs 36 ms), while a
#: one-thread fallback cost 1.9× (68 ms). When other processes share the cores, spinning threads
#: can slow torch's work and refsim's several-fold: start Python with OMP_WAIT_POLICY=PASSIVE
#: (or import refsim before torch). The numbers are the same either way (spec/agreement.md rule 5).
SPINNING_OPENMP = _openmp_loaded_before()

# Idle OpenMP threads of libgomp spin by default and steal the cores that BLAS needs between two
# parallel kernels (measured: the 2-thread forward pass twice as slow); let them sleep instead.
# Set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: glibc's malloc parameters refsim_fast sets at import (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD).
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20


def _keep_freed_memory() -> dict:
    """Let glibc's malloc keep freed memory for the next arrays instead of handing it back to
    the kernel at once, so that the megabyte-sized temporaries of a pass do not fault their
    pages in afresh on every call.

    With glibc's defaults an array of more than 128 KiB (later: of more than the largest one
    freed so far) is mapped on its own, and free space above 2× that at the top of the heap is
    returned: the temporaries of programming and drifting a 512² inference tile were about 12 MB
    of fresh pages, 3000 page faults per program+drift (``resource.getrusage``), 1–3 ms of its
    12–17 ms on this project's 2-core VM. Here: arrays below ``MMAP_THRESHOLD`` (32 MiB, glibc's
    largest) come from the heap and up to ``TRIM_THRESHOLD`` (256 MiB) of free space stays with
    the process. The cost: the process keeps up to that much freed memory. Nothing is changed
    where the environment already sets malloc parameters (``MALLOC_*_``, ``GLIBC_TUNABLES``
    with ``glibc.malloc``), with ``REFSIM_KEEP_FREED_MEMORY=0``, or without glibc. Numbers do
    not depend on it. Returns what was done, for :func:`info`."""
    if os.environ.get("REFSIM_KEEP_FREED_MEMORY", "1") == "0":
        return {"kept_freed_memory": False, "reason": "REFSIM_KEEP_FREED_MEMORY=0"}
    if any(key.startswith("MALLOC_") and key.endswith("_") for key in os.environ) or \
            "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return {"kept_freed_memory": False, "reason": "malloc parameters set by the environment"}
    if not sys.platform.startswith("linux"):
        return {"kept_freed_memory": False, "reason": "not Linux"}
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return {"kept_freed_memory": False, "reason": "not glibc"}
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return {"kept_freed_memory": False, "reason": "no mallopt"}
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    if mallopt(m_mmap_threshold, MMAP_THRESHOLD) != 1 or \
            mallopt(m_trim_threshold, TRIM_THRESHOLD) != 1:  # another allocator (e.g. ASan's)
        return {"kept_freed_memory": False, "reason": "mallopt refused"}
    return {"kept_freed_memory": True, "mmap_threshold": MMAP_THRESHOLD,
            "trim_threshold": TRIM_THRESHOLD}


#: What :func:`_keep_freed_memory` did at import (``refsim info`` shows it).
ALLOCATOR = _keep_freed_memory()

try:
    from . import _rng
except ImportError as err:  # the source tree, or a failed build
    raise ImportError(
        "refsim_fast's compiled extension is missing: this is probably the source directory "
        "(run from outside it after `pip install .`), or the build failed"
    ) from err
from . import rng  # noqa: E402  (after the wait policy above)

__all__ = ["info", "openmp_enabled", "max_threads", "rng"]


def openmp_enabled() -> bool:
    """True if the extension was compiled with OpenMP (otherwise every kernel runs serially)."""
    return _rng.openmp_enabled()


def max_threads() -> int:
    """Threads a kernel uses when ``num_threads`` is not given (OMP_NUM_THREADS, else cores)."""
    return _rng.max_threads()


def info() -> dict:
    """Build facts: OpenMP on or off, the default thread count, whether another library
    started the OpenMP runtime with busy-waiting threads (:data:`SPINNING_OPENMP`), and the
    malloc setting made at import (:data:`ALLOCATOR`)."""
    return {"openmp": openmp_enabled(), "max_threads": max_threads(),
            "spinning_openmp": SPINNING_OPENMP, "allocator": dict(ALLOCATOR)}

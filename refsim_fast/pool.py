"""Python threads for numpy work that releases the GIL: the row blocks of the IO stage's matrix
products (refsim.stages.io.product) and the element-wise numpy passes of the inference stage.

The blocks are fixed by the caller from the shape alone, so results do not depend on how many
threads take them (spec/agreement.md rule 5).

Examples
--------
>>> import numpy as np
>>> from refsim_fast.pool import parallel, element_blocks
>>> x = np.arange(10.0)
>>> parallel(lambda b: np.multiply(x[b], 2.0, out=x[b]), element_blocks(x.size, 4), threads=2)
>>> bool(np.array_equal(x, 2.0 * np.arange(10.0)))
True
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from typing import Any, Callable, List

__all__ = ["element_blocks", "parallel"]

_POOL: Any = None
_POOL_LOCK = threading.Lock()


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: start a new pool when needed."""
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def parallel(one: Callable[[slice], Any], blocks: List[slice], threads: int) -> None:
    """``one(block)`` for every block, on up to ``threads`` Python threads: the calling thread
    and ``threads − 1`` of the pool take the next block until none is left (in order on the
    calling thread when one thread suffices). The first error is raised once all have
    stopped."""
    global _POOL
    threads = min(threads, len(blocks))
    if threads <= 1:
        for block in blocks:
            one(block)
        return
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < threads - 1:  # more threads were asked for
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = concurrent.futures.ThreadPoolExecutor(max_workers=threads - 1,
                                                         thread_name_prefix="refsim-pool")
        pool = _POOL
    todo = iter(blocks)
    take = threading.Lock()
    failed: List[BaseException] = []

    def work() -> None:
        while not failed:
            with take:
                block = next(todo, None)
            if block is None:
                return
            try:
                one(block)
            except BaseException as err:  # noqa: BLE001 (re-raised by the caller)
                failed.append(err)

    helpers = [pool.submit(work) for _ in range(threads - 1)]
    work()
    for helper in helpers:
        helper.result()
    if failed:
        raise failed[0]


def element_blocks(count: int, size: int) -> List[slice]:
    """Consecutive slices of ``size`` elements covering ``range(count)`` (the last shorter)."""
    return [slice(start, min(start + size, count)) for start in range(0, count, size)]

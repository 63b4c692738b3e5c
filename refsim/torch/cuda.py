"""aihwkit's ``aihwkit.simulator.rpu_base.cuda`` for ported scripts (spec/torch.md §T5)."""

from __future__ import annotations

import torch


def is_compiled() -> bool:
    """Whether CUDA tensors can be used: torch's CUDA is available (refsim runs its array-API
    reference on the GPU; there is nothing to compile)."""
    return bool(torch.cuda.is_available())

"""The precision rule (spec/agreement.md rule 7): a tile computes its derived scalars (DAC/ADC
steps, input and output scales, pulse-train scales, probabilities, counts, learning-rate
products) in its own dtype, in aihwkit's order of operations. A float32 tile then rounds every
intermediate where aihwkit's float32 C++ core rounds it, so deterministic float32 results are
bit-exact with aihwkit (rint ties fall on the same side); a float64 tile stays float64.

The scalars are numpy scalars of :func:`real` (numpy is refsim's core dependency); a result
handed to an array of any namespace is a Python float holding the dtype's value exactly.

Examples
--------
>>> import numpy as np
>>> from refsim.precision import real
>>> R = real(np.float32)
>>> float(R(1 / 510) * (R(2) * R(12))) == float(np.float32(24 / 510))
False
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

__all__ = ["dtype_name", "real"]


def dtype_name(dtype: Any) -> str:
    """'float32' for numpy's float32 type or dtype, torch.float32, cupy's and array-api-strict's
    float32, ..."""
    return (getattr(dtype, "__name__", None) or str(dtype)).rsplit(".", 1)[-1]


#: id(dtype) -> (dtype, scalar type); keyed by identity, since comparing dtypes of different
#: namespaces warns (array-api-strict), and the dtype is kept so its id stays unique.
_REAL: Dict[int, Tuple[Any, type]] = {}


def real(dtype: Any) -> type:
    """numpy's scalar type of the tile dtype ``dtype`` (any namespace): ``np.float32`` for
    float32, ``np.float64`` otherwise."""
    entry = _REAL.get(id(dtype))
    if entry is not None and entry[0] is dtype:
        return entry[1]
    kind = np.float32 if dtype_name(dtype) == "float32" else np.float64
    _REAL[id(dtype)] = (dtype, kind)
    return kind

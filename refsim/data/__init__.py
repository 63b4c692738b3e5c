"""Small data sets shipped with refsim (see README.md in this folder for sources and licences).

* :func:`load_digits` -- the 8×8 handwritten digits (1797 images of 10 classes), split into a fixed
  training set (the first 1500 images) and test set (the last 297).
"""

from __future__ import annotations

import pathlib
from typing import Any, NamedTuple

import numpy as np

from refsim import rng

__all__ = ["DIGITS_TRAIN", "Digits", "load_digits"]

_HERE = pathlib.Path(__file__).resolve().parent

#: Number of images in the training part of :func:`load_digits` (the rest is the test part).
DIGITS_TRAIN = 1500


class Digits(NamedTuple):
    """The digits, as arrays of one namespace: images flattened to 64 features in [0, 1]
    (pixel value / 16) and integer labels 0..9 (int64)."""

    x_train: Any  #: (1500, 64) float
    y_train: Any  #: (1500,) int64
    x_test: Any   #: (297, 64) float
    y_test: Any   #: (297,) int64


def _raw() -> tuple:
    with np.load(_HERE / "digits.npz", allow_pickle=False) as data:
        images, labels = data["images"], data["labels"]
    if images.shape != (1797, 8, 8) or labels.shape != (1797,):
        raise RuntimeError(f"{_HERE / 'digits.npz'}: unexpected shapes {images.shape}, "
                           f"{labels.shape}")
    return images, labels


def load_digits(*, xp: Any = None, dtype: Any = None, device: Any = None) -> Digits:
    """The 8×8 handwritten digits of the UCI "Optical Recognition of Handwritten Digits" test set
    (the data of scikit-learn's ``load_digits``; CC BY 4.0, see refsim/data/README.md).

    The split is fixed and by position: images 0..1499 (in the file's order) train, 1500..1796
    test. Features are the 64 pixel counts (0..16) divided by 16, row by row; labels are int64.

    Args:
        xp: the array namespace of the result (numpy by default; torch, array-api-strict, ...).
        dtype: the float dtype of the features (float64 by default).
        device: the device of the arrays (the namespace's default when None).
    """
    xp = rng._namespace(xp)
    dtype = xp.float64 if dtype is None else dtype
    if dtype not in (xp.float32, xp.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}")
    images, labels = _raw()
    x = images.reshape(1797, 64).astype(np.float64) / 16.0
    y = labels.astype(np.int64)

    def arr(a: np.ndarray, dt: Any) -> Any:
        return xp.asarray(a, dtype=dt, device=device)

    n = DIGITS_TRAIN
    return Digits(arr(x[:n], dtype), arr(y[:n], xp.int64), arr(x[n:], dtype), arr(y[n:], xp.int64))

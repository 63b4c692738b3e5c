"""Small data sets shipped with refsim (see README.md in this folder for sources and licences).

* :func:`load_digits` -- the 8×8 handwritten digits (1797 images of 10 classes) with a fixed,
  seeded split into 1500 training and 297 test images.
"""

from __future__ import annotations

import pathlib
from typing import Any, NamedTuple, Tuple

import numpy as np

from refsim import rng

__all__ = ["DIGITS_TEST", "Digits", "digits_split", "load_digits"]

_HERE = pathlib.Path(__file__).resolve().parent

#: Number of images in the test part of :func:`load_digits` (the other 1500 train).
DIGITS_TEST = 297
_N = 1797
#: Smallest per-feature scale of the standardized digits (one pixel count, 1/16).
_MIN_STD = 1.0 / 16.0


class Digits(NamedTuple):
    """The digits, as arrays of one namespace: images flattened to 64 features and integer
    labels 0..9 (int64)."""

    x_train: Any  #: (1500, 64) float
    y_train: Any  #: (1500,) int64
    x_test: Any   #: (297, 64) float
    y_test: Any   #: (297,) int64


def _raw() -> Tuple[np.ndarray, np.ndarray]:
    with np.load(_HERE / "digits.npz", allow_pickle=False) as data:
        images, labels = data["images"], data["labels"]
    if images.shape != (_N, 8, 8) or labels.shape != (_N,):
        raise RuntimeError(f"{_HERE / 'digits.npz'}: unexpected shapes {images.shape}, "
                           f"{labels.shape}")
    return images, labels


def digits_split() -> Tuple[np.ndarray, np.ndarray]:
    """The fixed split of the 1797 images: ``(train_index, test_index)``, numpy int64 arrays in
    increasing order. The test images are the 297 with the smallest keys ``(word_i, i)``, word_i
    being word ``i`` of call 0 of stream ``data.digits_split`` with seed 0 (spec/rng.md), so the
    split is a uniformly random one, the same everywhere."""
    words = np.asarray(rng.random_words(0, "data.digits_split", 0, 0, _N), dtype=np.int64)
    order = np.argsort(words * _N + np.arange(_N, dtype=np.int64), kind="stable")
    return np.sort(order[DIGITS_TEST:]), np.sort(order[:DIGITS_TEST])


def load_digits(*, standardize: bool = False, xp: Any = None, dtype: Any = None,
                device: Any = None) -> Digits:
    """The 8×8 handwritten digits of the UCI "Optical Recognition of Handwritten Digits" test set
    (the data of scikit-learn's ``load_digits``; CC BY 4.0, see refsim/data/README.md).

    The split is fixed (:func:`digits_split`: 1500 training and 297 test images drawn at random
    once, each part in the file's order). Features are the 64 pixel counts (0..16) divided by
    16, row by row, so in [0, 1]; labels are int64.

    Args:
        standardize: if True, each feature is shifted and scaled by the training part's mean and
            standard deviation, ``(x − mean)/max(std, 1/16)`` (the floor keeps nearly constant
            border pixels from being blown up), for both parts.
        xp: the array namespace of the result (numpy by default; torch, array-api-strict, ...).
        dtype: the float dtype of the features (float64 by default).
        device: the device of the arrays (the namespace's default when None).
    """
    if not isinstance(standardize, bool):
        raise TypeError(f"standardize: expected a bool, got {type(standardize).__name__}")
    xp = rng._namespace(xp)
    dtype = xp.float64 if dtype is None else dtype
    if dtype not in (xp.float32, xp.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}")
    images, labels = _raw()
    x = images.reshape(_N, 64).astype(np.float64) / 16.0
    y = labels.astype(np.int64)
    train, test = digits_split()
    x_train, x_test = x[train], x[test]
    if standardize:
        mean, std = x_train.mean(axis=0), np.maximum(x_train.std(axis=0), _MIN_STD)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std

    def arr(a: np.ndarray, dt: Any) -> Any:
        return xp.asarray(a, dtype=dt, device=device)

    return Digits(arr(x_train, dtype), arr(y[train], xp.int64), arr(x_test, dtype),
                  arr(y[test], xp.int64))

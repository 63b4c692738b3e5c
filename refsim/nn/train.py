"""The training loop: SGD steps, a reproducible epoch and the accuracy."""

from __future__ import annotations

import numbers
from typing import Any, Callable, Optional, Tuple

import array_api_compat
import numpy as np

from refsim import rng
from refsim.nn.losses import cross_entropy
from refsim.nn.modules import Module, check_lr, unchanged_on_error

__all__ = ["SGD", "accuracy", "permutation", "train_epoch"]


class SGD:
    """Plain SGD on a refsim.nn model: :meth:`step` applies the gradients of the last backward
    pass (``model.update(lr)``, each tile ``W ← W − lr·dᵀx``, digital biases ``b ← b − lr·Σd``)
    and then the post-update operations (``model.post_update_step()``), as aihwkit's
    AnalogSGD does."""

    def __init__(self, model: Module, lr: float) -> None:
        if not isinstance(model, Module):
            raise TypeError(f"model: expected a refsim.nn module, got {type(model).__name__}")
        self.model, self.lr = model, check_lr(lr)

    def step(self) -> None:
        with unchanged_on_error(self.model):
            self.model.update(self.lr)
            self.model.post_update_step()


def _int(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or \
            not lo <= int(value) <= hi:
        raise ValueError(f"{name}: expected an integer in [{lo}, {hi}], got {value!r}")
    return int(value)


def permutation(n: int, seed: int, epoch: int = 0) -> np.ndarray:
    """A permutation of ``range(n)`` (numpy int64) that depends only on ``(seed, epoch)``: the
    indices sorted by word ``i`` of call ``epoch`` of stream ``nn.shuffle`` (ties, which are
    rare, by index), so it is the same on every platform and namespace."""
    n = _int(n, "n", 0, 2**31 - 1)
    seed = _int(seed, "seed", 0, rng.MAX_SEED)
    epoch = _int(epoch, "epoch", 0, rng.MAX_CALL)
    words = np.asarray(rng.random_words(seed, "nn.shuffle", epoch, 0, n), dtype=np.int64)
    keys = words * n + np.arange(n, dtype=np.int64)  # < 2**63: unique, ties by index
    return np.argsort(keys, kind="stable")


def _data(x: Any, y: Any) -> Tuple[Any, int]:
    try:
        xp = array_api_compat.array_namespace(x, y)
    except TypeError as err:
        raise TypeError(f"x, y: expected arrays of one namespace ({err})") from None
    if x.ndim != 2 or y.ndim < 1 or y.shape[0] != x.shape[0] or x.shape[0] < 1:
        raise ValueError(f"x, y: expected x (n, features) and y (n, ...) with n >= 1, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    return xp, int(x.shape[0])


def train_epoch(model: Module, x: Any, y: Any, lr: float, batch_size: int, rng_seed: int, *,
                epoch: int = 0, loss: Callable[[Any, Any], Tuple[float, Any]] = cross_entropy,
                progress: Optional[Callable[[int, int], None]] = None) -> float:
    """One epoch of mini-batch SGD over ``(x, y)``; returns the mean loss per sample.

    The samples are visited in the order :func:`permutation` ``(n, rng_seed, epoch)`` gives (pass
    the epoch number, so each epoch has its own order and a resumed run the same one), in
    batches of ``batch_size`` (the last one smaller when ``batch_size`` does not divide n). Each
    batch: ``out = model.forward(xb)``, ``(l, g) = loss(out, yb)``, ``model.backward(g)``,
    ``model.update(lr)``, ``model.post_update_step()``. ``progress(done, n)``, if given, is
    called after each batch.
    """
    lr = check_lr(lr)
    xp, n = _data(x, y)
    batch_size = _int(batch_size, "batch_size", 1, 2**31 - 1)
    order = xp.asarray(permutation(n, rng_seed, epoch), device=array_api_compat.device(x))
    opt = SGD(model, lr)
    with unchanged_on_error(model):  # an epoch completes, or the model is as before it
        return _epoch(model, opt, loss, x, y, xp, order, n, batch_size, progress)


def _epoch(model: Module, opt: SGD, loss: Callable, x: Any, y: Any, xp: Any, order: Any, n: int,
           batch_size: int, progress: Optional[Callable[[int, int], None]]) -> float:
    total = 0.0
    for start in range(0, n, batch_size):
        idx = order[start:min(start + batch_size, n)]
        xb, yb = xp.take(x, idx, axis=0), xp.take(y, idx, axis=0)
        value, grad = loss(model.forward(xb), yb)
        model.backward(grad)
        opt.step()
        total += value * int(xb.shape[0])
        if progress is not None:
            progress(min(start + batch_size, n), n)
    return total / n


def accuracy(model: Module, x: Any, y: Any, *, batch_size: int = 256) -> float:
    """The share of samples whose largest output is at the label (analog forward passes, in
    batches of ``batch_size``)."""
    xp, n = _data(x, y)
    batch_size = _int(batch_size, "batch_size", 1, 2**31 - 1)
    correct = 0
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        pred = xp.argmax(model.forward(x[start:stop, ...]), axis=1)
        correct += int(xp.sum(xp.astype(pred == xp.astype(y[start:stop], pred.dtype), xp.int64)))
    return correct / n

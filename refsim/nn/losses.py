"""Losses with their gradients: each returns ``(loss, grad)``, the loss a Python float averaged
over the batch and ``grad`` its gradient with respect to the model output (same shape, namespace
and dtype), ready for ``model.backward``."""

from __future__ import annotations

from typing import Any, Tuple

import array_api_compat

__all__ = ["LOSSES", "cross_entropy", "mse"]


def _float_2d(a: Any, name: str) -> Any:
    try:
        xp = array_api_compat.array_namespace(a)
    except TypeError:
        raise TypeError(f"{name}: expected an array, got {type(a).__name__}") from None
    if not xp.isdtype(a.dtype, "real floating"):
        raise TypeError(f"{name}: expected a float array, got {a.dtype}")
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{name}: expected shape (batch, outputs), got {tuple(a.shape)}")
    return xp


def cross_entropy(logits: Any, labels: Any) -> Tuple[float, Any]:
    """Softmax cross-entropy of ``logits`` ``(batch, classes)`` against integer ``labels``
    ``(batch,)`` in ``[0, classes)``, averaged over the batch (torch's ``cross_entropy``):
    ``loss = −mean_b log softmax(logits_b)[labels_b]``, ``grad = (softmax(logits) − onehot)/batch``.
    """
    xp = _float_2d(logits, "logits")
    batch, classes = logits.shape
    if array_api_compat.array_namespace(labels).__name__ != xp.__name__:
        raise TypeError("labels: expected an array of the logits' namespace")
    if not xp.isdtype(labels.dtype, "integral") or tuple(labels.shape) != (batch,):
        raise ValueError(f"labels: expected integer labels of shape ({batch},), got "
                         f"{labels.dtype} {tuple(labels.shape)}")
    if bool(xp.any(labels < 0)) or bool(xp.any(labels >= classes)):
        raise ValueError(f"labels: expected values in [0, {classes})")
    z = logits - xp.max(logits, axis=1, keepdims=True)
    logp = z - xp.log(xp.sum(xp.exp(z), axis=1, keepdims=True))
    classes_range = xp.arange(classes, dtype=labels.dtype, device=array_api_compat.device(labels))
    onehot = xp.astype(xp.reshape(labels, (-1, 1)) == xp.reshape(classes_range, (1, -1)),
                       logits.dtype)
    loss = -float(xp.sum(onehot * logp)) / batch
    grad = (xp.exp(logp) - onehot) / batch
    return loss, grad


def mse(output: Any, target: Any) -> Tuple[float, Any]:
    """Mean squared error over all elements (torch's ``mse_loss``, reduction 'mean'):
    ``loss = mean((output − target)²)``, ``grad = 2·(output − target)/output.size``."""
    xp = _float_2d(output, "output")
    _float_2d(target, "target")
    if tuple(target.shape) != tuple(output.shape):
        raise ValueError(f"target: expected shape {tuple(output.shape)}, got "
                         f"{tuple(target.shape)}")
    diff = output - xp.astype(target, output.dtype)
    n = output.shape[0] * output.shape[1]
    return float(xp.sum(diff * diff)) / n, diff * (2.0 / n)


#: Loss name -> function.
LOSSES = {"cross_entropy": cross_entropy, "mse": mse}

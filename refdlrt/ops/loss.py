"""Softmax cross-entropy loss (mean over the batch) and its gradient."""

from __future__ import annotations

import numpy as np

from .._checks import check_float_array, check_ndim
from ..backend import get_xp

__all__ = ["softmax_cross_entropy", "softmax_cross_entropy_backward"]


def _check_is_array(labels):
    if not hasattr(labels, "dtype") or not hasattr(labels, "shape"):
        raise TypeError(f"labels: expected an integer array, got {type(labels).__name__}")


def _check_labels(labels, N, K):  # after _check_is_array
    if np.dtype(labels.dtype).kind not in "iu":
        raise TypeError(f"labels: expected an integer dtype, got {labels.dtype}")
    if tuple(labels.shape) != (N,):
        raise ValueError(
            f"labels: expected shape ({N},) to match logits (N, K), got {tuple(labels.shape)}"
        )
    lo, hi = int(labels.min()), int(labels.max())  # one small device-to-host copy on CuPy
    if lo < 0 or hi >= K:
        raise ValueError(
            f"labels: expected values in [0, {K - 1}] for K = {K} classes, got range [{lo}, {hi}]"
        )


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) against integer class labels.

    Parameters
    ----------
    logits : array (N, K), float32 or float64, N >= 1
    labels : integer array (N,), values in [0, K)

    Returns
    -------
    loss : 0-d array of the logits' dtype and backend
    cache : (probs, labels), what :func:`softmax_cross_entropy_backward` needs.

    Notes
    -----
    With the max shift a_n = max_k z[n, k] (log-sum-exp without overflow),

        log p[n, k] = z[n, k] - a_n - log sum_j exp(z[n, j] - a_n),
        loss = -(1 / N) sum_n log p[n, labels[n]]

    (``torch.nn.functional.cross_entropy`` with ``reduction="mean"``).
    """
    check_float_array(logits, "logits")
    check_ndim(logits, 2, "logits", "N, K")
    N, K = logits.shape
    if N < 1 or K < 1:
        raise ValueError(f"logits: expected N >= 1 and K >= 1, got shape {tuple(logits.shape)}")
    _check_is_array(labels)  # before get_xp: a list gets this message, not "mix" (on CuPy)
    xp = get_xp(logits, labels)
    _check_labels(labels, N, K)
    shifted = logits - logits.max(axis=1, keepdims=True)  # N, K
    logp = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))  # N, K
    picked = xp.take_along_axis(logp, labels.reshape(N, 1), axis=1)  # N, 1
    loss = xp.asarray(-picked.mean())  # 0-d array (NumPy reductions return scalars)
    return loss, (xp.exp(logp), labels)


def softmax_cross_entropy_backward(cache, dloss=1.0):
    """Gradient of the mean softmax cross-entropy with respect to the logits.

    Parameters
    ----------
    cache : from :func:`softmax_cross_entropy`
    dloss : float or 0-d array, default 1.0
        Upstream gradient of the scalar loss (1.0 when the loss is the objective).

    Returns
    -------
    dlogits : array (N, K) of the logits' dtype

    Notes
    -----
    dlogits[n, k] = dloss * (p[n, k] - [k == labels[n]]) / N,   p = softmax(logits).
    """
    probs, labels = cache
    N, K = probs.shape
    xp = get_xp(probs, labels, dloss)
    if getattr(dloss, "ndim", 0) != 0:
        raise ValueError(f"dloss: expected a scalar, got shape {tuple(dloss.shape)}")
    onehot = (xp.arange(K).reshape(1, K) == labels.reshape(N, 1)).astype(probs.dtype)  # N, K
    scale = xp.asarray(dloss, dtype=probs.dtype) / N
    return scale * (probs - onehot)  # N, K

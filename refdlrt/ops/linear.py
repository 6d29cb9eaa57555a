"""Fully connected layer and flatten, as forward/backward pairs.

``linear_forward(x, w, b) -> (y, cache)`` computes y = x w^T + b with the weight
stored (out, in), like ``torch.nn.functional.linear``; ``linear_backward(dy, cache)``
returns (dx, dw, db). ``flatten_forward`` reshapes (N, ...) to (N, prod(...)) and
``flatten_backward`` reshapes back.
"""

from __future__ import annotations

import math

from .._checks import check_float_array, check_grad, check_ndim, check_same_dtype
from ..backend import get_xp

__all__ = ["flatten_backward", "flatten_forward", "linear_backward", "linear_forward"]


def linear_forward(x, w, b=None):
    """Affine map y = x w^T + b.

    Parameters
    ----------
    x : array (N, in), float32 or float64
    w : array (out, in), same dtype and backend as ``x``
    b : array (out,) or None

    Returns
    -------
    y : array (N, out)
    cache : (x, w, has_bias), what :func:`linear_backward` needs.

    Notes
    -----
    y[n, o] = sum_i x[n, i] w[o, i] + b[o]   (``torch.nn.functional.linear`` for 2-d x).
    """
    check_float_array(x, "x")
    check_float_array(w, "w")
    if b is not None:
        check_float_array(b, "b")
    check_same_dtype(("x", x), ("w", w), ("b", b))
    check_ndim(x, 2, "x", "N, in")
    check_ndim(w, 2, "w", "out, in")
    if x.shape[1] != w.shape[1]:
        raise ValueError(
            f"linear: x has {x.shape[1]} features but w expects {w.shape[1]}: "
            f"x shape {tuple(x.shape)}, w shape {tuple(w.shape)} (out, in)"
        )
    if b is not None and tuple(b.shape) != (w.shape[0],):
        raise ValueError(f"b: expected shape ({w.shape[0]},), got {tuple(b.shape)}")
    y = x @ w.T  # N, out
    if b is not None:
        y = y + b
    return y, (x, w, b is not None)


def linear_backward(dy, cache):
    """Gradients of y = x w^T + b.

    Returns
    -------
    dx : array (N, in)
    dw : array (out, in)
    db : array (out,), or None when the forward had no bias.

    Notes
    -----
    dx = dy w,   dw = dy^T x,   db[o] = sum_n dy[n, o].
    """
    x, w, has_bias = cache
    check_grad(dy, (x.shape[0], w.shape[0]), x.dtype)
    get_xp(dy, x)  # raises on mixed backends
    dx = dy @ w  # N, in
    dw = dy.T @ x  # out, in
    db = dy.sum(axis=0) if has_bias else None  # out
    return dx, dw, db


def flatten_forward(x):
    """Flatten every axis after the batch axis: (N, d1, ..., dk) -> (N, d1 * ... * dk).

    Returns
    -------
    y : array (N, prod(d))  (a view of ``x`` when ``x`` is contiguous)
    cache : the input shape.

    Notes
    -----
    y[n, k] = x[n, unravel(k)] with row-major (C order) unravelling, like
    ``torch.flatten(x, 1)``.
    """
    check_float_array(x, "x")
    if x.ndim < 2:
        raise ValueError(
            f"x: expected an array with >= 2 dims (N, ...), got shape {tuple(x.shape)}"
        )
    shape = tuple(x.shape)
    y = x.reshape(shape[0], math.prod(shape[1:]))  # N, prod(d)
    return y, shape


def flatten_backward(dy, cache):
    """Gradient of flatten: reshape dy (N, prod(d)) back to the input shape (N, d1, ..., dk)."""
    shape = cache
    check_float_array(dy, "dy")
    expected = (shape[0], math.prod(shape[1:]))
    if tuple(dy.shape) != expected:
        raise ValueError(f"dy: expected shape {expected}, got {tuple(dy.shape)}")
    return dy.reshape(shape)  # N, d1, ..., dk

"""ReLU as a forward/backward pair."""

from __future__ import annotations

from .._checks import check_float_array
from ..backend import get_xp
from .masked import keep_where

__all__ = ["relu_backward", "relu_forward"]


def relu_forward(x):
    """Rectified linear unit y = max(x, 0), elementwise, any shape.

    Returns
    -------
    y : array like ``x``
    cache : (mask, dtype): the boolean mask x > 0 and the dtype of ``x``.

    Notes
    -----
    y = x * [x > 0], computed as ``maximum(x, 0)``: NaN inputs propagate (as in
    ``torch.relu``); the sign of a zero output is not specified (IEEE leaves max(-0, +0) open).
    """
    check_float_array(x, "x")
    xp = get_xp(x)
    zeros = xp.zeros(x.shape[1:], dtype=x.dtype)  # one sample: a 0-d zero takes NumPy's slow
    y = xp.maximum(x, zeros)  # scalar loop (refdlrt.ops.broadcast); same values
    return y, (x > 0, x.dtype)


def relu_backward(dy, cache):
    """Gradient of ReLU: dx = dy * [x > 0].

    Notes
    -----
    The derivative at x == 0 is taken as 0, like PyTorch. dx = where(x > 0, dy, 0), by
    :func:`~refdlrt.ops.masked.keep_where` (no branches).
    """
    mask, dtype = cache
    check_float_array(dy, "dy")
    if tuple(dy.shape) != tuple(mask.shape):
        raise ValueError(f"dy: expected shape {tuple(mask.shape)}, got {tuple(dy.shape)}")
    if dy.dtype != dtype:
        raise TypeError(f"dy: expected dtype {dtype}, got {dy.dtype}")
    return keep_where(mask, dy)

"""ReLU as a forward/backward pair."""

from __future__ import annotations

from .._checks import check_float_array
from ..backend import get_xp

__all__ = ["relu_backward", "relu_forward"]


def relu_forward(x):
    """Rectified linear unit y = max(x, 0), elementwise, any shape.

    Returns
    -------
    y : array like ``x``
    cache : (mask, dtype): the boolean mask x > 0 and the dtype of ``x``.

    Notes
    -----
    y = x * [x > 0]. NaN inputs propagate (as in ``torch.relu``).
    """
    check_float_array(x, "x")
    xp = get_xp(x)
    mask = x > 0
    y = xp.where(mask | xp.isnan(x), x, xp.zeros((), dtype=x.dtype))
    return y, (mask, x.dtype)


def relu_backward(dy, cache):
    """Gradient of ReLU: dx = dy * [x > 0].

    Notes
    -----
    The derivative at x == 0 is taken as 0, like PyTorch.
    """
    mask, dtype = cache
    check_float_array(dy, "dy")
    if tuple(dy.shape) != tuple(mask.shape):
        raise ValueError(f"dy: expected shape {tuple(mask.shape)}, got {tuple(dy.shape)}")
    if dy.dtype != dtype:
        raise TypeError(f"dy: expected dtype {dtype}, got {dy.dtype}")
    xp = get_xp(dy, mask)
    return xp.where(mask, dy, xp.zeros((), dtype=dy.dtype))

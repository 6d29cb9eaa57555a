"""2-d max and average pooling (NCHW) as forward/backward pairs.

Both are written as a loop over the kh * kw taps of the pooling window: tap (i, j)
sees the strided slice ``xpad[:, :, i::sh, j::sw]`` (cut to Ho x Wo), one entry per
output position. The backward adds into the same strided slices of a zero
gradient with ``+=``, so overlapping windows accumulate, with no scatter-add and
unchanged code on CuPy.

Geometry matches ``torch.nn.functional.max_pool2d`` / ``avg_pool2d`` with
``ceil_mode=False``, ``dilation=1`` (and ``count_include_pad=True`` for average):

    Ho = floor((H + 2 ph - kh) / sh) + 1,   Wo = floor((W + 2 pw - kw) / sw) + 1,

with 0 <= ph <= kh // 2 and 0 <= pw <= kw // 2 (torch's limit), so every window
holds at least one real input element.
"""

from __future__ import annotations

from .._checks import check_float_array, check_grad, check_ndim, pair
from ..backend import get_xp
from .masked import keep_where

__all__ = ["avgpool2d_backward", "avgpool2d_forward", "maxpool2d_backward", "maxpool2d_forward"]


def _pool_geometry(x, kernel_size, stride, padding, name):
    """Validate ``x`` and the window; return (kh, kw, sh, sw, ph, pw, Ho, Wo)."""
    check_float_array(x, "x")
    check_ndim(x, 4, "x", "N, C, H, W")
    kh, kw = pair(kernel_size, "kernel_size")
    sh, sw = (kh, kw) if stride is None else pair(stride, "stride")
    ph, pw = pair(padding, "padding")
    if kh < 1 or kw < 1:
        raise ValueError(f"{name}: kernel_size must be positive, got {(kh, kw)}")
    if sh < 1 or sw < 1:
        raise ValueError(f"{name}: stride must be positive, got {(sh, sw)}")
    if ph < 0 or pw < 0:
        raise ValueError(f"{name}: padding must be non-negative, got {(ph, pw)}")
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(
            f"{name}: padding must be at most half the kernel size, "
            f"expected padding <= {(kh // 2, kw // 2)}, got {(ph, pw)} for kernel {(kh, kw)}"
        )
    H, W = x.shape[2], x.shape[3]
    Ho = (H + 2 * ph - kh) // sh + 1
    Wo = (W + 2 * pw - kw) // sw + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(
            f"{name}: output size {(Ho, Wo)} is too small (expected >= 1) for input "
            f"{(H, W)}, kernel {(kh, kw)}, stride {(sh, sw)}, padding {(ph, pw)}"
        )
    return kh, kw, sh, sw, ph, pw, Ho, Wo


def _pad(x, ph, pw, fill):
    """x (N, C, H, W) surrounded by ``fill``: (N, C, H + 2 ph, W + 2 pw)."""
    xp = get_xp(x)
    N, C, H, W = x.shape
    if ph == 0 and pw == 0:
        return x
    xpad = xp.full((N, C, H + 2 * ph, W + 2 * pw), fill, dtype=x.dtype)  # N, C, Hp, Wp
    xpad[:, :, ph : ph + H, pw : pw + W] = x
    return xpad


def _tap(a, i, j, sh, sw, Ho, Wo):
    """Strided view of tap (i, j): a[:, :, i + sh * oh, j + sw * ow] for all (oh, ow)."""
    return a[:, :, i : i + sh * (Ho - 1) + 1 : sh, j : j + sw * (Wo - 1) + 1 : sw]  # N, C, Ho, Wo


def maxpool2d_forward(x, kernel_size, stride=None, padding=0):
    """2-d max pooling of x (N, C, H, W).

    Parameters
    ----------
    x : array (N, C, H, W), float32 or float64
    kernel_size, stride, padding : int or pair of ints
        ``stride`` defaults to ``kernel_size``; padding counts as -inf.

    Returns
    -------
    y : array (N, C, Ho, Wo)
    cache : (argmax tap index (N, C, Ho, Wo), input shape, geometry, dtype).

    Notes
    -----
    y[n, c, oh, ow] = max_{i < kh, j < kw} xpad[n, c, sh oh + i, sw ow + j],
    xpad = x padded with -inf. The recorded argmax is the first maximum in row-major
    tap order (t = i kw + j), as in torch; a NaN wins its window (the last NaN, as torch's
    ``val > maxval || isnan(val)``), so NaN propagates.
    """
    kh, kw, sh, sw, ph, pw, Ho, Wo = _pool_geometry(x, kernel_size, stride, padding, "maxpool2d")
    xp = get_xp(x)
    xpad = _pad(x, ph, pw, -xp.inf)  # N, C, Hp, Wp
    taps = [_tap(xpad, t // kw, t % kw, sh, sw, Ho, Wo) for t in range(kh * kw)]  # views
    y = taps[0].copy()  # N, C, Ho, Wo
    for tap in taps[1:]:
        xp.maximum(y, tap, out=y)  # NaN propagates
    return y, (_argmax_tap(taps, y), tuple(x.shape), (kh, kw, sh, sw, ph, pw), x.dtype)


def _argmax_tap(taps, y):
    """Per window, the first tap t with taps[t] == y (y the window maximum), or the last NaN tap
    where y is NaN: (N, C, Ho, Wo), uint8 (indices 0-255: windows of up to 256 taps), else int32.

    Branch-free (arg -= hit (arg - t), taps from last to first so that the first hit stays;
    arg > t there, so nothing wraps): ``where`` with an unpredictable mask is several times
    slower in NumPy (see :func:`~refdlrt.ops.masked.keep_where`)."""
    xp = get_xp(y)
    index = xp.uint8 if len(taps) <= 256 else xp.int32
    arg = xp.full(y.shape, len(taps) - 1, dtype=index)  # N, C, Ho, Wo
    for t in range(len(taps) - 2, -1, -1):
        hit = (taps[t] == y).view(xp.uint8)  # 1 where tap t holds the maximum
        arg -= hit * (arg - index(t))
    if bool(xp.isnan(y).any()):  # a NaN wins its window: the last one, as torch
        for t, tap in enumerate(taps):
            arg = xp.where(xp.isnan(tap), index(t), arg)
    return arg


def maxpool2d_backward(dy, cache):
    """Gradient of max pooling: each dy entry goes to its window's argmax.

    Notes
    -----
    dxpad[n, c, sh oh + i, sw ow + j] += dy[n, c, oh, ow] * [argmax(n, c, oh, ow) == (i, j)],
    summed over overlapping windows; dx is the interior of dxpad.
    """
    arg, x_shape, (kh, kw, sh, sw, ph, pw), dtype = cache
    check_grad(dy, arg.shape, dtype)
    xp = get_xp(dy, arg)
    N, C, H, W = x_shape
    Ho, Wo = arg.shape[2], arg.shape[3]
    dxpad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=dtype)  # N, C, Hp, Wp
    overlap = sh < kh or sw < kw  # else every dxpad entry is in at most one window
    for t in range(kh * kw):
        dtap = _tap(dxpad, t // kw, t % kw, sh, sw, Ho, Wo)  # N, C, Ho, Wo view
        if overlap:
            dtap += keep_where(arg == t, dy)
        else:  # disjoint slices: assigning skips reading them back
            dtap[...] = keep_where(arg == t, dy)
    return xp.ascontiguousarray(dxpad[:, :, ph : ph + H, pw : pw + W])  # N, C, H, W


def avgpool2d_forward(x, kernel_size, stride=None, padding=0):
    """2-d average pooling of x (N, C, H, W), padding counted as zeros.

    Parameters
    ----------
    x : array (N, C, H, W), float32 or float64
    kernel_size, stride, padding : int or pair of ints
        ``stride`` defaults to ``kernel_size``.

    Returns
    -------
    y : array (N, C, Ho, Wo)
    cache : (input shape, output shape, geometry, dtype).

    Notes
    -----
    y[n, c, oh, ow] = (1 / (kh kw)) sum_{i < kh, j < kw} xpad[n, c, sh oh + i, sw ow + j],
    xpad = x padded with zeros: torch's ``count_include_pad=True`` (its default).
    """
    kh, kw, sh, sw, ph, pw, Ho, Wo = _pool_geometry(x, kernel_size, stride, padding, "avgpool2d")
    xp = get_xp(x)
    xpad = _pad(x, ph, pw, 0)  # N, C, Hp, Wp
    y = xp.zeros((x.shape[0], x.shape[1], Ho, Wo), dtype=x.dtype)  # N, C, Ho, Wo
    for t in range(kh * kw):
        y += _tap(xpad, t // kw, t % kw, sh, sw, Ho, Wo)
    y /= kh * kw
    return y, (tuple(x.shape), (x.shape[0], x.shape[1], Ho, Wo), (kh, kw, sh, sw, ph, pw), x.dtype)


def avgpool2d_backward(dy, cache):
    """Gradient of average pooling.

    Notes
    -----
    dxpad[n, c, sh oh + i, sw ow + j] += dy[n, c, oh, ow] / (kh kw) for every tap (i, j),
    summed over overlapping windows; dx is the interior of dxpad.
    """
    x_shape, y_shape, (kh, kw, sh, sw, ph, pw), dtype = cache
    check_grad(dy, y_shape, dtype)
    xp = get_xp(dy)
    N, C, H, W = x_shape
    Ho, Wo = y_shape[2], y_shape[3]
    g = dy / (kh * kw)  # N, C, Ho, Wo
    dxpad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=dtype)  # N, C, Hp, Wp
    for t in range(kh * kw):
        _tap(dxpad, t // kw, t % kw, sh, sw, Ho, Wo)[...] += g
    return xp.ascontiguousarray(dxpad[:, :, ph : ph + H, pw : pw + W])  # N, C, H, W

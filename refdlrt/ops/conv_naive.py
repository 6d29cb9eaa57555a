"""Slow loop specifications of the 2-d convolution: the readable oracle the fast path in
:mod:`refdlrt.ops.conv` is tested against. Same arguments and conventions (NCHW, OIHW,
cross-correlation like ``torch.nn.functional.conv2d``)."""

from __future__ import annotations

from ..backend import get_xp
from .conv import ConvGeometry, _check_dy, _geometry

__all__ = ["conv2d_naive", "conv2d_naive_backward"]


def _pad_nchw(x, g: ConvGeometry):
    xp = get_xp(x)
    (H, W), (ph, pw) = g.in_size, g.padding
    xpad = xp.zeros((g.n, g.c_in, *g.padded_size), dtype=x.dtype)  # N, C, Hp, Wp
    xpad[:, :, ph : ph + H, pw : pw + W] = x
    return xpad


def conv2d_naive(x, w, b=None, *, stride=1, padding=0, dilation=1):
    """Slow loop specification of :func:`conv2d_forward` (same arguments, returns y only).

    Notes
    -----
    For every output pixel (oh, ow) and tap (i, j):
    y[:, :, oh, ow] += xpad[:, :, sh oh + dh i, sw ow + dw j] @ w[:, :, i, j]^T.
    """
    g = _geometry(x, w, b, stride, padding, dilation)
    xp = get_xp(x, w, b)
    (kh, kw), (sh, sw), (dh, dw), (Ho, Wo) = g.kernel, g.stride, g.dilation, g.out_size
    xpad = _pad_nchw(x, g)
    y = xp.zeros((g.n, g.c_out, Ho, Wo), dtype=x.dtype)
    for oh in range(Ho):
        for ow in range(Wo):
            for i in range(kh):
                for j in range(kw):
                    patch = xpad[:, :, sh * oh + dh * i, sw * ow + dw * j]  # N, C
                    y[:, :, oh, ow] += patch @ w[:, :, i, j].T  # N, O
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def conv2d_naive_backward(dy, x, w, b=None, *, stride=1, padding=0, dilation=1):
    """Slow loop specification of :func:`conv2d_backward`: (dx, dw, db).

    Notes
    -----
    The transpose of each loop step of :func:`conv2d_naive`:
    dxpad[:, :, r, s] += dy[:, :, oh, ow] @ w[:, :, i, j] and
    dw[:, :, i, j] += dy[:, :, oh, ow]^T @ xpad[:, :, r, s],
    with r = sh oh + dh i, s = sw ow + dw j.
    """
    g = _geometry(x, w, b, stride, padding, dilation)
    xp = get_xp(dy, x, w, b)
    _check_dy(dy, g, x.dtype)
    (kh, kw), (sh, sw), (eh, ew), (Ho, Wo) = g.kernel, g.stride, g.dilation, g.out_size
    (H, W), (ph, pw) = g.in_size, g.padding
    xpad = _pad_nchw(x, g)
    dxpad = xp.zeros_like(xpad)
    dw = xp.zeros_like(w)
    for oh in range(Ho):
        for ow in range(Wo):
            for i in range(kh):
                for j in range(kw):
                    r, s = sh * oh + eh * i, sw * ow + ew * j
                    dxpad[:, :, r, s] += dy[:, :, oh, ow] @ w[:, :, i, j]  # N, C
                    dw[:, :, i, j] += dy[:, :, oh, ow].T @ xpad[:, :, r, s]  # O, C
    db = dy.sum(axis=(0, 2, 3)) if b is not None else None
    return dxpad[:, :, ph : ph + H, pw : pw + W], dw, db

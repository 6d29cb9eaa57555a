"""A convolution with few input planes (a network's first layer) by channel-major patches.

Where a sample's patch matrix has few rows, K = C_in kh kw <= 32 (one to three input channels at
3 x 3: a first layer, and also a Tucker core or a projector's reduced convolution of so few
channels), it is
laid out channel-major, one row per (c, i, j) and one column per output pixel:

    colT[n, (c, i, j), (oh, ow)] = xpad[n, c, sh oh + dh i, sw ow + dw j]   (xpad NCHW, zero border),
    y[n] = W_mat0 colT[n],           W_mat0[o, (c, i, j)] = w[o, c, i, j]  (w reshaped, no copy),
    dW_mat0 = sum_n dy[n] colT[n]^T  (dy[n] the (C_out, Ho Wo) view of the NCHW dy).

The forward writes y in NCHW directly: the channels-innermost route (:mod:`refdlrt.ops.conv`)
ends with a transposing copy of y, the largest array of such a layer, and its shifted GEMMs
add C_out-wide rows kh kw times. Measured on this project's 2-core machine (float32, N = 64,
28 x 28, 3 x 3, padding 1, C_in = 1 -> 32): forward 4.2-4.6 -> 1.8-2.2 ms, kernel gradient
4.2-4.6 -> 2.4-2.8 ms; at K = 54 (6 -> 16 channels) the two routes were even, at K = 144 this
one lost (benchmarks/results/probes-eighth-session.txt).
"""

from __future__ import annotations

from ..backend import backend_name, get_xp
from .broadcast import channel_pattern
from .conv_patches import ConvGeometry, _batch_blocks

__all__ = ["planes_route_pays"]

MAX_PLANE_ROWS = 32  # K = C_in kh kw at most: 1 to 3 channels at 3 x 3, one channel at 5 x 5


def planes_route_pays(g: ConvGeometry, xp) -> bool:
    """True where the channel-major route is taken: NumPy, and K = C_in kh kw <= MAX_PLANE_ROWS
    (CuPy keeps its one big GEMM per batch)."""
    kh, kw = g.kernel
    return backend_name(xp) == "numpy" and g.c_in * kh * kw <= MAX_PLANE_ROWS


def _planes_into(col, xpad, g: ConvGeometry):
    """col[n, c, i, j, oh, ow] = xpad[n, c, sh oh + dh i, sw ow + dw j] for xpad (n, C, Hp, Wp)
    NCHW, in one strided copy (as :func:`refdlrt.ops.conv_patches._im2col_into`)."""
    xp = get_xp(xpad)
    (sh, sw), (dh, dw) = g.stride, g.dilation
    s0, s1, s2, s3 = xpad.strides
    windows = xp.lib.stride_tricks.as_strided(
        xpad, shape=col.shape, strides=(s0, s1, dh * s2, dw * s3, sh * s2, sw * s3)
    )  # n, C, kh, kw, Ho, Wo (read-only use)
    col[...] = windows
    return col


def plane_blocks(x, g: ConvGeometry):
    """The batch blocks of x and their channel-major patches.

    Parameters
    ----------
    x : array (N, C_in, H, W)
    g : ConvGeometry of the convolution

    Returns
    -------
    nb : int, samples per block (:func:`refdlrt.ops.conv_patches._batch_blocks`)
    blocks : list of (n0, n1)
    patches : function (n0, n1) -> colT (n1 - n0, K, Ho Wo), K = C_in kh kw,
        colT[n, (c, i, j), (oh, ow)] = xpad[n0 + n, c, sh oh + dh i, sw ow + dw j], in a buffer
        reused block after block (valid until the next call).
    """
    xp = get_xp(x)
    (kh, kw), (Hp, Wp), (Ho, Wo), (ph, pw) = g.kernel, g.padded_size, g.out_size, g.padding
    (H, W), C = g.in_size, g.c_in
    nb, blocks = _batch_blocks(g, xp, x.dtype.itemsize)
    xpad = xp.zeros((nb, C, Hp, Wp), dtype=x.dtype)  # border stays zero
    col = xp.empty((nb, C, kh, kw, Ho, Wo), dtype=x.dtype)

    def patches(n0, n1):
        n = n1 - n0
        xpad[:n, :, ph : ph + H, pw : pw + W] = x[n0:n1]
        return _planes_into(col[:n], xpad[:n], g).reshape(n, C * kh * kw, Ho * Wo)  # n, K, Ho Wo

    return nb, blocks, patches


def forward_by_planes(x, w, b, g: ConvGeometry):
    """conv2d(x, w) + b by channel-major patches, written in NCHW.

    Parameters
    ----------
    x : array (N, C_in, H, W);  w : array (C_out, C_in, kh, kw);  b : array (C_out,) or None
    g : ConvGeometry of the convolution

    Returns
    -------
    y : array (N, C_out, Ho, Wo), y[n] = W_mat0 colT[n] (+ b per channel), W_mat0 = w as
        (C_out, C_in kh kw) (module docstring).
    """
    xp = get_xp(x, w)
    O, K, (Ho, Wo) = g.c_out, g.c_in * g.kernel[0] * g.kernel[1], g.out_size
    w_mat = w.reshape(O, K)  # o, (c, i, j): w's own layout
    _, blocks, patches = plane_blocks(x, g)
    y = xp.empty((g.n, O, Ho * Wo), dtype=x.dtype)  # N, O, Ho Wo
    for n0, n1 in blocks:
        xp.matmul(w_mat, patches(n0, n1), out=y[n0:n1])  # n, O, Ho Wo
    if b is not None:
        y += channel_pattern(b, y)
    return y.reshape(g.n, O, Ho, Wo)

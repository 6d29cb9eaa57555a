"""The kernel gradient of a 2-d convolution (with or without dx), by one of four routes.

With few input planes (C_in kh kw <= 32 on NumPy, a first layer) `_select_dw_route` takes the
channel-major patches of :mod:`refdlrt.ops.conv_planes` (`_dw_by_planes`); otherwise the
smaller patch matrix: the patches of the shifted dy against x, for stride 1 when
H W C_out < Ho Wo C_in (fewer output than input channels at "same" padding;
`_dw_by_transposed_patches`), or the patches of x. Those are laid out channel-major where output
rows are wide (`_channel_major_pays`: NumPy, Wo >= 28; `_dw_by_channel_major_patches`), else
channels-innermost as the forward's (`_dw_by_patches_of_x`), and taken against dy's block copied
transposed, one GEMM a block of a quarter of the patch budget (3 MiB on NumPy), where C_out is
no larger than C_in kh kw and Ho Wo. Otherwise, and on the planes and patches-of-dy routes, the
operand that is not im2col'd is read in place, one GEMM per sample (`_product_sum`), except in
deep layers with more channels than pixels, where a transposed copy and one GEMM per block of the
whole budget keep memory bounded. The backward of
:mod:`refdlrt.ops.conv` takes the same routes (`_weight_grad`), so dw is the same with and
without dx.
"""

from __future__ import annotations

from .._checks import check_float_array, check_ndim, pair
from ..backend import backend_name, get_xp
from .conv_patches import (
    ConvGeometry,
    _batch_blocks,
    _check_dy,
    _geometry,
    _im2col_into,
    _pad_nhwc_into,
)
from .conv_planes import plane_blocks, planes_route_pays

__all__ = ["conv2d_weight_grad"]

# The patches-of-x routes' blocks take this share of the patch budget (conv_patches._BLOCK_BYTES):
# 3 MiB of their own patches and dy copy on NumPy. Measured (float32, 2 threads, N = 64 unless
# said, 3 x 3, padding 1; ms by samples per block), channel-major: 32 -> 32 at 28 x 28
# 16.6 / 15.8 / 16.0 / 16.9 at 2 / 3 / 4 / 6 (3 taken); N = 128, 64 -> 64 at 32 x 32
# 125 / 133 / 145 at 1 / 2 / 4 (1); channels-innermost: 64 -> 64 at 14 x 14 9.1-12.5 /
# 9.6-12.3 / 10.3-10.4 at 6 / 8 / 13 (6), 32 -> 64 at 14 x 14 5.5-6.4 / 4.8-6.1 / 4.7-5.9 (13).
_BLOCK_SHARE = 0.25
# The channel-major patches' copy runs over rows of Wo numbers; below this width the
# channels-innermost patches of x (runs of kw C_in, the same one GEMM a block) are as fast or
# faster. Alternated, 4 rounds, float32, 3 x 3, padding 1 (channel-major / channels-innermost):
# Wo = 32 0.74-0.93x (N = 64 and 128, 16-64 channels), 56 0.78x, 28 0.94-0.99x, 24 1.07-1.12x,
# 14-16 1.16-1.22x.
_CHANNEL_MAJOR_MIN_WIDTH = 28


def _product_sum(nb: int, A: int, P: int, K: int, dtype, xp):
    """(add, total): ``add(a, col)`` adds sum_n a[n] @ col[n] of one batch block to ``total``
    (A, K); a (n, A, P) is a view of an NCHW activation, col (n, P, K) its partner's patches.

    One GEMM per sample, a read in place, while a sample's product (A x K) is no larger than
    its patches (P x K); else (many channels on few pixels, as in deep layers) a^T is copied
    and the block is one GEMM, so that no per-sample product larger than the patch matrix is
    ever held (the block budget of :func:`_batch_blocks` bounds both).
    """
    total = xp.zeros((A, K), dtype=dtype)
    if A <= P:
        part = xp.empty((nb, A, K), dtype=dtype)

        def add(a, col):
            n = a.shape[0]
            xp.matmul(a, col, out=part[:n])  # n, A, K
            total[...] += part[:n].sum(axis=0)
    else:
        a_t, part = xp.empty((nb, P, A), dtype=dtype), xp.empty((A, K), dtype=dtype)

        def add(a, col):
            n = a.shape[0]
            a_t[:n] = a.transpose(0, 2, 1)  # n, P, A
            xp.matmul(a_t[:n].reshape(n * P, A).T, col.reshape(n * P, K), out=part)  # A, K
            total[...] += part

    return add, total


def _block_planes_into(colT, xpad, g: ConvGeometry):
    """colT[c, i, j, n, oh, ow] = xpad[c, n, sh oh + dh i, sw ow + dw j] for xpad (C, n, Hp, Wp),
    a block of samples channel-major, in one strided copy (as
    :func:`refdlrt.ops.conv_patches._im2col_into`)."""
    xp = get_xp(xpad)
    (sh, sw), (dh, dw) = g.stride, g.dilation
    s0, s1, s2, s3 = xpad.strides
    windows = xp.lib.stride_tricks.as_strided(
        xpad, shape=colT.shape, strides=(s0, dh * s2, dw * s3, s1, sh * s2, sw * s3)
    )  # C, kh, kw, n, Ho, Wo (read-only use)
    colT[...] = windows
    return colT


def _one_gemm_blocks(g: ConvGeometry, xp, itemsize: int):
    """Batch blocks of the patches-of-x routes (one GEMM a block): samples whose patches and dy
    copy ((C_in kh kw + C_out) Ho Wo numbers each) fill ``_BLOCK_SHARE`` of the patch budget."""
    (kh, kw), (Ho, Wo) = g.kernel, g.out_size
    return _batch_blocks(g, xp, itemsize, share=_BLOCK_SHARE,
                         sample_bytes=(g.c_in * kh * kw + g.c_out) * Ho * Wo * itemsize)


def _channel_major_pays(g: ConvGeometry, xp) -> bool:
    """True where :func:`_dw_by_channel_major_patches` is taken for the patches of x: NumPy,
    output rows of at least ``_CHANNEL_MAJOR_MIN_WIDTH``, and dy's transposed copy no larger
    than the patches (C_out <= C_in kh kw; a review measured 4 -> 256 channels at 32 x 32 1.37x
    slower than the channels-innermost patches with dy read in place). CuPy keeps the
    channels-innermost route."""
    kh, kw = g.kernel
    return (backend_name(xp) == "numpy" and g.out_size[1] >= _CHANNEL_MAJOR_MIN_WIDTH
            and g.c_out <= g.c_in * kh * kw)


def _dw_by_channel_major_patches(dy, x, g: ConvGeometry):
    """dw from the patches of x, laid out channel-major over a block of samples: one GEMM a block.

    Notes
    -----
    For a block of samples b, with xpad_b (C_in, n, Hp, Wp) the block channel-major and padded,

        colT_b[(c, i, j), (n, oh, ow)] = xpad_b[c, n, sh oh + dh i, sw ow + dw j],
        dY_b[o, (n, oh, ow)] = dy[n, o, oh, ow]          (a transposing copy of dy's block),
        dW_mat0 = sum_b colT_b dY_b^T,   dw[o, c, i, j] = dW_mat0[(c, i, j), o].

    Both factors hold the summed axis (n, oh, ow) contiguous, the layout in which OpenBLAS runs
    this long, thin product fastest here. Blocks hold about a quarter of the other routes'
    patch budget (3 MiB of patches and dy copy on NumPy). Against the channels-innermost patches
    with one GEMM per sample (the patches-of-x route before the eleventh session), float32, N = 64,
    3 x 3, padding 1 (``benchmarks/ab_weight_grad.py``): 32 -> 32 channels at 28 x 28
    0.61-0.86x, N = 128, 64 -> 64 at 32 x 32 0.68-0.76x; against :func:`_dw_by_patches_of_x` as
    it is now (one GEMM a block too), see ``_CHANNEL_MAJOR_MIN_WIDTH``.
    """
    xp = get_xp(dy, x)
    (kh, kw), (Hp, Wp), (Ho, Wo), (ph, pw) = g.kernel, g.padded_size, g.out_size, g.padding
    (H, W), C, O, P = g.in_size, g.c_in, g.c_out, g.out_size[0] * g.out_size[1]
    K = C * kh * kw
    nb, blocks = _one_gemm_blocks(g, xp, x.dtype.itemsize)
    flat = [xp.zeros(C * Hp * Wp * nb, dtype=x.dtype),  # padded planes: the borders stay zero
            xp.empty(K * P * nb, dtype=x.dtype), xp.empty(O * P * nb, dtype=x.dtype)]
    total = xp.zeros((K, O), dtype=x.dtype)  # dW_mat0
    part = xp.empty((K, O), dtype=x.dtype)
    n_last = None
    for n0, n1 in blocks:
        n = n1 - n0
        if n != n_last:  # the buffers' first n samples, contiguous (the last block may be smaller;
            # its C n planes are whole Hp x Wp planes of the first block's, borders still zero)
            xpad = flat[0][: C * n * Hp * Wp].reshape(C, n, Hp, Wp)
            colT = flat[1][: K * n * P].reshape(C, kh, kw, n, Ho, Wo)
            dY = flat[2][: O * n * P].reshape(O, n, Ho, Wo)
            n_last = n
        xpad[:, :, ph : ph + H, pw : pw + W] = x[n0:n1].transpose(1, 0, 2, 3)  # C, n, H, W
        _block_planes_into(colT, xpad, g)  # C, kh, kw, n, Ho, Wo
        dY[...] = dy[n0:n1].transpose(1, 0, 2, 3)  # O, n, Ho, Wo
        xp.matmul(colT.reshape(K, n * P), dY.reshape(O, n * P).T, out=part)  # K, O
        total += part
    return xp.ascontiguousarray(total.T).reshape(O, C, kh, kw)  # O, C, kh, kw


def _transposed_product_sum(nb: int, A: int, P: int, K: int, dtype, xp):
    """(add, total) as :func:`_product_sum`, but ``add(a, col)`` copies the block's a (n, A, P)
    transposed to (A, n P) and takes one GEMM, a_T col (A, K), for the whole block: no per-sample
    products, and a long summed axis. Pays where a is no larger than the patches (A <= K)."""
    total = xp.zeros((A, K), dtype=dtype)
    part = xp.empty((A, K), dtype=dtype)
    flat = xp.empty(A * nb * P, dtype=dtype)

    def add(a, col):
        n = a.shape[0]
        a_t = flat[: A * n * P].reshape(A, n, P)  # contiguous for a smaller last block too
        a_t[...] = a.transpose(1, 0, 2)  # A, n, P
        xp.matmul(a_t.reshape(A, n * P), col.reshape(n * P, K), out=part)  # A, K
        total[...] += part

    return add, total


def _dw_by_patches_of_x(dy, x, g: ConvGeometry):
    """dw = dY^T col from the channels-innermost patches of x (NHWC, as the forward's im2col).

    Notes
    -----
    col[(n, oh, ow), (i, j, c)] = xpad[n, sh oh + dh i, sw ow + dw j, c], dY[(n, oh, ow), o] =
    dy[n, o, oh, ow]; dW_mat^T = dY^T col (C_out, kh kw C_in), dw[o, c, i, j] =
    dW_mat^T[o, (i, j, c)]. Where C_out <= C_in kh kw and C_out <= Ho Wo, dy's block is copied
    transposed and each block of a quarter of the budget (3 MiB on NumPy) is one GEMM
    (:func:`_transposed_product_sum`, ``_one_gemm_blocks``); else :func:`_product_sum` on blocks
    of the whole budget: dy read in place, one GEMM per sample, where its copy would cost more
    than it saves, or, with more channels than pixels, its transposed copy and one GEMM a block
    (quarter blocks were 1.12-1.36x slower there, each adding an (C_out, K) product larger than
    the block: 512 -> 512 at 4 x 4, 128 -> 128 at 2 x 2). Against one GEMM per sample everywhere
    (this route until the eleventh session), float32, N = 64, medians of 4-5 alternated rounds:
    64 -> 64 channels at 14 x 14 0.75x, 32 -> 64 at 14 x 14 0.81x, 6 -> 16 at 5 x 5, 14 x 14
    (LeNet5's) 0.81x,
    64 -> 64 at 8 x 8 0.53x; where C_out > C_in kh kw the copy lost: 4 -> 256 at 32 x 32 1.15x,
    8 -> 128 at 16 x 16 1.20x.
    """
    xp = get_xp(dy, x)
    (kh, kw), (Hp, Wp), (Ho, Wo) = g.kernel, g.padded_size, g.out_size
    C, O, K, P = g.c_in, g.c_out, kh * kw * g.c_in, Ho * Wo
    one_gemm = O <= min(K, P)
    nb, blocks = (_one_gemm_blocks if one_gemm else _batch_blocks)(g, xp, x.dtype.itemsize)
    add, dw_mat = (_transposed_product_sum if one_gemm else _product_sum)(nb, O, P, K, x.dtype, xp)
    xpad = xp.zeros((nb, Hp, Wp, C), dtype=x.dtype)  # border stays zero
    col = xp.empty((nb, Ho, Wo, kh, kw, C), dtype=x.dtype)
    for n0, n1 in blocks:
        n = n1 - n0
        _im2col_into(col[:n], _pad_nhwc_into(xpad[:n], x[n0:n1], g), g.stride, g.dilation)
        add(dy[n0:n1].reshape(n, O, P), col[:n].reshape(n, P, K))  # O, K into dw_mat
    return xp.ascontiguousarray(dw_mat.reshape(O, kh, kw, C).transpose(0, 3, 1, 2))  # O, C, kh, kw


def _dw_by_transposed_patches(dy, x, g: ConvGeometry):
    """dw of a stride-1 convolution from the patches of dy instead of those of x.

    Notes
    -----
    With p = oh + dh i (stride 1; oh the output row), dw[o, c, i, j] = sum_{n, p, q} x[n, c, p - ph, q - pw]
    e[n, p + dh i', q + dw j', o], where i' = kh - 1 - i, j' = kw - 1 - j and e is dy (NHWC)
    shifted by (dh (kh - 1), dw (kw - 1)) in a zero array (zero outside dy, and x is zero
    on the padding, so only the H x W interior rows p count). So, per sample n,

        R_n = x_n col_n,   x_n (C_in, H W) a view of the NCHW x,
        col_n[(u, v), (i', j', o)] = e[n, ph + u + dh i', pw + v + dw j', o],
        dw[o, c, i, j] = sum_n R_n[c, (kh - 1 - i, kw - 1 - j, o)],

    the same sums as dY^T col (other rounding): the patch matrix holds H W kh kw C_out numbers
    per sample instead of Ho Wo kh kw C_in (the smaller one when C_out < C_in at "same"
    padding), and x is read in place (:func:`_product_sum`).
    """
    if g.stride != (1, 1):
        raise ValueError(f"_dw_by_transposed_patches: expected stride (1, 1), got {g.stride}")
    xp = get_xp(dy, x)
    (kh, kw), (dh, dw), (ph, pw) = g.kernel, g.dilation, g.padding
    (H, W), (Ho, Wo), C, O = g.in_size, g.out_size, g.c_in, g.c_out
    oh, ow = dh * (kh - 1), dw * (kw - 1)  # dy's offset inside e
    nb, blocks = _batch_blocks(g, xp, x.dtype.itemsize)
    e = xp.zeros((nb, H + 2 * ph + oh, W + 2 * pw + ow, O), dtype=x.dtype)  # zero off dy, always
    col = xp.empty((nb, H, W, kh, kw, O), dtype=x.dtype)
    add, r_mat = _product_sum(nb, C, H * W, kh * kw * O, x.dtype, xp)  # C, kh kw O
    for n0, n1 in blocks:
        n = n1 - n0
        e[:n, oh : oh + Ho, ow : ow + Wo, :] = dy[n0:n1].transpose(0, 2, 3, 1)  # n, Ho, Wo, O
        _im2col_into(col[:n], e[:n, ph:, pw:, :], (1, 1), (dh, dw))  # n, H, W, kh, kw, O
        add(x[n0:n1].reshape(n, C, H * W), col[:n].reshape(n, H * W, kh * kw * O))  # x in place
    R = r_mat.reshape(C, kh, kw, O)[:, ::-1, ::-1, :]  # c, i, j, o
    return xp.ascontiguousarray(R.transpose(3, 0, 1, 2))  # O, C, kh, kw


def _dw_by_planes(dy, x, g: ConvGeometry):
    """dw from the channel-major patches of x (few input planes, :mod:`refdlrt.ops.conv_planes`).

    Notes
    -----
    dW_mat0 = sum_n dy_n colT_n^T, dy_n (C_out, Ho Wo) a view of the NCHW dy, colT_n (C_in kh kw,
    Ho Wo); dw[o, c, i, j] = dW_mat0[o, (c, i, j)], w's own layout: no transposing copy at the end.
    """
    xp = get_xp(dy, x)
    (kh, kw), (Ho, Wo), C, O = g.kernel, g.out_size, g.c_in, g.c_out
    nb, blocks, patches = plane_blocks(x, g)
    add, dw_mat = _product_sum(nb, O, Ho * Wo, C * kh * kw, x.dtype, xp)  # O, K
    for n0, n1 in blocks:
        n = n1 - n0
        add(dy[n0:n1].reshape(n, O, Ho * Wo), patches(n0, n1).transpose(0, 2, 1))  # dy in place
    return dw_mat.reshape(O, C, kh, kw)


def _select_dw_route(g: ConvGeometry, xp) -> str:
    """"planes" (:func:`_dw_by_planes`) where :func:`planes_route_pays` on backend ``xp``, else
    "patches of dy" (:func:`_dw_by_transposed_patches`, stride 1 only) where its patch matrix is
    the smaller one, else "channel-major patches of x" where :func:`_channel_major_pays`
    (:func:`_dw_by_channel_major_patches`) or "patches of x" (:func:`_dw_by_patches_of_x`)."""
    if planes_route_pays(g, xp):
        return "planes"
    (H, W), (Ho, Wo) = g.in_size, g.out_size
    if g.stride == (1, 1) and H * W * g.c_out < Ho * Wo * g.c_in:
        return "patches of dy"
    if _channel_major_pays(g, xp):
        return "channel-major patches of x"
    return "patches of x"


def _weight_grad(dy, x, g: ConvGeometry):
    """dw, by the route :func:`_select_dw_route` picks."""
    route = _select_dw_route(g, get_xp(dy, x))
    if route == "planes":
        return _dw_by_planes(dy, x, g)
    if route == "patches of dy":
        return _dw_by_transposed_patches(dy, x, g)
    if route == "channel-major patches of x":
        return _dw_by_channel_major_patches(dy, x, g)
    return _dw_by_patches_of_x(dy, x, g)


def conv2d_weight_grad(x, dy, kernel_size, *, stride=1, padding=0, dilation=1):
    """Kernel gradient alone: dw of y = conv2d(x, w) for output gradient dy (no dx).

    Parameters
    ----------
    x : (N, C_in, H, W); dy : (N, C_out, H_out, W_out); kernel_size : int or pair (kh, kw).

    Returns
    -------
    dw : (C_out, C_in, kh, kw), the same as :func:`conv2d_backward`'s dw.

    Notes
    -----
    dw[o, c, i, j] = sum_{n, oh, ow} dy[n, o, oh, ow] xpad[n, c, s_h oh + d_h i, s_w ow + d_w j].
    Used by the low-rank layers' projectors on reduced channel counts, and by
    :func:`conv2d_backward`. The patch matrix is built from x, channel-major per sample where
    C_in kh kw <= 32 on NumPy (:func:`_dw_by_planes`), or, with stride 1 when
    H W C_out < Ho Wo C_in, from dy (:func:`_dw_by_transposed_patches`; the smaller copy), else
    from x again: channel-major over blocks of samples where output rows are wide
    (:func:`_dw_by_channel_major_patches`) or channels-innermost (:func:`_dw_by_patches_of_x`),
    against dy's block copied transposed where that pays. :func:`_select_dw_route` picks; where a
    route reads dy or x in place (:func:`_product_sum`), a non-contiguous input is copied once by
    its reshape.
    """
    kh, kw = pair(kernel_size, "kernel_size")
    for a, name, layout in ((x, "x", "N, C_in, H, W"), (dy, "dy", "N, C_out, H_out, W_out")):
        check_float_array(a, name)
        check_ndim(a, 4, name, layout)
    xp = get_xp(x, dy)
    w = xp.empty((dy.shape[1], x.shape[1], kh, kw), dtype=dy.dtype)  # shape only
    g = _geometry(x, w, None, stride, padding, dilation)
    _check_dy(dy, g, x.dtype)
    return _weight_grad(dy, x, g)

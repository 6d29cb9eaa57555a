"""2-d convolution (NCHW activations, OIHW kernels, groups=1) as a forward/backward pair.

Cross-correlation exactly as ``torch.nn.functional.conv2d``:

    y[n, o, oh, ow] = b[o] + sum_{c, i, j} w[o, c, i, j] xpad[n, c, sh oh + dh i, sw ow + dw j],
    Ho = floor((H + 2 ph - dh (kh - 1) - 1) / sh) + 1   (and the same for Wo),

where xpad is x with ph (pw) zero rows (columns) on both sides.

Fast path: a channels-innermost im2col and one GEMM. The padded input is stored
NHWC, so tap (i, j) is the strided slice ``xpad[:, dh i :: sh, dw j :: sw, :]`` and the
patch matrix is copied in contiguous runs of C_in numbers:

    col[(n, oh, ow), (i, j, c)] = xpad[n, sh oh + dh i, sw ow + dw j, c],
    Y = col @ W_mat,                    W_mat[(i, j, c), o] = w[o, c, i, j],
    dW_mat = col^T @ dY,                dY[(n, oh, ow), o] = dy[n, o, oh, ow].

The kernel gradient (:func:`conv2d_weight_grad`, re-exported here) and its four routes are
in :mod:`refdlrt.ops.conv_weight_grad`; the backward takes dw from there too (`_weight_grad`),
with or without dx. The geometry, im2col and batch blocks are in :mod:`refdlrt.ops.conv_patches`.

dx takes one of two routes (both exact; `_select_dx_route` picks the faster one):
- col2im: for each tap (i, j), ``dxpad[tap (i, j)] += dY @ w[:, :, i, j]``, i.e. the taps of
  dcol = dY @ W_mat^T added into their strided slices of a zero dxpad (the adjoint of the
  im2col gather, by construction; any stride);
- transposed convolution (stride 1): dx = conv(e, flip(w)^T), with e the shifted dy
  padded by dilation (k - 1) - padding, by the same im2col + one GEMM as the forward.

For stride 1 and at most 64 input channels (the small cores of Tucker layers, and narrow dense
layers) the forward takes the
kh kw GEMMs on shifted views of the flat padded input instead (no patch matrix;
:mod:`refdlrt.ops.conv_shifted`), and so does the transposed-convolution dx for few output
channels.

A first layer (C_in kh kw <= 32: one to three input channels) takes channel-major patches and
writes NCHW directly, in its forward and its kernel gradient (:mod:`refdlrt.ops.conv_planes`).

The batch is processed in blocks of a few samples, so the patch matrices live in
reused, cache-sized buffers (one big im2col buffer costs more in page faults and
memory traffic than its GEMM). Only ``xp.`` calls are used: the code runs
unchanged on CuPy, whose blocks are far larger (2 GiB of patches, a quarter of it for the
kernel gradient's patches of x).
"""

from __future__ import annotations

from .._checks import check_float_array, is_int
from ..backend import get_xp
from .broadcast import channel_sum
from .conv_patches import (
    ConvGeometry,
    _batch_blocks,
    _check_dy,
    _geometry,
    _im2col_into,
    _pad_nhwc_into,
    conv_output_size,
)
from .conv_planes import forward_by_planes, planes_route_pays
from .conv_shifted import shifted_buffers, shifted_conv, shifted_route_pays
from .conv_weight_grad import _weight_grad, conv2d_weight_grad

__all__ = [
    "conv2d_input_grad",
    "conv2d_weight_grad",
    "conv2d_backward",
    "conv2d_forward",
    "conv_output_size",
]


def _kernel_matrix(w):
    """W_mat[(i, j, c), o] = w[o, c, i, j]: the kernel as a (kh kw C_in, C_out) matrix."""
    xp = get_xp(w)
    O, C, kh, kw = w.shape
    return xp.ascontiguousarray(w.transpose(2, 3, 1, 0)).reshape(kh * kw * C, O)


def _tap(a, i, j, g: ConvGeometry):
    """View of tap (i, j) of a padded NHWC array: a[:, sh oh + dh i, sw ow + dw j, :]."""
    (sh, sw), (dh, dw), (Ho, Wo) = g.stride, g.dilation, g.out_size
    r, c = i * dh, j * dw
    return a[:, r : r + sh * (Ho - 1) + 1 : sh, c : c + sw * (Wo - 1) + 1 : sw, :]  # n, Ho, Wo, C


def _forward_by_im2col(w, g: ConvGeometry, nb: int, xp):
    """Block function x (n, C, H, W) -> y (n, Ho, Wo, O): im2col of the padded NHWC block,
    then one GEMM, Y = col @ W_mat."""
    (kh, kw), (Hp, Wp), (Ho, Wo) = g.kernel, g.padded_size, g.out_size
    C, O, K = g.c_in, g.c_out, kh * kw * g.c_in
    w_mat = _kernel_matrix(w)  # K, O
    xpad = xp.zeros((nb, Hp, Wp, C), dtype=w.dtype)  # border stays zero
    col = xp.empty((nb, Ho, Wo, kh, kw, C), dtype=w.dtype)
    ybuf = xp.empty((nb * Ho * Wo, O), dtype=w.dtype)

    def forward_block(x_n):
        n = x_n.shape[0]
        xpad_n = _pad_nhwc_into(xpad[:n], x_n, g)  # n, Hp, Wp, C
        col_n = _im2col_into(col[:n], xpad_n, g.stride, g.dilation).reshape(n * Ho * Wo, K)
        return xp.matmul(col_n, w_mat, out=ybuf[: n * Ho * Wo]).reshape(n, Ho, Wo, O)

    return forward_block


def _forward_by_shifts(w, g: ConvGeometry, nb: int, xp):
    """Block function x (n, C, H, W) -> y (n, Ho, Wo, O), stride 1: kh kw GEMMs on shifted
    views of the flat padded block (:func:`refdlrt.ops.conv_shifted.shifted_conv`)."""
    Hp, Wp = g.padded_size
    w_taps = xp.ascontiguousarray(w.transpose(2, 3, 1, 0))  # kh, kw, C, O
    flat, xpad, acc, tmp = shifted_buffers(nb, (Hp, Wp), g.c_in, g.c_out, g.kernel, g.dilation,
                                           w.dtype, xp)

    def forward_block(x_n):
        n = x_n.shape[0]
        _pad_nhwc_into(xpad[:n], x_n, g)  # n, Hp, Wp, C (in flat)
        return shifted_conv(flat, n, (Hp, Wp), w_taps, g.dilation, g.out_size, acc, tmp)

    return forward_block


def _select_forward_route(g: ConvGeometry, xp):
    """Shifted GEMMs where :func:`refdlrt.ops.conv_shifted.shifted_route_pays` (stride 1, 2-64
    input channels, NumPy), else im2col + one GEMM. (Stride 1 is tested here too: the shifted
    GEMMs need it, whatever the cost rule says.)"""
    if g.stride == (1, 1) and shifted_route_pays(g.c_in, g.c_out, g.padded_size, g.out_size,
                                                 g.stride, xp):
        return _forward_by_shifts
    return _forward_by_im2col


def conv2d_forward(x, w, b=None, *, stride=1, padding=0, dilation=1):
    """Forward 2-d convolution y = conv(x, w) + b (cross-correlation, as in PyTorch).

    Parameters
    ----------
    x : array (N, C_in, H, W), float32 or float64
    w : array (C_out, C_in, kh, kw), same dtype
    b : array (C_out,) or None
    stride, padding, dilation : int or pair of ints

    Returns
    -------
    y : array (N, C_out, Ho, Wo)
    cache : (x, w, has_bias, geometry), what :func:`conv2d_backward` needs.

    Notes
    -----
    y[n, o, oh, ow] = b[o] + sum_{c,i,j} w[o, c, i, j] xpad[n, c, sh oh + dh i, sw ow + dw j];
    computed block by block as Y = col @ W_mat (see the module docstring), or for stride 1 and
    few input channels by shifted GEMMs (`_select_forward_route`), or, with few input planes
    (C_in kh kw <= 32, a first layer), by channel-major patches straight into NCHW
    (:mod:`refdlrt.ops.conv_planes`).
    """
    g = _geometry(x, w, b, stride, padding, dilation)
    xp = get_xp(x, w, b)
    if planes_route_pays(g, xp):  # few input planes: channel-major patches, NCHW out
        return forward_by_planes(x, w, b, g), (x, w, b is not None, g)
    nb, blocks = _batch_blocks(g, xp, x.dtype.itemsize)
    forward_block = _select_forward_route(g, xp)(w, g, nb, xp)
    y = xp.empty((g.n, g.c_out, *g.out_size), dtype=x.dtype)
    bias = None if b is None else xp.ascontiguousarray(xp.broadcast_to(b, (1, *g.out_size, g.c_out)))  # 1, Ho, Wo, O
    for n0, n1 in blocks:
        y_n = forward_block(x[n0:n1])  # n, Ho, Wo, O
        if bias is not None:
            y_n += bias  # b over one output sample: NumPy's contiguous loop (see ops.broadcast)
        y[n0:n1] = y_n.transpose(0, 3, 1, 2)  # n, O, Ho, Wo
    return y, (x, w, b is not None, g)


def _dx_by_col2im(w, g: ConvGeometry, nb: int, xp):
    """Block function dy (n, Ho, Wo, O) -> dx (n, H, W, C): col2im(dY W_mat^T), one tap at a
    time: dxpad[tap (i, j)] += dY @ w[:, :, i, j]."""
    (kh, kw), (Hp, Wp), (Ho, Wo) = g.kernel, g.padded_size, g.out_size
    (H, W), (ph, pw), C, O = g.in_size, g.padding, g.c_in, g.c_out
    w_taps = xp.ascontiguousarray(w.transpose(2, 3, 0, 1))  # kh, kw, O, C
    dcol_tap = xp.empty((nb * Ho * Wo, C), dtype=w.dtype)
    dxpad = xp.empty((nb, Hp, Wp, C), dtype=w.dtype)

    def dx_block(dy_n):
        n = dy_n.shape[0]
        dy_mat, dxpad_n = dy_n.reshape(n * Ho * Wo, O), dxpad[:n]
        dxpad_n[...] = 0
        for i in range(kh):
            for j in range(kw):
                d = xp.matmul(dy_mat, w_taps[i, j], out=dcol_tap[: n * Ho * Wo])  # n Ho Wo, C
                window = _tap(dxpad_n, i, j, g)
                window += d.reshape(n, Ho, Wo, C)
        return dxpad_n[:, ph : ph + H, pw : pw + W, :]

    return dx_block


def _lattice(n_out: int, stride: int, offset: int, length: int):
    """Outputs o in [lo, hi) with 0 <= stride o + offset < length (first index of o = lo)."""
    lo = max(0, -(offset // stride))
    hi = min(n_out, (length - 1 - offset) // stride + 1)
    return lo, max(lo, hi)


def _dx_by_transposed_conv(w, g: ConvGeometry, nb: int, xp):
    """Block function dy (n, Ho, Wo, O) -> dx (n, H, W, C): a stride-1 convolution of the
    zero-dilated, shifted dy with the flipped, transposed kernel.

    Notes
    -----
    dx[h] = sum_i e[h + dh i] w[:, :, kh - 1 - i]^T with e[oh sh + dh (kh - 1) - ph] = dy[oh]
    (zero elsewhere), e of length H + dh (kh - 1); the same along the width. The convolution
    of e is im2col + one GEMM, or shifted GEMMs where they pay (few output channels O, see
    :func:`refdlrt.ops.conv_shifted.shifted_route_pays`).
    """
    (kh, kw), (sh, sw), (dh, dw), (ph, pw) = g.kernel, g.stride, g.dilation, g.padding
    (H, W), (Ho, Wo), C, O = g.in_size, g.out_size, g.c_in, g.c_out
    Lh, Lw = H + dh * (kh - 1), W + dw * (kw - 1)  # length of e
    offh, offw = dh * (kh - 1) - ph, dw * (kw - 1) - pw  # e[sh oh + offh] = dy[oh]
    (h0, h1), (w0, w1) = _lattice(Ho, sh, offh, Lh), _lattice(Wo, sw, offw, Lw)
    rows = slice(h0 * sh + offh, (h1 - 1) * sh + offh + 1, sh)
    cols = slice(w0 * sw + offw, (w1 - 1) * sw + offw + 1, sw)
    wf = xp.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1))  # kh, kw, O, C
    shifts = shifted_route_pays(O, C, (Lh, Lw), (H, W), (1, 1), xp)  # few output channels: no im2col
    if shifts:
        flat, e, acc, tmp = shifted_buffers(nb, (Lh, Lw), O, C, g.kernel, g.dilation, w.dtype, xp)
    else:
        e = xp.zeros((nb, Lh, Lw, O), dtype=w.dtype)  # zero off the lattice, always
        col = xp.empty((nb, H, W, kh, kw, O), dtype=w.dtype)
        out = xp.empty((nb * H * W, C), dtype=w.dtype)
        wf = wf.reshape(kh * kw * O, C)

    def dx_block(dy_n):
        n = dy_n.shape[0]
        if h1 > h0 and w1 > w0:
            e[:n, rows, cols, :] = dy_n[:, h0:h1, w0:w1, :]
        if shifts:
            return shifted_conv(flat, n, (Lh, Lw), wf, (dh, dw), (H, W), acc, tmp)  # n, H, W, C
        _im2col_into(col[:n], e[:n], (1, 1), (dh, dw))  # n, H, W, kh, kw, O
        dx_n = xp.matmul(col[:n].reshape(n * H * W, kh * kw * O), wf, out=out[: n * H * W])
        return dx_n.reshape(n, H, W, C)

    return dx_block


def _select_dx_route(g: ConvGeometry):
    """Pick the faster dx route (measured, see benchmarks/README.md).

    The transposed convolution needs stride 1 (else it multiplies sh sw times as many zeros)
    and pays one im2col copy of H W kh kw C_out numbers per sample, where col2im writes and
    re-reads Ho Wo kh kw C_in; it is taken when its copy is not the larger one.
    """
    (H, W), (Ho, Wo) = g.in_size, g.out_size
    if g.stride == (1, 1) and H * W * g.c_out <= Ho * Wo * g.c_in:
        return _dx_by_transposed_conv
    return _dx_by_col2im


def _backward(dy, x, w, g: ConvGeometry, *, need_dx: bool, need_dw: bool):
    """(dx or None, dw or None): dw by :func:`refdlrt.ops.conv_weight_grad._weight_grad`'s
    route (the same numbers as :func:`conv2d_weight_grad`), dx block by block by
    :func:`_select_dx_route`'s route."""
    dw = _weight_grad(dy, x, g) if need_dw else None
    if not need_dx:
        return None, dw
    xp = get_xp(dy, x)
    nb, blocks = _batch_blocks(g, xp, x.dtype.itemsize)
    dx_block = _select_dx_route(g)(w, g, nb, xp)
    dybuf = xp.empty((nb, *g.out_size, g.c_out), dtype=x.dtype)
    dx = xp.empty(x.shape, dtype=x.dtype)
    for n0, n1 in blocks:
        n = n1 - n0
        dybuf[:n] = dy[n0:n1].transpose(0, 2, 3, 1)  # n, Ho, Wo, O
        dx[n0:n1] = dx_block(dybuf[:n]).transpose(0, 3, 1, 2)  # n, C, H, W
    return dx, dw


def conv2d_backward(dy, cache, *, need_dx: bool = True, need_dw: bool = True):
    """Gradients of :func:`conv2d_forward`: (dx, dw, db), db None when there was no bias, dx
    None with ``need_dx=False`` (the first layer of a network: nobody needs its input gradient,
    and it is a third of the backward's work), dw None with ``need_dw=False`` (a Tucker layer
    that forms its kernel gradient otherwise).

    Notes
    -----
    With dY[(n, oh, ow), o] = dy[n, o, oh, ow] and col as in the forward (rebuilt block by
    block from the cached x): dW_mat = col^T dY, dw[o, c, i, j] = dW_mat[(i, j, c), o]
    (:func:`conv2d_weight_grad`'s route, which lays the patches out as suits its GEMM);
    db[o] = sum_{n, oh, ow} dy[n, o, oh, ow]; dx = col2im(dY W_mat^T), computed by
    `_select_dx_route` either so or as the equal transposed convolution.
    """
    x, w, has_bias, g = cache
    _check_dy(dy, g, x.dtype)
    dx, dw = _backward(dy, x, w, g, need_dx=need_dx, need_dw=need_dw)
    db = channel_sum(dy) if has_bias else None
    return dx, dw, db


def conv2d_input_grad(dy, w, x_shape, *, stride=1, padding=0, dilation=1):
    """Input gradient alone: dx of y = conv2d(x, w) for output gradient dy, x of shape
    ``x_shape`` (the transposed convolution; no dw, x itself is not needed).

    Parameters
    ----------
    dy : (N, C_out, H_out, W_out); w : (C_out, C_in, kh, kw); x_shape : (N, C_in, H, W), ints.

    Returns
    -------
    dx : (N, C_in, H, W), the same as :func:`conv2d_backward`'s dx.
    """
    x_shape = tuple(x_shape)
    if len(x_shape) != 4 or not all(is_int(v) and v >= 1 for v in x_shape):
        raise ValueError(f"conv2d_input_grad: x_shape: expected 4 positive ints (N, C_in, H, W), "
                         f"got {x_shape}")
    check_float_array(w, "w")
    if w.ndim != 4 or w.shape[1] != x_shape[1]:
        raise ValueError(f"conv2d_input_grad: w: expected shape (C_out, {x_shape[1]}, kh, kw) "
                         f"(C_in from x_shape {x_shape}), got {tuple(w.shape)}")
    xp = get_xp(dy, w)
    x = xp.broadcast_to(xp.zeros((), dtype=w.dtype), x_shape)  # x's shape only: no memory
    g = _geometry(x, w, None, stride, padding, dilation)
    _check_dy(dy, g, w.dtype, source=" (the dtype of w)")
    return _backward(dy, x, w, g, need_dx=True, need_dw=False)[0]

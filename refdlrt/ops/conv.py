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

The kernel gradient alone takes one of two routes (`_select_dw_route`: the smaller patch
matrix): dY^T col as above, or, for stride 1 when H W C_out < Ho Wo C_in (fewer output than
input channels at "same" padding), the patches of the shifted dy against x
(`_dw_by_transposed_patches`); with dx, the backward fuses dY^T col into dx's pass. The operand
that is not im2col'd is read in place, one GEMM per sample (`_product_sum`; a transposed copy of
a wide activation costs more than its GEMM on this project's 2-core machine), except in deep
layers with more channels than pixels, where one GEMM per block keeps memory bounded.

dx takes one of two routes (both exact; `_select_dx_route` picks the faster one):
- col2im: for each tap (i, j), ``dxpad[tap (i, j)] += dY @ w[:, :, i, j]``, i.e. the taps of
  dcol = dY @ W_mat^T added into their strided slices of a zero dxpad (the adjoint of the
  im2col gather, by construction; any stride);
- transposed convolution (stride 1): dx = conv(e, flip(w)^T), with e the shifted dy
  padded by dilation (k - 1) - padding, by the same im2col + one GEMM as the forward.

The batch is processed in blocks of a few samples, so the patch matrices live in
reused, cache-sized buffers (one big im2col buffer costs more in page faults and
memory traffic than its GEMM). Only ``xp.`` calls are used: the code runs
unchanged on CuPy, where one block holds the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._checks import check_float_array, check_grad, check_ndim, check_same_dtype, pair
from ..backend import get_xp

__all__ = [
    "conv2d_weight_grad",
    "conv2d_backward",
    "conv2d_forward",
    "conv_output_size",
]

# Bytes of patch matrix per batch block: NumPy wants it cache-sized, a GPU wants one big GEMM.
_BLOCK_BYTES = {"numpy": 12 * 2**20, "cupy": 2**31}


def conv_output_size(
    size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """Output length of a convolution along one axis.

    Notes
    -----
    ``floor((size + 2 padding - dilation (kernel - 1) - 1) / stride) + 1``; may be < 1
    for geometries that do not fit (the caller decides whether that is an error).
    """
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@dataclass(frozen=True)
class ConvGeometry:
    """Sizes of one convolution: batch n, channels c_in -> c_out, (h, w) -> (ho, wo)."""

    n: int
    c_in: int
    c_out: int
    in_size: tuple[int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    out_size: tuple[int, int]

    @property
    def padded_size(self) -> tuple[int, int]:
        return tuple(s + 2 * p for s, p in zip(self.in_size, self.padding))


def _geometry(x, w, b, stride, padding, dilation) -> ConvGeometry:
    """Validate the arguments of a convolution and return its geometry."""
    check_float_array(x, "x")
    check_float_array(w, "w")
    if b is not None:
        check_float_array(b, "b")
    check_same_dtype(("x", x), ("w", w), ("b", b))  # also rejects mixed numpy / cupy
    check_ndim(x, 4, "x", "N, C_in, H, W")
    check_ndim(w, 4, "w", "C_out, C_in, kh, kw")
    N, C, H, W = x.shape
    O, Cw, kh, kw = w.shape
    if Cw != C:
        raise ValueError(f"w: expected {C} input channels (x.shape[1]), got w.shape[1] = {Cw}")
    if b is not None and tuple(b.shape) != (O,):
        raise ValueError(f"b: expected shape {(O,)} (C_out,), got {tuple(b.shape)}")
    if kh < 1 or kw < 1:
        raise ValueError(f"w: expected a kernel of size >= 1, got {(kh, kw)}")
    s, p, d = pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation")
    if min(s) < 1:
        raise ValueError(f"stride: expected positive values, got {s}")
    if min(d) < 1:
        raise ValueError(f"dilation: expected positive values, got {d}")
    if min(p) < 0:
        raise ValueError(f"padding: expected non-negative values, got {p}")
    out = tuple(conv_output_size(*a) for a in zip((H, W), (kh, kw), s, p, d))
    if min(out) < 1:
        raise ValueError(
            f"output size {out} is too small (expected >= 1) for input {(H, W)}, "
            f"kernel {(kh, kw)}, stride {s}, padding {p}, dilation {d}"
        )
    return ConvGeometry(N, C, O, (H, W), (kh, kw), s, p, d, out)


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


def _pad_nhwc_into(xpad, x, g: ConvGeometry):
    """Write x (n, C, H, W) into the interior of xpad (n, Hp, Wp, C), whose border is zero."""
    (H, W), (ph, pw) = g.in_size, g.padding
    xpad[:, ph : ph + H, pw : pw + W, :] = x.transpose(0, 2, 3, 1)  # n, H, W, C
    return xpad


def _im2col_into(col, a, stride, dilation):
    """col[n, oh, ow, i, j, c] = a[n, sh oh + dh i, sw ow + dw j, c] for a (n, Hp, Wp, C) NHWC.

    The right side is one strided view of ``a`` (tap (i, j) of it is ``_tap(a, i, j, g)``),
    copied in a single pass: the same numbers as a loop over the taps, about 2.5x faster.
    """
    xp = get_xp(a)
    (sh, sw), (dh, dw) = stride, dilation
    s0, s1, s2, s3 = a.strides
    windows = xp.lib.stride_tricks.as_strided(
        a, shape=col.shape, strides=(s0, sh * s1, sw * s2, dh * s1, dw * s2, s3)
    )  # n, Ho, Wo, kh, kw, C (read-only use)
    col[...] = windows
    return col


def _block_sample_bytes(g: ConvGeometry, itemsize: int) -> int:
    """Bytes of the largest patch matrix (forward col or transposed-conv col) per sample."""
    (H, W), (Ho, Wo), (kh, kw) = g.in_size, g.out_size, g.kernel
    return kh * kw * max(Ho * Wo * g.c_in, H * W * g.c_out) * itemsize


def _batch_blocks(g: ConvGeometry, xp, itemsize: int):
    """Split range(N) into blocks of nb samples whose patch matrix fits the backend's budget."""
    budget = _BLOCK_BYTES[xp.__name__.split(".")[0]]
    nb = max(1, min(g.n, budget // _block_sample_bytes(g, itemsize)))
    return nb, [(n0, min(n0 + nb, g.n)) for n0 in range(0, g.n, nb)]


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
    computed block by block as Y = col @ W_mat (see the module docstring).
    """
    g = _geometry(x, w, b, stride, padding, dilation)
    xp = get_xp(x, w, b)
    (kh, kw), (Hp, Wp), (Ho, Wo) = g.kernel, g.padded_size, g.out_size
    C, O, K = g.c_in, g.c_out, kh * kw * g.c_in
    w_mat = _kernel_matrix(w)  # K, O
    nb, blocks = _batch_blocks(g, xp, x.dtype.itemsize)
    xpad = xp.zeros((nb, Hp, Wp, C), dtype=x.dtype)  # border stays zero
    col = xp.empty((nb, Ho, Wo, kh, kw, C), dtype=x.dtype)
    ybuf = xp.empty((nb * Ho * Wo, O), dtype=x.dtype)
    y = xp.empty((g.n, O, Ho, Wo), dtype=x.dtype)
    for n0, n1 in blocks:
        n = n1 - n0
        xpad_n = _pad_nhwc_into(xpad[:n], x[n0:n1], g)  # n, Hp, Wp, C
        col_n = _im2col_into(col[:n], xpad_n, g.stride, g.dilation).reshape(n * Ho * Wo, K)
        y_n = xp.matmul(col_n, w_mat, out=ybuf[: n * Ho * Wo])  # n Ho Wo, O
        if b is not None:
            y_n += b
        y[n0:n1] = y_n.reshape(n, Ho, Wo, O).transpose(0, 3, 1, 2)  # n, O, Ho, Wo
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
    (zero elsewhere), e of length H + dh (kh - 1); the same along the width.
    """
    (kh, kw), (sh, sw), (dh, dw), (ph, pw) = g.kernel, g.stride, g.dilation, g.padding
    (H, W), (Ho, Wo), C, O = g.in_size, g.out_size, g.c_in, g.c_out
    Lh, Lw = H + dh * (kh - 1), W + dw * (kw - 1)  # length of e
    offh, offw = dh * (kh - 1) - ph, dw * (kw - 1) - pw  # e[sh oh + offh] = dy[oh]
    (h0, h1), (w0, w1) = _lattice(Ho, sh, offh, Lh), _lattice(Wo, sw, offw, Lw)
    wf = xp.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)).reshape(kh * kw * O, C)
    e = xp.zeros((nb, Lh, Lw, O), dtype=w.dtype)  # zero off the lattice, always
    col = xp.empty((nb, H, W, kh, kw, O), dtype=w.dtype)
    out = xp.empty((nb * H * W, C), dtype=w.dtype)
    rows = slice(h0 * sh + offh, (h1 - 1) * sh + offh + 1, sh)
    cols = slice(w0 * sw + offw, (w1 - 1) * sw + offw + 1, sw)

    def dx_block(dy_n):
        n = dy_n.shape[0]
        if h1 > h0 and w1 > w0:
            e[:n, rows, cols, :] = dy_n[:, h0:h1, w0:w1, :]
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


def _check_dy(dy, g: ConvGeometry, dtype):
    check_grad(dy, (g.n, g.c_out, *g.out_size), dtype, layout=" (N, C_out, Ho, Wo)",
               source=" (the dtype of x)")


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


def _dw_from_patches_of_x(x, g: ConvGeometry, nb: int, xp):
    """(add, finish) for dw = dY^T col block by block: ``add(n0, n1, dy)`` builds the patches of
    x[n0:n1] and adds dy[n0:n1] (read in place) times them (:func:`_product_sum`); ``finish()``
    returns dw (C_out, C_in, kh, kw). Shared by :func:`_dw_by_patches_of_x` and the backward's
    fused pass, so both give the same numbers."""
    (kh, kw), (Hp, Wp), (Ho, Wo) = g.kernel, g.padded_size, g.out_size
    C, O, K = g.c_in, g.c_out, kh * kw * g.c_in
    xpad = xp.zeros((nb, Hp, Wp, C), dtype=x.dtype)  # border stays zero
    col = xp.empty((nb, Ho, Wo, kh, kw, C), dtype=x.dtype)
    add_product, dw_mat = _product_sum(nb, O, Ho * Wo, K, x.dtype, xp)  # dW_mat^T: O, K

    def add(n0, n1, dy):
        n = n1 - n0
        _im2col_into(col[:n], _pad_nhwc_into(xpad[:n], x[n0:n1], g), g.stride, g.dilation)
        add_product(dy[n0:n1].reshape(n, O, Ho * Wo), col[:n].reshape(n, Ho * Wo, K))  # dy in place

    def finish():
        return xp.ascontiguousarray(dw_mat.reshape(O, kh, kw, C).transpose(0, 3, 1, 2))  # O, C, kh, kw

    return add, finish


def _backward(dy, x, w, g: ConvGeometry, *, need_dx: bool, need_dw: bool):
    """(dx or None, dw or None) block by block: dw = dY^T col (:func:`_product_sum`, dy read in
    place), dx by :func:`_select_dx_route`'s route. Without dx, dw is :func:`_weight_grad` (its
    route may build the patches of dy instead; with the patches of x it is the same arithmetic
    as here)."""
    if not need_dx:
        return None, (_weight_grad(dy, x, g) if need_dw else None)
    xp = get_xp(dy, x)
    nb, blocks = _batch_blocks(g, xp, x.dtype.itemsize)
    dx_block = _select_dx_route(g)(w, g, nb, xp)
    add_dw, finish_dw = _dw_from_patches_of_x(x, g, nb, xp) if need_dw else (None, None)
    dybuf = xp.empty((nb, *g.out_size, g.c_out), dtype=x.dtype)
    dx = xp.empty(x.shape, dtype=x.dtype)
    for n0, n1 in blocks:
        n = n1 - n0
        if need_dw:
            add_dw(n0, n1, dy)
        dybuf[:n] = dy[n0:n1].transpose(0, 2, 3, 1)  # n, Ho, Wo, O
        dx[n0:n1] = dx_block(dybuf[:n]).transpose(0, 3, 1, 2)  # n, C, H, W
    return dx, (finish_dw() if need_dw else None)


def conv2d_backward(dy, cache, *, need_dx: bool = True, need_dw: bool = True):
    """Gradients of :func:`conv2d_forward`: (dx, dw, db), db None when there was no bias, dx
    None with ``need_dx=False`` (the first layer of a network: nobody needs its input gradient,
    and it is a third of the backward's work), dw None with ``need_dw=False`` (a Tucker layer
    that forms its kernel gradient otherwise).

    Notes
    -----
    With dY[(n, oh, ow), o] = dy[n, o, oh, ow] and col as in the forward (rebuilt block by
    block from the cached x): dW_mat = col^T dY, dw[o, c, i, j] = dW_mat[(i, j, c), o]
    (one GEMM per sample, summed; without dx, :func:`conv2d_weight_grad`'s route);
    db[o] = sum_{n, oh, ow} dy[n, o, oh, ow]; dx = col2im(dY W_mat^T), computed by
    `_select_dx_route` either so or as the equal transposed convolution.
    """
    x, w, has_bias, g = cache
    _check_dy(dy, g, x.dtype)
    dx, dw = _backward(dy, x, w, g, need_dx=need_dx, need_dw=need_dw)
    db = dy.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dw, db


def _dw_by_patches_of_x(dy, x, g: ConvGeometry):
    """dw = dY^T col, with dy read in its own NCHW layout (no transposed copy of dy).

    Notes
    -----
    Per sample n: dW_n = dy_n col_n, dy_n (C_out, Ho Wo) a view of dy, col_n (Ho Wo, kh kw C_in)
    the patches of x; one batched GEMM per block of samples, then the sum over the block:
    dw[o, c, i, j] = sum_n dW_n[o, (i, j, c)], i.e. dW_mat^T = dY^T col summed sample by sample.
    """
    xp = get_xp(dy, x)
    nb, blocks = _batch_blocks(g, xp, x.dtype.itemsize)
    add, finish = _dw_from_patches_of_x(x, g, nb, xp)
    for n0, n1 in blocks:
        add(n0, n1, dy)
    return finish()


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


def _select_dw_route(g: ConvGeometry) -> str:
    """"patches of x" (:func:`_dw_by_patches_of_x`) or "patches of dy"
    (:func:`_dw_by_transposed_patches`, stride 1 only): the one whose patch matrix is smaller."""
    (H, W), (Ho, Wo) = g.in_size, g.out_size
    if g.stride == (1, 1) and H * W * g.c_out < Ho * Wo * g.c_in:
        return "patches of dy"
    return "patches of x"


def _weight_grad(dy, x, g: ConvGeometry):
    """dw alone, by the route :func:`_select_dw_route` picks."""
    if _select_dw_route(g) == "patches of dy":
        return _dw_by_transposed_patches(dy, x, g)
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
    :func:`conv2d_backward` without dx. The patch matrix is built from x
    (:func:`_dw_by_patches_of_x`) or, with stride 1 when H W C_out < Ho Wo C_in, from dy
    (:func:`_dw_by_transposed_patches`; :func:`_select_dw_route` picks the smaller copy); the
    other operand is read in place (:func:`_product_sum`; a non-contiguous input is copied once
    by its reshape).
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


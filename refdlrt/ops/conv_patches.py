"""Geometry, padding, im2col and batch blocks of a 2-d convolution, shared by the forward and
backward (:mod:`refdlrt.ops.conv`) and the kernel gradient's routes
(:mod:`refdlrt.ops.conv_weight_grad`).

The padded input is stored NHWC, so tap (i, j) is the strided slice
``xpad[:, dh i :: sh, dw j :: sw, :]`` and the patch matrix is copied in contiguous runs of C_in
numbers: col[(n, oh, ow), (i, j, c)] = xpad[n, sh oh + dh i, sw ow + dw j, c]. The batch is
processed in blocks of a few samples, so the patch matrices live in reused, cache-sized buffers.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._checks import check_float_array, check_grad, check_ndim, check_same_dtype, pair
from ..backend import backend_name, get_xp

__all__ = ["ConvGeometry", "conv_output_size"]

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


def _batch_blocks(g: ConvGeometry, xp, itemsize: int, *, share: float = 1.0, sample_bytes=None):
    """Split range(N) into blocks of nb samples whose patch matrix fits the backend's budget:
    ``share`` of it (a route that runs faster on smaller blocks takes less), by ``sample_bytes``
    per sample (None: :func:`_block_sample_bytes`, the forward's and the transposed conv's)."""
    budget = int(_BLOCK_BYTES[backend_name(xp)] * share)
    per_sample = _block_sample_bytes(g, itemsize) if sample_bytes is None else sample_bytes
    nb = max(1, min(g.n, budget // per_sample))
    return nb, [(n0, min(n0 + nb, g.n)) for n0 in range(0, g.n, nb)]


def _check_dy(dy, g: ConvGeometry, dtype, source=" (the dtype of x)"):
    check_grad(dy, (g.n, g.c_out, *g.out_size), dtype, layout=" (N, C_out, Ho, Wo)",
               source=source)

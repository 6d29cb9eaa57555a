"""A stride-1 convolution as kh kw GEMMs on shifted views of the flat padded input (no im2col).

Store the padded input of a block of n samples NHWC and flat, A[(s, p, q), c] = apad[s, p, q, c]
(Hp Wp rows per sample), followed by ``_tail`` zero rows. For stride 1, output (oh, ow) reads
row (oh + dh i, ow + dw j) of its sample for tap (i, j), and that row lies at the *constant*
offset dh i Wp + dw j from row (oh, ow). So, over the "wide" output grid m = (s, p, q) with
p < Hp, q < Wp,

    Yw[m] = sum_{i, j} A[m + dh i Wp + dw j] @ w_taps[i, j],   y[s, oh, ow] = Yw[(s, oh, ow)]

for oh < Ho, ow < Wo: each term is one GEMM on a contiguous slice of A (K = C_in), no patch
matrix is copied. The rows with oh >= Ho or ow >= Wo (Hp Wp - Ho Wo per sample) read across
rows or samples and are discarded. It pays kh kw - 1 additions of an n Hp Wp x C_out block
instead of an im2col copy of n Ho Wo kh kw C_in numbers, so it is the faster route for few
input channels (the small cores of Tucker layers, and dense layers up to 64 channels);
:func:`shifted_route_pays` holds the rule.
The rule was measured on this project's 2-core CPU. On a GPU (CuPy) the route is never taken:
``benchmarks/gpu_check.sh`` measured both routes on an H200 in three runs, where the shifted
GEMMs were 1.3-5.8x slower in the forward on all eleven shapes of ``benchmarks/conv_routes.py``
and 1.0-2.7x in dx, but for one shape in one run (LeNet's 6 -> 12, 5 x 5, 0.83x, where the
rule says im2col on the CPU too): the kh kw accumulations are memory passes that the one GEMM
of im2col does not pay there. A NaN or Inf in an earlier block can
make the discarded rows of a later one compute inf - inf (a NumPy "invalid value" warning); the
kept rows never read them.
The batch blocks are the im2col route's (:func:`refdlrt.ops.conv_patches._batch_blocks`): for a
3 x 3 kernel these buffers take about a third of its patch matrix, 3-5 MB per block on a CPU,
where the measured best was 2-4 MB.
"""

from __future__ import annotations

from ..backend import backend_name, get_xp

__all__ = ["shifted_route_pays", "shifted_buffers", "shifted_conv"]

# Largest reduction (input) channel count at which the shifted GEMMs beat im2col + one GEMM,
# the most output channels per input channel, and the most wide-grid rows per output row they
# may waste, up to 16 channels and beyond (benchmarks/README.md, "conv routes", interleaved
# runs in fast and slow phases of the machine: 4-16 channels at 14-32 pixels 0.61-0.95x the
# im2col time; 24-64 channels at 28-32 pixels, wide grid 1.13-1.15x, 0.67-0.97x, but 64
# channels at 14 pixels, wide grid 1.31x, 0.86-1.24x; 128 and 256 channels 1.2x; 32 -> 48
# channels 1.13x in the forward).
_MAX_CHANNELS = 64
_MAX_WIDENING = 1.25
_MAX_WASTE = 1.5
_FEW_CHANNELS, _MAX_WASTE_WIDE = 16, 1.2


def shifted_route_pays(c_reduce: int, c_out: int, padded: tuple, out: tuple, stride: tuple,
                       xp) -> bool:
    """Whether to take the shifted GEMMs for a convolution that reduces over ``c_reduce``
    channels into ``c_out``, on a padded (Hp, Wp) input with an ``out`` (Ho, Wo) output grid,
    on the array library ``xp`` (a module: numpy or cupy; required, so that no caller can
    forget it and send CuPy down the CPU rule).

    Never on CuPy (slower on a GPU at every measured shape, see the module docstring). On NumPy,
    true where they are the faster route: stride 1, 2 <= c_reduce <= 64
    (one channel makes each GEMM an outer product; 128 channels ran 1.2x slower),
    c_out <= 1.25 c_reduce (the additions grow with c_out: 16 -> 64 channels ran 1.4x slower,
    32 -> 48 1.1x), and a wide grid (padded) at most 1.5 times the output grid (out; LeNet's
    unpadded 5 x 5 layers, at 1.96, ran 2-3x slower), 1.2 times beyond 16 channels."""
    if backend_name(xp) != "numpy":
        return False
    if tuple(stride) != (1, 1) or not 2 <= c_reduce <= _MAX_CHANNELS:
        return False
    if c_out > _MAX_WIDENING * c_reduce:
        return False
    if c_reduce > _FEW_CHANNELS:
        return padded[0] * padded[1] <= _MAX_WASTE_WIDE * out[0] * out[1]
    return padded[0] * padded[1] <= _MAX_WASTE * out[0] * out[1]


def _tail(kernel: tuple, dilation: tuple, width: int) -> int:
    """Rows read past the last wide-grid row: the largest tap offset,
    dh (kh - 1) Wp + dw (kw - 1)."""
    return dilation[0] * (kernel[0] - 1) * width + dilation[1] * (kernel[1] - 1)


def shifted_buffers(nb: int, padded: tuple, c_in: int, c_out: int, kernel: tuple,
                    dilation: tuple, dtype, xp):
    """Buffers of :func:`shifted_conv` for nb samples of a padded (Hp, Wp) input with c_in
    channels, a kernel of size ``kernel`` and ``dilation``, and c_out output channels:
    (flat, apad, acc, tmp). flat is a zero buffer of nb Hp Wp + tail rows of c_in numbers,
    apad its first nb Hp Wp rows as the padded NHWC block (nb, Hp, Wp, c_in) to write the
    input into; acc and tmp hold nb Hp Wp rows of c_out numbers."""
    Hp, Wp = padded
    flat = xp.zeros((nb * Hp * Wp + _tail(kernel, dilation, Wp), c_in), dtype=dtype)
    acc, tmp = (xp.empty((nb * Hp * Wp, c_out), dtype=dtype) for _ in range(2))
    return flat, flat[: nb * Hp * Wp].reshape(nb, Hp, Wp, c_in), acc, tmp


def shifted_conv(flat, n: int, padded: tuple, w_taps, dilation: tuple, out_size: tuple, acc, tmp):
    """y (n, Ho, Wo, O) of a stride-1 convolution of the padded block held in ``flat``.

    Parameters
    ----------
    flat : (>= n Hp Wp + tail, C) from :func:`shifted_buffers`, the first n samples written
    w_taps : (kh, kw, C, O), w_taps[i, j] = w[:, :, i, j]^T
    acc, tmp : work buffers of at least n Hp Wp rows of O numbers
    n, padded, dilation, out_size : samples in the block, (Hp, Wp), (dh, dw), (Ho, Wo)

    Returns
    -------
    (n, Ho, Wo, O) view of ``acc``.

    Notes
    -----
    Yw = sum over taps of A[off_ij : off_ij + n Hp Wp] @ w_taps[i, j], off_ij = dh i Wp + dw j
    (module docstring); returns a view of acc, the wide grid cut to Ho x Wo.
    """
    xp = get_xp(flat, w_taps)
    (Hp, Wp), (dh, dw), (Ho, Wo) = padded, dilation, out_size
    kh, kw = w_taps.shape[:2]
    L = n * Hp * Wp
    y = xp.matmul(flat[:L], w_taps[0, 0], out=acc[:L])  # L, O
    for i in range(kh):
        for j in range(kw):
            if i or j:
                off = dh * i * Wp + dw * j
                y += xp.matmul(flat[off : off + L], w_taps[i, j], out=tmp[:L])
    return y.reshape(n, Hp, Wp, -1)[:, :Ho, :Wo, :]  # n, Ho, Wo, O

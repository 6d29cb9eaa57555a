"""A Tucker convolution through its dense kernel, where its three convolutions cost more.

The Tucker forward (:func:`refdlrt.nn.lowrank_layers.tucker_conv2d_forward`) runs
z1 = U_1^T x, z2 = conv2d(z1, C x_2 U_2 x_3 U_3), y = U_0 z2 + b: per sample

    H W C_in r_1  +  Ho Wo (r_0 r_1 kh kw + r_0 C_out)   multiplications,

against Ho Wo C_out C_in kh kw for the dense convolution with W = C x_0 U_0 ... x_3 U_3. At ranks
near the channel counts (LeNet5's conv2 settles at (13, 6) of (16, 6): 0.93 of the dense count)
the three stages, each with its own pass over memory, take longer than the one dense
convolution: 1.75 against 1.47 ms forward on this project's 2-core machine, where vgg_small's
conv2 at 0.36 of the dense count takes 16 against 26 ms. Where the Tucker count is at least
``DENSE_KERNEL_SHARE`` of the dense one, :class:`refdlrt.nn.lowrank_layers.TuckerConv2d` forms
W (a few thousand numbers) and runs :func:`~refdlrt.ops.conv.conv2d_forward` /
:func:`~refdlrt.ops.conv.conv2d_backward` (no dw), and its projector takes the "dense" route,
which needs only x and dy. The same y, dx and projections to rounding (a test pins them to the
Tucker route's).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ops.conv import conv2d_backward, conv2d_forward, conv_output_size
from ..tensor.tucker import Tucker
from .lowrank_projectors import TuckerConvProjector, channel_matmul

__all__ = ["DENSE_KERNEL_SHARE", "dense_kernel_pays", "dense_kernel_forward", "dense_kernel_backward"]

DENSE_KERNEL_SHARE = 0.75  # between the two measured points above (0.36: Tucker faster; 0.93: slower)


def dense_kernel_pays(Y: Tucker, in_size, geometry) -> bool:
    """True where the Tucker forward's multiplications are at least ``DENSE_KERNEL_SHARE`` of the
    dense convolution's (module docstring), for input size (H, W) and geometry (stride,
    padding, dilation) pairs."""
    (C_out, C_in, kh, kw), (r0, r1) = Y.shape, Y.ranks[:2]
    (H, W), (s, p, d) = in_size, geometry
    Ho, Wo = (conv_output_size(n, k, *a) for n, k, a in zip((H, W), (kh, kw), zip(s, p, d)))
    tucker = H * W * C_in * r1 + Ho * Wo * (r0 * r1 * kh * kw + r0 * C_out)
    return tucker >= DENSE_KERNEL_SHARE * Ho * Wo * C_out * C_in * kh * kw


@dataclass(frozen=True)
class DenseKernelCache:
    """What :func:`dense_kernel_backward` needs: x, the dense convolution's cache, the weight
    and the geometry."""

    x: object
    conv_cache: object
    Y: Tucker
    geometry: tuple


def dense_kernel_forward(x, Y: Tucker, b, geometry):
    """y = conv2d(x, W) + b with W = Y.to_tensor() (C_out, C_in, kh, kw); returns (y, cache)."""
    s, p, d = geometry
    y, conv_cache = conv2d_forward(x, Y.to_tensor(), b, stride=s, padding=p, dilation=d)
    return y, DenseKernelCache(x, conv_cache, Y, geometry)


def dense_kernel_backward(dy, cache: DenseKernelCache, *, route="auto"):
    """(dx, db, projector): dx and db of the dense convolution (its dw is not computed), and the
    projector of G: on its "dense" route for ``route`` "auto" or "dense" (G = the kernel
    gradient of x and dy, formed once); for "plain" or "blocks" (a route set after the forward)
    z1 = U_1^T x and dz2 = U_0^T dy are computed here, as the Tucker backward has them."""
    dx, _, db = conv2d_backward(dy, cache.conv_cache, need_dw=False)
    x, (U0, U1) = cache.x, cache.Y.factors[:2]
    z1, dz2 = (None, None) if route in ("auto", "dense") else (channel_matmul(U1.T, x), channel_matmul(U0.T, dy))
    projector = TuckerConvProjector(x, z1, dy, dz2, cache.Y.factors, cache.geometry,
                                    route="dense" if z1 is None else route)
    return dx, db, projector

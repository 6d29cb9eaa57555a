"""A Tucker convolution through its dense kernel, where its three convolutions cost more.

The Tucker forward (:func:`refdlrt.nn.lowrank_layers.tucker_conv2d_forward`) runs
z1 = U_1^T x, z2 = conv2d(z1, C x_2 U_2 x_3 U_3), y = U_0 z2 + b: per sample

    H W C_in r_1  +  Ho Wo (r_0 r_1 kh kw + r_0 C_out)   multiplications,

against Ho Wo C_out C_in kh kw for the dense convolution with W = C x_0 U_0 ... x_3 U_3. At ranks
near the channel counts (LeNet5's conv2 settles at (12-13, 6) of (16, 6): 0.86-0.93 of the dense count)
the three stages, each with its own pass over memory, take longer than the one dense
convolution: 1.75 against 1.47 ms forward on this project's 2-core machine, where vgg_small's
conv2 at 0.36 of the dense count takes 16 against 26 ms (forward). Where the Tucker count is at least
``DENSE_KERNEL_SHARE`` of the dense one, :class:`refdlrt.nn.lowrank_layers.TuckerConv2d` forms
W (a few thousand numbers) and runs :func:`~refdlrt.ops.conv.conv2d_forward` /
:func:`~refdlrt.ops.conv.conv2d_backward` (no dw), and its projector takes the "dense" route,
which needs only x and dy. The same y, dx and projections to rounding (a test pins them to the
Tucker route's).
"""

from __future__ import annotations

from dataclasses import dataclass

from .._checks import check_grad
from ..ops.conv import conv2d_backward, conv2d_forward, conv_output_size
from ..tensor.tucker import Tucker
from .lowrank_projectors import TuckerConvProjector, channel_matmul

__all__ = ["DENSE_KERNEL_SHARE", "dense_kernel_pays", "dense_kernel_forward", "dense_kernel_backward"]

DENSE_KERNEL_SHARE = 0.75  # between the two measured points above (0.36: Tucker faster; 0.93: slower)


def dense_kernel_pays(Y: Tucker, in_size, geometry) -> bool:
    """Whether the Tucker forward costs at least ``DENSE_KERNEL_SHARE`` of the dense one.

    Parameters
    ----------
    Y : Tucker, the kernel (C_out, C_in, kh, kw) at ranks (r_0, r_1, r_2, r_3)
    in_size : (H, W), the input's spatial size
    geometry : (stride, padding, dilation), each a pair of ints

    Returns
    -------
    bool: H W C_in r_1 + Ho Wo (r_0 r_1 kh kw + r_0 C_out) >= DENSE_KERNEL_SHARE Ho Wo C_out C_in kh kw
    (multiplications of the three stages against the dense convolution's; module docstring).
    """
    (C_out, C_in, kh, kw), (r0, r1) = Y.shape, Y.ranks[:2]
    (H, W), (s, p, d) = in_size, geometry
    Ho, Wo = (conv_output_size(n, k, *a) for n, k, a in zip((H, W), (kh, kw), zip(s, p, d)))
    tucker = H * W * C_in * r1 + Ho * Wo * (r0 * r1 * kh * kw + r0 * C_out)
    return tucker >= DENSE_KERNEL_SHARE * Ho * Wo * C_out * C_in * kh * kw


@dataclass(frozen=True)
class DenseKernelCache:
    """What :func:`dense_kernel_backward` needs: x, the dense convolution's cache, the weight as
    it was in the forward (a snapshot), the geometry and the output's shape."""

    x: object
    conv_cache: object
    Y: Tucker
    geometry: tuple
    y_shape: tuple


def dense_kernel_forward(x, Y: Tucker, b, geometry):
    """The Tucker convolution's forward as one dense convolution.

    Parameters
    ----------
    x : array (N, C_in, H, W)
    Y : Tucker, the kernel (C_out, C_in, kh, kw)
    b : array (C_out,) or None
    geometry : (stride, padding, dilation), each a pair of ints

    Returns
    -------
    y : array (N, C_out, Ho, Wo), y = conv2d(x, W) + b with W = C x_0 U_0 x_1 U_1 x_2 U_2 x_3 U_3
    cache : DenseKernelCache
    """
    s, p, d = geometry
    Y = Y.copy()  # the forward's kernel, for the backward and the projector (a few small arrays)
    W = Y.to_tensor()  # C_out, C_in, kh, kw
    y, conv_cache = conv2d_forward(x, W, b, stride=s, padding=p, dilation=d)  # N, C_out, Ho, Wo
    return y, DenseKernelCache(x, conv_cache, Y, geometry, tuple(y.shape))


def dense_kernel_backward(dy, cache: DenseKernelCache, *, route="auto"):
    """Backward of :func:`dense_kernel_forward`.

    Parameters
    ----------
    dy : array (N, C_out, Ho, Wo)
    cache : DenseKernelCache
    route : "auto", "dense", "plain" or "blocks", the projector's route

    Returns
    -------
    dx : array (N, C_in, H, W), the dense convolution's input gradient (its dw is not computed)
    db : array (C_out,) or None
    projector : TuckerConvProjector of G = dL/dW. For "auto" and "dense" it takes the "dense"
        route (G = the kernel gradient of x and dy, formed once); for "plain" or "blocks" (a
        route set after the forward) z1 = U_1^T x and dz2 = U_0^T dy are computed here, as the
        Tucker backward has them.
    """
    check_grad(dy, cache.y_shape, cache.x.dtype, "dense_kernel_backward: dy", layout=" (the output's)")
    dx, _, db = conv2d_backward(dy, cache.conv_cache, need_dw=False)  # N, C_in, H, W
    x, (U0, U1) = cache.x, cache.Y.factors[:2]
    z1, dz2 = None, None
    if route not in ("auto", "dense"):
        z1 = channel_matmul(U1.T, x)  # N, r1, H, W
        dz2 = channel_matmul(U0.T, dy)  # N, r0, Ho, Wo
    projector = TuckerConvProjector(x, z1, dy, dz2, cache.Y.factors, cache.geometry,
                                    route="dense" if z1 is None else route)
    return dx, db, projector

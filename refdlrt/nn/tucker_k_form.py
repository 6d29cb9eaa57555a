"""A Tucker convolution whose forward and backward run the K-steps' convolutions themselves.

The K-step of mode i needs grad_{K_i} L = Mat_i(G x_{j≠i} U_j^T) Q_i, where Mat_i(C)^T = Q_i R_i
(ALGORITHM.md §2, steps 1-2). For the two channel modes it is a pixel sum of the layer's
activations with one convolution of the core's size (:meth:`TuckerConvProjector.k_gradient`):

    mode 0:  grad_{K_0} L = sum_{n, p} dy[n, :, p] f[n, :, p]^T,   f = conv2d(z1, F_0),
    mode 1:  grad_{K_1} L = sum_{n, p} x[n, :, p] h[n, :, p]^T,    h = conv2d_input_grad(dz2, E_1),

with the kernels F_0, E_1 of Q_0, Q_1 (:func:`~refdlrt.nn.lowrank_projectors.k_kernel`). Those are
the Tucker convolution's own core convolutions written in another basis: since Mat_i(C) = R_i^T Q_i^T,

    y  = U_0 conv2d(z1, C x_2 U_2 x_3 U_3) + b = K_0 f + b,           K_0 = U_0 R_0^T,
    dx = U_1 conv2d_input_grad(dz2, C x_2 U_2 x_3 U_3) = K_1 h,       K_1 = U_1 R_1^T,

where K_i is exactly the K-step's K_i. So the "K-form" below runs the forward through f and the
backward through h, at the cost of the Tucker forward and backward (the same channel counts; two
QRs of the small core), and hands f and h to the projector: the K-steps of modes 0 and 1 then take
no convolution at all, only their pixel sums. No inverse of R_i is ever taken (f and h are
computed, not recovered from the Tucker route's z2 and dz1), so the K-steps' gradients are the
same numbers as the projector's own convolutions give, bit for bit.

:class:`refdlrt.nn.lowrank_layers.TuckerConv2d` takes this route (``k_form`` "auto") where the
projector's plain route is the cheapest with the K-steps free (:func:`refdlrt.nn.route_cost.cheapest_route`
with ``k_form=True``), and only in training (an evaluation forward has no backward). The same y, dx,
db and projections as the Tucker route to rounding (tests pin them).
"""

from __future__ import annotations

from dataclasses import dataclass

from .._checks import check_grad
from ..ops.broadcast import channel_pattern, channel_sum
from ..ops.conv import conv2d_forward, conv2d_input_grad
from ..tensor.linalg import qr_signfixed
from ..tensor.tucker import Tucker, unfold
from .lowrank_base import _check_tucker_conv_args
from .lowrank_projectors import TuckerConvProjector, channel_matmul, k_kernel

__all__ = ["KFormCache", "k_form_forward", "k_form_backward"]


@dataclass(frozen=True)
class KFormCache:
    """What :func:`k_form_backward` needs: x, z1 = U_1^T x, Q_0 and f = conv2d(z1, F_0), Q_1 and
    R_1 of Mat_1(C)^T, the weight as it was in the forward (a snapshot: the backward and the
    projector see the kernel y was computed with, whatever happens to the layer's arrays in
    between), the geometry, whether there is a bias, and the output shape."""

    x: object
    z1: object
    Q0: object
    f: object
    Q1: object
    R1: object
    Y: Tucker
    geometry: tuple
    has_bias: bool
    y_shape: tuple


def k_form_forward(x, Y: Tucker, b, geometry):
    """The Tucker convolution's forward through the mode-0 K-step's convolution.

    Parameters
    ----------
    x : array (N, C_in, H, W)
    Y : Tucker, the kernel (C_out, C_in, kh, kw), orthonormal factors
    b : array (C_out,) or None
    geometry : (stride, padding, dilation), each a pair of ints

    Returns
    -------
    y : array (N, C_out, Ho, Wo), y = K_0 f + b = conv2d(x, C x_0 U_0 ... x_3 U_3) + b
    cache : KFormCache

    Notes
    -----
    Mat_0(C)^T = Q_0 R_0 (sign-fixed QR, as the K-step takes it); z1 = U_1^T x;
    f = conv2d(z1, F_0) with F_0 = Q_0^T x_2 U_2 x_3 U_3 (q_0 x r_1 x kh x kw); y = (U_0 R_0^T) f + b.
    Mat_1(C)^T = Q_1 R_1 is taken here too, for the backward.
    """
    _check_tucker_conv_args(x, Y, b, "k_form_forward")
    s, p, d = geometry
    Y = Y.copy()  # the forward's kernel, for the backward and the projector (a few small arrays)
    U0, U1, U2, U3 = Y.factors
    Q0, R0 = qr_signfixed(unfold(Y.core, 0).T)  # Q0: r1 r2 r3 x q0,  R0: q0 x r0
    Q1, R1 = qr_signfixed(unfold(Y.core, 1).T)  # Q1: r0 r2 r3 x q1,  R1: q1 x r1
    z1 = channel_matmul(U1.T, x)  # N, r1, H, W
    f = conv2d_forward(z1, k_kernel(0, Q0, Y.ranks, U2, U3), None,
                       stride=s, padding=p, dilation=d)[0]  # N, q0, Ho, Wo
    y = channel_matmul(U0 @ R0.T, f)  # K_0 f: N, C_out, Ho, Wo
    if b is not None:
        y += channel_pattern(b, y)  # in place, as the Tucker forward
    return y, KFormCache(x, z1, Q0, f, Q1, R1, Y, geometry, b is not None, tuple(y.shape))


def k_form_backward(dy, cache: KFormCache, *, route="auto"):
    """Backward of :func:`k_form_forward` through the mode-1 K-step's convolution.

    Parameters
    ----------
    dy : array (N, C_out, Ho, Wo)
    cache : KFormCache
    route : "auto", "plain", "blocks" or "dense", the projector's route

    Returns
    -------
    dx : array (N, C_in, H, W), dx = K_1 h
    db : array (C_out,) or None
    projector : TuckerConvProjector with ``k_parts`` {0: (Q_0, f), 1: (Q_1, h)}

    Notes
    -----
    dz2 = U_0^T dy; Mat_1(C)^T = Q_1 R_1 (taken in the forward); h = conv2d_input_grad(dz2, E_1)
    with E_1 (r_0 x q_1 x kh x kw) from Q_1; dx = (U_1 R_1^T) h; db = Σ dy over N, Ho, Wo. The
    weight is the forward's snapshot throughout, so the projector's own factors (against which
    it checks the matrices it is asked for) are the ones f and h were made with.
    """
    x, Y, Q1 = cache.x, cache.Y, cache.Q1
    check_grad(dy, cache.y_shape, x.dtype, "k_form_backward: dy", layout=" (the output's)")
    s, p, d = cache.geometry
    U0, U1, U2, U3 = Y.factors
    dz2 = channel_matmul(U0.T, dy)  # N, r0, Ho, Wo
    N, _, H, W = x.shape
    h = conv2d_input_grad(dz2, k_kernel(1, Q1, Y.ranks, U2, U3), (N, Q1.shape[1], H, W),
                          stride=s, padding=p, dilation=d)  # N, q1, H, W
    db = channel_sum(dy) if cache.has_bias else None
    projector = TuckerConvProjector(x, cache.z1, dy, dz2, Y.factors, cache.geometry, route=route,
                                    k_parts={0: (cache.Q0, cache.f), 1: (Q1, h)})
    return channel_matmul(U1 @ cache.R1.T, h), db, projector  # dx = K_1 h: N, C_in, H, W

"""Low-rank layers: Tucker convolution, matrix low-rank linear layer and convolution.

Each layer stores its weight as a :class:`~refdlrt.tensor.tucker.Tucker` ``weight`` (orthonormal
factors, 0-based modes; the trainer assigns a new one after each integrator step) and only
the bias in ``params``. After ``backward``, ``projector()`` returns an object whose
``project(mats) = G x_0 mats[0]^T ... x_{d-1} mats[d-1]^T`` (None: mode unprojected),
G = dL/dW at W = weight.to_tensor(), computed from the cached layer input and output
gradient through reduced contractions (see :mod:`refdlrt.nn.lowrank_projectors`); the dense G
is not formed on that route (a Tucker conv whose ranks are close to its channel counts forms it
once, its "dense" route, when that is cheaper). ``dense_gradient()`` forms G (the readable oracle).
``dense_shape`` is the shape of the Tucker tensor (and of G); ``dense_weight()`` is the
layer's kernel in the dense layer's layout (OIHW for convolutions, (out, in) for linear). Their
shared plumbing (weight, bias, caches, input checks) is in :mod:`refdlrt.nn.lowrank_base`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._checks import check_float_array, check_grad, check_ndim, pair
from ..ops.broadcast import channel_pattern, channel_sum
from ..ops.conv import conv2d_backward, conv2d_forward
from ..tensor.hosvd import hosvd
from ..tensor.tucker import Tucker, multi_mode_product
from .lowrank_base import _check_geometry, _check_input, _check_tucker_conv_args, _LowRankLayer
from .lowrank_projectors import TuckerConvProjector, channel_matmul
from .matrix_projectors import LowRankLinearProjector, MatrixConvProjector
from .route_cost import cheapest_route
from .tucker_dense_kernel import dense_kernel_backward, dense_kernel_forward, dense_kernel_pays
from .tucker_k_form import KFormCache, k_form_backward, k_form_forward

__all__ = [
    "tucker_conv2d_forward",
    "tucker_conv2d_backward",
    "LowRankLinear",
    "MatrixConv2d",
    "TuckerConv2d",
]


@dataclass(frozen=True)
class TuckerConvCache:
    """What :func:`tucker_conv2d_backward` needs: x, z1 = U_1^T x, the core conv's cache,
    the weight as it was in the forward (a snapshot: the backward and the projector see the
    kernel y was computed with, whatever happens to the layer's arrays in between), the
    geometry, whether there is a bias, and the output shape."""

    x: object
    z1: object
    conv_cache: object
    Y: Tucker
    geometry: tuple
    has_bias: bool
    y_shape: tuple


def tucker_conv2d_forward(x, Y: Tucker, b=None, *, stride=1, padding=0, dilation=1):
    """Tucker convolution y = conv2d(x, C x_0 U_0 x_1 U_1 x_2 U_2 x_3 U_3) + b, in three stages.

    Parameters
    ----------
    x : array (N, C_in, H, W)
    Y : Tucker, order 4, dense shape (C_out, C_in, kh, kw), orthonormal factors
    b : array (C_out,) or None

    Returns
    -------
    (y, cache): y (N, C_out, Ho, Wo) and the cache for :func:`tucker_conv2d_backward`.

    Notes
    -----
    ALGORITHM.md §3 (0-based modes): z1 = U_1^T x (1x1, C_in -> r_1, input resolution);
    z2 = conv2d(z1, C x_2 U_2 x_3 U_3) (an r_0 x r_1 x kh x kw kernel with the layer's stride,
    padding and dilation); y = U_0 z2 + b (1x1, r_0 -> C_out; the bias is added here, once).
    Cost: C_in r_1 multiply-adds per *input* pixel, plus r_0 r_1 kh kw + r_0 C_out per output
    pixel, instead of C_out C_in kh kw per output pixel.
    """
    _check_tucker_conv_args(x, Y, b, "tucker_conv2d_forward")
    geometry = _check_geometry(stride, padding, dilation)
    Y = Y.copy()  # the forward's kernel, for the backward and the projector (a few small arrays)
    U0, U1, U2, U3 = Y.factors
    K = multi_mode_product(Y.core, [None, None, U2, U3])  # r0, r1, kh, kw
    z1 = channel_matmul(U1.T, x)  # N, r1, H, W
    s, p, d = geometry
    z2, conv_cache = conv2d_forward(z1, K, None, stride=s, padding=p, dilation=d)  # N, r0, Ho, Wo
    y = channel_matmul(U0, z2)  # N, C_out, Ho, Wo
    if b is not None:
        y += channel_pattern(b, y)  # in place: a new array of y's size costs its page faults
    return y, TuckerConvCache(x, z1, conv_cache, Y, geometry, b is not None, tuple(y.shape))


def tucker_conv2d_backward(dy, cache: TuckerConvCache, *, route="auto"):
    """Backward of :func:`tucker_conv2d_forward`: (dx, db, projector).

    Notes
    -----
    dz2 = U_0^T dy; dz1 = input gradient of the core conv; dx = U_1 dz1; db = Σ dy over
    N, Ho, Wo (None without bias). The kernel gradient G is not formed: ``projector`` gives
    G x_i A_i^T from the cached x, z1, dy and dz2 (:class:`TuckerConvProjector`). The core
    conv's kernel gradient dK = G x_0 U_0^T x_1 U_1^T is not computed here either: only the
    K-steps of the spatial modes ask for it (taken when those modes are not square, or not
    adaptive: fixed-rank steps, warm-up and fine-tune epochs, ``conv_adaptive_modes``) and
    diagnostics; the projector then takes it from z1 and dz2, or from G on its "dense" route.
    ``route`` picks how the projector computes the step's projections
    (:class:`TuckerConvProjector`).
    """
    x, Y = cache.x, cache.Y
    check_grad(dy, cache.y_shape, x.dtype, "tucker_conv2d_backward: dy", layout=" (the output's)")
    U0, U1 = Y.factors[:2]
    dz2 = channel_matmul(U0.T, dy)  # N, r0, Ho, Wo
    projector = TuckerConvProjector(x, cache.z1, dy, dz2, Y.factors, cache.geometry, route=route)
    dz1 = conv2d_backward(dz2, cache.conv_cache, need_dw=False)[0]  # N, r1, H, W
    db = channel_sum(dy) if cache.has_bias else None
    return channel_matmul(U1, dz1), db, projector  # dx: N, C_in, H, W


class TuckerConv2d(_LowRankLayer):
    """Convolution whose kernel (C_out, C_in, kh, kw) is a Tucker tensor C x_i U_i: a thin
    stateful wrapper around :func:`tucker_conv2d_forward` / :func:`tucker_conv2d_backward`.

    Notes
    -----
    Forward as three convolutions (ALGORITHM.md §3, 0-based modes):
    z1 = U_1^T x (1x1, C_in -> r1, input resolution);
    z2 = conv2d(z1, C x_2 U_2 x_3 U_3) (r0 x r1 x kh x kw kernel, the layer's stride /
    padding / dilation); y = U_0 z2 + b (1x1, r0 -> C_out, bias added once). Where those
    three cost at least 0.75 of the dense convolution's multiplications (ranks near the channel
    counts), ``dense_kernel`` "auto" runs W = C x_i U_i as one dense convolution instead, its
    projector on the "dense" route (:mod:`refdlrt.nn.tucker_dense_kernel`; same numbers to rounding).
    Where the projector's "plain" route is the cheapest once the K-steps' convolutions are free,
    ``k_form`` "auto" runs the training forward and backward through them (z2 = R_0^T f,
    dz1 = R_1^T h, :mod:`refdlrt.nn.tucker_k_form`; same numbers to rounding), so that the K-steps
    take only pixel sums.
    """

    _order, _name = 4, "TuckerConv2d"
    # how the projector computes G x_0 A0^T x_1 A1^T: "auto" (by its cost model), "plain",
    # "blocks" or "dense" (see TuckerConvProjector); all equal to rounding
    projection_route = "auto"
    # the forward through the dense kernel W (tucker_dense_kernel): "auto" (its cost rule), True, False
    dense_kernel = "auto"
    # the training forward and backward through the K-steps' convolutions (tucker_k_form): "auto"
    # (where the plain route is then the cheapest, or asked for), True (whenever the forward does
    # not go through the dense kernel, which comes first), False (never)
    k_form = "auto"

    def __init__(self, weight, b=None, stride=1, padding=0, dilation=1):
        self.stride, self.padding, self.dilation = _check_geometry(stride, padding, dilation)
        super().__init__(weight, b)

    @classmethod
    def from_dense(cls, w, b=None, ranks=None, *, stride=1, padding=0, dilation=1):
        """Truncated HOSVD of a dense kernel w (C_out, C_in, kh, kw) to ``ranks`` (4 ints)."""
        check_float_array(w, "TuckerConv2d.from_dense: w")
        check_ndim(w, 4, "TuckerConv2d.from_dense: w", "C_out, C_in, kh, kw")
        Y, _ = hosvd(w, ranks=ranks)
        return cls(Y, b, stride, padding, dilation)

    def dense_weight(self):
        """The kernel C x_0 U_0 x_1 U_1 x_2 U_2 x_3 U_3, (C_out, C_in, kh, kw)."""
        return self.weight.to_tensor()

    def forward(self, x, *, training: bool = True):
        geometry = (self.stride, self.padding, self.dilation)
        if self.k_form not in ("auto", True, False):
            raise ValueError(f"{self._name}: k_form: expected 'auto', True or False, got {self.k_form!r}")
        if self._dense_kernel(x, geometry):  # the three stages would cost more: W's one convolution
            _check_input(x, 4, self.dense_shape[1], self.weight.dtype, "N, C_in, H, W", self._name)
            y, self._cache = dense_kernel_forward(x, self.weight, self.params.get("b"), geometry)
        elif training and self._k_form():  # the K-steps' convolutions inside forward and backward
            y, self._cache = k_form_forward(x, self.weight, self.params.get("b"), geometry)
        else:
            y, self._cache = tucker_conv2d_forward(
                x, self.weight, self.params.get("b"),
                stride=self.stride, padding=self.padding, dilation=self.dilation,
            )
        self._projector = None
        return y

    def _dense_kernel(self, x, geometry) -> bool:
        """Run the dense kernel (:mod:`refdlrt.nn.tucker_dense_kernel`): when ``dense_kernel``
        is True, or "auto" and its cost rule says so; never for the "plain" and "blocks"
        projection routes, which need the Tucker forward's z1 and dz2."""
        if self.dense_kernel not in ("auto", True, False):
            raise ValueError(f"{self._name}: dense_kernel: expected 'auto', True or False, got "
                             f"{self.dense_kernel!r}")
        if self.projection_route not in ("auto", "dense") or getattr(x, "ndim", 0) != 4:
            return False
        if self.dense_kernel == "auto":
            return dense_kernel_pays(self.weight, tuple(x.shape[2:]), geometry)
        return self.dense_kernel

    def _k_form(self) -> bool:
        """Run the K-form (:mod:`refdlrt.nn.tucker_k_form`): when ``k_form`` is True, or "auto"
        and the projection route is "plain" (asked for, or picked by the cost model with the
        K-steps' convolutions free)."""
        if self.k_form != "auto":
            return self.k_form
        if self.projection_route != "auto":
            return self.projection_route == "plain"
        Y = self.weight
        return cheapest_route(Y.shape, Y.ranks[0], Y.ranks[1], k_form=True) == "plain"

    def backward(self, dy):
        cache = self._cached()
        if isinstance(cache, TuckerConvCache):
            dx, db, self._projector = tucker_conv2d_backward(dy, cache, route=self.projection_route)
        elif isinstance(cache, KFormCache):
            dx, db, self._projector = k_form_backward(dy, cache, route=self.projection_route)
        else:
            dx, db, self._projector = dense_kernel_backward(dy, cache, route=self.projection_route)
        if db is not None:
            self.grads["b"] = db
        return dx


class LowRankLinear(_LowRankLayer):
    """Linear layer with weight W = U_0 C U_1^T (out, in).

    Notes
    -----
    y = ((x U_1) C^T) U_0^T + b; backward dx = ((dy U_0) C) U_1^T.
    """

    _order, _name = 2, "LowRankLinear"

    @classmethod
    def from_dense(cls, w, b=None, ranks=None):
        """Truncated SVD (HOSVD with d = 2) of a dense w (out, in) to ``ranks`` (2 ints)."""
        check_float_array(w, "LowRankLinear.from_dense: w")
        check_ndim(w, 2, "LowRankLinear.from_dense: w", "out, in")
        Y, _ = hosvd(w, ranks=ranks)
        return cls(Y, b)

    def dense_weight(self):
        """W = U_0 C U_1^T, (out, in)."""
        return self.weight.to_tensor()

    def forward(self, x, *, training: bool = True):
        Y = self.weight
        U0, U1 = Y.factors
        _check_input(x, 2, U1.shape[0], Y.dtype, "N, in", self._name)
        z1 = x @ U1  # N, r1
        y = self._add_bias((z1 @ Y.core.T) @ U0.T)  # N, out
        self._cache, self._projector = (x, z1, Y, y.shape), None
        return y

    def backward(self, dy):
        x, z1, Y, y_shape = self._cached()
        self._check_dy(dy, y_shape, x.dtype)
        U0, U1 = Y.factors
        dz2 = dy @ U0  # N, r0
        self._bias_grad(dy)
        self._projector = LowRankLinearProjector(x, z1, dy, dz2, Y.factors)
        return (dz2 @ Y.core) @ U1.T  # N, in


class MatrixConv2d(_LowRankLayer):
    """Convolution whose kernel, reshaped (C order) to the matrix C_out x (C_in kh kw), is
    U_0 C U_1^T: the matrix DLRT baseline.

    Notes
    -----
    Forward: z1 = conv2d(x, U_1^T reshaped to (r1, C_in, kh, kw)) (N, r1, Ho, Wo), then
    y = (U_0 C) z1 + b (a 1x1 conv): r1 C_in kh kw + C_out r1 multiply-adds per output pixel
    instead of C_out C_in kh kw, and z1 is the "x U_1" the projector reuses (as z1 = x U_1 of
    LowRankLinear). Backward: dz2 = U_0^T dy (cached for the projector), dz1 = C^T dz2,
    dx = conv2d_backward(dz1).
    """

    _order, _name = 2, "MatrixConv2d"

    def __init__(self, weight, b=None, kernel_size=3, stride=1, padding=0, dilation=1):
        self.kernel_size = pair(kernel_size, "kernel_size")
        if min(self.kernel_size) < 1:
            raise ValueError(f"MatrixConv2d: kernel_size must be positive, got {self.kernel_size}")
        self.stride, self.padding, self.dilation = _check_geometry(stride, padding, dilation)
        super().__init__(weight, b)

    def _check_weight_geometry(self, Y):
        kh, kw = self.kernel_size
        if Y.shape[1] % (kh * kw):
            raise ValueError(
                f"MatrixConv2d: weight shape {Y.shape} does not fit kernel_size "
                f"{self.kernel_size}: columns must be C_in * {kh * kw}"
            )

    @property
    def in_channels(self) -> int:
        return self.dense_shape[1] // math.prod(self.kernel_size)

    @classmethod
    def from_dense(cls, w, b=None, ranks=None, *, stride=1, padding=0, dilation=1):
        """Truncated SVD of the kernel w (C_out, C_in, kh, kw) reshaped to (C_out, C_in kh kw)."""
        check_float_array(w, "MatrixConv2d.from_dense: w")
        check_ndim(w, 4, "MatrixConv2d.from_dense: w", "C_out, C_in, kh, kw")
        Y, _ = hosvd(w.reshape(w.shape[0], -1), ranks=ranks)
        return cls(Y, b, tuple(w.shape[2:]), stride, padding, dilation)

    def dense_weight(self):
        """The conv kernel (C_out, C_in, kh, kw): U_0 C U_1^T reshaped.

        ``dense_shape`` (and ``dense_gradient()``) are the matrix (C_out, C_in kh kw).
        """
        return self.weight.to_tensor().reshape(
            (self.dense_shape[0], self.in_channels) + self.kernel_size
        )

    def forward(self, x, *, training: bool = True):
        Y = self.weight
        U0, U1 = Y.factors
        _check_input(x, 4, self.in_channels, Y.dtype, "N, C_in, H, W", self._name)
        k1 = U1.T.reshape((U1.shape[1], self.in_channels) + self.kernel_size)  # r1, C_in, kh, kw
        z1, conv_cache = conv2d_forward(
            x, k1, None, stride=self.stride, padding=self.padding, dilation=self.dilation
        )  # N, r1, Ho, Wo
        y = self._add_bias(channel_matmul(U0 @ Y.core, z1))  # N, C_out, Ho, Wo
        self._cache, self._projector = (x, z1, conv_cache, Y, y.shape), None
        return y

    def backward(self, dy):
        x, z1, conv_cache, Y, y_shape = self._cached()
        self._check_dy(dy, y_shape, x.dtype)
        U0 = Y.factors[0]
        dz2 = channel_matmul(U0.T, dy)  # N, r0, Ho, Wo
        dx, _, _ = conv2d_backward(channel_matmul(Y.core.T, dz2), conv_cache)  # N, C_in, H, W
        self._bias_grad(dy)
        geometry = (self.stride, self.padding, self.dilation)
        self._projector = MatrixConvProjector(x, z1, dy, dz2, Y.factors, self.kernel_size, geometry)
        return dx

"""Gradient projectors of the low-rank layers: G x_0 A0^T ... x_{d-1} A_{d-1}^T from cached
activations, without forming G (ALGORITHM.md §2 "Cost insight for layers").

G = dL/dW is the gradient of a layer's dense weight at W = Y. The mode-0 matrix A0 only
ever meets the output gradient dy (output channels) and the mode-1 matrix A1 only the
layer input x (input channels), so

    G x_0 A0^T x_1 A1^T = (weight gradient of the same layer for input A1^T x and
                           output gradient A0^T dy)        (the "reduced" gradient),

a tensor of size a x b (x kh x kw for the Tucker conv, whose modes 2, 3 are projected
afterwards; for the matrix conv, A1 acts on the im2col patches of x, i.e. "A1^T x" is
conv2d(x, A1^T reshaped to kernels)). Each projector reuses the layer's cached
z1 = U_1^T x and dz2 = U_0^T dy when A1 equals U_1 / A0 equals U_0, and memoises its last
few reduced gradients; both are keyed on the numbers (copies), never on object identity, so
an array changed in place by the caller cannot return a stale answer. ``dense()`` forms G (the readable oracle route).
"""

from __future__ import annotations

from ..backend import get_xp
from ..ops.conv import conv2d_forward, conv2d_weight_grad
from ..tensor.tucker import multi_mode_product

__all__ = [
    "LowRankLinearProjector",
    "MatrixConvProjector",
    "TuckerConvProjector",
    "channel_matmul",
]


def channel_matmul(A, x):
    """1x1 convolution as a batched matmul: y[n, :, h, w] = A x[n, :, h, w], A (m, C)."""
    N, C, H, W = x.shape
    return (A @ x.reshape(N, C, H * W)).reshape(N, A.shape[0], H, W)  # N, m, H, W


def _same(A, B) -> bool:
    """A and B hold the same numbers (content, not identity: a caller may change an array in
    place between two calls, and an identity key would then return a stale answer)."""
    if A is None or B is None:
        return A is B
    if A.shape != B.shape or A.dtype != B.dtype:
        return False
    return bool(get_xp(A, B).array_equal(A, B))


def _project_channels(A, own, cached, raw):
    """A^T raw over the channel axis; ``raw`` if A is None; ``cached`` if A equals ``own``
    (a snapshot of the factor the layer used)."""
    if A is None:
        return raw
    if _same(A, own):
        return cached
    return channel_matmul(A.T, raw) if raw.ndim == 4 else raw @ A


def _conv2d_weight_grad(x, dy, kernel_size, stride, padding, dilation):
    """Kernel gradient of y = conv2d(x, w) for the reduced channels: (A, C, kh, kw).
    (One indirection so tests can count calls.)"""
    return conv2d_weight_grad(x, dy, kernel_size, stride=stride, padding=padding, dilation=dilation)


class _ReducedProjector:
    """project(mats) = finish(reduced(mats[0], mats[1]), mats), with the last few reduced
    gradients memoised by the content of (mats[0], mats[1])."""

    _MEMO_SIZE = 4

    def __init__(self, shape):
        self.shape = tuple(shape)
        self._memo = []  # [(copy of A0, copy of A1, reduced)], most recent first

    def _remember(self, A0, A1, value):
        # keep copies: the key is the content of A0, A1 at the time of the call
        snap = tuple(None if A is None else A.copy() for A in (A0, A1))
        self._memo = [(*snap, value)] + self._memo[: self._MEMO_SIZE - 1]

    def reduced_gradient(self, A0, A1):
        """G x_0 A0^T x_1 A1^T (memoised by the content of A0, A1)."""
        for a0, a1, value in self._memo:
            if _same(a0, A0) and _same(a1, A1):
                return value
        value = self._reduced(A0, A1)
        self._remember(A0, A1, value)
        return value

    def project(self, mats):
        """G x_0 mats[0]^T ... x_{d-1} mats[d-1]^T (None entries: mode unprojected)."""
        mats = list(mats)
        if len(mats) != len(self.shape):
            raise ValueError(
                f"project: expected {len(self.shape)} matrices (one per mode), got {len(mats)}"
            )
        for i, A in enumerate(mats):
            if A is not None and (A.ndim != 2 or A.shape[0] != self.shape[i]):
                raise ValueError(
                    f"project: mats[{i}] must have shape ({self.shape[i]}, m) for "
                    f"weight shape {self.shape}, got {tuple(A.shape)}"
                )
        R = self.reduced_gradient(mats[0], mats[1])
        out = R
        if len(mats) > 2:
            out = multi_mode_product(
                R, [None, None] + [None if A is None else A.T for A in mats[2:]]
            )
        return out.copy() if out is R else out  # never hand out the memoised array itself


class TuckerConvProjector(_ReducedProjector):
    """Projections of the kernel gradient G (C_out, C_in, kh, kw) of a Tucker convolution.

    Notes
    -----
    G x_0 A0^T x_1 A1^T = conv kernel gradient for input A1^T x (channels) and output
    gradient A0^T dy, an (a, b, kh, kw) tensor; modes 2, 3 are then projected by A2^T, A3^T.
    z1 = U_1^T x and dz2 = U_0^T dy are reused when A1 is U_1 / A0 is U_0.
    """

    def __init__(self, x, z1, dy, dz2, factors, geometry, reduced_own=None):
        super().__init__((dy.shape[1], x.shape[1], factors[2].shape[0], factors[3].shape[0]))
        self.x, self.z1, self.dy, self.dz2 = x, z1, dy, dz2
        self.U0, self.U1 = factors[0].copy(), factors[1].copy()  # snapshots (see _same)
        self.geometry = geometry  # stride, padding, dilation
        if reduced_own is not None:  # the small-kernel gradient of backward = reduced(U0, U1)
            self._remember(self.U0, self.U1, reduced_own)

    def _reduced(self, A0, A1):
        xa = _project_channels(A1, self.U1, self.z1, self.x)  # N, b, H, W
        dya = _project_channels(A0, self.U0, self.dz2, self.dy)  # N, a, Ho, Wo
        return _conv2d_weight_grad(xa, dya, self.shape[2:], *self.geometry)  # a, b, kh, kw

    def dense(self):
        """The dense G (oracle route)."""
        return self._reduced(None, None)


class LowRankLinearProjector(_ReducedProjector):
    """Projections of G = dy^T x (out, in) of a low-rank linear layer.

    Notes
    -----
    A0^T G A1 = (dy A0)^T (x A1); z1 = x U_1 and dz2 = dy U_0 are reused.
    """

    def __init__(self, x, z1, dy, dz2, factors):
        super().__init__((dy.shape[1], x.shape[1]))
        self.x, self.z1, self.dy, self.dz2 = x, z1, dy, dz2
        self.U0, self.U1 = (U.copy() for U in factors)  # snapshots (see _same)

    def _reduced(self, A0, A1):
        xa = _project_channels(A1, self.U1, self.z1, self.x)  # N, b
        dya = _project_channels(A0, self.U0, self.dz2, self.dy)  # N, a
        return dya.T @ xa  # a, b

    def dense(self):
        return self._reduced(None, None)


class MatrixConvProjector(_ReducedProjector):
    """Projections of the matrix-shaped kernel gradient G (C_out, C_in kh kw).

    Notes
    -----
    With dya = A0^T dy (channels) and xb = conv2d(x, A1^T reshaped to (b, C_in, kh, kw)),
    A0^T G A1 = sum_{n, pixels} dya xb^T, an (a, b) matrix; z1 = conv2d(x, U_1^T) and
    dz2 = U_0^T dy are reused. With A1 None it is the kernel gradient for output gradient
    dya, reshaped to (a, C_in kh kw). So G is only formed when both entries are None.
    """

    def __init__(self, x, z1, dy, dz2, factors, kernel_size, geometry):
        super().__init__((dy.shape[1], x.shape[1] * kernel_size[0] * kernel_size[1]))
        self.x, self.z1, self.dy, self.dz2 = x, z1, dy, dz2
        self.U0, self.U1 = (U.copy() for U in factors)  # snapshots (see _same)
        self.kernel_size, self.geometry = kernel_size, geometry

    def _reduced(self, A0, A1):
        xp = get_xp(self.x)
        dya = _project_channels(A0, self.U0, self.dz2, self.dy)  # N, a, Ho, Wo
        if A1 is None:
            gw = _conv2d_weight_grad(
                self.x, dya, self.kernel_size, *self.geometry
            )  # a, C_in, kh, kw
            return gw.reshape(gw.shape[0], -1)  # a, C_in kh kw
        if _same(A1, self.U1):
            xb = self.z1
        else:
            kernel = A1.T.reshape((A1.shape[1], self.x.shape[1]) + tuple(self.kernel_size))
            s, p, d = self.geometry
            xb, _ = conv2d_forward(
                self.x, kernel, None, stride=s, padding=p, dilation=d
            )  # N, b, Ho, Wo
        return xp.tensordot(dya, xb, axes=([0, 2, 3], [0, 2, 3]))  # a, b

    def dense(self):
        return self._reduced(None, None)

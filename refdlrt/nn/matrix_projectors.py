"""Gradient projectors of the matrix-shaped low-rank weights (d = 2): ``LowRankLinear``'s
G = dy^T x and ``MatrixConv2d``'s G (C_out, C_in kh kw). Both reduce G's projections to products
of cached activations, as the Tucker convolution's projector does; the shared machinery (the memo
keyed by content, the channel projections, ``dense()``) is in
:mod:`refdlrt.nn.lowrank_projectors`.
"""

from __future__ import annotations

from ..backend import get_xp
from ..ops.conv import conv2d_forward
from .lowrank_projectors import _conv2d_weight_grad, _project_channels, _ReducedProjector, _same

__all__ = ["LowRankLinearProjector", "MatrixConvProjector"]


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

    def _memoises(self) -> bool:
        return False  # two thin products cost less than the memo's copies and comparisons

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

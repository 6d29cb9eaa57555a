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
few reduced gradients (except the Tucker projector's dense route, which keeps G, and the linear
projector, whose two thin products cost less than a memo); both are keyed on the numbers
(copies), never on object identity, so an array changed in place by the caller cannot return a
stale answer. ``dense()`` forms G (the readable oracle route).

The Tucker projector gives the K-steps' gradients Mat_i(G x_{j≠i} U_j^T) Q_i directly
(``k_gradient``: Q_i folded into a convolution of the core's size, then a 1 x 1 product; that
convolution is the K-form forward's / backward's own, handed over as ``k_parts``, where the
layer ran :mod:`refdlrt.nn.tucker_k_form`), and
has two other routes for a step's projections (see :class:`TuckerConvProjector`): "blocks"
takes the K-steps' G x_1 U_1^T and G x_0 U_0^T and convolves only the S-step's new directions;
"dense" forms G once (one kernel gradient, as a dense layer's backward). A cost model picks
the cheapest (:mod:`refdlrt.nn.route_cost`). All equal the plain route to rounding; tests pin
them to ``dense()``.
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import get_xp
from ..ops.conv import conv2d_forward, conv2d_input_grad, conv2d_weight_grad
from ..tensor.linalg import svd_thin
from ..tensor.tucker import multi_mode_product, unfold
from .route_cost import cheapest_route, projection_cost

__all__ = [
    "TuckerConvProjector",
    "channel_matmul",
    "k_kernel",
    "split_new_directions",
]

def k_kernel(i: int, Q, ranks, U2, U3):
    """The kernel of the K-step's core-sized convolution for mode i = 0 or 1 (contiguous).

    Parameters
    ----------
    i : 0 or 1
    Q : (Π_{j≠i} r_j, q), the orthonormal factor of Mat_i(C)^T = Q R (:func:`qr_signfixed`)
    ranks : (r_0, r_1, r_2, r_3), the core's shape
    U2, U3 : the spatial factors (kh x r_2, kw x r_3)

    Returns
    -------
    i = 0: F = Q^T (reshaped q x r_1 x r_2 x r_3) x_2 U_2 x_3 U_3, (q, r_1, kh, kw): the kernel
    of f = conv2d(z1, F). i = 1: E[o, s] = sum Q[(o, j2, j3), s] U_2[:, j2] U_3[:, j3],
    (r_0, q, kh, kw): the kernel of h = conv2d_input_grad(dz2, E).

    Notes
    -----
    Since Mat_i(C) = R^T Q^T, the core kernel C x_2 U_2 x_3 U_3 is F with R^T applied to its
    output channels (i = 0), or E with R^T applied to its input channels (i = 1): the Tucker
    convolution's output is (U_0 R_0^T) f and its input gradient (U_1 R_1^T) h, with f and h the
    K-steps' convolutions (:mod:`refdlrt.nn.tucker_k_form`). One function for both users, so
    that the layer's f, h and the projector's own are the same numbers.
    """
    xp = get_xp(Q)
    r0, r1, r2, r3 = ranks
    q = Q.shape[1]
    if i == 0:
        F = multi_mode_product(Q.T.reshape(q, r1, r2, r3), [None, None, U2, U3])
        return xp.ascontiguousarray(F)  # q, r1, kh, kw
    if i == 1:
        E = Q.reshape(r0, r2, r3, q).transpose(0, 3, 1, 2)  # r0, q, r2, r3
        return xp.ascontiguousarray(multi_mode_product(E, [None, None, U2, U3]))  # r0, q, kh, kw
    raise ValueError(f"k_kernel: expected mode i = 0 or 1, got {i}")


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


def _pixel_sum(a, b):
    """sum_{n, p} a[n, :, p] b[n, :, p]^T for a (N, A, H, W), b (N, B, H, W): (A, B), one GEMM
    per sample on the NCHW arrays as they are."""
    xp = get_xp(a, b)
    N, A, B = a.shape[0], a.shape[1], b.shape[1]
    return xp.matmul(a.reshape(N, A, -1), b.reshape(N, B, -1).transpose(0, 2, 1)).sum(axis=0)  # A, B


def _conv2d_weight_grad(x, dy, kernel_size, stride, padding, dilation):
    """Kernel gradient of y = conv2d(x, w) for the reduced channels: (A, C, kh, kw).
    (One indirection so tests can count calls.)"""
    return conv2d_weight_grad(x, dy, kernel_size, stride=stride, padding=padding, dilation=dilation)


class _ReducedProjector:
    """project(mats) = finish(reduced(mats[0], mats[1]), mats), with the last few reduced
    gradients memoised by the content of (mats[0], mats[1]) where ``_memoises()`` says so."""

    _MEMO_SIZE = 4

    def __init__(self, shape):
        self.shape = tuple(shape)
        self._memo = []  # [(copy of A0, copy of A1, reduced)], most recent first

    def _remember(self, A0, A1, value):
        # keep copies: the key is the content of A0, A1 at the time of the call
        snap = tuple(None if A is None else A.copy() for A in (A0, A1))
        self._memo = [(*snap, value)] + self._memo[: self._MEMO_SIZE - 1]

    def _lookup(self, A0, A1):
        """The memoised reduced gradient for (A0, A1), or None."""
        for a0, a1, value in self._memo:
            if _same(a0, A0) and _same(a1, A1):
                return value
        return None

    def _memoises(self) -> bool:
        return True

    def reduced_gradient(self, A0, A1):
        """G x_0 A0^T x_1 A1^T (memoised by the content of A0, A1 where ``_memoises()``)."""
        if not self._memoises():
            return self._reduced(A0, A1)
        value = self._lookup(A0, A1)
        if value is not None:
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


def split_new_directions(A, U):
    """A = U B + N S: the part of A (n x a) inside range(U) and an orthonormal basis N of the rest.

    Returns (B, N, S): B = U^T A (r x a), N (n x m) with orthonormal columns orthogonal to U,
    S = N^T (A - U B) (m x a), m the numerical rank of E = A - U B (singular values above
    max(n, a) eps max_j ||A[:, j]||, a lower bound of ||A||_2, so never looser than
    :func:`refdlrt.tensor.linalg.orth`; what is cut is rounding noise, A = U B + N S to rounding).
    For an augmented basis Û_i ⊇ range(U_i) of width r̂_i, m = r̂_i - r_i: N holds the new
    directions. U must have orthonormal columns.
    """
    xp = get_xp(A, U)
    B = U.T @ A  # r, a
    E = A - U @ B  # n, a
    P, sigma, Zt = svd_thin(E)
    big = float(xp.abs(A).max()) if A.size else 0.0
    col = big * float(xp.sqrt(((A / big) ** 2).sum(axis=0)).max()) if big else 0.0  # max ||A[:, j]||
    tol = max(A.shape) * float(np.finfo(A.dtype).eps) * col
    m = int((sigma > tol).sum())
    return B, P[:, :m], sigma[:m, None] * Zt[:m]  # r x a;  n x m;  m x a


class TuckerConvProjector(_ReducedProjector):
    """Projections of the kernel gradient G (C_out, C_in, kh, kw) of a Tucker convolution.

    Parameters
    ----------
    route : "auto", "plain", "blocks" or "dense"
        How the K-steps' gradients and G x_0 A0^T x_1 A1^T are computed (see Notes); "auto"
        picks the route of least :meth:`cost`.

    Notes
    -----
    plain: G x_0 A0^T x_1 A1^T = conv kernel gradient for input A1^T x (channels) and output
    gradient A0^T dy, an (a, b, kh, kw) tensor; modes 2, 3 are then projected by A2^T, A3^T.
    z1 = U_1^T x and dz2 = U_0^T dy are reused when A1 is U_1 / A0 is U_0. The K-steps'
    gradients contract Q_i into a convolution of the core's size (:meth:`k_gradient`).

    blocks: with A_i = U_i B_i + N_i S_i (:func:`split_new_directions`),

        G x_0 A0^T x_1 A1^T = (G x_0 U_0^T) x_1 A1^T x_0 B_0^T
                              + [(G x_1 U_1^T) x_0 N_0^T x_1 B_1^T
                                 + (G x_0 N_0^T x_1 N_1^T) x_1 S_1^T] x_0 S_0^T,

    where G x_0 U_0^T and G x_1 U_1^T are the K-steps' (memoised) reduced gradients, so
    only the new directions (m_0 x m_1 channels, m_i = r̂_i - r_i for the S-step) need a
    convolution. Taken only when both are memoised (else: plain); on this route the K-steps
    take those projections (``project``), not :meth:`k_gradient`'s contraction.

    dense: G itself (one kernel gradient for C_in x C_out channels, like a dense layer's
    backward), then every projection is a small tensor product.

    ``k_parts``: {0: (Q_0, f), 1: (Q_1, h)}, the K-steps' core-sized convolutions as the
    layer's K-form forward and backward computed them (:mod:`refdlrt.nn.tucker_k_form`), for the
    Q_i of the weight's core. On the plain route :meth:`k_gradient` then takes only the pixel
    sums (the same numbers: :func:`k_kernel` makes both convolutions' kernels), and the cost
    model prices plain without the two convolutions.
    """

    ROUTES = ("auto", "plain", "blocks", "dense")

    def __init__(self, x, z1, dy, dz2, factors, geometry, route="auto", k_parts=None):
        super().__init__((dy.shape[1], x.shape[1], factors[2].shape[0], factors[3].shape[0]))
        if route not in self.ROUTES:
            raise ValueError(f"TuckerConvProjector: route: expected one of {self.ROUTES}, got {route!r}")
        if k_parts is not None and not set(k_parts) <= {0, 1}:
            raise ValueError(f"TuckerConvProjector: k_parts: expected modes 0 and 1, got {sorted(k_parts)}")
        self.x, self.z1, self.dy, self.dz2 = x, z1, dy, dz2
        self.U0, self.U1 = factors[0].copy(), factors[1].copy()  # snapshots (see _same)
        self.U2, self.U3 = factors[2].copy(), factors[3].copy()
        self.geometry = geometry  # stride, padding, dilation
        self.k_parts = dict(k_parts) if k_parts else None
        if route == "auto":
            route = cheapest_route(self.shape, self.U0.shape[1], self.U1.shape[1],
                                   k_form=self.k_parts is not None)
        self.route = route
        self._G = None

    def cost(self, route: str) -> float:
        """:func:`projection_cost` of ``route`` for this layer's shape and ranks (with
        ``k_form`` where the layer handed over its K-steps' convolutions, ``k_parts``)."""
        return projection_cost(route, self.shape, self.U0.shape[1], self.U1.shape[1],
                               k_form=self.k_parts is not None)

    def k_gradient(self, i: int, mats, Q):
        """Mat_i(G x_{j≠i} mats[j]^T) Q for the K-steps of modes 0 and 1 at the layer's own
        factors, with Q contracted into a small convolution (no n_i x r_j kh kw projection).

        Parameters
        ----------
        i : int, the mode (0..3)
        mats : 4 entries, None at i, else (n_j, m_j) matrices
        Q : (Π_{j≠i} m_j, q), the K-step's orthonormal factor

        Returns
        -------
        (n_i, q) array.

        Notes
        -----
        Mode 0, mats = (None, U_1, U_2, U_3), Q (r_1 r_2 r_3 x q): with the kernel
        F = Q^T (reshaped q x r_1 x r_2 x r_3) x_2 U_2 x_3 U_3 (q x r_1 x kh x kw),

            Mat_0(G x_1 U_1^T x_2 U_2^T x_3 U_3^T) Q = sum_{n, p} dy[n, :, p] f[n, :, p]^T,
            f = conv2d(z1, F),

        since both sides are sum dy[n, o, p] z1pad[n, c, p + (a, b)] F[s, c, a, b].
        Mode 1, mats = (U_0, None, U_2, U_3), Q (r_0 r_2 r_3 x q): with the kernel
        E[o, s] = sum Q[(o, j2, j3), s] U_2[:, j2] U_3[:, j3] (r_0 x q x kh x kw) and h the
        input gradient of conv2d(., E) for the output gradient dz2 = U_0^T dy (a transposed
        convolution, q channels at the input resolution),

            Mat_1(G x_0 U_0^T x_2 U_2^T x_3 U_3^T) Q = sum_{n, p} x[n, :, p] h[n, :, p]^T.

        Cost: a convolution of the core's size and a 1 x 1 product (n_i x q per pixel) per mode,
        instead of a kernel gradient with n_i x r_j channels; the 1 x 1 product alone where
        ``k_parts`` holds that convolution for this Q (the layer's K-form forward / backward).
        Any other call (other modes, other matrices, the "dense" route, which has G, and
        "blocks", whose S-step reuses the K-steps' projections) takes ``unfold(project(mats), i) @ Q``.
        """
        if len(mats) != 4 or not 0 <= i < 4 or mats[i] is not None:
            raise ValueError(f"k_gradient: expected 4 matrices with None at mode i = {i}, got "
                             f"{['None' if A is None else tuple(A.shape) for A in mats]}")
        width = math.prod(A.shape[1] for A in mats if A is not None)
        if Q.ndim != 2 or Q.shape[0] != width:
            raise ValueError(f"k_gradient: Q: expected {width} rows (the product of the other "
                             f"matrices' widths), got shape {tuple(Q.shape)}")
        own = [None if j == i else U for j, U in enumerate((self.U0, self.U1, self.U2, self.U3))]
        if (self.route != "plain" or i not in (0, 1)
                or not all(_same(A, U) for A, U in zip(mats, own) if U is not None)):
            return unfold(self.project(mats), i) @ Q
        part = self.k_parts.get(i) if self.k_parts else None
        if part is not None and _same(part[0], Q):  # the layer's K-form ran this convolution
            return _pixel_sum(self.dy, part[1]) if i == 0 else _pixel_sum(self.x, part[1])
        ranks = tuple(U.shape[1] for U in (self.U0, self.U1, self.U2, self.U3))
        kernel = k_kernel(i, Q, ranks, self.U2, self.U3)  # F: q, r1, kh, kw;  E: r0, q, kh, kw
        s, p, d = self.geometry
        if i == 0:
            f = conv2d_forward(self.z1, kernel, None, stride=s, padding=p, dilation=d)[0]  # N, q, Ho, Wo
            return _pixel_sum(self.dy, f)  # n0 x q
        N, _, H, W = self.z1.shape
        h = conv2d_input_grad(self.dz2, kernel, (N, Q.shape[1], H, W), stride=s, padding=p,
                              dilation=d)  # N, q, H, W
        return _pixel_sum(self.x, h)  # n1 x q

    def _memoises(self) -> bool:
        return self.route != "dense"  # the dense route keeps G: each projection is two products

    def _reduced(self, A0, A1):
        if self.route == "dense":
            if self._G is None:
                self._G = self._plain(None, None)
            return multi_mode_product(self._G, [None if A is None else A.T for A in (A0, A1)] + [None, None])
        if self.route == "blocks" and A0 is not None and A1 is not None:
            G_U0 = self._lookup(self.U0, None)  # G x_0 U_0^T: r0, n1, kh, kw
            G_U1 = self._lookup(None, self.U1)  # G x_1 U_1^T: n0, r1, kh, kw
            if G_U0 is not None and G_U1 is not None:
                return self._by_blocks(A0, A1, G_U0, G_U1)
        return self._plain(A0, A1)

    def _by_blocks(self, A0, A1, G_U0, G_U1):
        """The "blocks" route (class Notes)."""
        B0, N0, S0 = split_new_directions(A0, self.U0)  # r0 x a0;  n0 x m0;  m0 x a0
        B1, N1, S1 = split_new_directions(A1, self.U1)  # r1 x a1;  n1 x m1;  m1 x a1
        out = multi_mode_product(G_U0, [B0.T, A1.T, None, None])  # a0, a1, kh, kw
        if N0.shape[1]:
            inner = multi_mode_product(G_U1, [N0.T, B1.T, None, None])  # m0, a1, kh, kw
            if N1.shape[1]:
                inner = inner + multi_mode_product(self._plain(N0, N1), [None, S1.T, None, None])
            out = out + multi_mode_product(inner, [S0.T, None, None, None])
        return out

    def _plain(self, A0, A1):
        xa = _project_channels(A1, self.U1, self.z1, self.x)  # N, b, H, W
        dya = _project_channels(A0, self.U0, self.dz2, self.dy)  # N, a, Ho, Wo
        return _conv2d_weight_grad(xa, dya, self.shape[2:], *self.geometry)  # a, b, kh, kw

    def dense(self):
        """The dense G (oracle route)."""
        return self._plain(None, None)

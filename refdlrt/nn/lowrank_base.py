"""Shared plumbing of the low-rank layers: the validated Tucker ``weight``, the bias, the caches
and the projector of the last backward (:class:`_LowRankLayer`), and the input checks every
layer's forward makes. The layers themselves are in :mod:`refdlrt.nn.lowrank_layers`.
"""

from __future__ import annotations

from .._checks import check_float_array, check_grad, check_ndim, pair
from ..ops.broadcast import channel_pattern, channel_sum
from ..tensor.linalg import check_orthonormal
from ..tensor.tucker import Tucker


def _check_bias(b, n_out, dtype, who):
    if b is None:
        return
    check_float_array(b, f"{who}: b")
    if tuple(b.shape) != (n_out,):
        raise ValueError(
            f"{who}: b: expected shape ({n_out},) (one per output), got {tuple(b.shape)}"
        )
    if b.dtype != dtype:
        raise TypeError(f"{who}: b: expected dtype {dtype} (the weight's), got {b.dtype}")


def _check_input(x, ndim, n_in, dtype, layout, who):
    check_float_array(x, f"{who}: x")
    check_ndim(x, ndim, f"{who}: x", layout)
    if x.shape[1] != n_in:
        raise ValueError(
            f"{who}: x has {x.shape[1]} input channels/features, the weight expects "
            f"{n_in} (x shape {tuple(x.shape)})"
        )
    if x.dtype != dtype:
        raise TypeError(f"{who}: x: expected dtype {dtype} (the weight's), got {x.dtype}")


def _check_tucker_conv_args(x, Y, b, who):
    """The arguments of a Tucker convolution's forward: Y an order-4 Tucker tensor, x
    (N, C_in, H, W) and b (C_out,) or None, in Y's dtype."""
    if not isinstance(Y, Tucker) or Y.ndim != 4:
        raise TypeError(f"{who}: Y: expected an order-4 Tucker tensor, got "
                        f"{type(Y).__name__}{'' if not isinstance(Y, Tucker) else f' of order {Y.ndim}'}")
    _check_input(x, 4, Y.shape[1], Y.dtype, "N, C_in, H, W", who)
    _check_bias(b, Y.shape[0], Y.dtype, who)


def _check_geometry(stride, padding, dilation):
    s, p, d = pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation")
    if min(s) < 1 or min(d) < 1 or min(p) < 0:
        raise ValueError(
            f"expected stride >= 1, dilation >= 1, padding >= 0; got stride={s}, "
            f"padding={p}, dilation={d}"
        )
    return s, p, d


class _LowRankLayer:
    """Shared plumbing: the Tucker ``weight`` (validated on assignment), bias, caches."""

    _order = 0
    _name = ""
    # Factors must be orthonormal (checked on assignment); only the tucker-direct baseline,
    # plain gradient descent on the factors, sets this to False on its layers.
    orthonormal = True

    def __init__(self, weight, b=None):
        self._shape = None
        self.weight = weight  # validates; fixes the dense shape
        _check_bias(b, self.dense_shape[0], weight.dtype, self._name)
        self.params, self.grads, self.state = {}, {}, {}
        if b is not None:
            self.params["b"] = b
        self._cache, self._projector = None, None

    @property
    def weight(self) -> Tucker:
        return self._weight

    @weight.setter
    def weight(self, Y):
        if not isinstance(Y, Tucker):
            raise TypeError(
                f"{self._name}: weight: expected a Tucker tensor, got {type(Y).__name__}"
            )
        if Y.ndim != self._order:
            raise ValueError(
                f"{self._name}: weight: expected a Tucker tensor of order "
                f"{self._order}, got order {Y.ndim} (shape {Y.shape})"
            )
        if self._shape is not None and Y.shape != self._shape:
            raise ValueError(
                f"{self._name}: weight: the layer's geometry fixes the shape "
                f"{self._shape}, got {Y.shape}"
            )
        if self._shape is not None and Y.dtype != self._weight.dtype:
            raise TypeError(
                f"{self._name}: weight: expected dtype {self._weight.dtype} (the layer's), "
                f"got {Y.dtype}"
            )
        for i, (n, r) in enumerate(zip(Y.shape, Y.ranks)):
            if r > n:
                raise ValueError(
                    f"{self._name}: weight: factor {i} has shape ({n}, {r}); "
                    f"orthonormal columns need rank <= {n}"
                )
        if self.orthonormal:
            check_orthonormal(Y.factors, f"{self._name}: weight")
        if self._shape is None:
            self._check_weight_geometry(Y)
        self._weight, self._shape = Y, Y.shape

    def _check_weight_geometry(self, Y):
        pass

    @property
    def dense_shape(self) -> tuple:
        """Shape of the dense weight tensor the Tucker represents (and of its gradient G)."""
        return self._shape

    def _add_bias(self, y):
        if "b" in self.params:  # y is the layer's own new array: added in place, no copy
            y += channel_pattern(self.params["b"], y) if y.ndim == 4 else self.params["b"]
        return y

    def _bias_grad(self, dy):
        if "b" in self.params:
            self.grads["b"] = channel_sum(dy) if dy.ndim == 4 else dy.sum(axis=0)

    def _cached(self):
        if self._cache is None:
            raise RuntimeError(f"{self._name}.backward called before forward")
        return self._cache

    def _check_dy(self, dy, y_shape, dtype):
        check_grad(dy, y_shape, dtype, f"{self._name}: dy", layout=" (the output's)")

    def projector(self):
        """Projector of G = dL/dW at the weight of the last forward (valid after backward)."""
        if self._projector is None:
            raise RuntimeError(f"{self._name}.projector() needs a backward pass first")
        return self._projector

    def dense_gradient(self):
        """G = dL/dW formed densely (oracle route), shape ``dense_shape``."""
        return self.projector().dense()

    def __repr__(self) -> str:
        return f"{self._name}(shape={self.dense_shape}, ranks={self.weight.ranks})"

"""Dense layers: thin stateful wrappers over the pure forward/backward pairs.

Every layer follows one informal protocol (the contract with the training loop):

* ``params``: dict of trainable arrays (updated by the optimiser, read again at each forward);
* ``grads``: dict with the same keys, filled by ``backward``;
* ``state``: dict of non-trainable arrays saved in checkpoints (batchnorm running statistics);
* ``forward(x, *, training) -> y`` caches what ``backward`` needs on the layer;
* ``backward(dy) -> dx``.

The maths lives in :mod:`refdlrt.ops.conv`, :mod:`refdlrt.ops.linear`, :mod:`refdlrt.ops.activation`,
:mod:`refdlrt.ops.pooling` and :mod:`refdlrt.ops.batchnorm`; these classes only hold arrays.
"""

from __future__ import annotations

import numpy as np

from .._checks import check_float_array, check_ndim, pair
from ..ops.activation import relu_backward, relu_forward
from ..ops.batchnorm import batchnorm2d_backward, batchnorm2d_forward
from ..ops.conv import conv2d_backward, conv2d_forward
from ..ops.linear import flatten_backward, flatten_forward, linear_backward, linear_forward
from ..ops.pooling import (
    avgpool2d_backward,
    avgpool2d_forward,
    maxpool2d_backward,
    maxpool2d_forward,
)

__all__ = [
    "AvgPool2d",
    "BatchNorm2d",
    "Conv2d",
    "Flatten",
    "Layer",
    "Linear",
    "MaxPool2d",
    "ReLU",
]


class Layer:
    """Shared plumbing: empty params/grads/state, a cache, and a forward-before-backward check."""

    def __init__(self):
        self.params, self.grads, self.state = {}, {}, {}
        self._cache = None

    def _cached(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return self._cache

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self.params.items())
        return f"{type(self).__name__}({shapes})"


class Conv2d(Layer):
    """Dense 2-d convolution, weight ``w`` (C_out, C_in, kh, kw) and optional bias ``b`` (C_out,).

    Notes
    -----
    y = conv2d(x, w) + b with the given stride, padding and dilation (:mod:`refdlrt.ops.conv`).
    """

    def __init__(self, w, b=None, stride=1, padding=0, dilation=1):
        super().__init__()
        check_float_array(w, "Conv2d: w")
        check_ndim(w, 4, "Conv2d: w", "C_out, C_in, kh, kw")
        if b is not None:
            check_float_array(b, "Conv2d: b")
            if tuple(b.shape) != (w.shape[0],):
                raise ValueError(f"Conv2d: b: expected shape ({w.shape[0]},), got {tuple(b.shape)}")
        self.stride, self.padding = pair(stride, "stride"), pair(padding, "padding")
        self.dilation = pair(dilation, "dilation")
        self.params["w"] = w
        if b is not None:
            self.params["b"] = b

    def forward(self, x, *, training: bool = True):
        y, self._cache = conv2d_forward(
            x,
            self.params["w"],
            self.params.get("b"),
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
        )
        return y

    def backward(self, dy, *, need_dx: bool = True):
        """Sets grads["w"], grads["b"]; returns dx (None with ``need_dx=False``)."""
        dx, dw, db = conv2d_backward(dy, self._cached(), need_dx=need_dx)
        self.grads["w"] = dw
        if "b" in self.params:
            self.grads["b"] = db
        return dx


class Linear(Layer):
    """Fully connected layer y = x w^T + b, ``w`` (out, in), ``b`` (out,) or None."""

    def __init__(self, w, b=None):
        super().__init__()
        check_float_array(w, "Linear: w")
        check_ndim(w, 2, "Linear: w", "out, in")
        if b is not None:
            check_float_array(b, "Linear: b")
            if tuple(b.shape) != (w.shape[0],):
                raise ValueError(f"Linear: b: expected shape ({w.shape[0]},), got {tuple(b.shape)}")
        self.params["w"] = w
        if b is not None:
            self.params["b"] = b

    def forward(self, x, *, training: bool = True):
        y, self._cache = linear_forward(x, self.params["w"], self.params.get("b"))
        return y

    def backward(self, dy):
        dx, dw, db = linear_backward(dy, self._cached())
        self.grads["w"] = dw
        if "b" in self.params:
            self.grads["b"] = db
        return dx


class BatchNorm2d(Layer):
    """Per-channel batch normalisation; trainable ``gamma``, ``beta``; running stats in ``state``.

    Notes
    -----
    Training: normalise with batch statistics and replace ``state["running_mean"]`` /
    ``state["running_var"]`` by (1 - momentum) old + momentum batch (unbiased variance),
    as :func:`refdlrt.ops.batchnorm.batchnorm2d_forward` returns them. Eval: use the running
    statistics; the state is unchanged.
    """

    def __init__(self, gamma, beta, running_mean, running_var, momentum=0.1, eps=1e-5):
        super().__init__()
        for name, a in (
            ("gamma", gamma),
            ("beta", beta),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ):
            check_float_array(a, f"BatchNorm2d: {name}")
            if a.ndim != 1 or a.shape != gamma.shape:
                raise ValueError(
                    f"BatchNorm2d: {name}: expected shape {tuple(gamma.shape)} "
                    f"(C,), got {tuple(a.shape)}"
                )
        if not 0.0 <= momentum <= 1.0 or not eps > 0.0:
            raise ValueError(
                f"BatchNorm2d: expected 0 <= momentum <= 1 and eps > 0, got "
                f"momentum={momentum}, eps={eps}"
            )
        self.params.update(gamma=gamma, beta=beta)
        self.state.update(running_mean=running_mean, running_var=running_var)
        self.momentum, self.eps = float(momentum), float(eps)

    @classmethod
    def default(cls, num_channels: int, *, momentum=0.1, eps=1e-5, dtype=np.float64, xp=np):
        """gamma = 1, beta = 0, running mean 0 and variance 1 (torch's initial values)."""
        ones, zeros = xp.ones(num_channels, dtype=dtype), xp.zeros(num_channels, dtype=dtype)
        return cls(ones, zeros, zeros.copy(), ones.copy(), momentum, eps)

    def forward(self, x, *, training: bool = True):
        y, self._cache, mean, var = batchnorm2d_forward(
            x,
            self.params["gamma"],
            self.params["beta"],
            self.state["running_mean"],
            self.state["running_var"],
            training=training,
            momentum=self.momentum,
            eps=self.eps,
        )
        self.state["running_mean"], self.state["running_var"] = mean, var
        return y

    def backward(self, dy):
        dx, dgamma, dbeta = batchnorm2d_backward(dy, self._cached())
        self.grads["gamma"], self.grads["beta"] = dgamma, dbeta
        return dx


class ReLU(Layer):
    """Elementwise max(x, 0)."""

    def forward(self, x, *, training: bool = True):
        y, self._cache = relu_forward(x)
        return y

    def backward(self, dy):
        return relu_backward(dy, self._cached())


class MaxPool2d(Layer):
    """2-d max pooling; ``stride`` defaults to ``kernel_size``."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.padding = pair(kernel_size, "kernel_size"), pair(padding, "padding")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride")

    def forward(self, x, *, training: bool = True):
        y, self._cache = maxpool2d_forward(x, self.kernel_size, self.stride, self.padding)
        return y

    def backward(self, dy):
        return maxpool2d_backward(dy, self._cached())


class AvgPool2d(Layer):
    """2-d average pooling (padding counted as zeros); ``stride`` defaults to ``kernel_size``."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.padding = pair(kernel_size, "kernel_size"), pair(padding, "padding")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride")

    def forward(self, x, *, training: bool = True):
        y, self._cache = avgpool2d_forward(x, self.kernel_size, self.stride, self.padding)
        return y

    def backward(self, dy):
        return avgpool2d_backward(dy, self._cached())


class Flatten(Layer):
    """(N, d1, ..., dk) -> (N, d1 ... dk), C order."""

    def forward(self, x, *, training: bool = True):
        y, self._cache = flatten_forward(x)
        return y

    def backward(self, dy):
        return flatten_backward(dy, self._cached())

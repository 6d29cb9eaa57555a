"""2-d batch normalisation (NCHW, per channel) as a pure forward/backward pair.

Semantics are those of ``torch.nn.functional.batch_norm`` (``nn.BatchNorm2d``),
with the running statistics returned instead of updated in place:

* training: normalise with the batch mean and the *biased* batch variance
  (divide by m = N H W); update the running mean with the batch mean and the
  running variance with the *unbiased* batch variance (divide by m - 1):

      new_running_mean = (1 - momentum) running_mean + momentum mu
      new_running_var  = (1 - momentum) running_var  + momentum var * m / (m - 1)

  m must be > 1 (torch: "Expected more than 1 value per channel when training").
* eval: normalise with the running statistics, which come back unchanged (the
  same arrays); the layer is then an affine map per channel.
"""

from __future__ import annotations

from .._checks import check_float_array, check_ndim, check_same_dtype
from ..backend import get_xp
from .broadcast import channel_dot, channel_pattern, channel_sum

__all__ = ["batchnorm2d_backward", "batchnorm2d_forward"]


def _check_inputs(x, gamma, beta, running_mean, running_var, training):
    check_float_array(x, "x")
    named = [("x", x), ("gamma", gamma), ("beta", beta)]
    named += [("running_mean", running_mean), ("running_var", running_var)]
    for n, a in named[1:]:
        if a is not None:
            check_float_array(a, n)
    check_same_dtype(*named)
    check_ndim(x, 4, "x", "N, C, H, W")
    C = x.shape[1]
    for n, a in named[1:]:
        if a is not None and tuple(a.shape) != (C,):
            raise ValueError(
                f"{n}: expected shape ({C},) for x with {C} channels "
                f"(x shape {tuple(x.shape)}), got {tuple(a.shape)}"
            )
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var: expected both arrays or both None")
    if not training and running_mean is None:
        raise ValueError(
            "eval mode (training=False): expected running_mean and running_var, got None"
        )
    m = x.shape[0] * x.shape[2] * x.shape[3]
    if training and m < 2:
        raise ValueError(
            f"training mode: expected more than 1 value per channel (N H W > 1), "
            f"got x shape {tuple(x.shape)}"
        )


def batchnorm2d_forward(
    x, gamma, beta, running_mean, running_var, *, training=True, momentum=0.1, eps=1e-5
):
    """Batch normalisation of x (N, C, H, W) over (N, H, W) for each channel.

    Parameters
    ----------
    x : array (N, C, H, W), float32 or float64
    gamma, beta : arrays (C,), the affine scale and shift
    running_mean, running_var : arrays (C,), or both None (training only: no
        running statistics are tracked, and None, None come back)
    training : bool
        Batch statistics (True) or running statistics (False).
    momentum, eps : float

    Returns
    -------
    y : array (N, C, H, W)
    cache : (xhat, gamma, inv_std, training), what :func:`batchnorm2d_backward` needs.
    new_running_mean, new_running_var : arrays (C,) (inputs are not modified)

    Notes
    -----
    y = gamma (x - mu) / sqrt(var + eps) + beta, where in training
    mu = mean_{n,h,w} x and var = mean_{n,h,w} (x - mu)^2 (biased), and in eval
    mu, var = running_mean, running_var. The running update is in the module docstring.
    """
    _check_inputs(x, gamma, beta, running_mean, running_var, training)
    xp = get_xp(x)
    if training:
        m = x.shape[0] * x.shape[2] * x.shape[3]
        mu = channel_sum(x) / m  # C
        xc = x - channel_pattern(mu, x)  # N, C, H, W
        var = channel_dot(xc, xc) / m  # C, biased
        if running_mean is not None:
            new_mean = (1 - momentum) * running_mean + momentum * mu
            new_var = (1 - momentum) * running_var + momentum * (var * (m / (m - 1)))
        else:
            new_mean = new_var = None
    else:
        var = running_var
        xc = x - channel_pattern(running_mean, x)  # N, C, H, W
        new_mean, new_var = running_mean, running_var
    inv_std = 1 / xp.sqrt(var + eps)  # C
    xhat = xc  # N, C, H, W: xc is a fresh array, scaled in place (one full-size copy less)
    xhat *= channel_pattern(inv_std, x)
    y = xhat * channel_pattern(gamma, x)  # N, C, H, W
    y += channel_pattern(beta, x)
    return y, (xhat, gamma, inv_std, training), new_mean, new_var


def batchnorm2d_backward(dy, cache):
    """Gradients of batch normalisation in training or eval mode.

    Returns
    -------
    dx : array (N, C, H, W)
    dgamma, dbeta : arrays (C,)

    Notes
    -----
    With g = dy * gamma (the gradient of xhat) and sums over (n, h, w), m = N H W:

        dbeta = sum dy,   dgamma = sum dy * xhat,
        training:  dx = inv_std / m * (m g - sum g - xhat * sum g * xhat)
                      = gamma inv_std (dy - dbeta / m - xhat dgamma / m),
        eval:      dx = g * inv_std        (mu, var are constants).

    The second form (sum g = gamma dbeta, sum g xhat = gamma dgamma) is computed, in place:
    four full-size passes instead of eight; the sums are products
    (:func:`~refdlrt.ops.broadcast.channel_sum`, :func:`~refdlrt.ops.broadcast.channel_dot`).
    """
    xhat, gamma, inv_std, training = cache
    check_float_array(dy, "dy")
    if tuple(dy.shape) != tuple(xhat.shape):
        raise ValueError(f"dy: expected shape {tuple(xhat.shape)}, got {tuple(dy.shape)}")
    if dy.dtype != xhat.dtype:
        raise TypeError(f"dy: expected dtype {xhat.dtype}, got {dy.dtype}")
    xp = get_xp(dy, xhat)  # raises on mixed backends
    dbeta = channel_sum(dy)  # C
    dgamma = channel_dot(dy, xhat)  # C
    scale = channel_pattern(gamma * inv_std, dy)  # 1, C, H, W
    if not training:
        return dy * scale, dgamma, dbeta  # N, C, H, W
    m = xhat.shape[0] * xhat.shape[2] * xhat.shape[3]
    dx = xhat * channel_pattern(dgamma / m, dy)  # N, C, H, W
    xp.subtract(dy, dx, out=dx)  # dy - xhat dgamma / m
    dx -= channel_pattern(dbeta / m, dy)
    dx *= scale
    return dx, dgamma, dbeta

"""The cost model that picks a Tucker convolution's projection route (dense, plain or blocks).

:class:`refdlrt.nn.lowrank_projectors.TuckerConvProjector` takes the route of least modelled cost
for its "auto" route, and :class:`refdlrt.nn.lowrank_layers.TuckerConv2d` asks the same model
whether its training forward should run the K-form (:mod:`refdlrt.nn.tucker_k_form`). The model
counts multiply-adds per output pixel, with passes over memory priced in multiply-adds.
"""

from __future__ import annotations

__all__ = ["cheapest_route", "projection_cost"]

# Costs in the model of projection_cost, in GEMM multiply-adds, of passes over the
# activations that run at memory speed while GEMMs run at full speed on every core.
# _COPY_COST: one element of a kernel gradient's patch matrix (im2col copies, NCHW <-> NHWC
# transposes of dy); calibrated on the run.py "layer" shape (64 -> 64, N = 128, 32x32, float32,
# 2 threads), where forming G was as fast as the blocks route at r = 4 and faster at r = 8, 16,
# 24 (400 vs 453, 429 vs 565, 514 vs 814 ms for the step).
# _PASS_COST: one element of x or dy read by the plain route's two K-step pixel sums and two
# S-step channel projections; set from vgg_small's conv4 (64 -> 64, 14x14, N = 64, r = 16;
# benchmarks/route_times.py): dense 19.9-25.8 ms against plain 22.8-30.0, where the model without
# it picked plain. On 64 -> 64 plain wins up to r = 14 without the K-form (the run.py layer: r = 8
# plain, 16 dense), and at r = 16 too with it.
_COPY_COST, _PASS_COST = 256, 128


def projection_cost(route: str, shape, r0: int, r1: int, *, k_form: bool = False) -> float:
    """Model cost of one TDLRT step's projections (multiply-adds, im2col copies included) by
    route, per output pixel, for a Tucker conv kernel of ``shape`` (n_0, n_1, kh, kw) at ranks
    r_0, r_1: a kernel gradient for a output and b input channels costs kh kw b (a + _COPY_COST).
    The S-step is estimated at r̂_i = min(2 r_i, n_i).

    dense: G. plain: the K-steps' two core-sized convolutions (priced as kernel gradients for
    r_0 x r_1 channels; none with ``k_form``, where the layer's K-form forward and backward ran
    them, :mod:`refdlrt.nn.tucker_k_form`) and 1 x 1 products (n_0 r_0 + n_1 r_1), then the
    S-step's kernel gradient for r̂_0 x r̂_1 channels and its channel projections
    (n_0 r̂_0 + n_1 r̂_1), plus the four passes over x and dy those take (2 (n_0 + n_1) _PASS_COST).
    blocks: the K-steps' projections (n_0 x r_1 and r_0 x n_1 channels) and the new directions'
    kernel gradient (m_i = r̂_i - r_i). The model prices the rank-adaptive step of a layer with
    square spatial factors; steps that take K-steps of the spatial modes (fixed rank, non-square
    factors) add the core's kernel gradient (r_0 x r_1 channels) on plain and blocks, which it
    leaves out.
    """
    n0, n1, kh, kw = shape

    def grad(a, b):
        return kh * kw * b * (a + _COPY_COST) if a and b else 0

    h0, h1 = min(2 * r0, n0), min(2 * r1, n1)
    if route == "dense":
        return grad(n0, n1)
    if route == "plain":
        k_steps = 0 if k_form else 2 * grad(r0, r1)
        return (k_steps + n0 * r0 + n1 * r1 + grad(h0, h1) + n0 * h0 + n1 * h1
                + 2 * (n0 + n1) * _PASS_COST)
    if route == "blocks":
        return grad(n0, r1) + grad(r0, n1) + grad(h0 - r0, h1 - r1)
    raise ValueError(f"projection_cost: route: expected 'dense', 'plain' or 'blocks', got {route!r}")


def cheapest_route(shape, r0: int, r1: int, *, k_form: bool = False) -> str:
    """The route of least :func:`projection_cost` (ties: dense, then plain, then blocks)."""
    return min(("dense", "plain", "blocks"), key=lambda r: projection_cost(r, shape, r0, r1, k_form=k_form))

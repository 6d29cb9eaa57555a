"""Hypothesis strategies shared by the tensor, integrator and layer tests.

Each draws a valid configuration first (order, sizes, compatible ranks) and a seed
last; the data comes from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import math

from hypothesis import strategies as st


def compatible(ranks) -> bool:
    """A Tucker core can have full-rank unfoldings iff r_i <= prod_{j != i} r_j."""
    return all(r <= math.prod(ranks) // r for r in ranks)


@st.composite
def tucker_configs(draw, d_values=(2, 3, 4), max_n=5, min_n=2):
    """(shape, ranks, seed) with 1 <= r_i <= n_i and compatible ranks."""
    d = draw(st.sampled_from(d_values))
    top = max_n if d < 4 else min(max_n, 4)
    shape = tuple(draw(st.integers(min_n, top)) for _ in range(d))
    ranks = tuple(draw(st.integers(1, n)) for n in shape)
    if not compatible(ranks):
        ranks = tuple(min(r, math.prod(ranks) // r) for r in ranks)
        ranks = ranks if compatible(ranks) else (1,) * d
    seed = draw(st.integers(0, 2**32 - 1))
    return shape, ranks, seed


@st.composite
def conv_geometries(draw):
    """N, C_in, C_out, kernel, stride, padding, dilation (pairs) and an input size "hw" that
    fits (at least one output pixel)."""
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    s = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    p = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    hw = tuple(
        max(1, dd * (kk - 1) + 1 - 2 * pp) + draw(st.integers(0, 3)) for kk, pp, dd in zip(k, p, d)
    )
    return {
        "N": draw(st.integers(1, 2)),
        "c_in": draw(st.integers(1, 4)),
        "c_out": draw(st.integers(1, 4)),
        "k": k,
        "stride": s,
        "padding": p,
        "dilation": d,
        "hw": hw,
    }

"""Hypothesis strategies shared by the tensor and integrator tests.

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

"""channel_pattern: a per-channel vector spread over one sample, the same numbers as (1, C, 1, 1)."""

from __future__ import annotations

import operator

import numpy as np
import pytest

from refdlrt.backend import to_numpy
from refdlrt.ops.broadcast import channel_pattern


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 5, 4), (2, 3, 2, 3, 2)])
@pytest.mark.parametrize("op", [operator.add, operator.sub, operator.mul, operator.truediv])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_channel_pattern_gives_the_broadcast_results_bit_for_bit(xp, shape, op, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    v = rng.standard_normal(shape[1]).astype(dtype) + 2
    v[0] = -0.0  # a signed zero and a NaN travel too
    v[-1] = np.nan
    pattern = channel_pattern(xp.asarray(v), xp.asarray(x))
    assert tuple(pattern.shape) == (1, *shape[1:]) and pattern.flags.c_contiguous
    got = to_numpy(op(xp.asarray(x), pattern))
    expected = op(x, v.reshape((1, -1) + (1,) * (len(shape) - 2)))
    assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()


def test_channel_pattern_entries_are_the_vector(xp):
    v = xp.asarray(np.array([1.0, -2.0, 3.5]))
    p = to_numpy(channel_pattern(v, xp.zeros((7, 3, 2, 4))))
    for c, value in enumerate([1.0, -2.0, 3.5]):
        assert (p[0, c] == value).all()


@pytest.mark.parametrize("v_shape, x_shape", [((3,), (2, 4, 5, 5)), ((3, 1), (2, 3, 5, 5)), ((3,), (3,))])
def test_channel_pattern_rejects_mismatched_shapes(v_shape, x_shape):
    with pytest.raises(ValueError, match=r"expected v \(C,\) and x \(N, C, \.\.\.\)"):
        channel_pattern(np.zeros(v_shape), np.zeros(x_shape))

"""channel_pattern: a per-channel vector spread over one sample, the same numbers as (1, C, 1, 1);
channel_sum and channel_dot: per-channel sums as products, against exactly rounded loop sums."""

from __future__ import annotations

import math
import operator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refdlrt.backend import to_numpy
from refdlrt.ops.broadcast import channel_dot, channel_pattern, channel_sum
from refdlrt.tolerances import assert_close


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


def _channel_sums_spec(a, b=None):
    """Per-channel sums of a (or of a * b) by loops over the entries, exactly rounded (fsum)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.ones_like(a) if b is None else np.asarray(b, dtype=np.float64)
    return np.array([math.fsum((a[:, c] * b[:, c]).ravel()) for c in range(a.shape[1])])


@given(
    shape=st.tuples(st.integers(0, 4), st.integers(1, 4)).flatmap(
        lambda nc: st.lists(st.integers(0, 5), min_size=0, max_size=3).map(lambda s: nc + tuple(s))),
    dtype=st.sampled_from([np.float32, np.float64]),
    transposed=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_channel_sum_and_dot_equal_loop_sums(xp, shape, dtype, transposed, seed):
    """Both against exactly rounded loop sums, in either dtype, for (N, C), (N, C, H, W) and
    higher, empty batches and pixel grids, and non-contiguous inputs (a transposed view)."""
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal(shape).astype(dtype) + 1 for _ in range(2))  # + 1: no cancellation
    if transposed and len(shape) > 2:  # the same numbers, laid out with the last axes swapped
        a, b = (np.ascontiguousarray(np.swapaxes(v, -1, -2)).swapaxes(-1, -2) for v in (a, b))
    s, d = channel_sum(xp.asarray(a)), channel_dot(xp.asarray(a), xp.asarray(b))
    assert s.dtype == dtype and d.dtype == dtype and tuple(s.shape) == tuple(d.shape) == (shape[1],)
    terms = max(1, math.prod(shape) // shape[1])  # terms per channel, each about 1: the sums' size
    assert_close(s, _channel_sums_spec(a), dtype, scale=terms)
    assert_close(d, _channel_sums_spec(a, b), dtype, scale=terms)


def test_channel_sums_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"expected an array \(N, C, \.\.\.\), got shape \(3,\)"):
        channel_sum(np.zeros(3))
    with pytest.raises(ValueError, match=r"same shape, got \(2, 3, 4\) and \(2, 3, 5\)"):
        channel_dot(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)))

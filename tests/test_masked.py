"""keep_where: where(mask, a, 0) without branches, bit for bit (ReLU's and max pooling's masks)."""

from __future__ import annotations

import numpy as np
import pytest

from refdlrt.backend import to_numpy
from refdlrt.ops.masked import keep_where


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_keep_where_equals_where_bit_for_bit(xp, dtype):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4, 5)).astype(dtype)
    a.flat[:6] = [np.nan, np.inf, -np.inf, -0.0, 0.0, np.finfo(dtype).tiny / 2]  # specials
    mask = rng.random(a.shape) < 0.5
    mask.flat[:6] = [True, True, True, True, False, True]
    got = to_numpy(keep_where(xp.asarray(mask), xp.asarray(a)))
    expected = np.where(mask, a, dtype(0))
    assert got.dtype == a.dtype and got.shape == a.shape
    assert got.tobytes() == expected.tobytes()  # NaN, Inf, -0 and +0 exactly
    assert not np.signbit(got[~mask]).any()  # +0 where the mask is False


def test_keep_where_on_a_strided_view(xp):
    a = xp.asarray(np.arange(24.0).reshape(4, 6) - 10.0)[:, ::2]  # not contiguous
    mask = a > 0
    np.testing.assert_array_equal(to_numpy(keep_where(mask, a)), np.where(to_numpy(mask), to_numpy(a), 0.0))

"""Tests of softmax_cross_entropy and its backward.

Oracles: a per-row loop spec of the log-softmax, the adjoint test in float64,
PyTorch CPU (F.cross_entropy, reduction="mean", float64 autograd), float32 vs
float64, and large logits that overflow a naive exp.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import ForeignArray
from hypothesis import given
from hypothesis import strategies as st

from refdlrt.backend import to_numpy
from refdlrt.gradcheck import adjoint_test
from refdlrt.ops.loss import softmax_cross_entropy, softmax_cross_entropy_backward
from refdlrt.tolerances import assert_close


@st.composite
def ce_cases(draw):
    """(N, K, logit scale, label dtype, seed)."""
    return (
        draw(st.integers(1, 5)),
        draw(st.integers(1, 6)),
        draw(st.sampled_from([1.0, 10.0])),
        draw(st.sampled_from([np.int64, np.int32, np.uint8])),
        draw(st.integers(0, 2**32 - 1)),
    )


def ce_data(case, dtype=np.float64):
    N, K, scale, label_dtype, seed = case
    rng = np.random.default_rng(seed)
    logits = (scale * rng.standard_normal((N, K))).astype(dtype)
    labels = rng.integers(0, K, size=N).astype(label_dtype)
    return logits, labels


def ce_spec(logits, labels):
    """Mean over rows of log sum_j exp(z_j) - z_label, one row at a time with a max shift."""
    losses = []
    for z, label in zip(logits, labels):
        a = max(z)
        losses.append(a + math.log(math.fsum(math.exp(v - a) for v in z)) - z[label])
    return math.fsum(losses) / len(losses)


@given(case=ce_cases())
def test_cross_entropy_matches_loop_spec(xp, case):
    logits, labels = ce_data(case)
    loss, _ = softmax_cross_entropy(xp.asarray(logits), xp.asarray(labels))
    assert isinstance(loss, xp.ndarray) and loss.shape == () and loss.dtype == np.float64
    assert_close(loss, ce_spec(logits, labels), np.float64, scale=float(np.abs(logits).max()))


@given(case=ce_cases())
def test_cross_entropy_backward_passes_adjoint_test(xp, case):
    logits, labels = ce_data(case)
    logits, labels = xp.asarray(logits), xp.asarray(labels)
    _, cache = softmax_cross_entropy(logits, labels)
    (result,) = adjoint_test(
        lambda z: softmax_cross_entropy(z, labels)[0],
        lambda c: softmax_cross_entropy_backward(cache, dloss=c),
        [logits],
        np.random.default_rng(case[-1] + 1),
    )
    assert result.ok, result


@pytest.mark.torch
@given(case=ce_cases(), dloss=st.sampled_from([1.0, -2.5]))
def test_cross_entropy_matches_torch(xp, torch, case, dloss):
    logits, labels = ce_data(case)
    zt = torch.tensor(logits, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(
        zt, torch.tensor(labels.astype(np.int64)), reduction="mean"
    )
    lt.backward(torch.tensor(dloss, dtype=torch.float64))
    loss, cache = softmax_cross_entropy(xp.asarray(logits), xp.asarray(labels))
    dlogits = softmax_cross_entropy_backward(cache, dloss)
    assert_close(loss, lt.item(), np.float64, scale=float(np.abs(logits).max()))
    assert_close(dlogits, zt.grad.numpy(), np.float64)


@pytest.mark.torch
def test_cross_entropy_backward_default_dloss_is_one(xp, torch):
    logits = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    zt = torch.tensor(logits, requires_grad=True)
    torch.nn.functional.cross_entropy(zt, torch.tensor([2, 0])).backward()
    _, cache = softmax_cross_entropy(xp.asarray(logits), xp.asarray([2, 0]))
    assert_close(softmax_cross_entropy_backward(cache), zt.grad.numpy(), np.float64)


@given(case=ce_cases())
def test_cross_entropy_float32_agrees_with_float64(xp, case):
    logits, labels = ce_data(case)
    labels = xp.asarray(labels)
    loss64, c64 = softmax_cross_entropy(xp.asarray(logits), labels)
    loss32, c32 = softmax_cross_entropy(xp.asarray(logits.astype(np.float32)), labels)
    d64 = softmax_cross_entropy_backward(c64, 0.5)
    d32 = softmax_cross_entropy_backward(c32, 0.5)
    assert loss32.dtype == np.float32 and d32.dtype == np.float32
    assert_close(loss32, loss64, np.float32, scale=float(np.abs(logits).max()))
    assert_close(d32, d64, np.float32)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_stable_for_huge_logits(xp, torch, dtype):
    # exp(1e4) overflows both dtypes; the max shift must keep everything finite.
    logits = np.array([[1e4, 0.0, -1e4], [-1e4, -1e4 + 1.0, -1e4 - 3.0]], dtype=dtype)
    labels = np.array([1, 1])
    zt = torch.tensor(logits, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(zt, torch.tensor(labels))
    lt.backward()
    loss, cache = softmax_cross_entropy(xp.asarray(logits), xp.asarray(labels))
    dlogits = softmax_cross_entropy_backward(cache)
    assert np.isfinite(to_numpy(loss)) and np.isfinite(to_numpy(dlogits)).all()
    assert_close(loss, lt.item(), dtype, scale=1e4)  # scale: the logits' magnitude
    assert_close(dlogits, zt.grad.numpy(), dtype)


def test_cross_entropy_rejects_bad_input(xp):
    z = xp.zeros((3, 4))
    good = xp.asarray([0, 1, 3])
    with pytest.raises(
        ValueError, match=r"logits: expected a 2-d array \(N, K\), got shape \(4,\)"
    ):
        softmax_cross_entropy(xp.zeros(4), good)
    with pytest.raises(TypeError, match="logits: expected dtype float32 or float64, got int64"):
        softmax_cross_entropy(xp.zeros((3, 4), dtype=xp.int64), good)
    with pytest.raises(ValueError, match=r"expected N >= 1 and K >= 1, got shape \(0, 4\)"):
        softmax_cross_entropy(xp.zeros((0, 4)), xp.zeros(0, dtype=xp.int64))
    with pytest.raises(TypeError, match="labels: expected an integer dtype, got float64"):
        softmax_cross_entropy(z, xp.asarray([0.0, 1.0, 3.0]))
    with pytest.raises(TypeError, match="labels: expected an integer dtype, got bool"):
        softmax_cross_entropy(z, xp.asarray([True, False, True]))
    with pytest.raises(TypeError, match="labels: expected an integer array, got list"):
        softmax_cross_entropy(z, [0, 1, 3])
    with pytest.raises(
        ValueError, match=r"labels: expected shape \(3,\) to match logits.*got \(3, 1\)"
    ):
        softmax_cross_entropy(z, good.reshape(3, 1))
    with pytest.raises(
        ValueError, match=r"labels: expected values in \[0, 3\].*got range \[0, 4\]"
    ):
        softmax_cross_entropy(z, xp.asarray([0, 4, 1]))
    with pytest.raises(
        ValueError, match=r"labels: expected values in \[0, 3\].*got range \[-1, 3\]"
    ):
        softmax_cross_entropy(z, xp.asarray([-1, 3, 1]))
    _, cache = softmax_cross_entropy(z, good)
    with pytest.raises(ValueError, match=r"dloss: expected a scalar, got shape \(3,\)"):
        softmax_cross_entropy_backward(cache, xp.ones(3))


def test_cross_entropy_rejects_mixed_backends():
    z = np.zeros((3, 4))
    with pytest.raises(TypeError, match="mix array libraries"):
        softmax_cross_entropy(z, ForeignArray(np.zeros(3, dtype=np.int64)))

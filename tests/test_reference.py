"""The textbook step (Algorithm 1 as written) equals the full tdlrt_step."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import tucker_configs

import refdlrt.dlrt.integrator as integrator
from refdlrt.backend import to_numpy
from refdlrt.dlrt.integrator import tdlrt_step
from refdlrt.dlrt.problems import random_quadratic, random_tucker
from refdlrt.dlrt.reference import tdlrt_step_reference
from refdlrt.tensor.tucker import Tucker


def same(Y1, Y2):
    assert Y1.ranks == Y2.ranks
    np.testing.assert_array_equal(to_numpy(Y1.core), to_numpy(Y2.core))
    for U1, U2 in zip(Y1.factors, Y2.factors):
        np.testing.assert_array_equal(to_numpy(U1), to_numpy(U2))


@given(cfg=tucker_configs(), tau=st.sampled_from([0.0, 1e-3, 0.1, 0.3]),
       lr=st.sampled_from([1e-3, 0.1, 0.7]), steps=st.integers(1, 3))
@settings(max_examples=30)
def test_full_step_equals_the_textbook_step(xp, cfg, tau, lr, steps):
    """Bit for bit, over a few steps: same named functions, same order, same numbers."""
    shape, ranks, seed = cfg
    rng = np.random.default_rng(seed)
    Y = random_tucker(shape, ranks, rng, xp=xp)
    prob = random_quadratic(shape, rng, xp=xp)
    Y_ref = Y
    for _ in range(steps):
        Y, _ = tdlrt_step(Y, prob.gradient(Y.to_tensor()), lr, tau)
        Y_ref = tdlrt_step_reference(Y_ref, prob.gradient(Y_ref.to_tensor()), lr, tau)
        same(Y, Y_ref)


def test_the_equality_test_sees_a_difference_in_the_full_step(monkeypatch):
    # test the tester: a full step whose augmentation drops the old basis is caught
    rng = np.random.default_rng(1)
    Y = random_tucker((5, 4, 3), (2, 2, 2), rng)
    G = random_quadratic(Y.shape, rng).gradient(Y.to_tensor())
    ref = tdlrt_step_reference(Y, G, 0.3, 0.0)
    orth = integrator.orth
    monkeypatch.setattr(integrator, "augment",
                        lambda K, U, direction=None: (lambda Uh: (Uh, Uh.T @ U))(orth(K)))
    bad, _ = integrator.tdlrt_step(Y, G, 0.3, 0.0)
    try:
        same(bad, ref)
    except AssertionError:
        return
    raise AssertionError("the planted bug went unnoticed")


@pytest.mark.parametrize("lr", [1e-4, 1e-6])
def test_float32_small_steps_keep_their_new_directions_in_the_textbook_step(lr):
    """The textbook step augments from [U | grad_K] too: a float32 step far below ||K|| keeps its
    r new directions (from [K | U] they round away), so with tau = 0 the rank doubles."""
    rng = np.random.default_rng(12)
    n, r = 64, 8
    U = np.linalg.qr(rng.standard_normal((n, r)))[0].astype(np.float32)
    V = np.linalg.qr(rng.standard_normal((n, r)))[0].astype(np.float32)
    Y = Tucker(np.diag(np.linspace(20.0, 1.0, r)).astype(np.float32), (U, V))
    G = rng.standard_normal((n, n)).astype(np.float32)
    assert tdlrt_step_reference(Y, G, lr, 0.0).ranks == (2 * r, 2 * r)

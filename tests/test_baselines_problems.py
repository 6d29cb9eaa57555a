"""The naive factor-gradient baseline and the synthetic problems: gradients against
central differences, constants against their definitions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import tucker_configs

from refdlrt.backend import to_numpy
from refdlrt.dlrt.baselines import naive_factor_step
from refdlrt.dlrt.problems import LinearProblem, TargetProblem, random_quadratic, random_tucker
from refdlrt.tensor.linalg import orthonormality_error
from refdlrt.tensor.tucker import tucker_to_tensor
from refdlrt.tolerances import tolerance

TOL = tolerance(np.float64)


def fd_directional(f, x, t, eps=TOL.fd_eps):
    return (f(x + eps * t) - f(x - eps * t)) / (2 * eps)


@given(cfg=tucker_configs())
def test_naive_step_moves_along_the_factor_gradients(cfg):
    shape, ranks, seed = cfg
    rng = np.random.default_rng(seed)
    Y = random_tucker(shape, ranks, rng)
    prob = random_quadratic(shape, rng)
    C, Us = Y.core, list(Y.factors)
    lr = 0.1
    new = naive_factor_step(C, Us, prob.gradient(Y.to_tensor()), lr)
    # (C - C_new)/lr must be grad_C of c -> L(c x_i U_i)
    gC = (C - new.core) / lr
    t = rng.standard_normal(C.shape)
    fd = fd_directional(lambda c: prob.value(tucker_to_tensor(c, Us)), C, t)
    assert fd == pytest.approx(float((gC * t).sum()), rel=TOL.fd_rtol)
    for i in range(len(Us)):
        gU = (Us[i] - new.factors[i]) / lr
        t = rng.standard_normal(Us[i].shape)

        def f(U, i=i):
            return prob.value(tucker_to_tensor(C, [U if j == i else V for j, V in enumerate(Us)]))

        assert fd_directional(f, Us[i], t) == pytest.approx(float((gU * t).sum()), rel=TOL.fd_rtol)


@given(cfg=tucker_configs())
def test_naive_reorthonormalization_keeps_the_tensor(xp, cfg):
    shape, ranks, seed = cfg
    rng = np.random.default_rng(seed)
    Y = random_tucker(shape, ranks, rng, xp=xp)
    G = random_quadratic(shape, rng, xp=xp).gradient(Y.to_tensor())
    plain = naive_factor_step(Y.core, Y.factors, G, 0.1)
    ortho = naive_factor_step(Y.core, Y.factors, G, 0.1, reorthonormalize=True)
    np.testing.assert_allclose(
        to_numpy(ortho.to_tensor()), to_numpy(plain.to_tensor()), rtol=TOL.rtol, atol=TOL.atol * 10
    )
    assert max(orthonormality_error(U) for U in ortho.factors) <= TOL.ortho * 10  # r <= 5 columns


def test_naive_step_rejects_bad_lr():
    Y = random_tucker((3, 3), (2, 2), np.random.default_rng(0))
    with pytest.raises(ValueError, match="lr > 0"):
        naive_factor_step(Y.core, Y.factors, np.zeros((3, 3)), 0.0)


@given(shape=st.lists(st.integers(2, 4), min_size=2, max_size=3).map(tuple),
       L=st.sampled_from([0.5, 1.0, 4.0]), seed=st.integers(0, 2**32 - 1))
def test_quadratic_gradient_and_constants(shape, L, seed):
    rng = np.random.default_rng(seed)
    prob = random_quadratic(shape, rng, L=L)
    W = rng.standard_normal(shape)
    t = rng.standard_normal(shape)
    fd = fd_directional(prob.value, W, t)
    assert fd == pytest.approx(float((prob.gradient(W) * t).sum()), rel=TOL.fd_rtol)
    assert prob.smoothness == pytest.approx(np.linalg.norm(prob.A, 2) ** 2, rel=TOL.rtol)
    lr = 0.7 / L
    H = prob.A.T @ prob.A
    rho = np.linalg.norm(np.eye(H.shape[0]) - lr * H, 2)
    assert prob.contraction(lr) == pytest.approx(rho, rel=TOL.rtol)


def test_target_and_linear_problems():
    rng = np.random.default_rng(0)
    T = rng.standard_normal((3, 4))
    W = rng.standard_normal((3, 4))
    t = rng.standard_normal((3, 4))
    p = TargetProblem(T)
    assert fd_directional(p.value, W, t) == pytest.approx(float((p.gradient(W) * t).sum()), rel=TOL.fd_rtol)
    q = LinearProblem(T)
    assert q.value(W) == pytest.approx(float((T * W).sum()))
    np.testing.assert_array_equal(q.gradient(W), T)


def test_random_tucker_rejects_bad_rank():
    with pytest.raises(ValueError, match="rank 5 outside"):
        random_tucker((3, 3), (5, 1), np.random.default_rng(0))

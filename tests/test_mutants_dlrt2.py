"""Tests that kill mutmut survivors of the second dlrt run (refdlrt/dlrt after the dtype and
finiteness checks of the integrator; see tests/README.md, "Mutation testing (issue 12)").

Mutant names are mutmut 3.8.1's ``refdlrt.dlrt.<module>.x_<function>__mutmut_<n>`` of that run.
Killed here (39): integrator _check_step_args 29, 32-39, 41, 42; tdlrt_step 29, 32, 33, 38-42,
44, 47, 48, 51, 54, 55, 60-64, 116, 119-121, 123, 138, 141; projector as_projector 14, 15.
Expectations come from the docstrings and the messages the checks document (the names of the
arguments as the caller spells them), and from dense computations written here.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from refdlrt.dlrt.integrator import tdlrt_step
from refdlrt.dlrt.projector import as_projector
from refdlrt.tensor.tucker import Tucker


def _exact(msg: str) -> str:
    return "^" + re.escape(msg) + "$"


def _orth(rng, n, r):
    return np.linalg.qr(rng.standard_normal((n, r)))[0]


def _tucker(shape=(5, 4, 3), ranks=(2, 2, 2), seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return Tucker(rng.standard_normal(ranks).astype(dtype),
                  tuple(_orth(rng, n, r).astype(dtype) for n, r in zip(shape, ranks)))


def test_non_orthonormal_weight_message_names_tdlrt_step():
    # _check_step_args 29, 32-34 (the `who` of check_orthonormal)
    Y = _tucker()
    bad = Tucker(Y.core, (2.0 * Y.factors[0],) + Y.factors[1:])
    with pytest.raises(ValueError, match=r"^tdlrt_step: Y: factor 0 \(5 x 2\) is not orthonormal: "):
        tdlrt_step(bad, np.zeros(Y.shape), 0.1, 0.1)


@pytest.mark.parametrize("name", ["lr", "tau"])
@pytest.mark.parametrize("value, tname", [("0.1", "str"), (True, "bool"), (None, "NoneType")])
def test_lr_and_tau_type_messages(name, value, tname):
    # _check_step_args 35-39, 41, 42: the message names the argument and the type it got; a bool
    # is refused although it is an int
    Y = _tucker()
    args = {"lr": 0.1, "tau": 0.1}
    args[name] = value
    with pytest.raises(TypeError, match=_exact(f"{name}: expected a real number, got {tname}")):
        tdlrt_step(Y, np.zeros(Y.shape), args["lr"], args["tau"])


def test_dense_gradient_dtype_and_finiteness_messages():
    # tdlrt_step 29, 32, 33, 38-42, 44, 47, 48
    Y = _tucker()
    with pytest.raises(TypeError, match=_exact(
            "tdlrt_step: grad: expected dtype float32 or float64, got int64")):
        tdlrt_step(Y, np.zeros(Y.shape, dtype=np.int64), 0.1, 0.1)
    with pytest.raises(TypeError, match=_exact(
            "dtypes differ: expected one float dtype, got Y.core: float64, grad: float32")):
        tdlrt_step(Y, np.zeros(Y.shape, dtype=np.float32), 0.1, 0.1)
    G = np.zeros(Y.shape)
    G[1, 2, 0] = np.inf
    with pytest.raises(FloatingPointError, match=_exact(
            "grad contains NaN or Inf; refusing to produce NaN factors")):
        tdlrt_step(Y, G, 0.1, 0.1)


def test_velocity_dtype_messages():
    # tdlrt_step 51, 54, 55, 60-64
    Y = _tucker()
    G = np.zeros(Y.shape)
    with pytest.raises(TypeError, match=_exact(
            "tdlrt_step: velocity: expected dtype float32 or float64, got int64")):
        tdlrt_step(Y, G, 0.1, 0.1, momentum=0.5, velocity=np.zeros(Y.ranks, dtype=np.int64))
    with pytest.raises(TypeError, match=_exact(
            "dtypes differ: expected one float dtype, got Y.core: float64, velocity: float32")):
        tdlrt_step(Y, G, 0.1, 0.1, momentum=0.5, velocity=np.zeros(Y.ranks, dtype=np.float32))


class _Projector:
    """A projector (``project`` only) whose K-step projections (a None entry) are zero and
    whose full projection (the S-step's grad_Ĉ) is ``full`` times ones, in ``dtype``."""

    def __init__(self, shape, full, dtype=np.float64):
        self.shape, self.full, self.dtype = shape, full, dtype

    def project(self, mats):
        out = tuple(n if A is None else A.shape[1] for n, A in zip(self.shape, mats))
        if any(A is None for A in mats):
            return np.zeros(out, dtype=self.dtype)
        return np.full(out, self.full, dtype=self.dtype)


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_core_after_the_s_step_overflow_message():
    # tdlrt_step 116, 119-121: grad_Ĉ = 1e300 is finite, Ĉ - λ grad_Ĉ with λ = 1e10 is not
    Y = _tucker()
    with pytest.raises(FloatingPointError, match=_exact(
            "the core after the S-step contains NaN or Inf; refusing to produce NaN factors")):
        tdlrt_step(Y, _Projector(Y.shape, 1e300), 1e10, 0.1)


def test_projections_in_another_precision_message():
    # tdlrt_step 123: a projector answering in float32 for a float64 weight
    Y = _tucker()
    with pytest.raises(TypeError, match=_exact(
            "tdlrt_step: the gradient's projections have dtype float32, expected float64 "
            "(the weight's)")):
        tdlrt_step(Y, _Projector(Y.shape, 1.0, np.float32), 0.1, 0.1)


def test_infinite_truncation_tolerance_alone_is_refused():
    # tdlrt_step 138 (`or`), 141: ϑ = τ ||Ĉ||_F = inf with a finite η must be refused too. G = 0
    # leaves Ĉ ×_i Û_i = Y, so ||Ĉ||_F = ||C||_F (> 2, checked) and 1e308 ||Ĉ||_F overflows
    Y = _tucker()
    Y = Tucker(10.0 * Y.core, Y.factors)
    assert np.linalg.norm(Y.core) > 2.0
    with pytest.raises(FloatingPointError, match=(
            r"^tdlrt_step: the truncation tolerance \(inf\) or error \([0-9.e+-]+\) is not "
            r"finite; refusing a silent rank collapse$")):
        tdlrt_step(Y, np.zeros(Y.shape), 0.1, 1e308)


@pytest.mark.parametrize("grad, tname", [([1.0, 2.0], "list"), (None, "NoneType")])
def test_as_projector_type_message(grad, tname):
    # as_projector 14, 15
    with pytest.raises(TypeError, match=_exact(
            f"grad: expected an array of shape (5, 4) or an object with project(mats), "
            f"got {tname}")):
        as_projector(grad, (5, 4))

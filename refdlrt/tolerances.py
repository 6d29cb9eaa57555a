"""The one tolerance table, keyed by dtype.

Every numerical comparison in tests and validation takes its tolerance from
here. ``rtol``/``atol`` are for comparing two computations of the same value
(different summation orders); ``fd_rtol`` is the relative tolerance of the
central-difference adjoint test (truncation O(eps^2) plus rounding O(u/eps)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Tolerance", "TOLERANCES", "tolerance", "assert_close"]


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float
    fd_rtol: float
    fd_eps: float
    ortho: float  # allowed ||U^T U - I|| per unit of sqrt(n)


TOLERANCES = {
    # float64: unit roundoff 1.1e-16; sums of a few thousand terms stay well under 1e-11.
    np.dtype(np.float64): Tolerance(rtol=1e-10, atol=1e-12, fd_rtol=1e-6, fd_eps=1e-6, ortho=1e-13),
    # float32: unit roundoff 6e-8; conv sums of O(1e3) terms lose ~3 digits.
    np.dtype(np.float32): Tolerance(rtol=2e-4, atol=2e-5, fd_rtol=2e-2, fd_eps=1e-2, ortho=1e-5),
}


def tolerance(dtype) -> Tolerance:
    """Tolerance for ``dtype`` (float32 or float64); raises for anything else."""
    dt = np.dtype(dtype)
    try:
        return TOLERANCES[dt]
    except KeyError:
        raise TypeError(f"no tolerance for dtype {dt}: expected float32 or float64") from None


def assert_close(actual, desired, dtype=None, *, scale=1.0, err_msg=""):
    """``numpy.testing.assert_allclose`` with the table's tolerance for ``dtype``.

    ``atol`` is multiplied by ``scale`` (the magnitude of the compared values),
    so the check is relative to the size of the data, not to 1.
    """
    from .backend import to_numpy

    a, d = to_numpy(actual), to_numpy(desired)
    t = tolerance(dtype if dtype is not None else np.result_type(a.dtype, d.dtype))
    np.testing.assert_allclose(a, d, rtol=t.rtol, atol=t.atol * max(scale, 1.0), err_msg=err_msg)

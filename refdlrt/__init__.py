"""refdlrt: an exact, framework-free NumPy/CuPy reference implementation of TDLRT."""

from .backend import get_xp, gpu_available, to_numpy
from .gradcheck import AdjointResult, adjoint_test, linear_adjoint_check
from .tolerances import TOLERANCES, Tolerance, tolerance

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # backend
    "get_xp",
    "to_numpy",
    "gpu_available",
    # checking
    "adjoint_test",
    "linear_adjoint_check",
    "AdjointResult",
    "Tolerance",
    "TOLERANCES",
    "tolerance",
]

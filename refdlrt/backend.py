"""The one module that chooses the array library.

Every other module asks its inputs for their namespace with :func:`get_xp`
and never imports CuPy itself. Importing refdlrt never requires CuPy: it is
imported lazily, only when a CuPy array is actually seen or a GPU is asked for.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

__all__ = ["get_xp", "to_numpy", "gpu_available", "is_cupy_array", "namespace", "backend_name",
           "fro", "one_blas_thread"]


def is_cupy_array(a) -> bool:
    """True if ``a`` is a CuPy ndarray (checked without importing CuPy)."""
    return type(a).__module__.split(".")[0] == "cupy"


def get_xp(*arrays):
    """Return the array namespace (``numpy`` or ``cupy``) of the given arrays.

    ``None`` entries and Python scalars are ignored. With no arrays at all,
    NumPy is returned.

    Raises
    ------
    TypeError
        If NumPy and CuPy arrays are mixed.
    """
    kinds = set()
    for a in arrays:
        if type(a) is np.ndarray:  # the common case first: it is called a few hundred times a step
            kinds.add("numpy")
        elif a is None or isinstance(a, (int, float, complex, bool, np.generic)):
            continue
        else:
            kinds.add("cupy" if is_cupy_array(a) else "numpy")
    if len(kinds) > 1:
        got = ", ".join(f"{type(a).__module__}.{type(a).__name__}" for a in arrays if a is not None)
        raise TypeError(
            f"arrays mix array libraries: expected all numpy or all cupy, got [{got}]"
        )
    if kinds == {"cupy"}:
        import cupy  # noqa: PLC0415 - the one place CuPy is imported

        return cupy
    return np


def fro(a) -> float:
    """||a||_F, the Frobenius norm of an array of any shape and backend, as a Python float.

    Scaled by max |a_ij| first, so it cannot overflow or underflow for finite entries (a plain
    sum of squares overflows float32 at |a| ~ 1e19); NaN or Inf entries give NaN or Inf."""
    xp = get_xp(a)
    if a.size == 0:
        return 0.0
    m = float(xp.abs(a).max())
    if m == 0.0 or not math.isfinite(m):
        return m if m == 0.0 or math.isinf(m) else float("nan")
    return m * float(xp.linalg.norm((a / m).reshape(-1)))


def to_numpy(a):
    """Return ``a`` as a NumPy array (copying from the GPU for CuPy arrays)."""
    if is_cupy_array(a):
        return a.get()
    return np.asarray(a)


def gpu_available() -> bool:
    """True when CuPy imports *and* a CUDA device can be used.

    Importing CuPy works without a driver; only allocation fails. So this
    asks ``cupy.cuda.is_available()`` and then allocates a tiny array.
    """
    try:
        import cupy  # noqa: PLC0415

        if not cupy.cuda.is_available():
            return False
        cupy.zeros(1).sum().item()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no usable GPU"
        return False


def backend_name(xp) -> str:
    """The backend name of an array module, ``"numpy"`` or ``"cupy"`` (the inverse of
    :func:`namespace`; a submodule such as ``numpy.linalg`` names its package)."""
    return xp.__name__.split(".")[0]


def namespace(backend: str):
    """The array module for a backend name: ``"numpy"`` or ``"cupy"``.

    Raises ValueError for another name, or for ``"cupy"`` without CuPy and a usable GPU.
    """
    if backend == "numpy":
        return np
    if backend == "cupy":
        if not gpu_available():
            raise ValueError(
                "backend cupy needs CuPy and a usable GPU, and none was found "
                "(refdlrt.backend.gpu_available() is False); use numpy"
            )
        import cupy  # noqa: PLC0415

        return cupy
    raise ValueError(f"backend: expected 'numpy' or 'cupy', got {backend!r}")


_BLAS = {}  # the threadpoolctl controller, found once (finding the libraries takes a few ms)


def one_blas_thread(xp):
    """Context in which NumPy's BLAS/LAPACK runs on one thread (a no-op for CuPy, or without
    threadpoolctl).

    For the integrator's SVDs (:func:`refdlrt.tensor.linalg.svd_thin`): with two OpenBLAS
    threads on this project's 2-core machine, LAPACK's SVD of a 32 x 288 float32 matrix once took
    about 3x as long as with one, and a 3136 x 38 one 1.1-1.6x (benchmarks/README.md), while the
    convolutions' large GEMMs gain from every thread. The small QRs and eighs run without it:
    paired training steps were 0.4-1.4 ms faster on lenet5. Entering
    costs about 35 µs. Results do not depend on the thread count of the caller. The limit is
    process-wide (threadpoolctl): run refdlrt in one thread per process (as ``refdlrt sweep``'s
    workers do), not in several threads of one process.
    """
    if backend_name(xp) != "numpy":
        return contextlib.nullcontext()
    if "controller" not in _BLAS:
        try:
            from threadpoolctl import ThreadpoolController  # noqa: PLC0415
            _BLAS["controller"] = ThreadpoolController()
        except ImportError:
            _BLAS["controller"] = None
    c = _BLAS["controller"]
    return contextlib.nullcontext() if c is None else c.limit(limits=1, user_api="blas")


"""Private input checks shared by the primitives: clear errors naming what was
expected and what was got."""

from __future__ import annotations

import numpy as np

from .backend import get_xp


def is_int(v) -> bool:
    """True for a Python or NumPy integer (bool excluded: ``True`` is not a size)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def pair(v, name: str) -> tuple[int, int]:
    """Normalise an int or a pair of ints to a pair of Python ints."""
    if is_int(v):
        return int(v), int(v)
    try:
        a, b = v
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected an int or a pair of ints, got {v!r}") from None
    for e in (a, b):
        if not is_int(e):
            raise TypeError(f"{name}: expected an int or a pair of ints, got {v!r}")
    return int(a), int(b)


def check_float_array(a, name: str):
    """Raise TypeError unless ``a`` is a float32/float64 NumPy or CuPy array."""
    if not hasattr(a, "dtype") or not hasattr(a, "shape"):
        raise TypeError(f"{name}: expected a numpy or cupy array, got {type(a).__name__}")
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name}: expected dtype float32 or float64, got {a.dtype}")


def check_ndim(a, ndim: int, name: str, layout: str):
    if a.ndim != ndim:
        raise ValueError(
            f"{name}: expected a {ndim}-d array ({layout}), got shape {tuple(a.shape)}"
        )


def check_grad(dy, shape, dtype, name: str = "dy", *, layout: str = "", source: str = ""):
    """The incoming gradient of a backward: a float array of the forward output's shape and
    dtype. ``layout``/``source`` are appended to the messages (e.g. " (N, C_out, Ho, Wo)")."""
    check_float_array(dy, name)
    if tuple(dy.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}{layout}, got {tuple(dy.shape)}")
    if dy.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}{source}, got {dy.dtype}")


def check_same_dtype(*named):
    """``named`` is a sequence of (name, array); all non-None arrays must share a dtype."""
    present = [(n, a) for n, a in named if a is not None]
    dts = {a.dtype for _, a in present}
    if len(dts) > 1:
        got = ", ".join(f"{n}: {a.dtype}" for n, a in present)
        raise TypeError(f"dtypes differ: expected one float dtype, got {got}")
    get_xp(*(a for _, a in present))  # raises on mixed backends

"""``where(mask, a, 0)`` without branches, for the masks of ReLU and max pooling."""

from __future__ import annotations

from ..backend import get_xp

__all__ = ["keep_where"]

_INT = {4: "int32", 8: "int64"}  # an integer of each float's width


def keep_where(mask, a):
    """``a`` where ``mask`` is True and +0 elsewhere: ``where(mask, a, 0)``, bit for bit.

    Parameters
    ----------
    mask : bool array, a's shape
    a : float32 or float64 array

    Notes
    -----
    Each entry's bits are ANDed with a word of all ones (mask True: the integer -1) or all zeros
    (False), so NaN, Inf and -0 entries of ``a`` are kept as they are where the mask is True and
    become +0 where it is False, exactly as with ``where``. NumPy's ``where`` branches on every
    entry and runs at a fraction of memory speed when the mask is unpredictable (ReLU's and max
    pooling's are): 17 ms against 2.7 ms for this AND on 3.2 million float32 entries on a 2-core
    machine.
    """
    xp = get_xp(mask, a)
    words = mask.astype(getattr(xp, _INT[a.dtype.itemsize]))  # 0 or 1, per entry
    xp.negative(words, out=words)  # 0 or -1: all ones
    words &= a.view(words.dtype)  # in place: no third full-size array
    return words.view(a.dtype)

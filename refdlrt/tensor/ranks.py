"""Rank rules of a Tucker tensor that do not depend on its entries."""

from __future__ import annotations

import math

__all__ = ["compatible_ranks", "init_ranks", "truncation_bounds"]


def compatible_ranks(ranks) -> tuple:
    """Largest ranks <= ``ranks`` with r_i <= Π_{j≠i} r_j for every mode.

    Notes
    -----
    Mat_i(C) of a core C (r_0 x ... x r_{d-1}) is r_i x Π_{j≠i} r_j, so it has at most
    Π_{j≠i} r_j non-zero singular values: a rank beyond that carries no mass, and cutting it
    removes nothing (ALGORITHM.md §2, step 9).
    """
    ranks = list(ranks)
    changed = True
    while changed:
        changed = False
        for i, r in enumerate(ranks):
            other = math.prod(ranks[:i] + ranks[i + 1:])
            if r > other:
                ranks[i], changed = other, True
    return tuple(ranks)


def init_ranks(shape, fraction: float) -> tuple:
    """Ranks ceil(fraction * n_i), at least 1, made compatible (r_i <= Π_{j≠i} r_j)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"init rank fraction: expected 0 < fraction <= 1, got {fraction}")
    return compatible_ranks([max(1, math.ceil(fraction * n)) for n in shape])


def truncation_bounds(r_min: int, r_max, widths, adaptive) -> tuple:
    """Per-mode rank bounds (lo, hi) for truncating an augmented core of widths ``widths``.

    An adaptive mode gets lo = min(r_min, width) and hi = max(min(r_max_i, width), lo); a
    non-adaptive one keeps its width (lo = hi = width). ``r_max`` holds one int per mode.
    """
    lo = [min(r_min, w) if a else w for a, w in zip(adaptive, widths)]
    hi = [max(min(rm, w), lo_i) if a else w for a, rm, w, lo_i in zip(adaptive, r_max, widths, lo)]
    return lo, hi

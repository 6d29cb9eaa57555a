"""The validation suite: the guarantees of ALGORITHM.md §4 checked numerically, with verdicts.

Each claim is one module of this package with ``run(*, quick, seed, xp, out) -> ClaimResult``;
:func:`run_validation` runs them in the order of :data:`CLAIMS`, prints a table and writes
``report.md`` (verdict table and the plots) and ``results.json`` into ``out``.

A claim is a list of :class:`Check` (measured value, bound, sense ``<=`` or ``>=``); the claim
holds when every check does. The table row shows the tightest main check (smallest margin)
or the worst failed one.
Margin: bound / measured for ``<=`` checks, measured / bound for ``>=`` checks, so a margin
above 1 means the check holds with that factor to spare.
"""

from __future__ import annotations

import importlib
import math
import os
import time
import traceback
from dataclasses import dataclass, field

from ..backend import namespace

__all__ = ["CLAIMS", "Check", "ClaimResult", "check_names", "claim_names", "format_table", "run_claim",
           "run_validation"]

# name -> module in this package (the order is the order of the report)
CLAIMS = {
    "orthonormality": "orthonormality",
    "truncation": "truncation",
    "descent": "descent",
    "approximation": "approximation",
    "exactness": "exactness",
    "robustness": "robustness",
    "rank_adaptivity": "rank_adaptivity",
    "training": "training",
    "gpu": "gpu",
}


def claim_names() -> list:
    """The claim names, in report order."""
    return list(CLAIMS)


@dataclass(frozen=True)
class Check:
    """One inequality: ``measured <= bound`` (sense "<=") or ``measured >= bound`` (">=")."""

    label: str
    measured: float
    bound: float
    sense: str = "<="
    main: bool = True  # False: a sanity check (e.g. "the run did change ranks"), never the headline

    @property
    def ok(self) -> bool:
        m, b = float(self.measured), float(self.bound)
        if math.isnan(m) or math.isnan(b):
            return False
        return m <= b if self.sense == "<=" else m >= b

    @property
    def margin(self) -> float:
        """bound / measured ("<=") or measured / bound (">="); > 1 means the check holds."""
        num, den = (self.bound, self.measured) if self.sense == "<=" else (self.measured, self.bound)
        num, den = float(num), float(den)
        if math.isnan(num) or math.isnan(den):
            return math.nan
        if den == 0.0:
            return math.inf if num >= 0 else -math.inf
        return num / den

    def as_dict(self) -> dict:
        return dict(label=self.label, measured=_num(self.measured), bound=_num(self.bound),
                    sense=self.sense, margin=_num(self.margin), ok=self.ok, main=self.main)


@dataclass
class ClaimResult:
    """The verdict on one claim.

    Attributes
    ----------
    name : str, the registry name (``orthonormality``, ...).
    claim : str, one sentence with the inequality checked.
    measured, bound, margin : float, of the tightest check (smallest margin).
    ok : bool, every check holds (a skipped claim counts as OK).
    details : dict, JSON-friendly extras (all checks, per-case numbers, traces).
    plots : list of str, PNG paths relative to the output folder.
    status : "OK", "NOT OK" or "SKIPPED".
    """

    name: str
    claim: str
    measured: float
    bound: float
    margin: float
    ok: bool
    details: dict = field(default_factory=dict)
    plots: list = field(default_factory=list)
    status: str = ""
    seconds: float = 0.0

    def __post_init__(self):
        if not self.status:
            self.status = "OK" if self.ok else "NOT OK"

    @classmethod
    def from_checks(cls, name, claim, checks, details=None, plots=None):
        """Build the verdict from a list of :class:`Check` (no checks: NOT OK)."""
        details = dict(details or {})
        details["checks"] = [c.as_dict() for c in checks]
        if not checks:
            return cls(name, claim, math.nan, math.nan, math.nan, False, details, list(plots or []))
        failed = [c for c in checks if not c.ok]
        pool = failed or [c for c in checks if c.main] or checks
        head = min(pool, key=lambda c: _sort_key(c.margin))
        details["headline"] = head.label
        return cls(name, claim, float(head.measured), float(head.bound), float(head.margin),
                   not failed, details, list(plots or []))

    @classmethod
    def skipped(cls, name, claim, reason):
        return cls(name, claim, math.nan, math.nan, math.nan, True, {"skipped": reason},
                   [], status="SKIPPED")

    @classmethod
    def error(cls, name, claim, exc):
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        return cls(name, claim, math.nan, math.nan, math.nan, False,
                   {"error": f"{type(exc).__name__}: {exc}", "traceback": "".join(tb[-6:])})

    def as_dict(self) -> dict:
        return dict(name=self.name, ok=self.ok, status=self.status, measured=_num(self.measured),
                    bound=_num(self.bound), margin=_num(self.margin), claim=self.claim,
                    seconds=round(self.seconds, 2), plots=self.plots, details=_jsonable(self.details))


def _sort_key(m: float) -> float:
    return -math.inf if math.isnan(m) else m


def _num(v):
    """A float for JSON: NaN and infinities become None and strings ('inf', '-inf')."""
    if v is None:
        return None
    v = float(v)
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def _jsonable(obj):
    import numpy as np

    from ..backend import to_numpy

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _num(obj)
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):
        return _jsonable(to_numpy(obj).tolist())
    return obj if isinstance(obj, str) or obj is None else str(obj)


def check_names(names) -> list:
    """Validate claim names (a list or a comma-separated string); return them in report order."""
    if names is None:
        return claim_names()
    if isinstance(names, str):
        names = [names]
    wanted = [n.strip() for item in names for n in str(item).split(",") if n.strip()]
    unknown = [n for n in wanted if n not in CLAIMS]
    if unknown or not wanted:
        raise ValueError(f"unknown claim name(s) {unknown or names!r}; valid names are: "
                         f"{', '.join(CLAIMS)}")
    return [n for n in CLAIMS if n in wanted]


def run_claim(name: str, *, quick: bool, seed: int, xp, out: str) -> ClaimResult:
    """Run one claim; an exception becomes a NOT OK verdict carrying the error."""
    module = importlib.import_module(f".{CLAIMS[name]}", __name__)
    t0 = time.perf_counter()
    try:
        res = module.run(quick=quick, seed=seed, xp=xp, out=out)
    except Exception as exc:  # noqa: BLE001 - a crash is a failed claim, reported as such
        res = ClaimResult.error(name, getattr(module, "CLAIM", name), exc)
    res.seconds = time.perf_counter() - t0
    return res


def run_validation(names=None, quick=False, backend="numpy", seed=0, out="validation_out",
                   *, echo=None) -> list:
    """Run the claims, write ``report.md`` and ``results.json`` into ``out``; return the results.

    Parameters
    ----------
    names : list of str, comma-separated str or None (all claims)
    quick : bool, the small versions (about two minutes on two cores for all claims)
    backend : "numpy" or "cupy" (the array library of every claim; "gpu" always compares both)
    seed : int, seed of every ``numpy.random.Generator`` used
    out : str, output folder (created)
    echo : callable or None, called with each finished ClaimResult (progress printing)
    """
    from .report import write_report

    names = check_names(names)
    xp = namespace(backend)
    os.makedirs(out, exist_ok=True)
    results = []
    for name in names:
        res = run_claim(name, quick=quick, seed=seed, xp=xp, out=out)
        results.append(res)
        if echo is not None:
            echo(res)
    write_report(results, out, quick=quick, backend=backend, seed=seed)
    return results


def format_table(results) -> str:
    """The verdict table as plain text (claim, check, measured, bound, margin, verdict)."""
    from .report import format_table as _fmt

    return _fmt(results)

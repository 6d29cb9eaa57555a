"""The conformance checker: compare a candidate's outputs with the golden ones, quantity by
quantity in the order of the algorithm, and name the first step that differs.

A candidate is a directory with the golden layout (the same ``<case>.npz`` file names and
array names, holding the candidate's outputs) or an adapter object with one method per case
kind, ``kind(inputs: dict, params: dict) -> dict`` (see :mod:`refdlrt.oracle.reference`).
Nothing here raises on a bad candidate: a missing array, a wrong shape, NaN, an exception in
the adapter are each a NOT OK with a message. Golden files are verified against the manifest.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from .hints import hint_for
from .npz import OracleFileError, read_npz, sha256
from .quantities import TOLERANCES, quantities

__all__ = ["SCHEMA_VERSION", "Row", "CaseResult", "Report", "check", "load_golden"]

SCHEMA_VERSION = 1


@dataclass
class Row:
    label: str
    step: str
    ok: bool
    error: float | None = None
    tol: float | None = None
    message: str = ""

    def format(self) -> str:
        err = "" if self.error is None else f"{self.error:.2e}"
        tol = "" if self.tol is None else f"{self.tol:.0e}"
        verdict = "OK" if self.ok else "NOT OK"
        msg = f"  {self.message}" if self.message else ""
        return f"    {self.label:<46} {err:>9} {tol:>7}  {verdict}{msg}"


@dataclass
class CaseResult:
    name: str
    kind: str
    rows: list = field(default_factory=list)
    message: str = ""  # a case-level failure (missing file, tampered golden, adapter error)
    hint: str = ""

    @property
    def ok(self) -> bool:
        return not self.message and all(r.ok for r in self.rows)

    @property
    def first_failure(self):
        return next((r for r in self.rows if not r.ok), None)

    def summary(self) -> str:
        if self.message:
            return f"{self.name} ({self.kind}): NOT OK: {self.message}"
        bad = self.first_failure
        if bad is None:
            return f"{self.name} ({self.kind}): OK ({len(self.rows)} quantities)"
        passed = [r.step for r in self.rows[: self.rows.index(bad)]]
        last_ok = f"{passed[-1]} OK, " if passed else ""
        out = f"{self.name} ({self.kind}): {last_ok}{bad.label} NOT OK -> look at the {bad.step}"
        return out + (f"\n    hint: {self.hint}" if self.hint else "")


@dataclass
class Report:
    golden: str
    candidate: str
    dtype: str
    cases: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.cases) and all(c.ok for c in self.cases)

    def format(self, verbose: bool = True) -> str:
        lines = [f"refdlrt oracle check: candidate {self.candidate} against {self.golden} "
                 f"({self.dtype} tolerances)"]
        for c in self.cases:
            lines.append(c.summary())
            if verbose and not c.message:
                lines += [r.format() for r in c.rows]
        n_ok = sum(c.ok for c in self.cases)
        lines.append(f"{n_ok} of {len(self.cases)} cases OK" + ("" if self.ok else "; NOT OK"))
        return "\n".join(lines)


def load_golden(golden_dir) -> dict:
    """Read and validate ``manifest.json`` (schema version, case entries)."""
    path = os.path.join(golden_dir, "manifest.json")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise OracleFileError(f"{path}: no manifest.json: expected a directory written by "
                              f"'refdlrt oracle export'") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise OracleFileError(f"{path}: not a readable JSON manifest ({e})") from None
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != SCHEMA_VERSION:
        raise OracleFileError(f"{path}: schema version {version!r} is not supported: this "
                              f"refdlrt reads schema version {SCHEMA_VERSION}")
    cases = manifest.get("cases")
    if not isinstance(cases, list) or not all(isinstance(c, dict) and {"name", "kind", "file", "sha256"} <= set(c)
                                              for c in cases):
        raise OracleFileError(f"{path}: malformed manifest: expected a list of cases with name, "
                              f"kind, file and sha256")
    return manifest


def _precision(arrays) -> str:
    kinds = {np.asarray(a).dtype for a in arrays.values() if np.asarray(a).dtype.kind == "f"}
    return "float32" if any(k.itemsize <= 4 for k in kinds) else "float64"


def _order(kind, params, golden):
    if kind == "hosvd":
        return sum(1 for k in golden if k.startswith("sigma_"))
    if kind == "tdlrt_step":
        return sum(1 for k in golden if k.startswith("U_hat_"))
    return 0


def _compare(q, g_arrays, c_arrays, precision) -> Row:
    missing = [a for a in q.arrays if a not in c_arrays]
    if missing:
        return Row(q.label, q.step, False, message=f"missing array {', '.join(missing)}")
    for a in q.arrays:
        ca, ga = np.asarray(c_arrays[a]), np.asarray(g_arrays[a])
        if ca.dtype.kind not in "fiu":
            return Row(q.label, q.step, False, message=f"{a}: expected a numeric array, got dtype {ca.dtype}")
        if ca.dtype.kind == "f" and not np.isfinite(ca).all():
            return Row(q.label, q.step, False, message=f"{a}: contains NaN or Inf")
        if q.compare == "exact" and ca.shape != ga.shape:
            return Row(q.label, q.step, False, message=f"{a}: expected shape {ga.shape}, got {ca.shape}")
    try:
        gv, cv = q.form(g_arrays), q.form(c_arrays)
    except Exception as e:  # a candidate array of the wrong shape breaks the invariant's formula
        shapes = ", ".join(f"{a} {np.shape(c_arrays[a])} (golden {np.shape(g_arrays[a])})" for a in q.arrays)
        return Row(q.label, q.step, False, message=f"cannot form the quantity from {shapes}: {e}")
    if gv.shape != cv.shape:
        return Row(q.label, q.step, False,
                   message=f"expected shape {gv.shape}, got {cv.shape} (from {', '.join(q.arrays)})")
    tol = TOLERANCES[q.tol][precision]
    if q.compare == "exact":
        ok = bool(np.array_equal(gv, cv))
        return Row(q.label, q.step, ok, float(np.abs(gv - cv).max()) if gv.size else 0.0, tol,
                   "" if ok else f"expected {gv.astype(np.int64).tolist()}, got {cv.astype(np.int64).tolist()}")
    diff = float(np.linalg.norm((cv - gv).ravel()))
    if q.compare == "span":
        scale = math.sqrt(max(float(np.trace(gv)), 1.0))  # ||P||_F = sqrt(rank)
    else:
        scale = max(float(np.linalg.norm(gv.ravel())), np.finfo(np.float64).tiny)
    err = diff / scale
    return Row(q.label, q.step, bool(err <= tol), err, tol)


def _candidate_arrays(case, golden_arrays, candidate, candidate_dir):
    """The candidate's outputs for one case, or raise an error message (str)."""
    if candidate_dir is not None:
        path = os.path.join(candidate_dir, case["file"])
        if not os.path.exists(path):
            raise _CaseError(f"missing candidate file {path}")
        return read_npz(path)
    method = getattr(candidate, case["kind"], None)
    if method is None:
        raise _CaseError(f"the adapter has no method {case['kind']}(inputs, params)")
    inputs = {k: golden_arrays[k].copy() for k in case["inputs"]}
    try:
        out = method(inputs, json.loads(json.dumps(case["params"])))
    except Exception as e:
        raise _CaseError(f"the adapter's {case['kind']} raised {type(e).__name__}: {e}") from None
    if not isinstance(out, dict):
        raise _CaseError(f"the adapter's {case['kind']} returned {type(out).__name__}, expected a dict of arrays")
    try:
        return {k: np.asarray(v) for k, v in out.items()}
    except Exception as e:
        raise _CaseError(f"the adapter's {case['kind']} returned something that is not arrays: {e}") from None


class _CaseError(Exception):
    pass


def check(golden_dir, candidate, *, only=None) -> Report:
    """Compare ``candidate`` (a directory path, or an adapter object) with the golden cases.

    Parameters
    ----------
    golden_dir : path written by ``refdlrt oracle export`` (manifest.json and one .npz per case)
    candidate : a directory of the golden layout holding the candidate's outputs, or an adapter
        object with one method per case kind, ``kind(inputs, params) -> dict of arrays``.
    only : iterable of case names, optional

    Returns
    -------
    Report; ``report.ok`` is True when every case is OK. Raises OracleFileError only when the
    golden directory itself cannot be used (no manifest, unknown schema version).
    """
    manifest = load_golden(golden_dir)
    candidate_dir = candidate if isinstance(candidate, (str, os.PathLike)) else None
    if candidate_dir is not None and not os.path.isdir(candidate_dir):
        raise OracleFileError(f"{candidate_dir}: the candidate directory does not exist")
    names = [c["name"] for c in manifest["cases"]]
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise OracleFileError(f"--only: unknown case(s) {', '.join(unknown)}; the golden set has "
                                  f"{', '.join(names)}")
    report = Report(str(golden_dir), str(candidate_dir or type(candidate).__name__), "")
    precisions = []
    for case in manifest["cases"]:
        if only and case["name"] not in only:
            continue
        res = CaseResult(case["name"], case["kind"])
        report.cases.append(res)
        gpath = os.path.join(golden_dir, case["file"])
        try:
            if sha256(gpath) != case["sha256"]:
                res.message = (f"golden file {gpath} does not match the SHA-256 of the manifest: "
                               f"tampered with or corrupted; export it again")
                continue
            golden = read_npz(gpath)
            cand = _candidate_arrays(case, golden, candidate, candidate_dir)
        except FileNotFoundError:
            res.message = f"missing golden file {gpath}"
            continue
        except (OracleFileError, _CaseError) as e:
            res.message = str(e)
            continue
        precision = "float32" if "float32" in (case.get("dtype"), _precision(cand)) else "float64"
        precisions.append(precision)
        outputs = {k: v for k, v in golden.items() if k not in case["inputs"]}
        qs = quantities(case["kind"], case["params"], outputs, _order(case["kind"], case["params"], outputs))
        res.rows = [_compare(q, golden, cand, precision) for q in qs]
        bad = res.first_failure
        if bad is not None:
            res.hint = hint_for(case, bad, golden, cand) or ""
    report.dtype = "float32" if "float32" in precisions else "float64"
    return report

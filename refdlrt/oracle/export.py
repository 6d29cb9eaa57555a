"""Write the golden cases: one ``<case>.npz`` (inputs and every output) per case and a
``manifest.json`` (schema version, versions, dtype, seed, per case its kind, parameters, array
names and shapes, the tolerance of each quantity, and the SHA-256 of its file). Deterministic:
the same command writes byte-identical files on the CPU."""

from __future__ import annotations

import json
import os
import platform

import numpy as np

from .. import __version__
from .cases import SEED, build_cases, case_names
from .check import SCHEMA_VERSION, _order
from .npz import write_npz
from .quantities import TOLERANCES, quantities
from .reference import RefdlrtAdapter

__all__ = ["export"]


def _shapes(arrays):
    return {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in sorted(arrays.items())}


def export(out_dir, *, dtype="float64", only=None) -> dict:
    """Compute and write the golden cases to ``out_dir``; return the manifest."""
    if dtype not in ("float64", "float32"):
        raise ValueError(f"--dtype: expected float64 or float32, got {dtype!r}")
    names = case_names()
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ValueError(f"--only: unknown case(s) {', '.join(unknown)}; the cases are {', '.join(names)}")
    cases = build_cases(np.dtype(dtype), only=only)
    os.makedirs(out_dir, exist_ok=True)
    ref = RefdlrtAdapter()
    entries = []
    for c in cases:
        outputs = getattr(ref, c.kind)(c.inputs, c.params)
        outputs = {k: np.asarray(v) for k, v in outputs.items()}
        clash = set(outputs) & set(c.inputs)
        assert not clash, f"{c.name}: input and output names clash: {clash}"
        fname = f"{c.name}.npz"
        digest = write_npz(os.path.join(out_dir, fname), {**c.inputs, **outputs})
        qs = quantities(c.kind, c.params, outputs, _order(c.kind, c.params, outputs))
        entries.append(dict(
            name=c.name, kind=c.kind, file=fname, sha256=digest, dtype=dtype, params=c.params,
            inputs=_shapes(c.inputs), outputs=_shapes(outputs),
            quantities=[dict(label=q.label, step=q.step, arrays=list(q.arrays), compare=q.compare,
                             tolerance=TOLERANCES[q.tol]) for q in qs],
        ))
    manifest = dict(
        schema_version=SCHEMA_VERSION, refdlrt_version=__version__, numpy_version=np.__version__,
        python_version=platform.python_version(), dtype=dtype, seed=SEED,
        comparison=("basis-independent: dense tensors, projectors U U^T, Gram matrices K K^T, "
                    "singular values, ranks, losses; never raw factors (see docs/ORACLE.md)"),
        cases=entries,
    )
    tmp = os.path.join(out_dir, f"manifest.json.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, os.path.join(out_dir, "manifest.json"))
    return manifest

"""Shared command line of the per-claim programs in this folder (not a claim itself)."""

from __future__ import annotations

import argparse
import sys

from refdlrt.validation import format_table, run_validation


def main(name: str, doc: str) -> int:
    """Parse ``[--quick] [--seed N] [--backend B] [--out DIR]``, run claim ``name``, print the
    claim and its verdict; return 0 if it holds (or is skipped), 1 if not, 2 on bad usage."""
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the small version (seconds)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    p.add_argument("--out", default=f"validation_out/{name}", help="report folder")
    args = p.parse_args()
    try:
        results = run_validation([name], quick=args.quick, backend=args.backend, seed=args.seed,
                                 out=args.out)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res = results[0]
    print(res.claim)
    print()
    for c in res.details.get("checks", []):
        print(f"  [{'OK' if c['ok'] else 'NOT OK'}] {c['label']}: {c['measured']} {c['sense']} "
              f"{c['bound']}")
    if "error" in res.details:
        print(res.details.get("traceback", res.details["error"]))
    print()
    print(format_table(results))
    print(f"report: {args.out}/report.md")
    return 0 if res.ok else 1

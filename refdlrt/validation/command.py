"""The ``refdlrt validate`` subcommand.

Wire it into the main parser with ``add_validate_parser(sub)`` (``sub`` from
``parser.add_subparsers``); it sets ``func`` so ``args.func(args)`` runs it. Standalone:
``python -m refdlrt.validation.command [options]``.
"""

from __future__ import annotations

import argparse
import sys

from ..backend import namespace
from ..training.runs import check_writable
from . import check_names, claim_names, format_table, run_validation

__all__ = ["add_validate_parser", "cmd_validate", "main"]


def _names(value: str) -> list:
    try:
        return check_names(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--quick", action="store_true",
                   help="small versions of every claim (about two minutes on two cores)")
    p.add_argument("--only", type=_names, default=None, metavar="NAMES",
                   help=f"comma-separated claims to run, from: {', '.join(claim_names())}")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy",
                   help="array library (cupy needs a GPU)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random generator")
    p.add_argument("--out", default="validation_out",
                   help="output folder for report.md, results.json and the plots")
    p.set_defaults(func=cmd_validate)
    return p


def add_validate_parser(subparsers):
    """Add ``validate`` to an ``argparse`` subparsers object; returns the new parser."""
    p = subparsers.add_parser(
        "validate",
        help="check the theorems numerically (verdict table, report.md with plots, results.json)",
        description="Run the validation claims of ALGORITHM.md §4, print a verdict table and write "
        "report.md and results.json. Exits 1 if any claim is NOT OK.",
    )
    return _configure(p)


def cmd_validate(args) -> int:
    """Run the claims; print progress and the table; 0 if every claim holds, else 1."""
    def echo(res):
        print(f"  {res.name:<16} {res.status:<8} ({res.seconds:.1f} s)", flush=True)

    if args.seed < 0:
        raise ValueError(f"--seed: expected an integer >= 0, got {args.seed}")
    check_writable(args.out, "--out")  # before any claim runs
    namespace(args.backend)  # ValueError now, before any output, when cupy has no GPU
    print(f"refdlrt validate: {'quick' if args.quick else 'full'} mode, backend {args.backend}, "
          f"seed {args.seed}, out {args.out}", flush=True)
    results = run_validation(args.only, quick=args.quick, backend=args.backend, seed=args.seed,
                             out=args.out, echo=echo)
    print()
    print(format_table(results))
    print(f"report: {args.out}/report.md, {args.out}/results.json")
    return 0 if all(r.ok for r in results) else 1


def main(argv=None) -> int:
    parser = _configure(argparse.ArgumentParser(prog="refdlrt validate",
                                                description="Validation claims of TDLRT"))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as e:  # e.g. --backend cupy without a GPU, --out not writable
        print(f"refdlrt validate: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

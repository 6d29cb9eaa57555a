"""``refdlrt oracle``: export golden cases, run an adapter, check a candidate."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

__all__ = ["add_oracle_parser", "load_adapter"]


def load_adapter(spec: str):
    """'module:attr' -> an adapter object (a class is instantiated without arguments).
    The working directory is importable, so 'examples.torch_backend:TorchAdapter' works from
    the repository root."""
    mod, sep, attr = spec.partition(":")
    if not sep or not mod or not attr:
        raise ValueError(f"--adapter: expected MODULE:NAME (e.g. examples.torch_backend:TorchAdapter), got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"--adapter: cannot load {spec!r}: {e}") from None
    return obj() if isinstance(obj, type) else obj


def _cmd(args) -> int:
    from .check import check
    from .export import export

    only = None if args.only is None else [n for part in args.only for n in part.split(",") if n]
    if args.oracle_command == "export":
        manifest = export(args.out, dtype=args.dtype, only=only)
        print(f"refdlrt oracle export: {len(manifest['cases'])} cases ({args.dtype}) written to "
              f"{args.out} (manifest.json and one .npz per case)")
        return 0
    if args.oracle_command == "run":
        return _run(args, only)
    if (args.candidate is None) == (args.adapter is None):
        raise ValueError("check: give exactly one of --candidate DIR or --adapter MODULE:NAME")
    candidate = args.candidate if args.candidate is not None else load_adapter(args.adapter)
    report = check(args.golden, candidate, only=only)
    print(report.format(verbose=not args.quiet))
    return 0 if report.ok else 1


def _run(args, only) -> int:
    """Run an adapter on the golden inputs and write its outputs as a candidate directory."""
    import json

    from .check import load_golden
    from .npz import read_npz, write_npz

    adapter = load_adapter(args.adapter)
    manifest = load_golden(args.golden)
    os.makedirs(args.out, exist_ok=True)
    n = 0
    for case in manifest["cases"]:
        if only and case["name"] not in only:
            continue
        golden = read_npz(os.path.join(args.golden, case["file"]))
        method = getattr(adapter, case["kind"], None)
        if method is None:
            print(f"  {case['name']}: skipped, the adapter has no {case['kind']}", file=sys.stderr)
            continue
        out = method({k: golden[k] for k in case["inputs"]}, json.loads(json.dumps(case["params"])))
        write_npz(os.path.join(args.out, case["file"]), out)
        n += 1
    print(f"refdlrt oracle run: {n} candidate files written to {args.out}")
    return 0


def add_oracle_parser(sub):
    p = sub.add_parser("oracle", help="golden cases and a conformance checker for other TDLRT "
                                      "implementations (see docs/ORACLE.md)")
    osub = p.add_subparsers(dest="oracle_command", metavar="{export,check,run}", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter
    ex = osub.add_parser("export", help="write the golden cases (deterministic)", formatter_class=fmt)
    ex.add_argument("--out", required=True, help="output directory")
    ex.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                    help="precision of the inputs and of refdlrt's outputs")
    ex.add_argument("--only", action="append", metavar="NAMES", help="comma-separated case names")
    ch = osub.add_parser("check", help="compare a candidate with the golden cases; exit 1 on NOT OK",
                         formatter_class=fmt)
    ch.add_argument("--golden", required=True, help="directory written by 'refdlrt oracle export'")
    ch.add_argument("--candidate", default=None, help="directory of the golden layout with the "
                                                      "candidate's outputs")
    ch.add_argument("--adapter", default=None, metavar="MODULE:NAME",
                    help="an adapter object or class with one method per case kind")
    ch.add_argument("--only", action="append", metavar="NAMES", help="comma-separated case names")
    ch.add_argument("--quiet", action="store_true", help="one line per case")
    rn = osub.add_parser("run", help="run an adapter on the golden inputs and write a candidate "
                                     "directory", formatter_class=fmt)
    rn.add_argument("--golden", required=True)
    rn.add_argument("--adapter", required=True, metavar="MODULE:NAME")
    rn.add_argument("--out", required=True, help="candidate directory to write")
    rn.add_argument("--only", action="append", metavar="NAMES", help="comma-separated case names")
    p.set_defaults(func=_cmd)

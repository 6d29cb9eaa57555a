"""The ``refdlrt`` command line."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _int_list(text: str, option: str) -> tuple:
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{option}: expected comma-separated integers (e.g. 6,5,4), got {text!r}") from None
    return vals


def _cmd_explain(args) -> int:
    from .explain import run_explain

    return run_explain(
        order=args.order, tau=args.tau, lr=args.lr, seed=args.seed, layer=args.layer,
        shape=None if args.shape is None else _int_list(args.shape, "--shape"),
        ranks=None if args.ranks is None else _int_list(args.ranks, "--ranks"),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refdlrt",
        description="Exact NumPy/CuPy reference implementation of TDLRT "
        "(rank-adaptive Tucker dynamical low-rank training of CNNs).",
    )
    parser.add_argument("--version", action="version", version=f"refdlrt {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (default: one line)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_ in (
        ("explain", "one TDLRT step, intermediate by intermediate, each with its invariant "
                    "checked (exits 1 if a check fails)"),
        ("demo", "the same as 'explain --layer': a Tucker conv layer on embedded MNIST images"),
    ):
        ex = sub.add_parser(name, help=help_, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        ex.add_argument("--order", type=int, default=3, choices=(2, 3, 4),
                        help="order d of the random Tucker tensor (synthetic problem)")
        ex.add_argument("--shape", default=None, metavar="N0,N1,..",
                        help="its shape (default by --order: 8,6 / 6,5,4 / 8,6,3,3)")
        ex.add_argument("--ranks", default=None, metavar="R0,R1,..",
                        help="its Tucker ranks, compatible (r_i <= prod of the others); "
                             "default by --order, or 8,4,3,3 with --layer")
        ex.add_argument("--tau", type=float, default=0.1, help="relative truncation tolerance")
        ex.add_argument("--lr", type=float, default=None,
                        help="learning rate (default 0.5 / L, L the loss's smoothness)")
        ex.add_argument("--seed", type=int, default=0, help="seed of the numpy Generator")
        ex.add_argument("--layer", action="store_true", default=name == "demo",
                        help="a TuckerConv2d layer (16 <- 6 channels, 5x5) fed a real minibatch of "
                             "the embedded MNIST, its gradient through the layer's projector")
        ex.set_defaults(func=_cmd_explain)

    from .training.command import add_train_parser

    add_train_parser(sub)
    from .experiments.command import add_sweep_parser

    add_sweep_parser(sub)
    from .validation.command import add_validate_parser

    add_validate_parser(sub)
    from .oracle.command import add_oracle_parser

    add_oracle_parser(sub)
    return parser


def main(argv=None) -> int:
    """Run the command; every error ends in one line naming the option or file, what was
    expected and what was found, and a non-zero exit status (2: usage or input, 1: a check
    failed or a sweep's cell failed with an error, 3: training diverged, 130: interrupted).
    ``--debug`` shows the traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    debug = args.debug
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"refdlrt {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a program that stopped reading (head, less)
        sys.stderr.close()
        return 0
    except OSError as e:
        if debug:
            raise
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(f"refdlrt {args.command}: error:{where}: {e.strerror or e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as e:  # bad options or input data (OracleFileError included)
        if debug:
            raise
        print(f"refdlrt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a bug of ours: still one line, the traceback on request
        if debug:
            raise
        print(f"refdlrt {args.command}: internal error: {type(e).__name__}: {e} (run with "
              f"'refdlrt --debug {args.command} ...' for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``refdlrt sweep`` subcommand."""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["add_sweep_parser", "cmd_sweep"]

OUTPUTS = ("sweep.json", "sweep.csv", "summary.csv", "summary.md", "accuracy_vs_params.png",
           "ranks.png", "seeds.png")


def _report(state) -> tuple:
    from .aggregate import markdown, write_tables
    from .plots import write_plots

    table, summary = write_tables(state)
    write_plots(state, table, summary)
    return table, summary, markdown(summary)


def cmd_report(out: str) -> int:
    from .state import SweepState, read_plan

    state = SweepState(out, read_plan(out, "--report"))
    n = state.scan()
    _, _, md = _report(state)
    print(md)
    print(f"refdlrt sweep: {n} of {len(state.cells)} cells finished; wrote {out}/: {', '.join(OUTPUTS)}")
    return 0


def cmd_sweep(args) -> int:
    from tqdm import tqdm

    from .grid import plan_from_args
    from .schedule import SequentialExecutor, dask_executor, drive, sweep_lock
    from .state import SWEEP_FILE, SweepState, open_sweep, read_plan

    if args.report:
        if args.out or args.grid or args.grid_file or args.set or args.select_lr:
            raise ValueError("--report DIR rebuilds the tables and plots of a sweep folder; it "
                             "takes no other sweep options")
        return cmd_report(args.report)
    if not args.out:
        raise ValueError("--out: expected the sweep folder (or --report DIR)")
    given = any(v is not None for v in (args.grid, args.grid_file, args.set, args.select_lr,
                                        args.select_seeds))
    if not given and os.path.exists(os.path.join(args.out, SWEEP_FILE)):
        plan = read_plan(args.out, "--out")  # continue the recorded sweep
    elif not given:
        raise ValueError("--grid or --grid-file: expected the grid of the sweep (e.g. --grid "
                         "method=dense,tdlrt seed=0,1)")
    else:
        plan = plan_from_args(args.grid, args.grid_file, args.set, args.select_lr, args.select_seeds)
    if args.workers is not None and args.workers < 0:
        raise ValueError(f"--workers: expected an integer >= 0, got {args.workers}")
    if args.threads < 0:
        raise ValueError(f"--threads: expected an integer >= 0, got {args.threads}")
    if args.workers is not None and (args.scheduler or args.scheduler_file):
        raise ValueError("--workers and --scheduler exclude each other (the cluster has its own)")
    if args.threads:
        try:
            import threadpoolctl  # noqa: F401
        except ImportError:
            raise ValueError("--threads: limiting BLAS threads needs threadpoolctl: pip install "
                             "'refdlrt[sweep]' (or --threads 0)") from None
    state = SweepState(args.out, plan)  # every cell checked before anything is written
    open_sweep(args.out, plan)
    with sweep_lock(args.out):
        n_done = state.scan()
        n = len(state.cells)
        if args.workers == 0:
            where = "in this process, one cell after another"
        elif args.scheduler or args.scheduler_file:
            where = f"on the Dask cluster at {args.scheduler or args.scheduler_file}"
        else:
            where = f"on {args.workers or os.cpu_count()} local Dask workers"
        print(f"refdlrt sweep: {n} cells, {n_done} finished already (skipped), {n - n_done} to run "
              f"{where}, {args.threads or 'default'} BLAS thread(s) each; out={args.out}")
        interrupted, plots = False, not args.no_cell_plots
        if n_done < n:
            try:
                with tqdm(total=n, initial=n_done, unit="cell", disable=args.no_progress,
                          file=sys.stdout) as bar:
                    if args.workers == 0:
                        drive(state, SequentialExecutor(args.threads, plots), bar=bar)
                    else:
                        with dask_executor(workers=args.workers, scheduler=args.scheduler,
                                           scheduler_file=args.scheduler_file,
                                           threads=args.threads, plots=plots) as ex:
                            drive(state, ex, bar=bar)
            except KeyboardInterrupt:
                interrupted = True
        state.scan()
        _, _, md = _report(state)
    finished = sum(state.finished(c) for c in state.cells)
    if interrupted:
        print(f"refdlrt sweep: interrupted; {finished} of {n} cells finished, the others keep their "
              f"last checkpoint; run the same command again to continue", file=sys.stderr)
        return 130
    print(md)
    failed = [c.id for c in state.cells if not state.finished(c)]
    print(f"wrote {args.out}/: {', '.join(OUTPUTS)}, cells/<id>/ ({finished} of {n} cells finished)")
    if failed:
        print(f"refdlrt sweep: {len(failed)} cell(s) failed with an error ({', '.join(failed[:5])}"
              f"{', ...' if len(failed) > 5 else ''}; see their failure.json); run the same command "
              f"again to retry them", file=sys.stderr)
        return 1
    return 0


def add_sweep_parser(sub):
    sw = sub.add_parser(
        "sweep", help="a grid of training runs (one run folder per cell) on Dask, resumable",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train every cell of a grid over TrainConfig fields, each a normal run folder "
                    "under OUT/cells/<cell-id>/, on Dask (a local cluster of single-threaded "
                    "workers by default). Run the same command again after an interruption: "
                    "finished cells are skipped, unfinished ones resume from their checkpoint.",
        epilog="examples:\n"
               "  refdlrt sweep --out sw --grid method=dense,tdlrt tau=0.1,0.2 seed=0,1,2 "
               "--set epochs=2\n"
               "  refdlrt sweep --out sw --grid-file benchmarks/grids/embedded_mnist.toml\n"
               "  refdlrt sweep --out sw --grid method=dense,tdlrt seed=0,1,2 --set "
               "val_fraction=0.1 --select-lr 0.2,0.1,0.05\n"
               "  refdlrt sweep --report sw")
    sw.add_argument("--out", help="the sweep folder (new, empty, or this sweep's: then it continues)")
    sw.add_argument("--grid", nargs="+", metavar="FIELD=V1,V2,..",
                    help="axes of the grid over TrainConfig fields (method, tau, seed, lr, epochs, "
                         "...; lists and tables as JSON) and ranks_from=METHOD (start at the final "
                         "ranks of that method's cell with the same other values)")
    sw.add_argument("--grid-file", help="a TOML or JSON file with [grid] (or [[grid]] tables: a "
                                        "union), [set] and [sweep] (select_lr, select_seeds)")
    sw.add_argument("--set", nargs="+", metavar="FIELD=VALUE",
                    help="fixed settings of every cell, e.g. epochs=2 data=embedded val_fraction=0.1")
    sw.add_argument("--select-lr", metavar="LR1,LR2,..",
                    help="choose the learning rate of each group (the axes but seed) by validation "
                         "accuracy on the selection seeds, then train the other seeds at it (needs "
                         "val_fraction > 0)")
    sw.add_argument("--select-seeds", type=int, metavar="K",
                    help="the first K seeds of each group try every rate of --select-lr (default 1)")
    sw.add_argument("--workers", type=int,
                    help="local Dask workers, one single-threaded process each (default: one per "
                         "core); 0 runs the cells one after another in this process")
    sw.add_argument("--scheduler", metavar="ADDRESS",
                    help="run on this existing Dask scheduler (the workers read the data and the "
                         "sweep folder by these paths: give absolute ones)")
    sw.add_argument("--scheduler-file", metavar="FILE", help="run on the Dask scheduler of this file")
    sw.add_argument("--threads", type=int, default=1,
                    help="BLAS threads per cell (default 1; 0: the library's default)")
    sw.add_argument("--report", metavar="DIR",
                    help="rebuild the tables and plots of the sweep in DIR from its finished cells")
    sw.add_argument("--no-progress", action="store_true", help="no progress bar")
    sw.add_argument("--no-cell-plots", action="store_true",
                    help="skip each cell's own plots (the sweep's figures are still drawn)")
    sw.set_defaults(func=cmd_sweep)
    return sw

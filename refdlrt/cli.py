"""The ``refdlrt`` command line."""

from __future__ import annotations

import argparse
import os
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


def _parse_ranks(items, option="--ranks"):
    ranks = {}
    for item in items or []:
        name, sep, vals = item.partition("=")
        try:
            if not sep:
                raise ValueError
            ranks[name] = tuple(int(v) for v in vals.split(","))
        except ValueError:
            raise ValueError(f"{option}: expected NAME=r0,r1,... (e.g. conv2=4,4,3,3), got {item!r}") from None
    return ranks


def _cmd_train(args) -> int:
    from .training.datasets import load_dataset
    from .training.report import format_summary, write_run
    from .training.trainer import TrainConfig, Trainer, TrainingDiverged

    if args.resume:  # the checkpoint's data unless --data says otherwise
        spec = args.data or Trainer.read_meta(args.resume)["config"]["data"]
        data = load_dataset(spec)
        trainer = Trainer.load(args.resume, data)
        trainer.cfg.data = spec
        if args.epochs is not None:  # train further than planned (changes a cosine schedule)
            trainer.cfg.epochs = args.epochs
        trainer.cfg.validate()
    else:
        data = load_dataset(args.data or TrainConfig.data)
        cfg = TrainConfig(
            model=args.model, method=args.method, tau=args.tau, epochs=args.epochs or TrainConfig.epochs,
            batch_size=args.batch_size, lr=args.lr, momentum=args.momentum, schedule=args.schedule,
            seed=args.seed, init_rank=args.init_rank, ranks=_parse_ranks(args.ranks),
            finetune_epochs=args.finetune_epochs, warmup_epochs=args.warmup_epochs,
            conv_adaptive_modes=None if args.conv_adaptive_modes is None else tuple(args.conv_adaptive_modes),
            r_min=args.r_min, r_max=args.r_max, layer_r_max=_parse_ranks(args.layer_r_max, "--layer-r-max"),
            data=args.data or TrainConfig.data, dtype=args.dtype,
            backend=args.backend, widths=tuple(args.widths),
        )
        trainer = Trainer(cfg, data)
    cfg = trainer.cfg
    os.makedirs(args.out, exist_ok=True)
    ckpt = os.path.join(args.out, "checkpoint.npz")
    n_steps = (cfg.epochs - trainer.epoch) * -(-len(data.y_train) // cfg.batch_size)
    print(f"refdlrt train: {cfg.model} / {cfg.method} on {data.name} ({len(data.y_train)} train, "
          f"{len(data.y_test)} test), tau={cfg.tau}, {cfg.epochs} epochs, out={args.out}")
    from tqdm import tqdm

    with tqdm(total=n_steps, disable=args.no_progress, unit="step") as bar:
        try:
            while trainer.epoch < cfg.epochs:
                bar.set_description(f"epoch {trainer.epoch + 1}/{cfg.epochs}")
                row = trainer.run_epoch(progress=bar)
                trainer.save(ckpt)
                bar.write(f"epoch {row['epoch']:3d}  loss {row['train_loss']:.4f}  "
                          f"test acc {100 * row['test_accuracy']:.2f} %  "
                          f"params {100 * row['lowrank_param_fraction']:.1f} %  ranks {row['ranks']}")
        except TrainingDiverged as e:
            bar.close()
            kept = f"the last good checkpoint is {ckpt}" if os.path.exists(ckpt) else "no checkpoint was written"
            print(f"refdlrt train: stopped: {e}; {kept}", file=sys.stderr)
            return 3
    summary = write_run(trainer, args.out)
    print(format_summary(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refdlrt",
        description="Exact NumPy/CuPy reference implementation of TDLRT "
        "(rank-adaptive Tucker dynamical low-rank training of CNNs).",
    )
    parser.add_argument("--version", action="version", version=f"refdlrt {__version__}")
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

    from .nn.models import METHODS, MODELS
    from .training.trainer import TrainConfig

    d = TrainConfig()
    tr = sub.add_parser("train", help="train a network (dense or low-rank) and write a run folder",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    tr.add_argument("--model", choices=sorted(MODELS), default=d.model)
    tr.add_argument("--method", choices=METHODS, default=d.method)
    tr.add_argument("--tau", type=float, default=d.tau, help="relative truncation tolerance")
    tr.add_argument("--epochs", type=int, default=None,
                    help=f"number of epochs (default {d.epochs}; with --resume: the checkpoint's)")
    tr.add_argument("--batch-size", type=int, default=d.batch_size)
    tr.add_argument("--lr", type=float, default=d.lr, help="initial learning rate")
    tr.add_argument("--momentum", type=float, default=d.momentum)
    tr.add_argument("--schedule", choices=("cosine", "step", "constant"), default=d.schedule)
    tr.add_argument("--seed", type=int, default=d.seed)
    tr.add_argument("--init-rank", type=float, default=d.init_rank,
                    help="initial ranks as a fraction of full rank")
    tr.add_argument("--ranks", action="append", metavar="NAME=R0,R1,..",
                    help="explicit initial ranks of one layer (repeatable), e.g. conv2=4,4,3,3")
    tr.add_argument("--r-min", type=int, default=d.r_min)
    tr.add_argument("--r-max", type=int, default=d.r_max, help="upper rank bound of every mode")
    tr.add_argument("--layer-r-max", action="append", metavar="NAME=R0,R1,..",
                    help="upper rank bounds of one layer, per mode (repeatable), e.g. fc1=20,20")
    tr.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs,
                    help="first epochs of tdlrt / matrix-dlrt at fixed rank (truncation starts after)")
    tr.add_argument("--conv-adaptive-modes", type=int, nargs="+", default=None, metavar="MODE",
                    help="modes of the Tucker conv kernels that adapt (default all; e.g. 0 1 keeps "
                         "the spatial modes at their initial rank)")
    tr.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs,
                    help="last epochs of tdlrt / matrix-dlrt at fixed rank (no truncation)")
    tr.add_argument("--widths", type=int, nargs="+", default=list(d.widths), help="vgg_small widths")
    tr.add_argument("--data", default=None,
                    help="'embedded' (default) or a directory with MNIST/Fashion-MNIST IDX or CIFAR-10 "
                         "files; with --resume, the checkpoint's data by default")
    tr.add_argument("--dtype", choices=("float32", "float64"), default=d.dtype)
    tr.add_argument("--backend", choices=("numpy", "cupy"), default=d.backend)
    tr.add_argument("--out", default="runs/latest", help="output folder")
    tr.add_argument("--resume", metavar="CHECKPOINT", help="continue from a checkpoint.npz")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.set_defaults(func=_cmd_train)

    from .validation.command import add_validate_parser

    add_validate_parser(sub)
    from .oracle.command import add_oracle_parser

    add_oracle_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as e:  # OracleFileError is a ValueError
        print(f"refdlrt {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

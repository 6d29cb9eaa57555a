"""The ``refdlrt train`` subcommand: a run folder with a life cycle, resume that means it."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..nn.models import METHODS, MODELS
from .config import TrainConfig
from .runs import (
    check_writable,
    default_run_dir,
    is_complete,
    mark_incomplete,
    prepare_run_dir,
    resolve_resume,
)

__all__ = ["add_train_parser", "cmd_train", "RUN_OPTIONS", "RESUME_ALLOWED"]

# dest -> option of every setting that defines a run (TrainConfig fields)
RUN_OPTIONS = {
    "model": "--model", "method": "--method", "tau": "--tau", "epochs": "--epochs",
    "batch_size": "--batch-size", "lr": "--lr", "momentum": "--momentum",
    "schedule": "--schedule", "seed": "--seed", "init_rank": "--init-rank", "ranks": "--ranks",
    "r_min": "--r-min", "r_max": "--r-max", "layer_r_max": "--layer-r-max",
    "warmup_epochs": "--warmup-epochs", "conv_adaptive_modes": "--conv-adaptive-modes",
    "finetune_epochs": "--finetune-epochs", "widths": "--widths", "data": "--data",
    "dtype": "--dtype", "backend": "--backend", "train_size": "--train-size",
    "val_fraction": "--val-fraction",
}
# with --resume: the total number of epochs may grow, and the data folder may have moved
RESUME_ALLOWED = ("epochs", "data")


def _parse_ranks(items, option):
    ranks = {}
    for item in items or []:
        name, sep, vals = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            ranks[name] = tuple(int(v) for v in vals.split(","))
        except ValueError:
            raise ValueError(f"{option}: expected NAME=r0,r1,... (e.g. conv2=4,4,3,3), got {item!r}") from None
    return ranks


def _fields(given: dict) -> dict:
    """The TrainConfig fields of the options given, in TrainConfig's representation."""
    kw = {k: v for k, v in given.items() if k in RUN_OPTIONS}
    if "ranks" in kw:
        kw["ranks"] = _parse_ranks(kw["ranks"], "--ranks")
    if "layer_r_max" in kw:
        kw["layer_r_max"] = _parse_ranks(kw["layer_r_max"], "--layer-r-max")
    if "conv_adaptive_modes" in kw:
        kw["conv_adaptive_modes"] = tuple(kw["conv_adaptive_modes"])
    if "widths" in kw:
        kw["widths"] = tuple(kw["widths"])
    return kw


def _config(given: dict) -> TrainConfig:
    """TrainConfig from the options given (the others keep their defaults), validated."""
    return TrainConfig(**_fields(given)).validate()


def _same(a, b) -> bool:
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def _resume(given: dict):
    from .datasets import load_dataset
    from .trainer import Trainer

    run_dir, ckpt = resolve_resume(given["resume"])
    meta = Trainer.read_meta(ckpt)
    changing = [RUN_OPTIONS[k] for k, v in _fields(given).items()
                if k not in RESUME_ALLOWED and not _same(v, meta["config"].get(k))]
    if changing:
        raise ValueError(f"--resume: {', '.join(changing)} would change the run; it continues with "
                         f"its checkpoint's configuration (allowed with --resume: --epochs, the "
                         f"total, and --data, where the data folder moved)")
    if "out" in given and os.path.abspath(given["out"]) != os.path.abspath(run_dir):
        raise ValueError(f"--out {given['out']}: a resumed run continues in its own folder {run_dir}")
    if given.get("overwrite"):
        raise ValueError("--overwrite and --resume exclude each other")
    check_writable(run_dir, "--resume")
    spec = given.get("data") or meta["config"]["data"]
    trainer = Trainer.load(ckpt, load_dataset(spec))
    trainer.cfg.data = spec
    done = trainer.epoch
    if done > trainer.cfg.epochs:
        raise ValueError(f"--resume {ckpt}: the checkpoint says epoch {done} of {trainer.cfg.epochs} "
                         f"planned: it was damaged or edited")
    if "epochs" in given:
        if given["epochs"] < done:
            raise ValueError(f"--epochs {given['epochs']}: the run has already trained {done} "
                             f"epochs (--epochs is the total, not the number of further epochs)")
        trainer.cfg.epochs = given["epochs"]  # more epochs stretch a cosine schedule
        trainer.cfg.validate()
    return trainer, run_dir


def cmd_train(args) -> int:
    from tqdm import tqdm

    from .datasets import load_dataset
    from .report import RUN_OUTPUTS, format_summary, write_run
    from .trainer import Trainer, TrainingDiverged

    given = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    if given.get("resume"):
        trainer, out = _resume(given)
        if trainer.epoch == trainer.cfg.epochs:
            if not is_complete(out):  # killed between the last checkpoint and summary.json
                write_run(trainer, out)
                print(f"refdlrt train: {out} had trained all {trainer.epoch} epochs but was "
                      f"interrupted before its summary; wrote {', '.join(RUN_OUTPUTS)} (complete)")
                return 0
            print(f"refdlrt train: nothing to train: {out} has finished all {trainer.epoch} epochs; "
                  f"to train further give --epochs N > {trainer.epoch} (the total)")
            return 0
        print(f"refdlrt train: resuming {out} after epoch {trainer.epoch} of {trainer.cfg.epochs}")
    else:
        cfg = _config(given)  # every option checked before anything is written
        out = given.get("out") or default_run_dir(cfg.method)
        prepare_run_dir(out, overwrite=bool(given.get("overwrite")))
        trainer = Trainer(cfg, load_dataset(cfg.data))
    cfg, data = trainer.cfg, trainer.data
    ckpt = os.path.join(out, "checkpoint.npz")
    mark_incomplete(out, dict(config=vars(cfg), started_at_epoch=trainer.epoch))
    n_steps = (cfg.epochs - trainer.epoch) * -(-len(data.y_train) // cfg.batch_size)
    print(f"refdlrt train: {cfg.model} / {cfg.method} on {data.name} ({len(data.y_train)} train, "
          f"{len(data.y_test)} test), tau={cfg.tau}, {cfg.epochs} epochs, out={out}")
    with tqdm(total=n_steps, disable=given.get("no_progress", False), unit="step") as bar:
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
            print(f"refdlrt train: stopped: {e}; {kept}; the run stays INCOMPLETE", file=sys.stderr)
            return 3
        except KeyboardInterrupt:
            bar.close()
            kept = (f"the checkpoint after epoch {trainer.epoch} is intact" if os.path.exists(ckpt)
                    else "no epoch had finished, nothing was kept")
            print(f"refdlrt train: interrupted in epoch {trainer.epoch + 1}; {kept}; continue with "
                  f"'refdlrt train --resume {out}'", file=sys.stderr)
            return 130
    summary = write_run(trainer, out)
    print(format_summary(summary))
    print(f"wrote {out}/: {', '.join(RUN_OUTPUTS)} (complete)")
    return 0


def add_train_parser(sub):
    d = TrainConfig()
    tr = sub.add_parser(
        "train", argument_default=argparse.SUPPRESS,
        help="train a network (dense or low-rank) into a run folder",
        description="Train a network and write a run folder (summary.json last: a folder without "
                    "it, or with INCOMPLETE, holds an unfinished run). A new run never writes into "
                    "a folder that holds another run.")
    tr.add_argument("--model", choices=sorted(MODELS), help=f"network (default {d.model})")
    tr.add_argument("--method", choices=METHODS, help=f"training method (default {d.method})")
    tr.add_argument("--tau", type=float, help=f"relative truncation tolerance tau (default {d.tau})")
    tr.add_argument("--epochs", type=int,
                    help=f"total number of epochs, >= 1 (default {d.epochs}; with --resume: the "
                         f"checkpoint's, or a larger total to train further)")
    tr.add_argument("--batch-size", type=int, help=f"minibatch size (default {d.batch_size})")
    tr.add_argument("--lr", type=float, help=f"initial learning rate (default {d.lr})")
    tr.add_argument("--momentum", type=float, help=f"heavy-ball momentum in [0, 1) (default {d.momentum})")
    tr.add_argument("--schedule", choices=("cosine", "step", "constant"),
                    help=f"learning-rate schedule (default {d.schedule})")
    tr.add_argument("--seed", type=int, help=f"seed of the numpy Generator, >= 0 (default {d.seed})")
    tr.add_argument("--init-rank", type=float,
                    help=f"initial ranks as a fraction of full rank, in (0, 1] (default {d.init_rank})")
    tr.add_argument("--ranks", action="append", metavar="NAME=R0,R1,..",
                    help="explicit initial ranks of one low-rank layer (repeatable), e.g. conv2=4,4,3,3 "
                         "(default: from --init-rank)")
    tr.add_argument("--r-min", type=int, help=f"lower rank bound of every mode (default {d.r_min})")
    tr.add_argument("--r-max", type=int, help="upper rank bound of every mode (default: none)")
    tr.add_argument("--layer-r-max", action="append", metavar="NAME=R0,R1,..",
                    help="upper rank bounds of one low-rank layer, per mode (repeatable), e.g. "
                         "fc1=20,20 (default: none)")
    tr.add_argument("--warmup-epochs", type=int,
                    help=f"first epochs of tdlrt / matrix-dlrt at fixed rank (default {d.warmup_epochs})")
    tr.add_argument("--conv-adaptive-modes", type=int, nargs="+", metavar="MODE",
                    help="modes of the Tucker conv kernels that adapt, e.g. 0 1 keeps the spatial "
                         "modes at their initial rank (default: all)")
    tr.add_argument("--finetune-epochs", type=int,
                    help=f"last epochs of tdlrt / matrix-dlrt at fixed rank (default {d.finetune_epochs})")
    tr.add_argument("--widths", type=int, nargs="+",
                    help=f"vgg_small channel widths, each >= 1 (default {' '.join(map(str, d.widths))})")
    tr.add_argument("--data",
                    help="'embedded' (the MNIST split inside the package) or a folder of MNIST / "
                         "Fashion-MNIST IDX or CIFAR-10 files (default embedded; with --resume: the "
                         "checkpoint's)")
    tr.add_argument("--train-size", type=int,
                    help="keep the first N training images (default: all)")
    tr.add_argument("--val-fraction", type=float,
                    help="share of the training images held out as a validation split, chosen by "
                         "--seed; the summary reports its accuracy (default 0: none)")
    tr.add_argument("--dtype", choices=("float32", "float64"), help=f"precision (default {d.dtype})")
    tr.add_argument("--backend", choices=("numpy", "cupy"), help=f"array library (default {d.backend})")
    tr.add_argument("--out", help="run folder, new or empty (default: a fresh runs/<method>-<time>)")
    tr.add_argument("--overwrite", action="store_true",
                    help="replace the run in --out (its files are removed first)")
    tr.add_argument("--resume", metavar="RUN_DIR_OR_CHECKPOINT",
                    help="continue a run in its own folder with its own configuration")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.set_defaults(func=cmd_train)
    return tr

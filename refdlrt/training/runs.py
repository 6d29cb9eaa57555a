"""Run folders with a life cycle: a new run never writes into a folder that holds another run.

A run folder holds one run: ``INCOMPLETE`` from the start until ``summary.json`` (written last,
atomically) marks it complete; ``checkpoint.npz`` after every epoch. A folder with any run file
belongs to a run: a new run refuses it unless told to overwrite (which removes the old run's
files first) or to resume it.
"""

from __future__ import annotations

import datetime
import glob
import json
import os

__all__ = ["RUN_FILES", "INCOMPLETE", "default_run_dir", "prepare_run_dir", "check_writable",
           "mark_incomplete", "mark_complete", "is_complete", "resolve_resume", "write_json_atomic",
           "RunFolderError"]

INCOMPLETE = "INCOMPLETE"
CHECKPOINT = "checkpoint.npz"
RUN_FILES = ("summary.json", "history.json", "history.csv", "steps.csv", "loss_accuracy.png",
             "ranks.png", "params.png", CHECKPOINT, INCOMPLETE)


class RunFolderError(ValueError):
    """A run folder cannot be used as asked (it holds another run, it is a file, ...)."""


def default_run_dir(method: str, root: str = "runs", now=None) -> str:
    """A fresh folder name, runs/<method>-<YYYYmmdd-HHMMSS>[-k], that does not exist yet."""
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = os.path.join(root, f"{method}-{stamp}")
    path, k = base, 1
    while os.path.exists(path):
        k += 1
        path = f"{base}-{k}"
    return path


def _run_files(path) -> list:
    found = [f for f in RUN_FILES if os.path.exists(os.path.join(path, f))]
    found += [os.path.basename(p) for p in glob.glob(os.path.join(path, "*.tmp*"))]
    return sorted(found)


def check_writable(path, option: str = "--out"):
    """Create ``path`` if needed and prove it writable with a probe file; a one-line error
    naming the option otherwise (before any work is done)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise RunFolderError(f"{option} {path}: expected a folder, found an existing file")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-probe-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("probe")
        os.remove(probe)
    except OSError as e:
        raise RunFolderError(f"{option} {path}: not writable ({e.strerror or e})") from None


def prepare_run_dir(path, *, overwrite: bool = False, option: str = "--out") -> str:
    """Make ``path`` ready for a new run: refuse a folder that holds another run unless
    ``overwrite`` (then remove that run's files; other files are left alone)."""
    check_writable(path, option)
    old = _run_files(path)
    if old:
        if not overwrite:
            raise RunFolderError(
                f"{option} {path}: the folder holds another run ({', '.join(old)}); give a new "
                f"folder, --overwrite to replace that run, or --resume {path} to continue it")
        for f in old:
            os.remove(os.path.join(path, f))
    return path


def mark_incomplete(path, what: dict):
    """Write INCOMPLETE: the run is in progress (or was interrupted)."""
    with open(os.path.join(path, INCOMPLETE), "w") as f:
        f.write("This run has not finished (it is running, or was interrupted).\n"
                f"Continue it with: refdlrt train --resume {path}\n")
        json.dump(what, f, indent=1, default=str)
        f.write("\n")


def mark_complete(path):
    """Remove INCOMPLETE; call after summary.json was written."""
    try:
        os.remove(os.path.join(path, INCOMPLETE))
    except FileNotFoundError:
        pass


def is_complete(path) -> bool:
    return os.path.exists(os.path.join(path, "summary.json")) and not os.path.exists(
        os.path.join(path, INCOMPLETE))


def write_json_atomic(path, obj):
    """Write JSON to a temporary file in the same folder, flush it to disk, rename it."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def resolve_resume(arg: str) -> tuple:
    """(run folder, checkpoint path) from a run folder or a checkpoint file."""
    if os.path.isdir(arg):
        ckpt = os.path.join(arg, CHECKPOINT)
        if not os.path.exists(ckpt):
            raise RunFolderError(f"--resume {arg}: the folder has no {CHECKPOINT} (the run did not "
                                 f"finish an epoch, or this is not a run folder)")
        return arg, ckpt
    if os.path.isfile(arg):
        return os.path.dirname(os.path.abspath(arg)) or ".", arg
    raise RunFolderError(f"--resume {arg}: no such run folder or checkpoint file")

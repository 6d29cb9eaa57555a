"""One cell of a sweep: a normal training run in its own run folder, run on a Dask worker or in
this process.

The folder has the life cycle of ``refdlrt train``: ``INCOMPLETE`` until ``summary.json`` is
written last and atomically, ``checkpoint.npz`` after every epoch. Running a cell again
continues it: a complete cell is read back, a cell with a checkpoint resumes from it (bit for
bit, :meth:`Trainer.load`), a cell that diverged stays diverged (``failure.json``; divergence is
deterministic). A lock file keeps two processes from training one cell at once (a worker left
running by a killed sweep, say): the second waits, then finds the cell finished or resumes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import warnings

from ..training.report import write_run
from ..training.runs import (
    CHECKPOINT,
    INCOMPLETE,
    is_complete,
    mark_incomplete,
    prepare_run_dir,
    write_json_atomic,
)
from ..training.trainer import TrainConfig, Trainer, TrainingDiverged

__all__ = ["run_cell", "read_cell", "config_from_fields", "normal", "blas_threads", "FAILURE",
           "ATTEMPTS", "CELL_FILE"]

CELL_FILE = "cell.json"  # the cell's id and configuration
FAILURE = "failure.json"  # why it did not finish: "diverged" (final) or "error" (tried again)
ATTEMPTS = "attempts.jsonl"  # one line per start: host, pid, the epoch it started from
LOCK = ".cell.lock"

_DATA: dict = {}  # datasets loaded in this process, by --data spec


def _dataset(spec: str):
    from ..training.datasets import load_dataset

    if spec not in _DATA:
        _DATA.clear()  # one dataset at a time per worker
        _DATA[spec] = load_dataset(spec)
    return _DATA[spec]


def normal(obj):
    """JSON's view of a value (tuples become lists): how configurations are compared."""
    return json.loads(json.dumps(obj))


def config_from_fields(fields: dict) -> TrainConfig:
    """A validated TrainConfig from a cell's fields (JSON lists back to tuples)."""
    kw = dict(fields)
    for k in ("widths", "conv_adaptive_modes"):
        if kw.get(k) is not None:
            kw[k] = tuple(kw[k])
    for k in ("ranks", "layer_r_max"):
        if k in kw:
            kw[k] = {n: tuple(r) if isinstance(r, list) else r for n, r in kw[k].items()}
    return TrainConfig(**kw).validate()


@contextlib.contextmanager
def blas_threads(threads: int):
    """Limit the BLAS / OpenMP thread pools of this process to ``threads`` (0: leave them)."""
    if not threads:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        yield


def _adaptive_malloc():
    """Undo a ``MALLOC_TRIM_THRESHOLD_`` set for this process (a Dask nanny sets it): it turns
    off glibc's adaptive mmap threshold, so that every large NumPy temporary is mapped,
    page-faulted and unmapped again (LeNet5 epochs 3-4x slower). Keep blocks up to 32 MiB in the
    heap instead, as glibc's adaptive threshold would."""
    if not os.environ.get("MALLOC_TRIM_THRESHOLD_") or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def _locked(cell_dir: str):
    import fcntl

    os.makedirs(cell_dir, exist_ok=True)
    with open(os.path.join(cell_dir, LOCK), "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released when the process ends, however
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def read_cell(cell_dir: str) -> dict | None:
    """What a cell folder says: ``{"status": "ok", "summary": ...}`` for a complete run,
    the failure record for one that diverged or failed, None when unfinished or absent."""
    try:
        if is_complete(cell_dir):
            with open(os.path.join(cell_dir, "summary.json")) as f:
                return dict(status="ok", summary=json.load(f))
        with open(os.path.join(cell_dir, FAILURE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_cell(cell_dir: str, fields: dict, *, threads: int = 1, cell_id: str = "",
             plots: bool = True) -> dict:
    """Train one cell to the end (or continue it) and return its record.

    Parameters
    ----------
    cell_dir : str
        The cell's run folder (created if needed).
    fields : dict
        TrainConfig fields, JSON-compatible.
    threads : int
        BLAS threads while it trains (0: the library's default).
    cell_id : str
        Written into ``cell.json`` and ``INCOMPLETE``.
    plots : bool
        Write the run's own plots (loss and accuracy, ranks, parameters).

    Returns
    -------
    dict
        ``{"status": "ok", "summary": ...}`` or ``{"status": "diverged", "message": ...,
        "history": ...}``. Any other failure raises.
    """
    cfg = config_from_fields(fields)
    want = normal(vars(cfg))
    _adaptive_malloc()
    with blas_threads(threads), _locked(cell_dir), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow on the way to a divergence
        rec = read_cell(cell_dir)
        if rec is not None and rec["status"] in ("ok", "diverged"):
            if normal(rec.get("summary", rec).get("config")) != want:
                raise ValueError(f"{cell_dir}: the folder holds a run with another configuration "
                                 f"(edited or copied in?); remove it to train this cell")
            return rec
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(cell_dir, FAILURE))  # an error of an earlier attempt
        ckpt = os.path.join(cell_dir, CHECKPOINT)
        data = _dataset(cfg.data)
        if os.path.exists(ckpt):
            if normal(Trainer.read_meta(ckpt)["config"]) != want:
                raise ValueError(f"{ckpt}: the checkpoint has another configuration than the cell "
                                 f"(edited or copied in?); remove the folder to train this cell")
            trainer = Trainer.load(ckpt, data)
        else:
            prepare_run_dir(cell_dir, overwrite=True, option="cell")
            trainer = Trainer(cfg, data)
        write_json_atomic(os.path.join(cell_dir, CELL_FILE), dict(id=cell_id, config=want))
        with open(os.path.join(cell_dir, ATTEMPTS), "a") as f:
            f.write(json.dumps(dict(host=socket.gethostname(), pid=os.getpid(), time=time.time(),
                                    started_at_epoch=trainer.epoch, threads=threads)) + "\n")
        mark_incomplete(cell_dir, dict(cell=cell_id, config=want, started_at_epoch=trainer.epoch))
        try:
            while trainer.epoch < cfg.epochs:
                trainer.run_epoch()
                trainer.save(ckpt)
        except TrainingDiverged as e:
            rec = dict(status="diverged", message=str(e), epoch=trainer.epoch + 1, config=want,
                       history=trainer.history)
            write_json_atomic(os.path.join(cell_dir, FAILURE), rec)
            return rec
        summary = write_run(trainer, cell_dir, plots=plots)
        assert not os.path.exists(os.path.join(cell_dir, INCOMPLETE))
        return dict(status="ok", summary=normal(summary))

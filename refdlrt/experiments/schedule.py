"""Drive a sweep: submit every cell that can run (to Dask, or one after another in this
process), record each as it finishes, never stop for one cell's failure.

A cell can run when what it needs is known: the learning rate its group's selection chose, the
final ranks of its ``ranks_from`` source. Finished cells (complete or diverged) are skipped;
unfinished ones resume from their checkpoint inside :func:`run_cell`. A lost worker's cell is
given to another worker by Dask (and resumes there from its last checkpoint).
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
import traceback

from ..training.runs import write_json_atomic
from .cell import FAILURE, blas_threads, run_cell
from .state import SweepState

__all__ = ["drive", "dask_executor", "SequentialExecutor", "sweep_lock", "BLAS_ENV"]

BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def sweep_lock(out: str):
    """Hold ``out/.sweep.lock`` while a sweep runs there; a second sweep on it is refused."""
    import fcntl

    with open(os.path.join(out, ".sweep.lock"), "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"--out {out}: another refdlrt sweep is running in this folder") from None
        yield


class SequentialExecutor:
    """Run cells one after another in this process (``--workers 0``)."""

    def __init__(self, threads: int, plots: bool = True):
        self.threads, self.plots, self.queue = threads, plots, collections.deque()

    def submit(self, cell_dir, fields, cell_id):
        self.queue.append((cell_dir, fields, cell_id))
        return cell_id

    def next_done(self):
        cell_dir, fields, cell_id = self.queue.popleft()
        try:
            with blas_threads(self.threads):
                return cell_id, run_cell(cell_dir, fields, threads=0, cell_id=cell_id,
                                         plots=self.plots)
        except Exception as e:  # noqa: BLE001 - recorded as the cell's failure
            return cell_id, e


class _DaskExecutor:
    def __init__(self, client, threads: int, plots: bool):
        from distributed import as_completed

        self.client, self.threads, self.plots = client, threads, plots
        self.ac, self.ids = as_completed(), {}
        self.stamp = f"{os.getpid()}-{time.time_ns()}"

    def submit(self, cell_dir, fields, cell_id):
        fut = self.client.submit(run_cell, os.path.abspath(cell_dir), fields, threads=self.threads,
                                 cell_id=cell_id, plots=self.plots,
                                 key=f"refdlrt-cell-{cell_id}-{self.stamp}",
                                 pure=False)
        self.ids[fut.key] = cell_id
        self.ac.add(fut)
        return cell_id

    def next_done(self):
        fut = next(self.ac)
        cell_id = self.ids.pop(fut.key)
        try:
            return cell_id, fut.result()
        except Exception as e:  # noqa: BLE001 - the task's exception, or KilledWorker
            return cell_id, e
        finally:
            fut.release()


@contextlib.contextmanager
def _workers_ignore_ctrl_c():
    """Start worker processes with SIGINT ignored (inherited): Ctrl-C reaches this process only,
    which then closes the cluster, instead of every worker dying with a traceback."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def dask_executor(*, workers: int | None = None, scheduler: str | None = None,
                  scheduler_file: str | None = None, threads: int = 1, plots: bool = True):
    """A Dask client: on an existing cluster (``scheduler`` address or ``scheduler_file``), or a
    LocalCluster of ``workers`` single-threaded worker processes whose BLAS threads are set to
    ``threads`` in their environment (each task also limits them with threadpoolctl)."""
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise ValueError("refdlrt sweep: Dask is not installed: pip install 'refdlrt[sweep]' "
                         "(or --workers 0: the cells one after another in this process)") from None
    import logging

    with contextlib.ExitStack() as stack:
        if scheduler or scheduler_file:
            try:
                client = Client(scheduler, scheduler_file=scheduler_file, timeout=30)
            except (OSError, TimeoutError) as e:
                where = f"--scheduler {scheduler}" if scheduler else f"--scheduler-file {scheduler_file}"
                raise ValueError(f"{where}: cannot reach the Dask scheduler ({e})") from None
            stack.enter_context(client)
        else:
            env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
            # Dask sets MALLOC_TRIM_THRESHOLD_, which turns off glibc's adaptive mmap threshold:
            # every large NumPy temporary is then mapped, page-faulted and unmapped again
            # (3-4x slower LeNet5 epochs here). The glibc default keeps them in the heap.
            env.pop("MALLOC_TRIM_THRESHOLD_", None)
            if threads:
                env.update({k: threads for k in BLAS_ENV})
            else:
                for k in BLAS_ENV:
                    env.pop(k, None)
            stack.enter_context(dask.config.set({"distributed.nanny.pre-spawn-environ": env}))
            with _workers_ignore_ctrl_c():
                cluster = stack.enter_context(LocalCluster(
                    n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                    processes=True, dashboard_address=None, silence_logs=logging.ERROR))
            client = stack.enter_context(Client(cluster))
        yield _DaskExecutor(client, threads, plots)


def _line(cell, rec) -> str:
    if rec["status"] == "ok":
        s = rec["summary"]
        val = "" if s.get("val_accuracy") is None else f"  val {100 * s['val_accuracy']:.2f} %"
        return (f"{cell.id}: test {100 * s['test_accuracy']:.2f} %{val}  params "
                f"{100 * s['lowrank_param_fraction']:.1f} %  {s['seconds_per_epoch']:.1f} s/epoch")
    return f"{cell.id}: {rec['status']}: {rec.get('message', '')}"


def drive(state: SweepState, executor, *, bar=None, echo=print) -> dict:
    """Run every unfinished cell of ``state`` through ``executor``; returns the records.

    A cell's exception (or a worker lost more often than Dask allows) becomes an "error"
    record, also written to the cell's ``failure.json``; a cell whose source or selection
    failed becomes "skipped". Neither stops the sweep."""
    todo = [c for c in state.cells if not state.finished(c)]
    running = 0

    def done(cell, rec):
        state.records[cell.id] = rec
        if bar is not None:
            bar.update(1)
            bar.set_postfix(failed=sum(r["status"] != "ok" for r in state.records.values()))
        (bar.write if bar is not None else echo)(_line(cell, rec))

    while todo or running:
        for cell in list(todo):
            st, val = state.resolve(cell)
            if st == "wait":
                continue
            todo.remove(cell)
            if st == "fail":
                done(cell, dict(status="skipped", message=val))
            else:
                state.records.pop(cell.id, None)  # an "error" of an earlier attempt
                executor.submit(state.cell_dir(cell), val, cell.id)
                running += 1
        if not running:
            for cell in todo:  # waiting on a cell that failed in this run
                done(cell, dict(status="skipped", message="a cell it needs failed (error); run the "
                                                          "sweep again to retry it"))
            break
        cell_id, rec = executor.next_done()
        running -= 1
        cell = state.by_id[cell_id]
        if isinstance(rec, BaseException):
            msg = f"{type(rec).__name__}: {rec}"
            rec = dict(status="error", message=msg,
                       traceback="".join(traceback.format_exception(rec))[-4000:])
            try:
                os.makedirs(state.cell_dir(cell), exist_ok=True)
                write_json_atomic(os.path.join(state.cell_dir(cell), FAILURE), rec)
            except OSError:
                pass
        done(cell, rec)
    return state.records

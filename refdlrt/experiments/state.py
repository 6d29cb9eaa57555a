"""A sweep folder and what its cells have produced so far: the plan in ``sweep.json``, one run
folder per cell under ``cells/``, the learning rate chosen per group, the cells reported.

Everything here is a function of the folder, so a sweep that was killed and started again, and
``refdlrt sweep --report``, see the same results.
"""

from __future__ import annotations

import json
import os

from ..training.runs import write_json_atomic
from .cell import read_cell
from .grid import SELECTED, Plan, diff_plans, expand, plain_group, source_group

__all__ = ["SweepState", "open_sweep", "read_plan", "SWEEP_FILE"]

SWEEP_FILE = "sweep.json"


def read_plan(out: str, option: str = "--report") -> Plan:
    """The plan recorded in ``out/sweep.json``."""
    path = os.path.join(out, SWEEP_FILE)
    try:
        with open(path) as f:
            return Plan.from_json(json.load(f)["plan"])
    except FileNotFoundError:
        raise ValueError(f"{option} {out}: no {SWEEP_FILE} there (not a sweep folder)") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{option} {out}: {SWEEP_FILE} is damaged ({e})") from None


def open_sweep(out: str, plan: Plan) -> None:
    """Make ``out`` this plan's sweep folder: a new or empty folder gets ``sweep.json``; one
    with a sweep of another plan is refused, naming what differs; any other non-empty folder
    is refused."""
    path = os.path.join(out, SWEEP_FILE)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out}: expected a folder, found an existing file")
    if os.path.exists(path):
        old = read_plan(out, "--out").to_json()
        diffs = diff_plans(old, plan.to_json())
        if diffs:
            raise ValueError(f"--out {out}: the folder holds a sweep with another grid ({'; '.join(diffs)}); "
                             f"give a new --out folder, or the recorded grid to continue it (--out "
                             f"{out} alone continues it)")
        return
    if os.path.isdir(out) and [e for e in os.listdir(out) if not e.startswith(".")]:
        raise ValueError(f"--out {out}: the folder is not empty and holds no {SWEEP_FILE}; give a "
                         f"new or empty folder")
    try:
        os.makedirs(os.path.join(out, "cells"), exist_ok=True)
        write_json_atomic(path, dict(plan=plan.to_json(), cells=[], summary=[]))
    except OSError as e:
        raise ValueError(f"--out {out}: not writable ({e.strerror or e})") from None


class SweepState:
    """The cells of a plan and their records (``{"status": ..., ...}``) as far as known."""

    def __init__(self, out: str, plan: Plan):
        self.out, self.plan = out, plan
        self.cells = expand(plan)
        self.by_id = {c.id: c for c in self.cells}
        self.records: dict = {}

    def cell_dir(self, cell) -> str:
        return os.path.join(self.out, "cells", cell.id)

    def scan(self) -> int:
        """Read every finished cell (complete, or diverged) from disk; returns their number.
        Failed attempts ("error") are read too but are tried again."""
        for c in self.cells:
            rec = read_cell(self.cell_dir(c))
            if rec is not None:
                self.records[c.id] = rec
        return sum(self.finished(c) for c in self.cells)

    def finished(self, cell) -> bool:
        rec = self.records.get(cell.id)
        return rec is not None and rec["status"] in ("ok", "diverged", "skipped")

    # -- the learning rate a group's selection chose ----------------------------------------
    def selection(self, group) -> tuple:
        """("wait", None), ("fail", why) or ("ok", (lr, {lr: mean validation accuracy})).

        The rate with the best mean validation accuracy (after the last epoch) over the
        group's selection seeds; a cell that diverged or failed counts as 0; a tie goes to the
        rate given first."""
        trials = [c for c in self.cells if c.group == group and c.phase == "select"]
        if any(not self.finished(c) for c in trials):
            return "wait", None
        scores = {}
        for lr in self.plan.select_lr:
            vals = []
            for c in trials:
                if c.key["lr"] == lr:
                    rec = self.records[c.id]
                    ok = rec["status"] == "ok" and rec["summary"].get("val_accuracy") is not None
                    vals.append(rec["summary"]["val_accuracy"] if ok else 0.0)
            scores[lr] = sum(vals) / len(vals)
        if not any(self.records[c.id]["status"] == "ok" for c in trials):
            return "fail", "no learning rate of --select-lr trained on the selection seeds"
        best = max(self.plan.select_lr, key=lambda lr: scores[lr])  # first of equals
        return "ok", (best, scores)

    def reported(self, group, seed) -> tuple:
        """("wait"|"fail"|"ok", the cell of ``group`` and ``seed`` that counts in the summary)."""
        cands = [c for c in self.cells if plain_group(c.group) == plain_group(group) and c.seed == seed]
        if self.plan.select_lr is None:
            return ("ok", cands[0]) if len(cands) == 1 else ("fail", f"{len(cands)} cells")
        st, val = self.selection(cands[0].group)
        if st != "ok":
            return st, val
        lr = val[0]
        return "ok", next(c for c in cands if c.key["lr"] in (lr, SELECTED))

    # -- what a cell needs before it can run --------------------------------------------------
    def resolve(self, cell) -> tuple:
        """("ready", fields), ("wait", None) or ("fail", why): the chosen rate for a cell at its
        group's selected rate, the final ranks of its source for a ``ranks_from`` cell."""
        fields = dict(cell.fields)
        if cell.key.get("lr") == SELECTED:
            st, val = self.selection(cell.group)
            if st != "ok":
                return st, val
            fields["lr"] = val[0]
        if cell.ranks_from is not None:
            st, src = self.reported(source_group(cell), cell.seed)
            if st != "ok":
                return st, (f"ranks_from={cell.ranks_from}: {src}" if st == "fail" else None)
            rec = self.records.get(src.id)
            if rec is None or rec["status"] == "error":
                return "wait", None
            if rec["status"] != "ok":
                return "fail", f"ranks_from={cell.ranks_from}: the source cell {src.id} {rec['status']}"
            fields["ranks"] = rec["summary"]["ranks"]
        return "ready", fields

"""Tables of a sweep, rebuilt from its cell folders: one row per cell (``sweep.csv``), a summary
per group, e.g. (method, τ) (``summary.csv``, ``summary.md``), both in ``sweep.json`` beside
the plan."""

from __future__ import annotations

import csv
import io
import json
import math
import os

from ..training.runs import write_json_atomic
from .grid import SELECTED
from .state import SWEEP_FILE, SweepState

__all__ = ["rows", "summarize", "write_tables", "ROW_COLUMNS", "SUMMARY_COLUMNS"]

METRICS = ("test_accuracy", "val_accuracy", "train_loss", "lowrank_param_fraction",
           "conv_compression", "seconds_per_epoch", "epochs")
ROW_COLUMNS = ("id", "status", "reported", "phase", "group", "seed", "lr") + METRICS + ("ranks", "message")
SUMMARY_COLUMNS = ("group", "lr", "seeds", "ok", "diverged", "failed", "unfinished", "test_accuracy_mean",
                   "test_accuracy_std", "val_accuracy_mean", "lowrank_param_fraction_mean",
                   "lowrank_param_fraction_std", "conv_compression_mean",
                   "seconds_per_epoch_mean", "diverged_in_selection", "selection")


def _reported_ids(state: SweepState) -> set:
    ids = set()
    for c in state.cells:
        st, cell = state.reported(c.group, c.seed)
        if st == "ok":
            ids.add(cell.id)
    return ids


def rows(state: SweepState) -> list:
    """One dict per cell, in the plan's order: its axes, status, whether it counts in its
    group's summary, and the numbers of its summary.json (None where there are none)."""
    reported = _reported_ids(state)
    out = []
    for c in state.cells:
        rec = state.records.get(c.id) or dict(status="unfinished")
        if rec["status"] == "unfinished":
            st, val = state.resolve(c)
            if st == "fail":
                rec = dict(status="skipped", message=val)
        s = rec.get("summary") or {}
        lr = (s.get("config") or rec.get("config") or {}).get("lr")
        row = dict(id=c.id, status=rec["status"], reported=c.id in reported, phase=c.phase,
                   group=c.group_label, seed=c.seed)
        row.update({k: v for k, v in c.key.items() if k not in ("lr", "seed")})
        row["lr"] = lr if lr is not None else (None if c.key.get("lr") == SELECTED else c.fields.get("lr"))
        row.update({m: s.get(m) for m in METRICS})
        if rec["status"] == "diverged" and rec.get("history"):
            row["epochs"] = len(rec["history"])
        row["ranks"] = s.get("ranks")
        row["message"] = rec.get("message", "")
        out.append(row)
    return out


def _mean_std(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None, None
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, sd


def summarize(state: SweepState, table: list) -> list:
    """One dict per group (its axes but seed, and lr when selected): the reported cells over the
    seeds, mean and sample standard deviation (0 for one seed) of their numbers."""
    by_id = {r["id"]: r for r in table}
    groups = []
    for c in state.cells:
        if c.group not in groups:
            groups.append(c.group)
    out = []
    for g in groups:
        cells = [c for c in state.cells if c.group == g]
        rep = [by_id[c.id] for c in cells if by_id[c.id]["reported"]]
        ok = [r for r in rep if r["status"] == "ok"]
        row = dict(group=cells[0].group_label, **dict(g))
        sel = state.selection(g) if state.plan.select_lr is not None else ("none", None)
        lrs = sorted({r["lr"] for r in rep if r["lr"] is not None})
        row["lr"] = sel[1][0] if sel[0] == "ok" else (lrs[0] if len(lrs) == 1 else None)
        row["seeds"] = len({c.seed for c in cells})
        row["ok"] = len(ok)
        row["diverged"] = sum(r["status"] == "diverged" for r in rep)
        row["failed"] = sum(r["status"] in ("error", "skipped") for r in rep)
        row["unfinished"] = row["seeds"] - len(ok) - row["diverged"] - row["failed"]  # not run yet
        for m in ("test_accuracy", "lowrank_param_fraction"):
            row[f"{m}_mean"], row[f"{m}_std"] = _mean_std([r[m] for r in ok])
        for m in ("val_accuracy", "conv_compression", "seconds_per_epoch"):
            row[f"{m}_mean"] = _mean_std([r[m] for r in ok])[0]
        row["diverged_in_selection"] = sum(by_id[c.id]["status"] == "diverged"
                                           for c in cells if c.phase == "select")
        row["selection"] = ({str(k): v for k, v in sel[1][1].items()} if sel[0] == "ok" else None)
        out.append(row)
    return out


def _pct(v, sd=None):
    if v is None:
        return "–"
    return f"{100 * v:.2f} ± {100 * sd:.2f} %" if sd is not None else f"{100 * v:.1f} %"


def markdown(summary: list) -> str:
    head = ("| group | lr | seeds ok | test accuracy (mean ± std) | val accuracy | params "
            "(mean ± std) | conv compression | s / epoch | diverged |")
    lines = [head, "|" + "---|" * 9]
    for r in summary:
        sel = r["selection"]
        lr = "–" if r["lr"] is None else f"{r['lr']:g}" + (" (chosen)" if sel else "")
        sp = r["seconds_per_epoch_mean"]
        lines.append(
            f"| {r['group']} | {lr} | {r['ok']} / {r['seeds']}"
            + (f" ({r['unfinished']} to run)" if r.get("unfinished") else "")
            + (f" ({r['failed']} failed)" if r.get("failed") else "") + " | "
            f"{_pct(r['test_accuracy_mean'], r['test_accuracy_std'])} | {_pct(r['val_accuracy_mean'])} | "
            f"{_pct(r['lowrank_param_fraction_mean'], r['lowrank_param_fraction_std'])} | "
            f"{_pct(r['conv_compression_mean'])} | {'–' if sp is None else f'{sp:.1f}'} | "
            f"{r['diverged']}" + (f" (+{r['diverged_in_selection']} in selection)"
                                  if r["diverged_in_selection"] else "") + " |")
    if any(r["selection"] for r in summary):
        lines += ["", "Learning-rate selection (mean validation accuracy over the selection seeds):", ""]
        for r in summary:
            if r["selection"]:
                lines.append(f"- {r['group']}: " + ", ".join(
                    f"lr {k}: {100 * v:.2f} %" for k, v in r["selection"].items()))
    return "\n".join(lines) + "\n"


def _csv_text(table, columns) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(columns)
    for r in table:
        w.writerow(["" if r.get(c) is None else json.dumps(r[c]) if isinstance(r.get(c), (dict, list))
                    else r[c] for c in columns])
    return buf.getvalue()


def _write_text_atomic(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_tables(state: SweepState) -> tuple:
    """Write sweep.csv, summary.csv, summary.md and sweep.json (plan, cells, summary), each
    atomically; returns (rows, summary)."""
    table = rows(state)
    summary = summarize(state, table)
    axes = []
    for c in state.cells:
        axes += [k for k in c.key if k not in axes and k not in ("lr", "seed")]
    cols = list(ROW_COLUMNS[:6]) + axes + list(ROW_COLUMNS[6:])
    _write_text_atomic(os.path.join(state.out, "sweep.csv"), _csv_text(table, cols))
    gcols = ["group"] + [k for k in axes if any(k in r for r in summary)] + list(SUMMARY_COLUMNS[1:])
    _write_text_atomic(os.path.join(state.out, "summary.csv"), _csv_text(summary, gcols))
    _write_text_atomic(os.path.join(state.out, "summary.md"), markdown(summary))
    write_json_atomic(os.path.join(state.out, SWEEP_FILE),
                      dict(plan=state.plan.to_json(), cells=table, summary=summary))
    return table, summary

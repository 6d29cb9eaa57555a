"""What ``refdlrt validate`` leaves behind: a printed table, ``report.md`` and ``results.json``."""

from __future__ import annotations

import json
import math
import os
import platform
import time

__all__ = ["fmt_value", "format_table", "markdown_table", "write_report"]


def fmt_value(v) -> str:
    """A number for a table: 4 significant digits, '-' for missing, 'inf' for infinities."""
    if v is None:
        return "-"
    v = float(v)
    if math.isnan(v):
        return "-"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4g}"


def _margin(v) -> str:
    s = fmt_value(v)
    return s if s in ("-",) else f"x{s}"


def _rows(results):
    for r in results:
        check = r.details.get("headline") or r.details.get("skipped") or r.details.get("error", "")
        yield (r.name, str(check), fmt_value(r.measured), fmt_value(r.bound), _margin(r.margin),
               r.status)


HEADER = ("claim", "tightest check", "measured", "bound", "margin", "verdict")


def format_table(results) -> str:
    """Plain-text table (fixed-width columns); the check column is cut at 60 characters."""
    rows = [tuple(c if i != 1 else c[:60] for i, c in enumerate(row)) for row in _rows(results)]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(HEADER)]
    line = "  ".join(h.ljust(w) for h, w in zip(HEADER, widths))
    out = [line, "-" * len(line)]
    for row in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    n_bad = sum(r.status == "NOT OK" for r in results)
    out.append(f"{len(results) - n_bad} of {len(results)} claims OK"
               + (f", {n_bad} NOT OK" if n_bad else ""))
    return "\n".join(out)


def markdown_table(results) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in _rows(results):
        cells = [_cell(c) for c in row]
        cells[-1] = f"**{cells[-1]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _claim_section(r) -> str:
    parts = [f"## {r.name}: {r.status}", "", r.claim, ""]
    if "error" in r.details:
        parts += ["The claim could not be checked; it raised:", "", "```",
                  r.details.get("traceback", r.details["error"]).rstrip(), "```", ""]
    if "skipped" in r.details:
        parts += [f"Skipped: {r.details['skipped']}", ""]
    checks = r.details.get("checks", [])
    if checks:
        parts += ["| check | measured | sense | bound | margin | ok |", "|---|---|---|---|---|---|"]
        for c in checks:
            parts.append(f"| {_cell(c['label'])} | {fmt_value(_f(c['measured']))} | {c['sense']} | "
                         f"{fmt_value(_f(c['bound']))} | {_margin(_f(c['margin']))} | "
                         f"{'OK' if c['ok'] else 'NOT OK'} |")
        parts.append("")
    for note in r.details.get("notes", []):
        parts += [f"- {note}"]
    if r.details.get("notes"):
        parts.append("")
    for p in r.plots:
        parts += [f"![{r.name}]({p})", ""]
    parts.append(f"({r.seconds:.1f} s)")
    return "\n".join(parts)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _f(v):
    if v is None:
        return math.nan
    if isinstance(v, str):
        return math.inf if v == "inf" else -math.inf
    return v


def write_report(results, out: str, *, quick: bool, backend: str, seed: int):
    """Write ``out/report.md`` (table, then one section per claim with its plots) and
    ``out/results.json`` (a list, one entry per claim: name, ok, status, measured, bound,
    margin, claim, seconds, plots, details, mode, backend, seed)."""
    os.makedirs(out, exist_ok=True)
    total = sum(r.seconds for r in results)
    head = [
        "# refdlrt validation report", "",
        f"Mode: {'quick' if quick else 'full'}; backend: {backend}; seed: {seed}; "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}; {platform.machine()} / Python "
        f"{platform.python_version()}; {total:.1f} s in all.", "",
        "Every claim is an inequality of ALGORITHM.md §4 (or a property it implies). "
        "`margin` is bound/measured for `<=` checks and measured/bound for `>=` checks: above 1 "
        "the check holds with that factor to spare. The row shows the tightest check.", "",
        markdown_table(results), "",
    ]
    body = [_claim_section(r) for r in results]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(head) + "\n" + "\n\n".join(body) + "\n")
    run = dict(mode="quick" if quick else "full", backend=backend, seed=seed)
    payload = [dict(r.as_dict(), **run) for r in results]
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(payload, f, indent=1, allow_nan=False)

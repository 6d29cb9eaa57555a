"""What the benchmarks share about the machine: how busy its CPUs are, and which commit runs."""

from __future__ import annotations

import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_busy_seconds() -> float | None:
    """Busy CPU seconds of the whole machine so far (Linux /proc/stat), None elsewhere."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def git_commit():
    """``git rev-parse --short HEAD``, "+dirty" with uncommitted changes; None without git
    (shared by run.py and width_scaling.py)."""
    git = lambda *a: subprocess.run(["git", *a], cwd=HERE, timeout=10, capture_output=True,
                                    text=True, check=True).stdout.strip()
    try:
        dirty = "+dirty" if git("status", "--porcelain") else ""
        return git("rev-parse", "--short", "HEAD") + dirty
    except (OSError, subprocess.SubprocessError):
        return None

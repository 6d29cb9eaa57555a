"""What the benchmarks share about the machine: how busy its CPUs are."""

from __future__ import annotations

import os


def cpu_busy_seconds() -> float | None:
    """Busy CPU seconds of the whole machine so far (Linux /proc/stat), None elsewhere."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")

"""The header of a benchmark result: what ran, when (UTC) and on which machine.

docs/benchmarks.md records every figure with this header, because a timing means nothing
without the processor, the core and thread counts and the GPU it was taken on.
"""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path


def machine_description() -> str:
    """One line naming the machine: CPU model, cores, torch threads and GPU."""
    try:
        import torch  # heavy; only a running benchmark needs it

        dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        dev, threads = "no torch", 0
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores ({threads} torch threads), {dev}"


def bench_header(name: str) -> str:
    """`<name> — <YYYY-MM-DD HH:MM UTC> — <machine>`."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{name} — {now} — {machine_description()}"

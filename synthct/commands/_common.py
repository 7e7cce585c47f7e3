"""Options and helpers shared by the command modules."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from synthct.workspace import Workspace

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        "-w",
        help="Workspace folder (default: $SYNTHCT_WORKSPACE or ./workspace).",
    ),
]


def workspace(path: Path | None) -> Workspace:
    return Workspace.resolve(path)


def echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def machine_description() -> str:
    """One line naming the machine, for benchmark records."""
    import os

    try:
        import torch

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
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{name} — {now} — {machine_description()}"

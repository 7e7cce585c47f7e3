"""Options and helpers shared by the command modules."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from synthct.errors import WorkspaceError
from synthct.workspace import ENV_WORKSPACE, Workspace

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        "-w",
        help="Workspace folder (default: $SYNTHCT_WORKSPACE or ./workspace).",
    ),
]


CREATING_COMMANDS = ("ingest", "phantom", "demo")


def workspace(path: Path | None, create: bool = False) -> Workspace:
    """The workspace of a command: `--workspace`, else $SYNTHCT_WORKSPACE, else ./workspace.

    Only the commands that start a project (`ingest`, `demo`; `phantom` writes its own folder)
    pass `create=True`; every other command refuses a folder that does not exist, so a mistyped
    `-w PATH` never silently starts a new, empty workspace and database.
    """
    ws = Workspace.resolve(path)
    if not create and not ws.root.is_dir():
        how = "--workspace" if path is not None else f"${ENV_WORKSPACE} or --workspace"
        raise WorkspaceError(
            f"workspace {ws.root} does not exist (from {how}); check the path, or start one "
            f"with `synthct ingest SRC -w {ws.root}` or `synthct demo -w {ws.root}`"
        )
    return ws


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

"""Options and helpers shared by the command modules."""

from __future__ import annotations

import json
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

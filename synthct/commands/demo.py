"""`synthct demo`: build the demo workspace and print the study's invite links."""

from __future__ import annotations

import dataclasses
import time

import typer

from synthct.commands._common import WorkspaceOpt, workspace
from synthct.demo import DemoConfig, build_demo


def demo(
    ws_path: WorkspaceOpt = None,
    tiny: bool = typer.Option(False, help="Seconds-scale settings (tests, smoke checks)."),
    base_url: str = typer.Option("http://localhost:8501", help="Base URL of invite links."),
) -> None:
    """Build a complete demo workspace from the built-in phantoms (no download)."""
    from tqdm import tqdm  # slow to import; only this command's progress bar needs it

    settings = DemoConfig.tiny() if tiny else DemoConfig()
    settings = dataclasses.replace(settings, base_url=base_url)
    ws = workspace(ws_path, create=True)
    t0 = time.perf_counter()
    with tqdm(total=100, desc="demo", unit="%", bar_format="{l_bar}{bar}| {desc}") as bar:

        def progress(fraction: float, message: str) -> None:
            bar.n = round(100 * fraction)
            bar.set_description(message)
            bar.refresh()

        result = build_demo(ws, settings, progress)
    typer.echo(f"demo workspace ready in {time.perf_counter() - t0:.0f} s: {result.workspace}")
    for stage_name, secs in result.seconds.items():
        typer.echo(f"  {stage_name:<34} {secs:>6.1f} s")
    for name, link in result.invite_links.items():
        typer.echo(f"invite for {name}: {link}")
    typer.echo(
        f"start the app: SYNTHCT_WORKSPACE={result.workspace} streamlit run streamlit_app.py"
    )


def register(app: typer.Typer) -> None:
    app.command()(demo)

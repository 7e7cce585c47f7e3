"""`synthct demo`: build the demo workspace (or one stage of it) and print the study's links."""

from __future__ import annotations

import dataclasses
import time

import typer

from synthct.commands._common import WorkspaceOpt, workspace
from synthct.demo import STAGE_NAMES, DemoConfig, build_demo, load_settings, run_stage
from synthct.errors import ConfigError
from synthct.jobs import job_progress_callback


def demo(
    ws_path: WorkspaceOpt = None,
    tiny: bool = typer.Option(False, help="Seconds-scale settings (tests, smoke checks)."),
    base_url: str = typer.Option("http://localhost:8501", help="Base URL of invite links."),
    stage: str | None = typer.Option(
        None,
        help=f"Run only this stage ({', '.join(STAGE_NAMES)}) with the settings the workspace's "
        "demo build recorded; the app runs the slow ones this way as background jobs.",
    ),
) -> None:
    """Build a complete demo workspace from the built-in phantoms (no download).

    Stages already done are skipped, so running it again completes an interrupted build.
    """
    ws = workspace(ws_path, create=True)
    if stage is not None:
        _one_stage(ws, stage)
        return
    from tqdm import tqdm  # slow to import; only this command's progress bar needs it

    settings = DemoConfig.tiny() if tiny else DemoConfig()
    settings = dataclasses.replace(settings, base_url=base_url)
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


def _one_stage(ws, name: str) -> None:
    if name not in STAGE_NAMES:
        raise ConfigError(f"--stage {name!r} is not a demo stage; expected one of {STAGE_NAMES}")
    if load_settings(ws) is None:
        raise ConfigError(
            f"{ws.root} has no demo build to continue (no demo/settings.json); run `synthct demo`"
        )
    progress = job_progress_callback()
    progress(0.0, f"demo stage {name}")
    seconds = run_stage(ws, name)
    progress(1.0, f"demo stage {name} done")
    if seconds is None:
        typer.echo(f"demo stage {name}: already done")
    else:
        typer.echo(f"demo stage {name}: done in {seconds:.1f} s")


def register(app: typer.Typer) -> None:
    app.command()(demo)

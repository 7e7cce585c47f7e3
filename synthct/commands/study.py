"""Visual Turing Test commands: `synthct study create|invite|revoke|list|stats|export`.

The listing, the statistics and the export come from the study read-model
(`synthct.vtt.results`), the one the app's Studies page uses too. The database and the
statistics (SQLAlchemy, pandas, SciPy) are imported inside the commands, so that `synthct --help`
and the other commands do not load them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from synthct.commands._common import WorkspaceOpt, echo_json, workspace
from synthct.workspace import atomic_write_text

if TYPE_CHECKING:
    from synthct.vtt.stats import StudyStatistics

study_app = typer.Typer(
    help="Visual Turing Test studies: create, invite raters, results.", no_args_is_help=True
)

StudyArg = Annotated[str, typer.Argument(help="Study name.")]


def _engine(ws):
    """The database of workspace `ws` (or $SYNTHCT_DATABASE_URL), as the app sees it."""
    from db.session import engine_for

    return engine_for(ws.database)


@study_app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="Study name (letters, digits, - _ .).")],
    synthetic: Annotated[str, typer.Option("--synthetic", help="Synthetic set in WS/synthetic/.")],
    n_real: Annotated[int, typer.Option(min=1, help="Real cases from the test split.")] = 5,
    n_synthetic: Annotated[int, typer.Option(min=1, help="Synthetic cases from the set.")] = 5,
    duplicates: Annotated[
        int, typer.Option(min=0, help="Cases shown twice (intra-rater consistency).")
    ] = 0,
    seed: Annotated[int, typer.Option(help="Seed for case choice and rater orders.")] = 0,
    slab: Annotated[
        str, typer.Option(help="third (middle third, as the thesis) | full.")
    ] = "third",
    plane: Annotated[str, typer.Option(help="axial | coronal | sagittal.")] = "axial",
    window: Annotated[
        str, typer.Option(help="soft-tissue | bone | lung | brain | 'W,L' (e.g. 350,50).")
    ] = "soft-tissue",
    overlay: Annotated[str, typer.Option(help="Mask overlay: contour | fill | none.")] = "contour",
    tiles: Annotated[int, typer.Option(min=1, max=64, help="Slices in the mosaic.")] = 9,
    tile_px: Annotated[int, typer.Option(min=16, max=1024, help="Tile size in pixels.")] = 256,
    ws_path: WorkspaceOpt = None,
) -> None:
    """Pick, render and seal a study (real: test split; synthetic: SET)."""
    from db.session import session_scope
    from synthct.vtt.design import create_study_from_workspace
    from synthct.vtt.render import RenderConfig

    ws = workspace(ws_path).ensure()
    params = RenderConfig(
        plane=plane, slab=slab, window=window, overlay=overlay, tiles=tiles, tile_px=tile_px
    )
    engine = _engine(ws)
    with session_scope(engine) as s:
        info = create_study_from_workspace(
            s,
            ws,
            name,
            synthetic,
            n_real=n_real,
            n_synthetic=n_synthetic,
            duplicates=duplicates,
            seed=seed,
            params=params,
        )
    typer.echo(
        f"study {info.name!r}: {info.n_cases} cases sealed in {info.directory} "
        f"(manifest SHA-256 {info.manifest_sha256})"
    )


@study_app.command("invite")
def invite_cmd(
    study: StudyArg,
    name: Annotated[str, typer.Option("--name", help="Rater's name, e.g. 'Dr A'.")],
    base_url: Annotated[str, typer.Option(help="Address of the app.")] = "http://localhost:8501",
    ws_path: WorkspaceOpt = None,
) -> None:
    """Invite a rater: prints their personal link (an unguessable token, shown only this once).

    The link works in any browser, any number of times, until `synthct study revoke`.
    """
    from db.session import session_scope
    from synthct.access import password_configured_outside_app
    from synthct.vtt.flow import invite

    with session_scope(_engine(workspace(ws_path))) as s:
        inv = invite(s, study, name, base_url=base_url)
    typer.echo(inv.link)
    typer.echo(
        f"personal link for {inv.name!r}: it works in any browser until you revoke it "
        f"(`synthct study revoke {study} --name …`); anyone holding it rates as {inv.name!r}",
        err=True,
    )
    if not password_configured_outside_app():
        typer.echo(
            "warning: no researcher password is set ($SYNTHCT_RESEARCHER_PASSWORD_HASH or "
            ".streamlit/secrets.toml): the app serves only its own machine, so this link works "
            "only there; to invite raters elsewhere set one (`synthct password-hash`) and serve "
            "behind TLS (README, 'Multi-site setup')",
            err=True,
        )


@study_app.command("revoke")
def revoke_cmd(
    study: StudyArg,
    name: Annotated[str, typer.Option("--name", help="Rater to revoke.")],
    ws_path: WorkspaceOpt = None,
) -> None:
    """Revoke a rater's invite link (answers already given are kept)."""
    from db.session import session_scope
    from synthct.vtt.flow import revoke

    with session_scope(_engine(workspace(ws_path))) as s:
        revoke(s, study, name)
    typer.echo(f"revoked {name!r} in study {study!r}")


@study_app.command("list")
def list_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ws_path: WorkspaceOpt = None,
) -> None:
    """Studies with their numbers of cases, raters and ratings."""
    from db.session import session_scope
    from synthct.vtt.results import study_overviews

    with session_scope(_engine(workspace(ws_path))) as s:
        studies = study_overviews(s, with_progress=True)
    if as_json:
        echo_json([st.to_dict() for st in studies])
        return
    if not studies:
        typer.echo("no studies")
    for st in studies:
        typer.echo(
            f"{st.name}: {st.cases} cases, {st.active_raters}/{st.raters} active "
            f"raters, {st.ratings} ratings (sealed {st.manifest_sha256[:12]}…)"
        )
        for r in st.rater_progress or ():
            flag = " [revoked]" if r.revoked else ""
            typer.echo(f"  {r.name}: {r.done}/{r.total}{flag}")


@study_app.command("stats")
def stats_cmd(
    study: StudyArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    threshold: Annotated[
        int, typer.Option(min=0, max=9, help="Scores above it count as 'synthetic' calls.")
    ] = 5,
    ws_path: WorkspaceOpt = None,
) -> None:
    """Results for researchers: means per rater (thesis Tables 5.17/5.18), AUC, tests, agreement."""
    from db.session import session_scope
    from synthct.vtt.results import study_ratings

    ws = workspace(ws_path)
    with session_scope(_engine(ws)) as s:
        res = study_ratings(s, ws, study).statistics(threshold)
    if as_json:
        echo_json(res.to_dict())
        return
    typer.echo(f"study {study!r}: {res.ratings} ratings")
    if res.ratings:
        typer.echo("\n".join(_report_lines(res)))


def _report_lines(res: StudyStatistics) -> list[str]:
    """The text report of `synthct study stats` for statistics with ratings."""
    lines = []
    for truth in ("real", "synthetic"):
        table = res.tables[truth]
        raters = list(next(iter(table.values())).keys())
        lines.append(f"\n{truth} cases — scores (0 real … 10 synthetic)")
        lines.append("  " + "case".ljust(16) + "".join(r[:12].rjust(13) for r in raters))
        for case, row in table.items():
            cells = "".join(("-" if row[r] is None else f"{row[r]:.1f}").rjust(13) for r in raters)
            lines.append("  " + case[:16].ljust(16) + cells)
    lines.append(f"\nper rater ({res.threshold_rule}; AUC CI: {res.auc_ci_method})")
    for r in res.raters:
        d = r.discrimination
        if d is None:
            lines.append(f"  {r.rater}: needs real and synthetic ratings")
            continue
        ci = "n/a" if d.auc_ci95 is None else f"{d.auc_ci95[0]:.2f}–{d.auc_ci95[1]:.2f}"
        lines.append(
            f"  {r.rater}: mean real {r.mean_real:.2f}, synthetic {r.mean_synthetic:.2f};"
            f" AUC {d.auc:.2f} (95% CI {ci}); accuracy {d.accuracy:.2f}, sensitivity "
            f"{d.sensitivity:.2f}, specificity {d.specificity:.2f}; Mann–Whitney p "
            f"{d.mann_whitney_p:.3f}; binomial p {d.binomial_p:.3f}; median "
            f"{r.median_seconds_per_case:.1f} s/case"
        )
    k, a = res.agreement.fleiss_kappa_calls, res.agreement.krippendorff_alpha_interval
    lines.append(
        f"\nagreement: Fleiss κ (calls) {'n/a' if k is None else f'{k:.3f}'}, "
        f"Krippendorff α (interval) {'n/a' if a is None else f'{a:.3f}'}"
    )
    for r in res.intra_rater:
        lines.append(
            f"  intra-rater {r.rater}: {r.pairs} duplicate pairs, mean |Δ| "
            f"{r.mean_abs_difference:.2f}, same call {r.same_call:.2f}"
        )
    for c in res.per_case:
        if c.truth == "synthetic":
            fooled = list(c.fooled or ()) or "-"
            lines.append(f"  synthetic {c.case_id}: mean {c.mean:.1f}, fooled {fooled}")
    if res.warning:
        lines.append(f"\nwarning: {res.warning}")
    return lines


@study_app.command("export")
def export_cmd(
    study: StudyArg,
    out: Annotated[
        Path, typer.Option("--out", help="CSV file (relative paths are inside the workspace).")
    ],
    ws_path: WorkspaceOpt = None,
) -> None:
    """Raw ratings joined with the sealed manifest as CSV (contains the truth: researchers only).

    Text cells a spreadsheet would run as a formula (=, +, -, @, tab, CR first) are written
    with a leading ' (see synthct/csvsafe.py)."""
    from db.session import session_scope
    from synthct.vtt.results import study_ratings

    ws = workspace(ws_path)
    path = ws.confine(out)
    with session_scope(_engine(ws)) as s:
        ratings = study_ratings(s, ws, study)
    atomic_write_text(path, ratings.export_csv())  # rater names and comments cannot run formulas
    typer.echo(f"wrote {len(ratings.rows)} ratings to {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(study_app, name="study")

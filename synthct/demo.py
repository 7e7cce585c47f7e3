"""`synthct demo`: a complete demo workspace from the built-in phantoms, with no download.

The build is a list of named stages (`STAGES`), each a small function that checks its own
artefact first, so it is idempotent:

1. `phantoms`   phantom cases (HECKTOR layout, seven centres) in WS/sources/phantom/;
2. `ingest`     ingest + seeded split registry;
3. `preprocess` packed pairs at S = 64;
4. `gan`        the small HA-GAN: the checkpoint shipped in synthct/assets/demo/ (trained on
                exactly this workspace's train split; its README gives the recipe) is installed
                as WS/runs/demo-hagan64/; without it, the run is trained here;
5. `generate`   a synthetic set from it;
6. `study`      a Visual Turing Test study with two invited raters;
7. `evaluate`   an evaluation of the set (offline workspace encoder);       (background)
8. `segment`    a small segmentation result (SegResNetDS, real data).       (background)

A finished stage leaves a marker, WS/demo/<stage>.json (its wall time), so a build that was
interrupted (the app's tab closed, Ctrl-C, a crash) continues at the first stage without one.
The settings of the build are recorded in WS/demo/settings.json when it starts, and every later
step (a resumed build, a background job) reads them from there.

Stages 1-6 are what the app needs to show Browse and the study's links; the app runs only those
on its first start (`build_demo(..., background="jobs")`) and submits the slow ones as ordinary
background jobs (`synthct demo --stage NAME`, visible in Generate & jobs). The command line runs
every stage in turn (`background="inline"`).

The demo raters' invite tokens are kept in WS/demo/invites.json (readable by the workspace owner
only) so the researcher's first page can show the links again; tokens of raters invited through
Studies or `synthct study invite` are never stored (only their hash is, in the database).
`DemoConfig.tiny()` shrinks every stage for tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from db.raters import raters_of_study
from db.session import engine_for, session_scope
from db.studies import get_study
from synthct import jobs
from synthct.config import DataConfig, from_dict, load_run_config
from synthct.errors import WorkspaceError
from synthct.runtime import case_ids_hash
from synthct.segment.recipe import SegConfig
from synthct.vtt.flow import invite, rater_for_token
from synthct.workspace import Workspace, atomic_write_json, read_json

Progress = Callable[[float, str], None]
ASSETS = "assets/demo"
DEMO_RUN = "demo-hagan64"
DEMO_SET = "demo-set"
DEMO_STUDY = "demo-study"
DEMO_RATERS = ("Demo rater A", "Demo rater B")
JOB_KIND = "demo"


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """What the demo workspace holds: its phantom cases and split, the run (the shipped
    checkpoint or one trained here), the set, the evaluation, the segmentation and the study."""

    n_cases: int = 40
    scale: float = 0.25
    seed: int = 0
    test_fraction: float = 0.2
    size: int = 64
    config: str = "hagan-demo-64.yaml"  # in configs/ or synthct/assets/demo/
    use_shipped_checkpoint: bool = True
    train_steps: int | None = None  # override when training here
    n_synthetic: int = 20
    eval_extractor: str = "default"
    eval_boot: int = 50
    encoder_epochs: int | None = 5
    seg_folds: int = 2
    seg_epochs: int = 3
    seg_init_filters: int = 8
    study_real: int = 5
    study_synthetic: int = 5
    base_url: str = "http://localhost:8501"

    @classmethod
    def tiny(cls) -> DemoConfig:
        """Seconds-scale settings for tests: 20 small cases at S = 32, a few training steps."""
        return cls(
            n_cases=20,
            scale=0.12,
            test_fraction=0.35,
            size=32,
            config="hagan-tiny.yaml",
            use_shipped_checkpoint=False,
            train_steps=4,
            n_synthetic=6,
            eval_extractor="random",
            eval_boot=10,
            encoder_epochs=None,
            seg_folds=2,
            seg_epochs=1,
            seg_init_filters=4,
            study_real=2,
            study_synthetic=2,
        )


@dataclasses.dataclass
class DemoResult:
    workspace: Path
    invite_links: dict[str, str]  # raters invited by this call (empty when they existed)
    seconds: dict[str, float]  # wall time of the stages this call ran
    jobs: dict[str, int] = dataclasses.field(default_factory=dict)  # stage -> job id submitted


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    label: str  # the progress message while it runs
    weight: float  # rough share of the build's time (progress bar)
    run: Callable[[Workspace, DemoConfig], None]
    background: bool = False  # run as a job after the app's first page is up


# -- the shipped generator ------------------------------------------------------------------------
def _asset(name: str) -> Path:
    return Path(str(resources.files("synthct").joinpath(ASSETS, name)))


def _config_path(name: str) -> Path:
    for candidate in (Path(__file__).resolve().parents[1] / "configs" / name, _asset(name)):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"demo config {name} not found in configs/ or synthct/{ASSETS}/")


def shipped_checkpoint() -> Path | None:
    """The demo generator checkpoint shipped with synthct, if present."""
    found = sorted(_asset("").glob("step-*.pt")) if _asset("").is_dir() else []
    return found[-1] if found else None


def install_shipped_run(ws: Workspace, run_dir: Path) -> bool:
    """Copy the shipped run (config, train cases, logs, checkpoint) into `run_dir`.

    Only when its training case ids equal this workspace's train split (same hash), so the
    demo never pretends a generator saw other data than it did. Returns whether it installed.
    """
    from synthct.datasets import cases_in_split  # deferred: loads scipy

    ckpt = shipped_checkpoint()
    if ckpt is None:
        return False
    shipped = read_json(_asset("train_cases.json"))
    train_ids = [r.case_id for r in cases_in_split(ws, "train")]
    if shipped.get("sha256") != case_ids_hash(train_ids):
        return False
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "train_cases.json", "losses.csv", "collapse.csv", "status.json"):
        if _asset(name).is_file():
            shutil.copy2(_asset(name), run_dir / name)
    if _asset("samples").is_dir():
        shutil.copytree(_asset("samples"), run_dir / "samples", dirs_exist_ok=True)
    shutil.copy2(ckpt, run_dir / "checkpoints" / ckpt.name)
    return True


def demo_run_config(s: DemoConfig):
    """The RunConfig of the demo's generator (its YAML, at the demo's size and steps)."""

    run_cfg = load_run_config(_config_path(s.config))
    if run_cfg.data.size != s.size:
        run_cfg = dataclasses.replace(run_cfg, data=DataConfig(size=s.size))
    if s.train_steps is not None:
        run_cfg = dataclasses.replace(
            run_cfg, train=dataclasses.replace(run_cfg.train, steps=s.train_steps)
        )
    return run_cfg


# -- the stages (each checks its own artefact first) -----------------------------------------------
def _phantoms(ws: Workspace, s: DemoConfig) -> None:
    from synthct.phantom import write_phantom_set  # deferred: loads scipy

    if not (ws.sources / "phantom").is_dir():
        write_phantom_set(ws.sources / "phantom", n=s.n_cases, seed=s.seed, scale=s.scale)


def _ingest(ws: Workspace, s: DemoConfig) -> None:
    from synthct.datasets import ingest  # deferred: loads scipy

    if not ws.case_index.exists():
        ingest(ws.sources / "phantom", ws, test_fraction=s.test_fraction, seed=s.seed)


def _preprocess(ws: Workspace, s: DemoConfig) -> None:
    from synthct.preprocess import preprocess_workspace  # deferred: loads scipy

    preprocess_workspace(ws, demo_run_config(s).data, progress=False)


def _gan(ws: Workspace, s: DemoConfig) -> None:
    from synthct.checkpoint import list_checkpoints  # deferred: loads torch
    from synthct.train import train  # deferred: loads scipy, torch

    run_dir = ws.run_dir(DEMO_RUN)
    if list_checkpoints(run_dir):
        return
    if s.use_shipped_checkpoint and install_shipped_run(ws, run_dir):
        return
    train(demo_run_config(s), ws, DEMO_RUN, resume=(run_dir / "config.yaml").exists())


def _generate(ws: Workspace, s: DemoConfig) -> None:
    from synthct.generate import GenerateConfig, generate_from_run  # deferred: loads scipy, torch

    if not ws.synthetic_dir(DEMO_SET).is_dir():
        # every demo case shows a tumour: cases drawn without one are redrawn (recorded in the
        # datacard); the raw generator draws one in 82 % of cases (tests/test_demo_model.py)
        opts = GenerateConfig(
            n=s.n_synthetic, seed=s.seed, mask_postprocess="largest", empty_masks="resample"
        )
        generate_from_run(ws, DEMO_RUN, DEMO_SET, opts, device="cpu")


def _study(ws: Workspace, s: DemoConfig) -> None:
    from synthct.vtt.design import create_study_from_workspace  # deferred: loads scipy

    engine = engine_for(ws.database)
    with session_scope(engine) as session:
        if get_study(session, DEMO_STUDY) is None:
            create_study_from_workspace(
                session, ws, DEMO_STUDY, DEMO_SET,
                n_real=s.study_real, n_synthetic=s.study_synthetic, seed=s.seed,
            )  # fmt: skip
    tokens = saved_tokens(ws)
    with session_scope(engine) as session:
        study_row = get_study(session, DEMO_STUDY)
        existing = {r.name for r in raters_of_study(session, study_row.id)}
        for name in DEMO_RATERS:
            if name not in existing:
                tokens[name] = invite(session, DEMO_STUDY, name, base_url=s.base_url).token
                _save_tokens(ws, tokens)  # at once: the database keeps only the hash


def _evaluate(ws: Workspace, s: DemoConfig) -> None:
    from synthct.metrics.evaluation import (  # deferred: loads pandas, scipy, torch
        EvalConfig,
        run_evaluation,
    )

    if not any(ws.evals.glob("*/metrics.json")):
        opts = EvalConfig(
            synthetic=DEMO_SET,
            extractor=s.eval_extractor,
            n_boot=s.eval_boot,
            baseline_repeats=3,
            kid_subsets=20,
            msssim_pairs=20,
            encoder_epochs=s.encoder_epochs,
        )
        run_evaluation(ws, opts, progress=False)


def _segment(ws: Workspace, s: DemoConfig) -> None:
    from synthct.segment.experiments import (  # deferred: loads pandas, scipy
        ExperimentConfig,
        run_experiment,
    )

    if "real" not in ws.list_experiments():
        seg = SegConfig(
            size=s.size,
            init_filters=s.seg_init_filters,
            epochs=s.seg_epochs,
            warmup_epochs=1,
            folds=s.seg_folds,
        )
        run_experiment(ws, ExperimentConfig(experiment="real", seg=seg), "real")


STAGES: tuple[Stage, ...] = (
    Stage("phantoms", "Writing phantom CT cases", 2, _phantoms),
    Stage("ingest", "Ingesting and splitting cases", 1, _ingest),
    Stage("preprocess", "Preprocessing the cases", 3, _preprocess),
    Stage("gan", "Installing the demo HA-GAN", 2, _gan),
    Stage("generate", "Generating a synthetic set", 2, _generate),
    Stage("study", "Creating the demo study", 1, _study),
    Stage("evaluate", "Evaluating the synthetic set", 4, _evaluate, background=True),
    Stage("segment", "Training a small segmenter", 6, _segment, background=True),
)
STAGE_NAMES = tuple(st.name for st in STAGES)


def stage(name: str) -> Stage:
    for st in STAGES:
        if st.name == name:
            return st
    raise ValueError(f"unknown demo stage {name!r}; expected one of {', '.join(STAGE_NAMES)}")


# -- markers and recorded settings ------------------------------------------------------------------
def _marker(ws: Workspace, name: str) -> Path:
    return ws.demo_state / f"{name}.json"


def stage_done(ws: Workspace, name: str) -> bool:
    return _marker(ws, name).is_file()


def pending_stages(ws: Workspace, background: bool | None = None) -> list[str]:
    """Stages without a marker (only foreground or background ones when `background` is set)."""
    return [
        st.name
        for st in STAGES
        if not stage_done(ws, st.name) and (background is None or st.background == background)
    ]


def is_demo(ws: Workspace) -> bool:
    """Whether `ws` is (or is becoming) a demo workspace."""
    return (ws.demo_state / "settings.json").is_file()


def first_start_needed(ws: Workspace) -> bool:
    """The app builds (or resumes) the demo: an empty workspace, or a demo build whose
    foreground stages are not all done. A workspace with the researcher's own data is left alone."""
    if is_demo(ws):
        return bool(pending_stages(ws, background=False))
    return not ws.case_index.exists()


def save_settings(ws: Workspace, s: DemoConfig) -> None:
    atomic_write_json(ws.demo_state / "settings.json", dataclasses.asdict(s))


def load_settings(ws: Workspace) -> DemoConfig | None:
    """The settings a build of this workspace recorded (None when none has started)."""
    path = ws.demo_state / "settings.json"
    if not path.is_file():
        return None

    return from_dict(DemoConfig, read_json(path), where=str(path))


def saved_tokens(ws: Workspace) -> dict[str, str]:
    """{demo rater name: invite token} (see the module docstring)."""
    path = ws.demo_state / "invites.json"
    return dict(read_json(path)) if path.is_file() else {}


def _save_tokens(ws: Workspace, tokens: dict[str, str]) -> None:
    path = atomic_write_json(ws.demo_state / "invites.json", tokens)
    os.chmod(path, 0o600)


def invite_links(ws: Workspace, base_url: str) -> dict[str, str]:
    """{demo rater name: link} of the demo raters whose token is still valid."""

    links = {}
    tokens = saved_tokens(ws)
    if not tokens:
        return links
    with session_scope(engine_for(ws.database)) as session:
        for name, token in tokens.items():
            if rater_for_token(session, token) is not None:
                links[name] = f"{base_url.rstrip('/')}/?token={token}"
    return links


# -- running stages ---------------------------------------------------------------------------------
def run_stage(ws: Workspace, name: str, settings: DemoConfig | None = None) -> float | None:
    """Run one stage unless its marker exists; returns its wall time (None when skipped)."""
    st = stage(name)
    s = settings or load_settings(ws) or DemoConfig()
    if stage_done(ws, name):
        return None
    t0 = time.perf_counter()
    st.run(ws, s)
    seconds = round(time.perf_counter() - t0, 1)
    finished = datetime.now(UTC).isoformat(timespec="seconds")
    atomic_write_json(_marker(ws, name), {"stage": name, "seconds": seconds, "finished": finished})
    return seconds


def build_demo(
    ws: Workspace,
    settings: DemoConfig | None = None,
    progress: Progress | None = None,
    background: str = "inline",
) -> DemoResult:
    """Build (or complete) the demo workspace in `ws`; stages with a marker are skipped.

    background: "inline" runs the background stages here too (the command line); "jobs"
    submits them as background jobs (the app's first start); "skip" leaves them out.
    Settings recorded by an earlier, interrupted build win over `settings`.
    """
    if background not in ("inline", "jobs", "skip"):
        raise ValueError(f"background must be inline, jobs or skip, got {background!r}")
    ws = ws.ensure()
    s = load_settings(ws)
    if s is None:
        s = settings or DemoConfig()
        save_settings(ws, s)
    here = [st for st in STAGES if background == "inline" or not st.background]
    total = float(sum(st.weight for st in here))
    done, seconds = 0.0, {}
    tokens_before = set(saved_tokens(ws))
    for st in here:
        if progress:
            progress(done / total, st.label)
        took = run_stage(ws, st.name, s)
        if took is not None:
            seconds[st.label] = took
        done += st.weight
    jobs = submit_background(ws) if background == "jobs" else {}
    if progress:
        progress(1.0, "Demo workspace ready")
    new = {n: t for n, t in saved_tokens(ws).items() if n not in tokens_before}
    links = {n: f"{s.base_url.rstrip('/')}/?token={t}" for n, t in new.items()}
    return DemoResult(ws.root, links, seconds, jobs)


# -- background stages as jobs -----------------------------------------------------------------------
def _job_file(ws: Workspace, name: str) -> Path:
    return ws.demo_state / f"{name}.job.json"


def stage_job(ws: Workspace, name: str):
    """The last job submitted for a background stage (a detached jobs row), or None."""

    path = _job_file(ws, name)
    if not path.is_file():
        return None
    with contextlib.suppress(WorkspaceError):
        return jobs.get_job(ws, int(read_json(path)["job_id"]))
    return None


def submit_background(ws: Workspace, retry_ended: bool = False) -> dict[str, int]:
    """Submit `synthct demo --stage NAME` jobs for background stages without a marker.

    A stage whose job is queued, running or done is not submitted again; one whose job failed
    or was cancelled only with `retry_ended` (the app does that once per server start, so an
    interrupted build continues, but a failing stage does not loop). Returns {stage: job id}.
    """

    submitted = {}
    for name in pending_stages(ws, background=True):
        job = stage_job(ws, name)
        if job is not None and (job.status not in ("failed", "cancelled") or not retry_ended):
            continue
        job_id = jobs.submit(ws, JOB_KIND, ["demo", "--stage", name])
        atomic_write_json(_job_file(ws, name), {"job_id": job_id})
        submitted[name] = job_id
    return submitted

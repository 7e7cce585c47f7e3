"""`synthct demo`: a complete demo workspace from the built-in phantoms, with no download.

Stages (each reported through `progress(fraction, message)`):

1. phantom cases (HECKTOR layout, seven centres) written into WS/sources/phantom/;
2. ingest + seeded split registry;
3. preprocessing (packed pairs at S = 64 for the demo);
4. a small HA-GAN run: the checkpoint shipped in synthct/assets/demo/ (trained on exactly this
   workspace's train split — `synthct/assets/demo/README.md` gives the command that reproduces
   it) is installed as WS/runs/demo-hagan64/; without it, the run is trained here;
5. a synthetic set generated from it;
6. an evaluation of that set (offline workspace encoder);
7. a small segmentation result (SegResNetDS, real data, 2 folds, few epochs);
8. a Visual Turing Test study with two invited raters.

`DemoConfig.tiny()` shrinks every stage for tests.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from synthct.workspace import Workspace

Progress = Callable[[float, str], None]
ASSETS = "assets/demo"
DEMO_RUN = "demo-hagan64"
DEMO_SET = "demo-set"
DEMO_STUDY = "demo-study"
DEMO_RATERS = ("Demo rater A", "Demo rater B")


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
    invite_links: dict[str, str]
    seconds: dict[str, float]


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
    from synthct.datasets import cases_in_split
    from synthct.runtime import case_ids_hash
    from synthct.workspace import read_json

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


def build_demo(
    ws: Workspace, settings: DemoConfig | None = None, progress: Progress | None = None
) -> DemoResult:
    """Build (or complete) the demo workspace in `ws`; stages already done are skipped."""
    from synthct.config import DataConfig, load_run_config

    s = settings or DemoConfig()
    ws = ws.ensure()
    seconds: dict[str, float] = {}
    weights = [2, 1, 3, 2, 2, 4, 6, 1]  # rough share of the time per stage
    total = float(sum(weights))
    done = [0.0]

    def stage(i: int, message: str, fn: Callable[[], object]) -> None:
        if progress:
            progress(done[0] / total, message)
        t0 = time.perf_counter()
        fn()
        seconds[message] = round(time.perf_counter() - t0, 1)
        done[0] += weights[i]

    src = ws.sources / "phantom"

    def phantoms() -> None:
        from synthct.phantom import write_phantom_set

        if not src.is_dir():
            write_phantom_set(src, n=s.n_cases, seed=s.seed, scale=s.scale)

    def ingest() -> None:
        from synthct.datasets import ingest as run_ingest

        if not ws.case_index.exists():
            run_ingest(src, ws, test_fraction=s.test_fraction, seed=s.seed)

    run_cfg = load_run_config(_config_path(s.config))
    if run_cfg.data.size != s.size:
        run_cfg = dataclasses.replace(run_cfg, data=DataConfig(size=s.size))
    if s.train_steps is not None:
        run_cfg = dataclasses.replace(
            run_cfg, train=dataclasses.replace(run_cfg.train, steps=s.train_steps)
        )

    def preprocess() -> None:
        from synthct.preprocess import preprocess_workspace

        preprocess_workspace(ws, run_cfg.data, progress=False)

    run_dir = ws.run_dir(DEMO_RUN)

    def gan() -> None:
        from synthct.checkpoint import list_checkpoints
        from synthct.train import train

        if list_checkpoints(run_dir):
            return
        if s.use_shipped_checkpoint and install_shipped_run(ws, run_dir):
            return
        train(run_cfg, ws, DEMO_RUN)

    def generate() -> None:
        from synthct.generate import GenerateConfig, generate_from_run

        if not ws.synthetic_dir(DEMO_SET).is_dir():
            opts = GenerateConfig(n=s.n_synthetic, seed=s.seed, mask_postprocess="largest")
            generate_from_run(ws, DEMO_RUN, DEMO_SET, opts, device="cpu")

    def evaluate() -> None:
        from synthct.metrics.evaluation import EvalConfig, run_evaluation

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

    def segment() -> None:
        from synthct.segment.experiments import ExperimentConfig, run_experiment
        from synthct.segment.recipe import SegConfig

        if "real" not in ws.list_experiments():
            seg = SegConfig(
                size=s.size,
                init_filters=s.seg_init_filters,
                epochs=s.seg_epochs,
                warmup_epochs=1,
                folds=s.seg_folds,
            )
            run_experiment(ws, ExperimentConfig(experiment="real", seg=seg), "real")

    links: dict[str, str] = {}

    def study() -> None:
        from db.session import engine_for, session_scope
        from db.studies import get_study
        from synthct.vtt.design import create_study_from_workspace
        from synthct.vtt.flow import invite

        engine = engine_for(ws.database)
        with session_scope(engine) as session:
            if get_study(session, DEMO_STUDY) is None:
                create_study_from_workspace(
                    session,
                    ws,
                    DEMO_STUDY,
                    DEMO_SET,
                    n_real=s.study_real,
                    n_synthetic=s.study_synthetic,
                    seed=s.seed,
                )
        with session_scope(engine) as session:
            from db.raters import raters_of_study

            study_row = get_study(session, DEMO_STUDY)
            existing = {r.name for r in raters_of_study(session, study_row.id)}
            for name in DEMO_RATERS:
                if name not in existing:  # tokens are stored hashed: links are shown only once
                    links[name] = invite(session, DEMO_STUDY, name, base_url=s.base_url).link

    stage(0, "Writing phantom CT cases", phantoms)
    stage(1, "Ingesting and splitting cases", ingest)
    stage(2, f"Preprocessing (S = {s.size})", preprocess)
    stage(3, "Installing the demo HA-GAN", gan)
    stage(4, "Generating a synthetic set", generate)
    stage(5, "Evaluating the synthetic set", evaluate)
    stage(6, "Training a small segmenter", segment)
    stage(7, "Creating the demo study", study)
    if progress:
        progress(1.0, "Demo workspace ready")
    return DemoResult(ws.root, links, seconds)

"""Background jobs in the app: command lines for the job forms, the executor choice, the jobs
table, the live monitor, the cluster's queue and the HPO study view.

The forms on the Generate & jobs page only build a `synthct …` argv (pure functions below, so a
test can check them against the real CLI) and hand it to `synthct.jobs.submit` with the
executor chosen at the top of the page (this machine's queue, or SLURM with its resources); the
work runs in its own process or SLURM job. The monitor is a fragment that reruns every 2 s on
its own: it calls `synthct.jobs.pump` (reconcile ended jobs, start queued ones) and shows the
table, a log tail and a cancel button.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from synthct import jobs
from synthct.config import load_run_config
from synthct.errors import ConfigError, SynthctError
from synthct.executors import slurm
from synthct.executors.settings import resolve_settings
from synthct.executors.slurm import QUEUE_FIELDS
from synthct.hpo_study import parallel_coordinates, trials_table
from synthct.segment.recipe import SegConfig
from synthct.workspace import Workspace, check_name

DEVICES = ("auto", "cuda", "cpu")
HPO_METRICS = ("fid", "hu_w1")
MASK_MODES = ("binary", "largest", "min-size")
REPO_ROOT = Path(__file__).resolve().parents[1]


# -- argv builders --------------------------------------------------------------------------------
def mask_postprocess_spec(mode: str, min_size: int = 0) -> str:
    """The `--mask-postprocess` value: "binary", "largest" or "min-size:K"."""
    if mode not in MASK_MODES:
        raise ConfigError(
            f"mask postprocessing {mode!r} is not valid; expected one of {MASK_MODES}"
        )
    if mode == "min-size":
        if min_size < 1:
            raise ConfigError(f"minimum component size must be >= 1 voxel, got {min_size}")
        return f"min-size:{int(min_size)}"
    return mode


def generate_args(
    run: str,
    n: int,
    out: str,
    *,
    checkpoint: str | int = "latest",
    seed: int = 0,
    device: str = "auto",
    ema: bool = True,
    mask_postprocess: str = "binary",
    empty_masks: str = "keep",
) -> list[str]:
    """argv of `synthct generate` for a job."""
    if n < 1:
        raise ConfigError(f"number of cases must be >= 1, got {n}")
    if device not in DEVICES:
        raise ConfigError(f"device {device!r} is not valid; expected one of {DEVICES}")
    return [
        "generate", "--run", check_name(run, "run name"), "--n", str(int(n)),
        "--out", check_name(out, "set name"), "--checkpoint", str(checkpoint),
        "--seed", str(int(seed)), "--device", device, "--ema" if ema else "--no-ema",
        "--mask-postprocess", mask_postprocess, "--empty-masks", empty_masks,
    ]  # fmt: skip


def train_args(config: str | Path, run: str, steps: int | None = None) -> list[str]:
    """argv of `synthct train`."""
    args = ["train", "--config", str(config), "--run", check_name(run, "run name")]
    if steps:
        args += ["--steps", str(int(steps))]
    return args


def evaluate_args(
    synthetic: str, real: str = "test", extractor: str = "default", weights: str | None = None
) -> list[str]:
    """argv of `synthct evaluate`."""
    args = ["evaluate", "--synthetic", check_name(synthetic, "synthetic set"), "--real", real]
    args += ["--extractor", extractor]
    if weights:
        args += ["--weights", str(weights)]
    return args


def segment_args(
    experiment: str,
    synthetic: str | None = None,
    *,
    name: str | None = None,
    n_synthetic: int | None = None,
    epochs: int | None = None,
    folds: int | None = None,
    size: int | None = None,
    device: str = "auto",
) -> list[str]:
    """argv of `synthct segment` (None = the command's default)."""
    args = ["segment", "--experiment", experiment]
    if synthetic and experiment != "real":
        args += ["--synthetic", check_name(synthetic, "synthetic set")]
    for flag, value in (
        ("--n-synthetic", n_synthetic), ("--epochs", epochs), ("--folds", folds), ("--size", size)
    ):  # fmt: skip
        if value:
            args += [flag, str(int(value))]
    if name:
        args += ["--name", check_name(name, "experiment name")]
    if device != "auto":
        args += ["--device", device]
    return args


def preprocess_args(cfg: Any) -> list[str]:
    """argv of the `synthct preprocess` that packs the arrays `cfg` (a DataConfig) reads."""
    from synthct.preprocess import preprocess_command  # deferred: loads scipy

    return preprocess_command(cfg).split()[1:]


def packed_ready(ws: Workspace, cfg: Any) -> bool:
    """Whether this workspace has the packed arrays of preprocessing config `cfg`."""
    from synthct.preprocess import MANIFEST, packed_dir  # deferred: loads scipy

    return (packed_dir(ws, cfg) / MANIFEST).is_file()


def train_choices(
    ws: Workspace, configs: list[Path]
) -> tuple[list[Path], dict[Path, tuple[str, Any]]]:
    """(configs that can run here, {config: (why not, the DataConfig it needs or None)} for
    the others). A run config can run when its data section's packed arrays exist; a broken
    file says what is wrong."""

    ready, blocked = [], {}
    for path in configs:
        try:
            data = load_run_config(path).data
        except Exception as e:  # noqa: BLE001 - any unreadable config is shown, not offered
            blocked[path] = (f"cannot be read: {e}", None)
            continue
        if packed_ready(ws, data):
            ready.append(path)
        else:
            blocked[path] = (f"needs `{' '.join(['synthct', *preprocess_args(data)])}`", data)
    return ready, blocked


def segment_sizes(ws: Workspace, sizes: tuple[int, ...] = (32, 64, 128, 256)) -> list[int]:
    """The sizes S a segmentation experiment (default recipe) can run at in this workspace."""

    return [s for s in sizes if packed_ready(ws, SegConfig(size=s).data_config())]


def hpo_args(
    grid: str | Path, metric: str = "fid", steps: int | None = None, prune_every: int | None = None
) -> list[str]:
    """argv of one `synthct hpo` worker (every worker of a study runs the same)."""
    if metric not in HPO_METRICS:
        raise ConfigError(f"ranking metric {metric!r} is not valid; expected one of {HPO_METRICS}")
    args = ["hpo", str(grid), "--metric", metric]
    if steps:
        args += ["--steps", str(int(steps))]
    if prune_every:
        args += ["--prune-every", str(int(prune_every))]
    return args


def config_files(ws: Workspace, hpo: bool = False) -> list[Path]:
    """Configs a researcher can pick from the project's configs/ and WS/configs/ (YAML): run
    configs, or (`hpo`) the grid and search files (named hpo*)."""
    found: list[Path] = []
    for folder in (REPO_ROOT / "configs", ws.configs):
        if folder.is_dir():
            found += sorted(p for p in folder.glob("*.yaml") if p.name.startswith("hpo") == hpo)
    return found


def executor_from_form(
    ws: Workspace,
    kind: str,
    *,
    partition: str = "",
    time_min: int | None = None,
    cpus_per_task: int | None = None,
    gpus_per_node: int | None = None,
    mem_gb: float | None = None,
    nodes: int | None = None,
    tasks_per_node: int | None = None,
):
    """ExecutorSettings from the page's executor fields (empty / 0 = WS/executor.yaml or the
    default); ConfigError names a bad value."""

    return resolve_settings(
        ws, None, kind=kind, partition=partition.strip() or None,
        time_min=time_min or None, cpus_per_task=cpus_per_task or None,
        gpus_per_node=gpus_per_node if kind == "slurm" else None, mem_gb=mem_gb or None,
        nodes=nodes or None, tasks_per_node=tasks_per_node or None,
    )  # fmt: skip


def jobs_frame(jobs: list[Any]) -> pd.DataFrame:
    """The jobs table: id, kind, status, progress (0-1), message, device, times, command."""
    rows = [
        {
            "id": j.id,
            "kind": j.kind,
            "status": j.status,
            "progress": float(j.progress or 0.0),
            "message": j.message or "",
            "device": j.device,
            "runs on": f"SLURM {j.external_id or '…'}" if j.executor == "slurm" else j.owner or "",
            "SLURM state": j.external_state or "",
            "created": j.created_at,
            "finished": j.finished_at,
            "command": "synthct " + " ".join(j.args),
            "result": j.result or "",
        }
        for j in jobs
    ]
    cols = ["id", "kind", "status", "progress", "message", "device", "runs on", "SLURM state",
            "created", "finished"]  # fmt: skip
    return pd.DataFrame(rows, columns=[*cols, "command", "result"])


# -- widgets --------------------------------------------------------------------------------------
def submit(
    ws: Workspace, kind: str, args: list[str], device: str = "auto", executor=None
) -> int | None:
    """Queue a job (on `executor`, default this machine) and report it on the page; returns
    its id (None after a refused request). A segmentation on SLURM becomes a job array of its
    folds and an ensemble job after them."""

    try:
        if executor is not None and executor.kind == "slurm" and kind == "segment":
            from synthct.commands.segment import segment_params  # optional dependency
            from synthct.executors.slurm import submit_segment  # optional dependency

            ids = submit_segment(ws, args, segment_params(args), executor)
        else:
            ids = [jobs.submit(ws, kind, args, device=device, executor=executor)]
    except SynthctError as e:
        st.error(str(e))
        return None
    st.session_state["jobs-selected"] = ids[-1]
    st.session_state["jobs-follow"] = ids[-1]  # the monitor switches to it on its next run
    where = " on SLURM" if executor is not None and executor.kind == "slurm" else ""
    numbers = ", ".join(map(str, ids))
    st.success(f"Job {numbers} submitted{where}: `synthct {' '.join(args)}`")
    return ids[-1]


def queue_frame(rows: list[dict[str, str]]) -> pd.DataFrame:
    """The cluster's queue (squeue rows of synthct's jobs) as a table."""

    return pd.DataFrame(rows, columns=list(QUEUE_FIELDS))


def cluster_queue() -> None:
    """squeue for synthct's jobs, when this machine is a SLURM client."""

    if not slurm.available():
        st.caption("No SLURM on this machine: jobs run in its own queue.")
        return
    try:
        rows = slurm.queue()
    except SynthctError as e:
        st.warning(f"SLURM does not answer: {e}")
        return
    if not rows:
        st.caption("No synthct job in the SLURM queue.")
        return
    st.dataframe(queue_frame(rows), hide_index=True, key="slurm-queue")


@st.fragment(run_every=2)
def job_monitor(ws: Workspace) -> None:
    """The live jobs table (reruns by itself every 2 s), with log tail and cancel."""

    try:
        jobs.pump(ws)
    except Exception as e:  # noqa: BLE001 - the table must still show when the scheduler fails
        st.warning(f"Could not advance the job queue: {e}")
    rows = jobs.list_jobs(ws, limit=50)
    if not rows:
        st.caption("No jobs yet.")
        return
    st.dataframe(
        jobs_frame(rows).drop(columns=["result"]),
        hide_index=True,
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0),
            "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
            "finished": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
        },
        key="jobs-table",
    )
    ids = [j.id for j in rows]
    follow = st.session_state.pop("jobs-follow", None)
    if follow in ids:  # a job was just submitted: show it, whatever was picked before
        st.session_state.pop("jobs-pick", None)  # the picker then starts at `index` below
        st.session_state["jobs-selected"] = follow
    selected = st.session_state.get("jobs-selected")
    index = ids.index(selected) if selected in ids else 0
    job_id = st.selectbox(
        "Job", ids, index=index, key="jobs-pick",
        format_func=lambda i: next(f"{i} · {j.kind} · {j.status}" for j in rows if j.id == i),
    )  # fmt: skip
    st.session_state["jobs-selected"] = job_id
    job = next(j for j in rows if j.id == job_id)
    c1, c2 = st.columns([3, 1])
    c1.caption(f"Job {job.id} · {job.kind} · {job.status}")
    if job.status == "failed":
        st.error(f"Job {job.id} failed: {job.message or '(no message)'}")
    elif job.message:
        c1.caption(job.message)
    if job.status in ("queued", "pending", "running", "cancelling") and c2.button(
        "Kill job" if job.status == "cancelling" else "Cancel job", key=f"cancel-{job.id}"
    ):
        try:
            jobs.cancel(ws, job.id, grace_s=2.0)
        except SynthctError as e:
            st.error(str(e))
        else:
            st.rerun()  # redraw the table with the new status
    if job.result:
        st.caption(f"Result: `{job.result}`")
    st.code(jobs.tail_log(job, 30) or "(no output yet)", language="text")


def study_view(ws: Workspace, name: str) -> None:
    """One HPO study: best so far, the trials, and Optuna's parallel-coordinate plot."""

    rows = trials_table(ws, name)
    done = [r for r in rows if r["state"] == "complete"]
    c1, c2, c3 = st.columns(3)
    c1.metric("Trials", len(rows))
    c2.metric("Completed", len(done))
    if done:
        best = min(done, key=lambda r: r["value"])
        c3.metric("Best so far", f"{best['value']:.4g}", help=f"run {best['run']}")
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="hpo-trials")
    if len(done) >= 2:
        st.plotly_chart(parallel_coordinates(ws, name), key="hpo-parallel")

"""Generate & jobs: launch generation, training, evaluation, segmentation and HPO as background
jobs — on this machine or on SLURM —, follow them live, cancel them, see the cluster's queue and
the HPO studies, and browse the synthetic sets with their dataset cards."""

import streamlit as st

from ui import auth

auth.require_researcher()

from synthct.errors import SynthctError  # noqa: E402
from synthct.estimates import bench_command, human, train_estimate  # noqa: E402
from synthct.executors import slurm  # noqa: E402
from ui import jobs as ui_jobs  # noqa: E402
from ui.state import workspace  # noqa: E402

ws = workspace()
st.title("Generate & jobs")

DEVICE_HELP = "auto = the GPU when one is visible, else the CPU. GPU jobs run one at a time."


def _sets() -> list[str]:
    return ws.list_sets()


EXECUTOR_HELP = (
    "local: this machine's job queue · slurm: a SLURM job with the resources below (the "
    "workspace must be on storage the nodes share); near its time limit a training job "
    "checkpoints, requeues itself and resumes"
)


def _executor():
    """The executor chosen at the top of the page (None after a bad value, with an error)."""
    with st.expander("Where jobs run", expanded=False):
        kinds = ["local", "slurm"] if slurm.available() else ["local"]
        kind = st.radio("Executor", kinds, horizontal=True, key="exec-kind", help=EXECUTOR_HELP)
        fields = {}
        if kind == "slurm":
            c1, c2, c3, c4 = st.columns(4)
            fields = dict(
                partition=c1.text_input("Partition (empty = default)", key="exec-partition"),
                time_min=c2.number_input("Time limit (min)", 1, 60 * 24 * 30, 60, key="exec-time"),
                cpus_per_task=c3.number_input("CPUs per task", 1, 256, 1, key="exec-cpus"),
                gpus_per_node=c4.number_input("GPUs per node", 0, 16, 0, key="exec-gpus"),
                mem_gb=c1.number_input("Memory GB (0 = default)", 0.0, 4096.0, 0.0, key="exec-mem"),
                nodes=c2.number_input("Nodes (training)", 1, 128, 1, key="exec-nodes"),
                tasks_per_node=c3.number_input(
                    "Tasks per node (0 = one per GPU)", 0, 64, 0, key="exec-tasks"
                ),
            )  # fmt: skip
    try:
        return ui_jobs.executor_from_form(ws, kind, **fields)
    except SynthctError as e:
        st.error(str(e))
        return None


executor = _executor()
tab_gen, tab_train, tab_eval, tab_seg, tab_hpo, tab_prep = st.tabs(
    ["Generate", "Train", "Evaluate", "Segment", "HPO", "Preprocess"]
)


def _train_estimates(configs) -> None:
    """How long each runnable config's training takes on a CPU, where it was benchmarked."""
    rows, unmeasured, basis = [], [], ""
    for path in configs:
        est = train_estimate(path)
        if est is None:
            unmeasured.append(path)
        else:
            rows.append(f"| `{path.name}` | {est.steps:,} | {human(est.seconds)} |")
            basis = est.basis
    with st.expander("Time estimates"):
        if rows:  # a Markdown table: the page's first dataframe stays the jobs table
            st.markdown("\n".join(["| config | steps | CPU time |", "|---|---|---|", *rows]))
            st.caption(f"Measured on {basis}; a GPU is many times faster.")
        for path in unmeasured:
            st.caption(f"`{path.name}`: not benchmarked; measure it with `{bench_command(path)}`")


def _preprocess_button(cfg, key: str) -> None:
    """A button that queues the `synthct preprocess` job `cfg` (a DataConfig) needs."""
    if st.button(f"Preprocess S={cfg.size} in the background", key=key):
        ui_jobs.submit(ws, "preprocess", ui_jobs.preprocess_args(cfg), "cpu")


with tab_gen:
    runs = [r for r in ws.list_runs() if any((ws.run_dir(r) / "checkpoints").glob("step-*.pt"))]
    if not runs:
        st.info("No run with a checkpoint yet: train one on the **Train** tab.")
    else:
        from synthct.checkpoint import list_checkpoints

        run = st.selectbox("Run", runs, key="gen-run")
        steps = [step for step, _ in list_checkpoints(ws.run_dir(run))]
        with st.form("generate"):
            c1, c2, c3 = st.columns(3)
            checkpoint = c1.selectbox(
                "Checkpoint", ["latest", *map(str, reversed(steps))], key="gen-ckpt"
            )
            n = c2.number_input("Number of cases", 1, 10000, 8, key="gen-n")
            seed = c3.number_input("Seed", 0, 2**31 - 1, 0, key="gen-seed")
            out = c1.text_input("Set name", value=f"{run}-set", key="gen-out")
            mask_mode = c2.selectbox(
                "Mask postprocessing", ui_jobs.MASK_MODES, key="gen-mask",
                help="binary: mask > 0 · largest: keep the largest connected component · "
                "min-size: drop components smaller than K voxels",
            )  # fmt: skip
            min_size = c3.number_input("K (min-size, voxels)", 1, 100000, 20, key="gen-k")
            empty = c1.selectbox(
                "Empty masks", ["keep", "drop", "resample"], key="gen-empty",
                help="keep them, drop those cases, or redraw new seeds until the mask is non-empty",
            )  # fmt: skip
            device = c2.selectbox("Device", ui_jobs.DEVICES, key="gen-device", help=DEVICE_HELP)
            ema = c3.toggle("EMA generator", value=True, key="gen-ema")
            go = st.form_submit_button("Generate in the background", type="primary")
        if go:
            try:
                args = ui_jobs.generate_args(
                    run, int(n), out.strip(), checkpoint=checkpoint, seed=int(seed),
                    device=device, ema=ema, empty_masks=empty,
                    mask_postprocess=ui_jobs.mask_postprocess_spec(mask_mode, int(min_size)),
                )  # fmt: skip
            except SynthctError as e:
                st.error(str(e))
            else:
                ui_jobs.submit(ws, "generate", args, device, executor)

with tab_train:
    configs, blocked = ui_jobs.train_choices(ws, ui_jobs.config_files(ws))
    if blocked:
        with st.expander(f"{len(blocked)} config(s) cannot run in this workspace yet"):
            for path, (why, _) in blocked.items():
                st.markdown(f"- `{path.name}` {why}")
            needed = {tuple(ui_jobs.preprocess_args(d)): d for _, d in blocked.values() if d}
            for i, cfg in enumerate(needed.values()):
                _preprocess_button(cfg, f"train-prep-{i}")
    if not configs:
        st.info(
            "No run config can run here yet: each needs its data preprocessed first (the "
            "**Preprocess** tab, or the commands above)."
        )
    else:
        with st.form("train"):
            config = st.selectbox(
                "Run config", configs, format_func=lambda p: p.name, key="train-config"
            )
            c1, c2, c3 = st.columns(3)
            name = c1.text_input("Run name", value="", key="train-run", placeholder="config name")
            steps = c2.number_input("Steps (0 = as in the config)", 0, 10**7, 0, key="train-steps")
            device = c3.selectbox("Device", ui_jobs.DEVICES, key="train-device", help=DEVICE_HELP)
            go = st.form_submit_button("Train in the background", type="primary")
        _train_estimates(configs)
        if go:
            try:
                args = ui_jobs.train_args(config, name.strip() or config.stem, int(steps) or None)
            except SynthctError as e:
                st.error(str(e))
            else:
                ui_jobs.submit(ws, "train", args, device, executor)

with tab_eval:
    sets = _sets()
    if not sets:
        st.info("No synthetic sets yet.")
    else:
        with st.form("evaluate"):
            c1, c2, c3 = st.columns(3)
            syn = c1.selectbox("Synthetic set", sets, key="eval-set")
            real = c2.selectbox("Real split", ["test", "val", "train", "all"], key="eval-real")
            extractor = c3.selectbox(
                "Feature extractor", ["default", "medicalnet", "random"], key="eval-ex",
                help="default: an encoder trained on this workspace's train split (offline) · "
                "medicalnet: MedicalNet ResNet-50, weights file inside the workspace",
            )  # fmt: skip
            weights = st.text_input(
                "MedicalNet weights (path inside the workspace)", key="eval-weights"
            )
            go = st.form_submit_button("Evaluate in the background", type="primary")
        if go:
            try:
                path = str(ws.confine(weights.strip())) if weights.strip() else None
                args = ui_jobs.evaluate_args(syn, real, extractor, path)
            except SynthctError as e:
                st.error(str(e))
            else:
                ui_jobs.submit(ws, "evaluate", args, "auto", executor)

with tab_seg:
    from synthct.segment.experiments import EXPERIMENTS

    seg_sizes = ui_jobs.segment_sizes(ws)
    if not seg_sizes:
        from synthct.segment.recipe import SegConfig

        st.info(
            "Segmentation needs the real cases preprocessed at its size S (binary mask, the "
            "default spacing and HU window); none is yet."
        )
        _preprocess_button(SegConfig(size=32).data_config(), "seg-prep")
    with st.form("segment"):
        c1, c2, c3 = st.columns(3)
        experiment = c1.selectbox("Experiment", EXPERIMENTS, key="seg-exp")
        syn = c2.selectbox("Synthetic set (not for 'real')", ["—", *_sets()], key="seg-set")
        n_syn = c3.number_input("Synthetic pairs (0 = all)", 0, 100000, 0, key="seg-nsyn")
        name = c1.text_input("Experiment name (empty = automatic)", key="seg-name")
        epochs = c2.number_input("Epochs per fold", 1, 10000, 300, key="seg-epochs")
        folds = c3.number_input("Folds", 2, 10, 5, key="seg-folds")
        size = c1.selectbox(
            "Size S", seg_sizes, key="seg-size",
            help="Only sizes whose preprocessed data exist here (Preprocess tab for others).",
        )  # fmt: skip
        device = c2.selectbox("Device", ui_jobs.DEVICES, key="seg-device", help=DEVICE_HELP)
        go = st.form_submit_button(
            "Segment in the background", type="primary", disabled=not seg_sizes
        )
    if go and size is not None:
        try:
            args = ui_jobs.segment_args(
                experiment, None if syn == "—" else syn, name=name.strip() or None,
                n_synthetic=int(n_syn) or None, epochs=int(epochs), folds=int(folds),
                size=int(size), device=device,
            )  # fmt: skip
        except SynthctError as e:
            st.error(str(e))
        else:
            ui_jobs.submit(ws, "segment", args, device, executor)

with tab_hpo:
    grids = ui_jobs.config_files(ws, hpo=True)
    if not grids:
        st.info("No HPO grid or search files (hpo*.yaml) in configs/ or the workspace's configs/.")
    else:
        with st.form("hpo"):
            grid = st.selectbox(
                "Grid or search", grids, format_func=lambda p: p.name, key="hpo-grid"
            )
            c1, c2, c3, c4 = st.columns(4)
            metric = c1.selectbox("Ranking metric", ui_jobs.HPO_METRICS, key="hpo-metric",
                                  help="fid: FID on the validation split (never test) · hu_w1: "
                                  "a cheap HU-histogram proxy")  # fmt: skip
            steps = c2.number_input("Steps per run (0 = config)", 0, 10**7, 0, key="hpo-steps")
            workers = c3.number_input("Workers", 1, 64, 1, key="hpo-workers")
            prune = c4.number_input("Prune every N steps (0 = off)", 0, 10**7, 0, key="hpo-prune")
            go = st.form_submit_button("Start workers in the background", type="primary")
        if go:
            try:
                args = ui_jobs.hpo_args(grid, metric, int(steps) or None, int(prune) or None)
            except SynthctError as e:
                st.error(str(e))
            else:
                for _ in range(int(workers)):
                    ui_jobs.submit(ws, "hpo", args, "auto", executor)
    from synthct.hpo_study import list_studies

    studies = list_studies(ws)
    if studies:
        ui_jobs.study_view(ws, st.selectbox("Study", studies, key="hpo-study"))

with tab_prep:
    from synthct.config import DataConfig

    st.caption(
        "Crop, resample and pack the ingested real cases at size S (S×S×S/2 image + mask). "
        "Training and segmentation read these packed arrays; cases already packed are skipped."
    )
    with st.form("preprocess"):
        c1, c2 = st.columns(2)
        p_size = c1.selectbox("Size S", [32, 64, 128, 256], index=2, key="prep-size")
        p_mask = c2.selectbox("Mask", ["binary", "multiclass"], key="prep-mask")
        go = st.form_submit_button("Preprocess in the background", type="primary")
    if go:
        ui_jobs.submit(
            ws, "preprocess", ui_jobs.preprocess_args(DataConfig(size=p_size, mask=p_mask)), "cpu"
        )

st.subheader("Jobs")
ui_jobs.job_monitor(ws)

st.subheader("Cluster queue")
ui_jobs.cluster_queue()

st.subheader("Synthetic sets")
sets = _sets()
if not sets:
    st.caption("No synthetic sets yet.")
else:
    from synthct.sets import read_datacard

    cards = {s: read_datacard(ws.synthetic_dir(s), cases=False) for s in sets}
    st.dataframe(
        [
            {
                "set": s,
                "created": c.created,
                "model": f"{c.model.kind} S={c.model.size}",
                "run": c.run,
                "checkpoint step": c.checkpoint.step if c.checkpoint else None,
                "cases": c.n_written,
                "mask postprocess": c.postprocess.get("mask"),
                "evaluations": len(c.metrics),
            }
            for s, c in cards.items()
        ],
        hide_index=True,
    )
    chosen = st.selectbox("Dataset card", sets, key="gen-card")
    from ui.sets import set_download

    set_download(ws, chosen)
    st.json(cards[chosen].to_json(lists=False), expanded=1)

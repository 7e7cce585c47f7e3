"""AppTest: Generate & jobs — the forms submit real background jobs that appear in the jobs table,
finish (generation) or are cancelled (training); the argv builders parse with the real CLI."""

from __future__ import annotations

import time

import pytest
from streamlit.testing.v1 import AppTest

from synthct import jobs
from tests.app.helpers import APP
from tests.app.tiny_workspace import RUN, SET
from ui import jobs as ui_jobs


def _page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/generate.py").run()
    assert not at.exception, at.exception
    return at


def _wait(ws, job_id: int, statuses=("done", "failed", "cancelled"), timeout: float = 180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs.pump(ws)
        job = jobs.get_job(ws, job_id)
        if job.status in statuses:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job.status}; log:\n{jobs.tail_log(job)}")


def test_generate_form_runs_a_job_that_writes_the_set(tiny_ws):
    at = _page()
    at.selectbox(key="gen-run").set_value(RUN).run()
    at.number_input(key="gen-n").set_value(3)
    at.number_input(key="gen-seed").set_value(5)
    at.text_input(key="gen-out").input("from-app")
    at.selectbox(key="gen-mask").set_value("largest")
    at.selectbox(key="gen-device").set_value("cpu")
    at.toggle(key="gen-ema").set_value(False)
    at.button(key="FormSubmitter:generate-Generate in the background").click().run()
    assert not at.exception, at.exception
    assert any("submitted" in s.value for s in at.success)

    table = at.dataframe[0].value
    row = table.iloc[0]
    assert row["kind"] == "generate" and row["device"] == "cpu"
    job_id = int(row["id"])
    job = _wait(tiny_ws, job_id)
    assert job.status == "done", jobs.tail_log(job)

    from synthct.sets import load_datacard

    card = load_datacard(tiny_ws.synthetic_dir("from-app"))
    assert card["counts"]["written"] == 3 and card["base_seed"] == 5
    assert card["checkpoint"]["ema"] is False
    assert card["postprocess"]["mask"] == "largest"
    # the page lists the new set with its datacard, and the job as done
    at.run()
    sets = at.dataframe[-1].value
    assert {"from-app", SET} <= set(sets["set"])
    assert at.dataframe[0].value.iloc[0]["status"] == "done"


def test_train_job_is_shown_live_and_cancelled(tiny_ws):
    cfg = (tiny_ws.run_dir(RUN) / "config.yaml").read_text()
    (tiny_ws.root / "configs").mkdir()
    (tiny_ws.root / "configs" / "long.yaml").write_text(cfg.replace("steps: 6", "steps: 100000"))
    at = _page()
    at.selectbox(key="train-config").set_value(tiny_ws.root / "configs" / "long.yaml")
    at.text_input(key="train-run").input("long-run")
    at.selectbox(key="train-device").set_value("cpu")
    at.button(key="FormSubmitter:train-Train in the background").click().run()
    job_id = int(at.dataframe[0].value.iloc[0]["id"])
    _wait(tiny_ws, job_id, statuses=("running",), timeout=30)
    at.run()
    assert at.button(key=f"cancel-{job_id}")
    at.button(key=f"cancel-{job_id}").click().run()
    assert jobs.get_job(tiny_ws, job_id).status == "cancelled"
    assert at.dataframe[0].value.iloc[0]["status"] == "cancelled"


def _parse(args: list[str]) -> dict:
    """The parameters the real `synthct` CLI parses from `args` (raises on unknown flags)."""
    from typer.main import get_command

    from synthct.cli import app

    group = get_command(app)
    cmd = group.get_command(
        group.make_context("synthct", list(args), resilient_parsing=True), args[0]
    )
    return cmd.make_context(args[0], list(args[1:])).params


def test_argv_builders_parse_with_the_cli():
    p = _parse(
        ui_jobs.generate_args(
            "r1", 4, "s1", checkpoint=10, seed=3, device="cpu", ema=False,
            mask_postprocess=ui_jobs.mask_postprocess_spec("min-size", 20), empty_masks="drop",
        )
    )  # fmt: skip
    assert (p["run"], p["n"], p["out"], p["checkpoint"], p["seed"]) == ("r1", 4, "s1", "10", 3)
    assert (p["device"], p["ema"], p["mask_postprocess"], p["empty_masks"]) == (
        "cpu", False, "min-size:20", "drop"
    )  # fmt: skip
    p = _parse(ui_jobs.train_args("configs/x.yaml", "r2", steps=50))
    assert str(p["config"]) == "configs/x.yaml" and p["run"] == "r2" and p["steps"] == 50
    p = _parse(ui_jobs.evaluate_args("s1", "val", "random"))
    assert (p["synthetic"], p["real"], p["extractor"]) == ("s1", "val", "random")
    p = _parse(
        ui_jobs.segment_args("mixed", "s1", name="e1", n_synthetic=5, epochs=2, folds=3, size=32)
    )
    assert (p["experiment"], p["synthetic"], p["name"], p["n_synthetic"]) == (
        "mixed",
        "s1",
        "e1",
        5,
    )
    assert (p["epochs"], p["folds"], p["size"]) == (2, 3, 32)


def test_argv_builders_refuse_bad_input():
    from synthct.errors import ConfigError, WorkspaceError

    with pytest.raises(WorkspaceError, match="set name"):
        ui_jobs.generate_args("r1", 2, "../escape")
    with pytest.raises(ConfigError, match="device"):
        ui_jobs.generate_args("r1", 2, "ok", device="tpu")
    with pytest.raises(ConfigError, match="minimum component size"):
        ui_jobs.mask_postprocess_spec("min-size", 0)


def test_monitor_follows_the_job_just_submitted(tiny_ws):
    first = jobs.submit(tiny_ws, "other", ["jobs", "sleep", "0"], device="cpu")
    at = _page()
    at.selectbox(key="jobs-pick").set_value(first).run()
    assert at.selectbox(key="jobs-pick").value == first
    at.selectbox(key="prep-size").set_value(32)
    at.button(key="FormSubmitter:preprocess-Preprocess in the background").click().run()
    assert not at.exception, at.exception
    new = int(at.dataframe[0].value.iloc[0]["id"])
    assert new != first and jobs.get_job(tiny_ws, new).kind == "preprocess"
    assert at.selectbox(key="jobs-pick").value == new  # not the job picked before
    assert any(f"Job {new} · preprocess" in c.value for c in at.caption)
    at.run()  # and it stays on it
    assert at.selectbox(key="jobs-pick").value == new


def test_a_failed_job_shows_its_whole_message(tiny_ws):
    name = "a-set-that-does-not-exist-and-whose-name-is-long-enough"
    job_id = jobs.submit(tiny_ws, "zip", ["set", "zip", name], device="cpu")
    job = _wait(tiny_ws, job_id)
    assert job.status == "failed" and name in job.message and len(job.message) > 80
    at = _page()
    at.selectbox(key="jobs-pick").set_value(job_id).run()
    assert any(e.value == f"Job {job_id} failed: {job.message}" for e in at.error)


def test_only_what_can_run_here_is_offered(tiny_ws):
    from synthct.segment.recipe import SegConfig

    cfg = (tiny_ws.run_dir(RUN) / "config.yaml").read_text()
    (tiny_ws.root / "configs").mkdir()
    (tiny_ws.root / "configs" / "here.yaml").write_text(cfg)  # S = 32: preprocessed here
    at = _page()
    offered = at.selectbox(key="train-config").options
    assert "here.yaml" in offered
    assert "hagan-128.yaml" not in offered  # S = 128 was never preprocessed in this workspace
    assert any("hagan-128.yaml" in m.value and "synthct preprocess --size 128" in m.value
               for m in at.markdown)  # fmt: skip
    assert at.selectbox(key="seg-size").options == ["32"]  # only S = 32 is preprocessed
    # the preprocessing a blocked config needs is offered as a job
    at.button(key="train-prep-0").click().run()
    assert not at.exception, at.exception
    job = jobs.list_jobs(tiny_ws, limit=1)[0]
    assert job.kind == "preprocess" and job.args[:3] == ["preprocess", "--size", "128"]
    jobs.cancel(tiny_ws, job.id, grace_s=2.0)
    assert ui_jobs.packed_ready(tiny_ws, SegConfig(size=32).data_config())
    assert not ui_jobs.packed_ready(tiny_ws, SegConfig(size=64).data_config())


def test_train_tab_estimates_benchmarked_configs_and_names_the_command_for_others(tiny_ws):
    from synthct.estimates import human, train_estimate

    cfg = (tiny_ws.run_dir(RUN) / "config.yaml").read_text()
    (tiny_ws.root / "configs").mkdir()
    (tiny_ws.root / "configs" / "here.yaml").write_text(cfg)  # runnable, never benchmarked
    at = _page()
    offered = at.selectbox(key="train-config").options
    measured = [n for n in offered if n != "here.yaml" and train_estimate(f"configs/{n}")]
    assert measured, offered  # a shipped, benchmarked config runs on the tiny workspace
    table = next(m.value for m in at.markdown if "| CPU time |" in m.value)
    for name in measured:
        est = train_estimate(f"configs/{name}")
        assert f"| `{name}` | {est.steps:,} | {human(est.seconds)} |" in table
    assert "here.yaml" not in table
    assert any("here.yaml" in c.value and "synthct bench train --config" in c.value
               for c in at.caption)  # fmt: skip

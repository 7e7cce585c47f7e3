"""AppTest: Generate & jobs — the executor choice sends a job to SLURM and the cluster's queue
shows synthct's jobs; the HPO tab starts workers and shows the study (trials, best so far,
parallel coordinates)."""

from __future__ import annotations

import pytest
import yaml
from streamlit.testing.v1 import AppTest

from synthct import jobs
from synthct.executors.settings import ExecutorSettings
from tests.app.helpers import APP
from tests.app.tiny_workspace import RUN


def _page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/generate.py").run()
    assert not at.exception, at.exception
    return at


@pytest.mark.slurm
def test_a_training_job_goes_to_slurm_and_the_queue_shows_synthct_jobs(tiny_ws, slurm_cluster):
    config = tiny_ws.root / "configs" / "short.yaml"
    config.parent.mkdir()
    config.write_text((tiny_ws.run_dir(RUN) / "config.yaml").read_text())
    at = _page()
    at.radio(key="exec-kind").set_value("slurm").run()
    at.number_input(key="exec-time").set_value(10)
    at.number_input(key="exec-cpus").set_value(1)
    at.selectbox(key="train-config").set_value(config)
    at.text_input(key="train-run").input("app-slurm")
    at.button(key="FormSubmitter:train-Train in the background").click().run()
    assert not at.exception, at.exception
    row = at.dataframe[0].value.iloc[0]
    assert row["kind"] == "train" and row["runs on"].startswith("SLURM ")
    job = jobs.wait(tiny_ws, int(row["id"]), timeout=300, poll_s=1.0)
    assert job.status == "done" and job.executor == "slurm", jobs.tail_log(job, 40)
    assert job.resources["time_min"] == 10 and job.resources["cpus_per_task"] == 1

    sleeper = jobs.submit(tiny_ws, "test", ["jobs", "sleep", "120"],
                          executor=ExecutorSettings(kind="slurm", time_min=5))  # fmt: skip
    try:
        external = jobs.get_job(tiny_ws, sleeper).external_id
        at.run()
        queues = [d.value for d in at.dataframe if "time_limit" in d.value.columns]
        assert queues and external in set(queues[0]["job_id"])
        line = queues[0][queues[0]["job_id"] == external].iloc[0]
        assert line["name"] == f"synthct-test-{sleeper}"
    finally:
        jobs.cancel(tiny_ws, sleeper, grace_s=10)


def test_the_hpo_tab_starts_a_worker_and_shows_the_study(tiny_ws):
    cfg = yaml.safe_load((tiny_ws.run_dir(RUN) / "config.yaml").read_text())
    cfg["train"].update(steps=2, snapshot_every=0, collapse_every=0)
    folder = tiny_ws.root / "configs"
    folder.mkdir()
    (folder / "base.yaml").write_text(yaml.safe_dump(cfg))
    grid = {"name": "app-grid", "base": "base.yaml",
            "stages": [{"grid": {"model.lr_g": [1.0e-4, 3.0e-4]}}]}  # fmt: skip
    (folder / "hpo-app.yaml").write_text(yaml.safe_dump(grid))
    at = _page()
    at.selectbox(key="hpo-grid").set_value(folder / "hpo-app.yaml")
    at.selectbox(key="hpo-metric").set_value("hu_w1")
    at.button(key="FormSubmitter:hpo-Start workers in the background").click().run()
    assert not at.exception, at.exception
    job_id = int(at.dataframe[0].value.iloc[0]["id"])
    job = jobs.wait(tiny_ws, job_id, timeout=300, poll_s=0.5)
    assert job.status == "done", jobs.tail_log(job, 40)
    at.run()
    assert at.selectbox(key="hpo-study").value == "app-grid"
    trials = at.dataframe[0].value
    assert list(trials["run"]) == ["app-grid-01", "app-grid-02"]
    assert set(trials["state"]) == {"complete"}
    assert trials["best so far"].iloc[-1] == trials["value"].min()
    assert [m.value for m in at.metric][:2] == ["2", "2"]
    assert at.get("plotly_chart")  # the parallel-coordinate plot

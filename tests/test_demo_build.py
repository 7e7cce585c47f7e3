"""The demo build in stages: an interrupted build resumes, the slow stages run as background
jobs, and the first page shows the demo study's links to researchers only (tiny settings)."""

from __future__ import annotations

import time

import pytest
from streamlit.testing.v1 import AppTest

from synthct.demo import (
    DEMO_STUDY,
    STAGES,
    DemoConfig,
    build_demo,
    first_start_needed,
    pending_stages,
    stage_done,
)
from tests.app.helpers import APP

FOREGROUND = [st.name for st in STAGES if not st.background]
BACKGROUND = [st.name for st in STAGES if st.background]


class Interrupted(Exception):
    """Stands in for a closed tab or Ctrl-C in the middle of a build."""


def interrupt_at(label: str):
    def progress(fraction: float, message: str) -> None:
        if message == label:
            raise Interrupted(message)

    return progress


def test_slow_stages_are_background_and_not_needed_for_browse():
    assert BACKGROUND == ["evaluate", "segment"]
    assert FOREGROUND[-2:] == ["generate", "study"]


@pytest.mark.slow
def test_interrupted_build_resumes_where_it_stopped(workspace, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert first_start_needed(workspace)  # empty workspace: the app builds the demo
    with pytest.raises(Interrupted):
        build_demo(workspace, DemoConfig.tiny(), interrupt_at("Generating a synthetic set"))
    assert workspace.case_index.exists()  # ingested: the old gate would never have resumed
    assert first_start_needed(workspace)
    assert pending_stages(workspace, background=False) == ["generate", "study"]
    markers = {n: (workspace.demo_state / f"{n}.json").read_bytes() for n in FOREGROUND[:4]}

    # The next start resumes with the settings the first build recorded (tiny, S = 32), even
    # when it is asked for others, and runs only the stages that were missing.
    result = build_demo(workspace, DemoConfig(), background="skip")
    assert set(result.seconds) == {"Generating a synthetic set", "Creating the demo study"}
    assert {n: (workspace.demo_state / f"{n}.json").read_bytes() for n in markers} == markers
    assert not first_start_needed(workspace)
    assert pending_stages(workspace) == BACKGROUND
    from synthct.sets import load_datacard

    card = load_datacard(workspace.synthetic_dir("demo-set"))
    assert card["counts"]["written"] == DemoConfig.tiny().n_synthetic
    assert len(result.invite_links) == 2

    again = build_demo(workspace, background="skip")
    assert again.seconds == {} and again.invite_links == {}


def test_user_workspace_is_never_turned_into_a_demo(workspace):
    from synthct.workspace import atomic_write_json

    atomic_write_json(workspace.case_index, {"cases": []})  # the researcher's own data
    assert not first_start_needed(workspace)


def wait_for_jobs(ws, ids, timeout=600.0):
    from synthct import jobs

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = {j.id: j for j in jobs.list_jobs(ws)}
        if all(rows[i].status in ("done", "failed", "cancelled") for i in ids):
            return rows
        time.sleep(1.0)
    raise TimeoutError(f"jobs {ids} still running after {timeout} s")


@pytest.mark.slow
def test_slow_stages_run_as_background_jobs(workspace, monkeypatch):
    from synthct import jobs
    from synthct.demo import stage_job, submit_background
    from synthct.workspace import read_json

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("SYNTHCT_WORKSPACE", str(workspace.root))
    monkeypatch.delenv("SYNTHCT_DATABASE_URL", raising=False)
    result = build_demo(workspace, DemoConfig.tiny(), background="jobs")
    # Browse's data is there when the build returns; the slow stages did not run in it
    assert not first_start_needed(workspace)
    assert not {"Evaluating the synthetic set", "Training a small segmenter"} & set(result.seconds)
    assert sorted(result.jobs) == BACKGROUND
    rows = {j.id: j for j in jobs.list_jobs(workspace)}
    for name, job_id in result.jobs.items():
        assert rows[job_id].kind == "demo"
        assert rows[job_id].args == ["demo", "--stage", name]
        assert stage_job(workspace, name).id == job_id
    assert submit_background(workspace) == {}  # queued or running jobs are not submitted twice

    rows = wait_for_jobs(workspace, list(result.jobs.values()))
    assert [rows[i].status for i in result.jobs.values()] == ["done", "done"], [
        rows[i].message for i in result.jobs.values()
    ]
    assert all(stage_done(workspace, n) for n in BACKGROUND)
    assert len(list(workspace.evals.glob("*/metrics.json"))) == 1
    assert read_json(workspace.segmentation / "real" / "results.json")["experiment"] == "real"
    assert submit_background(workspace, retry_ended=True) == {}  # nothing left to do


@pytest.fixture
def built_demo(workspace, monkeypatch):
    """A tiny demo with its foreground stages done (background stages left out)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    build_demo(workspace, DemoConfig.tiny(), background="skip")
    return workspace


def _no_background_jobs(monkeypatch):
    """The app would submit the background stages: record the call instead of starting them."""
    import synthct.demo

    calls = []
    monkeypatch.setattr(
        synthct.demo, "submit_background", lambda ws, retry_ended=False: calls.append(ws) or {}
    )
    return calls


@pytest.mark.slow
def test_first_page_shows_the_demo_and_its_links_to_researchers(built_demo, monkeypatch):
    from synthct.demo import invite_links

    calls = _no_background_jobs(monkeypatch)
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    assert at.title[0].value == "Browse"
    about = [e for e in at.expander if e.label == "About this demo workspace"]
    assert len(about) == 1
    text = " ".join(m.value for m in about[0].markdown)
    assert "built-in demo" in text and DEMO_STUDY in text
    shown = [c.value for c in about[0].code]
    links = invite_links(built_demo, "http://localhost:8501")
    assert len(links) == 2 and len(shown) == 2
    tokens = sorted(link.split("token=")[1] for link in links.values())
    assert sorted(c.split("token=")[1] for c in shown) == tokens
    assert calls  # the pending background stages were handed to the job queue


@pytest.mark.slow
def test_raters_never_see_the_demo_notice_or_links(built_demo, monkeypatch):
    from synthct.demo import saved_tokens

    _no_background_jobs(monkeypatch)
    tokens = saved_tokens(built_demo)
    assert len(tokens) == 2
    for token in tokens.values():
        at = AppTest.from_file(APP, default_timeout=120)
        at.query_params["token"] = token
        at.run()
        assert not at.exception
        assert not [e for e in at.expander if e.label == "About this demo workspace"]
        page = " ".join(
            str(getattr(el, "value", "")) for el in (*at.markdown, *at.code, *at.caption)
        )
        assert all(t not in page for t in tokens.values())
        assert "built-in demo" not in page

"""Real browser, first start: an empty workspace whose demo build was asked for tiny settings
(the build reads WS/demo/settings.json) becomes a usable Browse with a real and a synthetic case;
the evaluation and the segmenter are background jobs shown in Generate & jobs, and the first page
shows what the demo is and the demo raters' links."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Server, wait_idle

FRAME = 'iframe[title="ui.viewer.niivue_viewer"]'


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    from synthct.demo import DemoConfig, save_settings
    from synthct.workspace import Workspace

    ws = Workspace.resolve(tmp_path / "ws").ensure()
    save_settings(ws, DemoConfig.tiny())  # no data yet: the app's first start builds it
    monkeypatch.setenv("SYNTHCT_MAX_CPU_JOBS", "1")
    srv = Server(ws)
    yield ws, srv
    from synthct import jobs

    for job in jobs.list_jobs(ws):
        if job.status in ("queued", "running"):
            jobs.cancel(ws, job.id, grace_s=2)
    srv.stop()


def test_first_start_opens_browse_and_queues_the_slow_parts(fresh, browser):
    from synthct import jobs
    from synthct.demo import invite_links, pending_stages

    ws, server = fresh
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.set_default_timeout(30_000)
    page.goto(server.url)
    page.get_by_text("First start: building the demo workspace").wait_for(timeout=60_000)
    frame = page.frame_locator(FRAME)
    frame.locator('#root[data-ready="true"]').wait_for(timeout=300_000)
    titles = frame.locator(".pane .title").all_inner_texts()
    assert len(titles) == 2
    assert titles[0].startswith("Real") and titles[1].startswith("Synthetic")

    assert pending_stages(ws, background=False) == []
    rows = {tuple(j.args): j for j in jobs.list_jobs(ws)}
    assert set(rows) == {("demo", "--stage", "evaluate"), ("demo", "--stage", "segment")}
    assert {j.kind for j in rows.values()} == {"demo"}
    segment_job = rows[("demo", "--stage", "segment")].id

    about = page.locator('[data-testid="stExpander"]').filter(has_text="About this demo workspace")
    about.wait_for()
    wait_idle(page)
    details = about.locator('[data-testid="stExpanderDetails"]')
    assert details.is_visible(), "the session that watched the build sees the notice open"
    body = details.inner_text()
    assert "built-in demo" in body
    links = invite_links(ws, server.url)
    assert len(links) == 2 and all(link in body for link in links.values())

    page.goto(f"{server.url}/generate")  # the newest job is the one the monitor shows first
    page.get_by_text(f"Job {segment_job} ·").wait_for(timeout=60_000)
    page.close()

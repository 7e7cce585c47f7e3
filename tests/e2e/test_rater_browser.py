"""Real browser: a rater rates a whole study through the invite link, reloads midway and resumes
at the right case; the database holds exactly those answers; nothing on the page or in its image
URLs names a case, a file or a source."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import Server, shot, wait_idle


@pytest.fixture(scope="module")
def server(demo):
    ws, _ = demo
    srv = Server(ws)
    yield srv
    srv.stop()


def _case_position(page) -> tuple[int, int]:
    text = page.get_by_text(re.compile(r"Case \d+ of \d+")).first.inner_text()
    a, b = re.search(r"Case (\d+) of (\d+)", text).groups()
    return int(a), int(b)


def _study_rows(ws, rater_name: str):
    from db.ratings import ratings_of_study
    from db.session import database_url, make_engine, session_scope
    from db.studies import list_studies

    engine = make_engine(database_url(ws.database))
    with session_scope(engine) as s:
        rows = []
        for study in list_studies(s):
            rows += [r for r in ratings_of_study(s, study.id) if r["rater"] == rater_name]
    engine.dispose()
    return rows


def _secrets(ws) -> list[str]:
    """Everything that must never reach a rater: case ids, file names, source labels."""
    from db.session import database_url, make_engine, session_scope
    from db.studies import list_studies, study_cases

    engine = make_engine(database_url(ws.database))
    out = set()
    with session_scope(engine) as s:
        for study in list_studies(s):
            for c in study_cases(s, study.id):
                out |= {c.case_id, c.source, f"{c.case_id}__CT", f"{c.case_id}.nii"}
    engine.dispose()
    return sorted(v for v in out if v)


def test_rater_rates_everything_with_a_reload_midway(server, demo, page):
    ws, links = demo
    name, link = next(iter(links.items()))
    url = link.replace("http://localhost:8501", server.url)
    page.goto(url)
    wait_idle(page)
    page.get_by_text(re.compile(r"Case 1 of \d+")).wait_for()
    page.wait_for_selector('[data-testid="stImage"] img')
    shot(page, "turing_test")
    secrets = _secrets(ws)
    sent: list[int] = []
    position, total = _case_position(page)
    assert position == 1 and total >= 4
    while True:
        # (c) nothing identifying in the page or in the image URLs
        html = page.content()
        srcs = page.eval_on_selector_all(
            '[data-testid="stImage"] img', "els => els.map(e => e.src)"
        )
        assert len(srcs) == 1
        for secret in secrets:
            assert secret not in html, f"{secret!r} appears in the rater's page"
            assert all(secret not in s for s in srcs), f"{secret!r} appears in an image URL"
        body = page.request.get(srcs[0]).body()
        assert body[:8] == b"\x89PNG\r\n\x1a\n"
        assert not any(secret.encode() in body for secret in secrets)

        score = (3 * position) % 11
        thumb = page.get_by_role("slider").first
        thumb.focus()
        for _ in range(score + 1):  # from "–" to the score
            page.keyboard.press("ArrowRight")
        page.get_by_role("button", name="Send answer").click()
        sent.append(score)
        if position == total:
            page.get_by_text("All cases are rated").wait_for()
            break
        page.get_by_text(f"Case {position + 1} of {total}").wait_for()
        wait_idle(page)
        position += 1
        if position == total // 2 + 1:  # reload midway: the same case comes back
            page.reload()
            wait_idle(page)
            page.wait_for_selector('[data-testid="stImage"] img')
            assert _case_position(page) == (position, total)
    shot(page, "turing_test_done")
    rows = sorted(_study_rows(ws, name), key=lambda r: r["rater_position"])
    assert [r["score"] for r in rows] == sent
    assert len(rows) == total
    # a reload after the end shows the closing page, not a new case
    page.reload()
    wait_idle(page)
    page.get_by_text("All cases are rated").wait_for()
    assert len(_study_rows(ws, name)) == total


@pytest.mark.parametrize("path", ["browse", "dashboard", "generate", "studies"])
def test_rater_cannot_reach_researcher_pages(server, demo, page, path):
    """(b) with a valid token, any researcher URL shows only the rating page."""
    _, links = demo
    token = list(links.values())[-1].split("token=", 1)[1]
    page.goto(f"{server.url}/{path}?token={token}")
    wait_idle(page)
    page.get_by_role("heading", name="Visual Turing Test").wait_for()
    headings = page.eval_on_selector_all("h1", "els => els.map(e => e.innerText.trim())")
    assert not {"Browse", "Dashboard", "Generate & jobs", "Studies"} & set(headings)
    assert page.locator('[data-testid="stSidebarNav"]').count() == 0

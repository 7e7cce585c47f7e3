"""Real browser: a rater starts from the welcome page, rates a whole study through the invite link
(scale 0–10, nothing chosen until clicked), reloads midway and resumes at the right case; the
database holds exactly those answers; nothing on the page, in its frames or their URLs names a
case, a file or a source. At 1366 x 768 and 1440 x 900 the image and "Send answer" fit on one
screen without scrolling, the slab scrolls with the wheel and the keys, and the window presets
switch; screenshots go to test-artifacts/ (and docs/screenshots/ with
SYNTHCT_UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import (
    CHOSEN,
    LAPTOPS,
    SLAB,
    RequestLog,
    Server,
    doc_shot,
    page_scroll_room,
    pick_score,
    shot,
    slab_index,
    start,
    visible_without_scrolling,
    wait_idle,
)


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
    log = RequestLog(page)
    page.goto(url)
    wait_idle(page)
    page.get_by_role("heading", name="Welcome").wait_for()
    page.get_by_text(re.compile(r"You will see \d+ cases")).wait_for()
    page.get_by_text("This link is personal to you").wait_for()
    start(page)
    page.get_by_text(re.compile(r"Case 1 of \d+")).wait_for()
    # the instructions are open on the first case
    assert page.get_by_text("mouse wheel, ↑ ↓ keys or the slider").first.is_visible()
    shot(page, "turing_test")
    secrets = _secrets(ws)
    sent: list[int] = []
    position, total = _case_position(page)
    assert position == 1 and total >= 4
    while True:
        # (c) nothing identifying in the page, the viewer's frame, or any URL the browser asked
        html = page.content() + page.frame_locator(SLAB).locator("html").inner_html()
        for secret in secrets:
            assert secret not in html, f"{secret!r} appears in the rater's page"
            assert all(secret not in u for u in log.urls), f"{secret!r} appears in a URL"
        assert page.locator('[data-testid="stImage"]').count() == 0  # the slab, not a mosaic
        assert slab_index(page)[1] >= 2

        score = (3 * position) % 11
        pick_score(page, score)
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
            page.get_by_text(re.compile(r"Case \d+ of \d+")).first.wait_for()
            page.frame_locator(SLAB).locator('[data-testid="slab-index"]').wait_for()
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


@pytest.mark.parametrize("size", LAPTOPS, ids=lambda s: f"{s['width']}x{s['height']}")
def test_rating_page_fits_a_laptop_screen_and_the_slab_scrolls(server, demo, browser, size):
    from db.session import database_url, make_engine, session_scope
    from synthct.demo import DEMO_STUDY
    from synthct.vtt.flow import invite

    ws, _ = demo
    engine = make_engine(database_url(ws.database))
    with session_scope(engine) as s:
        link = invite(s, DEMO_STUDY, f"Laptop rater {size['width']}").link
    engine.dispose()
    context = browser.new_context(viewport=size)
    page = context.new_page()
    page.set_default_timeout(30_000)
    tag = f"{size['width']}x{size['height']}"
    try:
        log = RequestLog(page)
        page.goto(link.replace("http://localhost:8501", server.url))
        wait_idle(page)
        page.get_by_role("heading", name="Welcome").wait_for()
        assert visible_without_scrolling(page, page.get_by_role("button", name="Start"))
        doc_shot(page, f"rating-welcome-{tag}")
        start(page)
        frame = page.frame_locator(SLAB)
        canvas = frame.locator("canvas")
        canvas.wait_for()
        page.wait_for_timeout(300)

        # One screen: the image, the whole scale and "Send answer" without scrolling.
        send = page.get_by_role("button", name="Send answer")
        assert visible_without_scrolling(page, send), send.bounding_box()
        assert visible_without_scrolling(page, page.locator("iframe").first)
        assert visible_without_scrolling(page, page.locator('[data-testid="stButtonGroup"]'))
        assert page_scroll_room(page) == 0
        image = canvas.bounding_box()
        assert image["height"] >= 0.5 * size["height"] - 100  # a picture, not a thumbnail
        scale = page.locator('[data-testid="stButtonGroup"] button')
        assert scale.all_inner_texts() == [str(i) for i in range(11)]
        assert page.locator(CHOSEN).count() == 0  # no score until the rater picks one
        for anchor in ("0 = certainly real", "5 = cannot tell", "10 = certainly synthetic"):
            assert page.get_by_text(anchor, exact=True).is_visible()
        doc_shot(page, f"rating-{tag}")

        # The slab scrolls: mouse wheel, keys, slider; the window presets switch.
        first, n, window = slab_index(page)
        assert first == (n - 1) // 2 + 1 and window.startswith("Soft tissue")
        page.mouse.move(image["x"] + image["width"] / 2, image["y"] + image["height"] / 2)
        pixels = canvas.screenshot()
        page.mouse.wheel(0, 100)
        page.wait_for_timeout(100)
        page.mouse.wheel(0, 100)
        assert slab_index(page)[0] == first + 2
        assert canvas.screenshot() != pixels
        page.keyboard.press("ArrowUp")
        assert slab_index(page)[0] == first + 1
        page.keyboard.press("End")
        assert slab_index(page)[0] == n
        page.keyboard.press("Home")
        assert slab_index(page)[0] == 1
        frame.get_by_role("button", name=re.compile("^Bone")).click()
        assert slab_index(page) == (1, n, "Bone (W1800 L400)")
        page.keyboard.press("3")
        assert slab_index(page)[2] == "Lung (W1500 L-600)"
        assert page_scroll_room(page) == 0  # the wheel never scrolled the page
        assert log.foreign(server.url) == []
    finally:
        context.close()


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

"""Real browser, researcher password configured: on a freshly started server whose very first
request is a researcher page URL, neither a stranger nor a rater sees researcher content."""

from __future__ import annotations

import pytest

from synthct.access import hash_password
from tests.e2e.conftest import Server, wait_idle

RESEARCHER_TITLES = {"Browse", "Dashboard", "Generate & jobs", "Studies"}
PATHS = ["browse", "dashboard", "generate", "studies"]


def _headings(page) -> set[str]:
    return set(page.eval_on_selector_all("h1", "els => els.map(e => e.innerText.trim())"))


def _no_researcher_content(page) -> None:
    assert not RESEARCHER_TITLES & _headings(page)
    for testid in ("stDataFrame", "stPlotlyChart", "stForm", "stTabs"):
        assert page.locator(f'[data-testid="{testid}"]').count() == 0, testid


def _wait_text(page, *texts: str) -> str:
    """Wait until the page shows one of `texts`; return it."""
    cond = " || ".join(f"document.body.innerText.includes({t!r})" for t in texts)
    page.wait_for_function(f"() => {cond}")
    body = page.inner_text("body")
    return next(t for t in texts if t in body)


def _check_stranger(page, url: str) -> None:
    """A stranger gets the sign-in form (router) or the page guard's refusal (a pages/ script run
    directly on a fresh server) and nothing else."""
    page.goto(url)
    wait_idle(page)
    seen = _wait_text(page, "synthct — sign in", "This page is not available.")
    if seen == "synthct — sign in":
        page.get_by_label("Researcher password").wait_for()  # the form renders after the title
        assert page.get_by_label("Researcher password").count() == 1
        assert page.locator('[data-testid="stSidebarNav"]').count() == 0
    else:
        assert page.locator('[data-testid="stForm"]').count() == 0
    assert page.locator('[data-testid="stImage"]').count() == 0
    if seen != "synthct — sign in":
        _no_researcher_content(page)
    else:
        assert not RESEARCHER_TITLES & _headings(page)


def _check_rater(page, url: str) -> None:
    """A rater gets the rating page (router) or the refusal (fresh server) and nothing else."""
    page.goto(url)
    wait_idle(page)
    seen = _wait_text(
        page, "Welcome", "Case ", "All cases are rated", "This page is not available."
    )
    assert not RESEARCHER_TITLES & _headings(page)
    if seen == "This page is not available.":
        _no_researcher_content(page)
    else:
        assert page.locator('[data-testid="stSidebarNav"]').count() == 0
        assert page.locator('[data-testid="stDataFrame"]').count() == 0


@pytest.mark.parametrize("first", ["stranger", "rater"])
def test_fresh_server_first_request_to_a_researcher_page(demo, page, first):
    ws, links = demo
    token = list(links.values())[-1].split("token=", 1)[1]
    server = Server(ws, password_hash=hash_password("e2e secret phrase"))
    try:
        if first == "stranger":
            _check_stranger(page, f"{server.url}/dashboard")
        else:
            _check_rater(page, f"{server.url}/studies?token={token}")
        for path in PATHS:  # then every researcher URL, with and without the token
            _check_stranger(page, f"{server.url}/{path}")
            _check_rater(page, f"{server.url}/{path}?token={token}")
        # a revoked-looking / unknown token gets the message and nothing else
        page.goto(f"{server.url}/browse?token=not-a-valid-token")
        wait_idle(page)
        _wait_text(page, "not valid or has been withdrawn", "This page is not available.")
        _no_researcher_content(page)
        page.goto(f"{server.url}/?token=not-a-valid-token")
        wait_idle(page)
        _wait_text(page, "not valid or has been withdrawn")
        _no_researcher_content(page)
    finally:
        server.stop()


def test_fresh_server_researcher_bookmark_reaches_the_page(demo, page):
    """Open access, fresh server, first request /dashboard: the page guard hands the session to
    the router, which routes the same URL (no refusal for a legitimate researcher)."""
    ws, _ = demo
    server = Server(ws)
    try:
        page.goto(f"{server.url}/dashboard")
        wait_idle(page)
        page.get_by_role("heading", name="Dashboard").wait_for()
        assert "This page is not available." not in page.inner_text("body")
        page.goto(f"{server.url}/studies")
        wait_idle(page)
        page.get_by_role("heading", name="Studies").wait_for()
    finally:
        server.stop()

"""Real browser: every researcher page has an address that works as a deep link. /browse shows
Browse (the app's root opens it under that address), and behind a password a deep link shows
the sign-in form and then the page it named, never Streamlit's "Page not found"."""

from __future__ import annotations

import pytest

from synthct.access import hash_password
from tests.e2e.conftest import Server, wait_idle

PASSWORD = "a lab password for deep links"
PAGES = [
    ("browse", "Browse"),
    ("dashboard", "Dashboard"),
    ("generate", "Generate & jobs"),
    ("studies", "Studies"),
]


def _not_found(page) -> bool:
    return "Page not found" in page.inner_text("body")


@pytest.fixture(scope="module")
def open_server(demo):
    srv = Server(demo[0])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def locked_server(demo):
    srv = Server(demo[0], password_hash=hash_password(PASSWORD))
    yield srv
    srv.stop()


def test_root_opens_browse_under_its_own_address(open_server, page):
    page.goto(open_server.url)
    page.get_by_role("heading", name="Browse").wait_for()
    page.wait_for_url(f"{open_server.url}/browse")
    wait_idle(page)
    assert not _not_found(page)


@pytest.mark.parametrize("path,title", PAGES)
def test_deep_link_opens_its_page(open_server, page, path, title):
    page.goto(f"{open_server.url}/{path}")
    page.get_by_role("heading", name=title).wait_for()
    wait_idle(page)
    assert page.url == f"{open_server.url}/{path}"
    assert not _not_found(page)


@pytest.mark.parametrize("path,title", [PAGES[0], PAGES[1]])
def test_deep_link_behind_the_password_signs_in_then_opens_its_page(
    locked_server, page, path, title
):
    page.goto(f"{locked_server.url}/{path}")
    page.get_by_label("Researcher password").wait_for()
    wait_idle(page)
    assert not _not_found(page)
    page.get_by_label("Researcher password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name=title).wait_for()
    wait_idle(page)
    assert page.url == f"{locked_server.url}/{path}"
    assert not _not_found(page)

"""Real browser, fresh servers started the way the README starts them: a password-less app
listens on loopback only (and says so) and refuses to start on 0.0.0.0; sign-in pauses after
wrong passwords, per session and for everyone; a rater whose answer cannot be saved sees no
traceback, keeps the answer and the retry saves it."""

from __future__ import annotations

import ipaddress
import re
import sqlite3
import subprocess
import time
import urllib.request

import pytest

from synthct.access import GLOBAL_BACKOFF, SESSION_BACKOFF, hash_password
from tests.e2e.conftest import (
    CHOSEN,
    Server,
    free_port,
    pick_score,
    shot,
    start,
    start_streamlit,
    wait_idle,
)

PASSWORD = "a long e2e passphrase"
LEAK_WORDS = ("Traceback", "sqlalchemy", "IntegrityError", "OperationalError", 'File "', ".py")


def _empty_workspace(tmp_path):
    from synthct.workspace import Workspace, atomic_write_json

    ws = Workspace.resolve(tmp_path / "ws").ensure()
    atomic_write_json(ws.case_index, {"cases": []})  # ingested, nothing in it: no demo build
    return ws


def _listening(port: int) -> set[str]:
    """Local addresses with a socket listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for path, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            lines = open(path).read().splitlines()[1:]  # noqa: SIM115
        except FileNotFoundError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A = LISTEN
                continue
            raw = bytes.fromhex(addr_hex)
            # the kernel prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, width, 4))
            found.add(str(ipaddress.ip_address(raw)))
    return found


def test_without_a_password_the_app_listens_on_loopback_only(tmp_path, page):
    server = Server(_empty_workspace(tmp_path), address=None)  # address from config.toml
    try:
        addresses = _listening(server.port)
        assert addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses)
        ss = subprocess.run(
            ["ss", "-ltnH", f"sport = :{server.port}"], capture_output=True, text=True
        )
        if ss.returncode == 0:  # the same seen by ss(8): its local-address column
            local = {line.split()[3].rsplit(":", 1)[0] for line in ss.stdout.splitlines()}
            assert local == {"127.0.0.1"}, ss.stdout
        page.goto(server.url)
        wait_idle(page)
        page.get_by_text("Open access for this machine only").wait_for()
        assert "127.0.0.1" in page.inner_text("body")
    finally:
        server.stop()


def test_without_a_password_a_proxied_remote_client_gets_no_researcher_page(tmp_path, browser):
    """A reverse proxy on this machine reaches the app through 127.0.0.1, so the start-up check
    cannot see it; the client it names in X-Forwarded-For is still refused researcher pages."""
    server = Server(_empty_workspace(tmp_path), address=None)
    context = browser.new_context(extra_http_headers={"X-Forwarded-For": "203.0.113.5"})
    try:
        page = context.new_page()
        for path in ("", "/studies", "/dashboard"):
            page.goto(server.url + path)
            wait_idle(page)
            page.get_by_text("serves its researcher pages only on the machine").first.wait_for()
            headings = page.eval_on_selector_all("h1", "els => els.map(e => e.innerText.trim())")
            assert not {"Browse", "Dashboard", "Generate & jobs", "Studies"} & set(headings)
    finally:
        context.close()
        server.stop()


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_start_on_all_interfaces_without_a_password_is_refused(tmp_path, how):
    ws = _empty_workspace(tmp_path)
    port = free_port()
    proc, log, log_file = start_streamlit(
        ws, port, None, "0.0.0.0" if how == "flag" else None,
        env_extra={"STREAMLIT_SERVER_ADDRESS": "0.0.0.0"} if how == "environment" else None,
    )  # fmt: skip
    try:
        rc = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
        log_file.close()
    out = log.read_text()
    assert rc == 2, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    reason = [ln for ln in lines if ln.startswith("synthct: refusing")]
    assert len(reason) == 1 and reason[0] == lines[-1], out
    assert "0.0.0.0" in reason[0] and "password" in reason[0]
    assert "Traceback" not in out
    with pytest.raises(OSError):  # nothing answers there any more
        urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)


def test_with_a_password_the_app_may_serve_all_interfaces(tmp_path, page):
    server = Server(
        _empty_workspace(tmp_path), password_hash=hash_password(PASSWORD), address="0.0.0.0"
    )
    try:
        assert "0.0.0.0" in _listening(server.port) or "::" in _listening(server.port)
        page.goto(server.url)
        wait_idle(page)
        page.get_by_role("heading", name="synthct — sign in").wait_for()
    finally:
        server.stop()


# -- sign-in back-off -----------------------------------------------------------------------------
ERROR_JS = "(document.querySelector('[data-testid=stAlertContentError]') || {}).innerText || ''"


def _sign_in(page, password: str) -> str:
    """Submit the sign-in form; return the error shown, or "" when signed in.

    Each attempt in these tests answers with a message different from the one before it (tries
    left, then the pause), so a changed message means the server has answered this attempt.
    """
    before = page.evaluate(f"() => {ERROR_JS}")
    page.get_by_label("Researcher password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_function(
        "(before) => [...document.querySelectorAll('h1')].some(h => h.innerText.trim() === "
        f"'Browse') || ({ERROR_JS}) !== '' && ({ERROR_JS}) !== before",
        arg=before,
    )
    wait_idle(page)
    return page.evaluate(f"() => {ERROR_JS}")


def _fresh(browser, url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.goto(url)
    wait_idle(pg)
    pg.get_by_label("Researcher password").wait_for()
    return context, pg


def test_sign_in_backoff_engages_per_session_and_globally(tmp_path, browser):
    server = Server(_empty_workspace(tmp_path), password_hash=hash_password(PASSWORD))
    contexts = []
    try:
        # one session: SESSION_BACKOFF.free wrong passwords, then a pause
        context, page = _fresh(browser, server.url)
        contexts.append(context)
        for i in range(SESSION_BACKOFF.free - 1):
            assert _sign_in(page, f"wrong guess {i}").startswith("Wrong password")
        msg = _sign_in(page, "wrong guess again")
        assert "Wrong password" in msg and "paused for" in msg
        # during the pause the right password does not get in (and is not even checked)
        msg = _sign_in(page, PASSWORD)
        assert "paused for" in msg and "Wrong password" not in msg
        shot(page, "sign_in_paused")
        assert page.get_by_role("heading", name="Browse").count() == 0
        time.sleep(SESSION_BACKOFF.base_s + 0.5)
        assert _sign_in(page, PASSWORD) == ""
        page.get_by_role("heading", name="Browse").wait_for()

        # everyone: fresh sessions (a reload each) until the global count pauses sign-in
        sessions = []
        for _ in range(GLOBAL_BACKOFF.free - SESSION_BACKOFF.free + 1):
            context, pg = _fresh(browser, server.url)
            contexts.append(context)
            sessions.append(pg)
        for i, pg in enumerate(sessions[:-1]):
            msg = _sign_in(pg, f"guess from session {i}")
            assert msg.startswith("Wrong password"), msg
        assert "paused for" in msg  # the last one reached the global limit
        pg = sessions[-1]  # a session that has never failed is paused too
        msg = _sign_in(pg, PASSWORD)
        assert "paused for" in msg and pg.get_by_role("heading", name="Browse").count() == 0
        time.sleep(GLOBAL_BACKOFF.base_s + 0.5)
        assert _sign_in(pg, PASSWORD) == ""
        pg.get_by_role("heading", name="Browse").wait_for()
    finally:
        for c in contexts:
            c.close()
        server.stop()


# -- a rater's failed save --------------------------------------------------------------------------
def _set_refusal(db_path, on: bool) -> None:
    """A real database error on the app's own INSERT: a trigger in the SQLite file refuses new
    ratings (every connection of the server sees it); dropping it repairs the database."""
    con = sqlite3.connect(db_path)
    if on:
        con.execute(
            "CREATE TRIGGER refuse_ratings BEFORE INSERT ON ratings BEGIN "
            "SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    else:
        con.execute("DROP TRIGGER IF EXISTS refuse_ratings")
    con.commit()
    con.close()


def _rating_rows(ws, rater_name):
    from db.ratings import ratings_of_study
    from db.session import database_url, make_engine, session_scope
    from db.studies import list_studies

    engine = make_engine(database_url(ws.database))
    with session_scope(engine) as s:
        rows = [
            r
            for study in list_studies(s)
            for r in ratings_of_study(s, study.id)
            if r["rater"] == rater_name
        ]
    engine.dispose()
    return rows


def test_a_rater_never_sees_a_traceback_and_the_retry_saves(demo, page):
    from db.session import database_url, make_engine, session_scope
    from synthct.demo import DEMO_STUDY
    from synthct.vtt.flow import invite

    ws, _ = demo
    engine = make_engine(database_url(ws.database))
    with session_scope(engine) as s:
        link = invite(s, DEMO_STUDY, "Rater with a full disk").link
    engine.dispose()
    server = Server(ws)
    try:
        page.goto(link.replace("http://localhost:8501", server.url))
        wait_idle(page)
        page.get_by_text("This link is personal to you").wait_for()  # the welcome page
        start(page)
        page.get_by_text(re.compile(r"Case 1 of \d+")).wait_for()
        _set_refusal(ws.database, True)
        pick_score(page, 6)
        page.get_by_label("Comment (optional)").fill("margin looks too smooth")
        page.get_by_role("button", name="Send answer").click()
        page.get_by_text("could not be saved").wait_for()
        wait_idle(page)
        shot(page, "rater_save_failed")
        body = page.inner_text("body")
        assert page.locator('[data-testid="stException"]').count() == 0
        for word in (*LEAK_WORDS, str(ws.root), "ratings", "disk is full"):
            assert word not in body, f"{word!r} shown to a rater"
        ref = re.search(r"reference ([0-9a-f]{8})", body).group(1)
        # the answer is kept, on the same case
        assert page.get_by_text(re.compile(r"Case 1 of \d+")).count() == 1
        assert page.locator(CHOSEN).inner_text() == "6"
        assert page.get_by_label("Comment (optional)").input_value() == "margin looks too smooth"
        assert _rating_rows(ws, "Rater with a full disk") == []
        # the server log has the details under the same reference
        log = server.log.read_text()
        assert f"[ref {ref}]" in log and "Traceback" in log
        # retry once the database accepts writes again
        _set_refusal(ws.database, False)
        page.get_by_role("button", name="Send answer").click()
        page.get_by_text(re.compile(r"Case 2 of \d+")).wait_for()
        wait_idle(page)
        rows = _rating_rows(ws, "Rater with a full disk")
        assert [(r["score"], r["comment"]) for r in rows] == [(6, "margin looks too smooth")]
        assert page.get_by_label("Comment (optional)").input_value() == ""
    finally:
        _set_refusal(ws.database, False)
        server.stop()

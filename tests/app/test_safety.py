"""AppTest: nobody but a researcher sees an error's details; a rater's failed save keeps the
answer and can be retried; sign-in pauses after repeated wrong passwords; the app says it serves
this machine only when no password is set."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from synthct.access import SESSION_BACKOFF, hash_password
from tests.app.helpers import APP, make_study


def _failing_script(role: str) -> None:
    """A page that fails, run through the router's guard (AppTest runs this function's source
    as the app script, so it imports what it needs)."""
    import streamlit as st

    from ui.errors import guarded

    st.session_state["role"] = role

    def page() -> None:
        st.write("before the error")
        raise RuntimeError("cannot open /srv/secret/path.db")

    guarded(page)


@pytest.mark.parametrize("role", ["rater", "login", "invalid"])
def test_error_details_stay_hidden_from_raters_and_strangers(role):
    at = AppTest.from_function(_failing_script, args=(role,), default_timeout=30).run()
    assert len(at.exception) == 0  # no exception element (type, message, traceback)
    shown = " ".join(e.value for e in at.error)
    assert "Something went wrong on the server (reference " in shown
    assert "path.db" not in shown and "RuntimeError" not in shown
    assert len(at.expander) == 0


def test_error_details_are_shown_to_a_researcher():
    at = AppTest.from_function(_failing_script, args=("researcher",), default_timeout=30).run()
    assert "reference" in at.error[0].value
    assert len(at.exception) == 1
    assert "path.db" in at.exception[0].message
    assert any("raise RuntimeError" in line for line in at.exception[0].stack_trace)


def test_error_reference_is_logged_with_the_traceback(caplog):
    import logging

    from ui.errors import LOG

    LOG.propagate = True  # let caplog see it (the app logs to its own stderr handler)
    try:
        with caplog.at_level(logging.ERROR, logger="synthct.app"):
            at = AppTest.from_function(_failing_script, args=("rater",), default_timeout=30).run()
    finally:
        LOG.propagate = False
    ref = at.error[0].value.split("reference ", 1)[1].split(")", 1)[0]
    record = next(r for r in caplog.records if ref in r.getMessage())
    assert record.exc_info and "path.db" in str(record.exc_info[1])


# -- the rater's failed save ----------------------------------------------------------------------
@pytest.fixture
def study(workspace, monkeypatch):
    from db.session import database_url, make_engine

    monkeypatch.delenv("SYNTHCT_DATABASE_URL", raising=False)
    engine = make_engine(database_url(workspace.database))
    tokens = make_study(workspace, engine)
    return workspace, engine, tokens["Dr A"]


def _n_ratings(engine) -> int:
    from db.models import Rating

    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(Rating)).scalar_one()


def _break_saving(db_path, broken: bool) -> None:
    """Make the database refuse new ratings (a real SQLite error on the app's own INSERT), or
    repair it. A trigger lives in the database file, so every connection of the app sees it."""
    con = sqlite3.connect(db_path)
    if broken:
        con.execute(
            "CREATE TRIGGER refuse_ratings BEFORE INSERT ON ratings BEGIN "
            "SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    else:
        con.execute("DROP TRIGGER refuse_ratings")
    con.commit()
    con.close()


def test_a_failed_save_keeps_the_answer_and_the_retry_saves_it(study):
    ws, engine, token = study
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["token"] = token
    at.run()
    at.button(key="start").click().run()  # the welcome page
    assert "Case 1 of 6" in at.get("progress")[0].proto.text
    _break_saving(ws.database, True)
    at.button_group(key="score-1").set_value(7)
    at.text_area[0].input("the contour looks drawn")
    at.button[0].click().run()
    assert len(at.exception) == 0
    assert _n_ratings(engine) == 0
    msg = " ".join(e.value for e in at.error)
    assert "could not be saved" in msg and "try again" in msg
    assert "ratings" not in msg and "sqlite" not in msg.lower() and str(ws.root) not in msg
    # the answer is still in the form, on the same case
    assert at.button_group(key="score-1").value == 7
    assert at.text_area[0].value == "the contour looks drawn"
    assert "Case 1 of 6" in at.get("progress")[0].proto.text
    # retry once the database accepts writes again
    _break_saving(ws.database, False)
    at.button[0].click().run()
    assert len(at.exception) == 0 and not at.error
    assert _n_ratings(engine) == 1
    assert "Case 2 of 6" in at.get("progress")[0].proto.text
    from db.models import Rating

    with engine.connect() as c:
        row = c.execute(select(Rating.score, Rating.comment)).one()
    assert tuple(row) == (7, "the contour looks drawn")
    # the next case starts with an empty form
    assert at.button_group(key="score-2").value is None and at.text_area[0].value == ""


def test_rater_page_says_the_link_is_personal_and_revocable(study):
    _, _, token = study
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["token"] = token
    at.run()
    note = " ".join(c.value for c in at.caption)
    assert "personal to you" in note and "any device" in note and "withdraws" in note


# -- sign-in back-off and the open-access note ----------------------------------------------------
def _empty_ws(workspace):
    from synthct.workspace import atomic_write_json

    atomic_write_json(workspace.case_index, {"cases": []})  # no demo build


def test_sign_in_pauses_after_repeated_wrong_passwords(workspace, monkeypatch):
    _empty_ws(workspace)
    monkeypatch.setenv("SYNTHCT_RESEARCHER_PASSWORD_HASH", hash_password("the right passphrase"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    for i in range(SESSION_BACKOFF.free):
        at.text_input[0].input(f"wrong guess {i}")
        at.button[0].click().run()
        assert "Wrong password" in at.error[0].value
    assert "paused" in at.error[0].value  # the last failure started the pause
    # during the pause even the right password is refused, without being checked
    at.text_input[0].input("the right passphrase")
    at.button[0].click().run()
    assert at.title[0].value == "synthct — sign in"
    assert "paused" in at.error[0].value and "Wrong password" not in at.error[0].value


def test_open_access_note_says_this_machine_only(workspace):
    _empty_ws(workspace)
    at = AppTest.from_file(APP, default_timeout=60).run()
    note = next(c.value for c in at.caption if "Open access" in c.value)
    assert "this machine only" in note and "password-hash" in note


def test_invite_form_warns_without_a_password(tiny_ws, monkeypatch):
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/studies.py").run()
    if not any("No studies yet" in i.value for i in at.info):
        pytest.fail("the tiny workspace is expected to have no study")
    from db.session import database_url, make_engine

    engine = make_engine(database_url(tiny_ws.database))
    make_study(tiny_ws, engine, name="warned", n=1, raters=())
    at.run()
    assert any("No researcher password is set" in w.value for w in at.warning)
    monkeypatch.setenv("SYNTHCT_RESEARCHER_PASSWORD_HASH", hash_password("the right passphrase"))
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.text_input[0].input("the right passphrase")
    at.button[0].click().run()
    at.switch_page("pages/studies.py").run()
    assert not any("No researcher password is set" in w.value for w in at.warning)
    at.text_input(key="st-rater").input("Dr C")
    at.button(key="FormSubmitter:invite-Invite").click().run()
    note = " ".join(c.value for c in at.caption)
    assert "personal to its rater" in note and "until you revoke it" in note

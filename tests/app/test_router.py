"""AppTest: role routing — researchers (open or behind a password) and the Browse page."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from synthct.access import hash_password
from tests.app.helpers import APP


def test_researcher_without_data_gets_browse_with_hint(workspace):
    from synthct.workspace import atomic_write_json

    # An ingested-but-empty workspace (no demo is built: the case index exists).
    atomic_write_json(workspace.case_index, {"cases": []})
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Browse"
    assert "synthct ingest" in at.info[0].value


def test_password_gate(workspace, monkeypatch):
    from synthct.workspace import atomic_write_json

    atomic_write_json(workspace.case_index, {"cases": []})  # no demo build behind the gate
    monkeypatch.setenv("SYNTHCT_RESEARCHER_PASSWORD_HASH", hash_password("open sesame, please"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert at.title[0].value == "synthct — sign in"
    at.text_input[0].input("wrong")
    at.button[0].click().run()
    assert "Wrong password" in at.error[0].value
    at.text_input[0].input("open sesame, please")
    at.button[0].click().run()
    assert at.title[0].value == "Browse"


def test_page_script_refuses_a_session_without_role(workspace):
    """A pages/ script run directly (fresh server, no router yet) shows nothing."""
    from tests.app.helpers import ROOT

    at = AppTest.from_file(str(ROOT / "pages" / "browse.py"), default_timeout=60).run()
    assert "not available" in at.error[0].value
    assert len(at.title) == 0


def test_open_access_is_announced_and_password_removes_the_note(workspace, monkeypatch):
    from synthct.workspace import atomic_write_json

    atomic_write_json(workspace.case_index, {"cases": []})
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert any("Open access" in c.value for c in at.caption)
    monkeypatch.setenv("SYNTHCT_RESEARCHER_PASSWORD_HASH", hash_password("pw for the lab"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.text_input[0].input("pw for the lab")
    at.button[0].click().run()
    assert at.title[0].value == "Browse"
    assert not any("Open access" in c.value for c in at.caption)

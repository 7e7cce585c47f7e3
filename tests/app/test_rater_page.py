"""AppTest: the rater's page logic (role routing, welcome page, rating, lock, resume, closing
page) and what the slab viewer is sent."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from tests.app.helpers import APP, make_study


@pytest.fixture
def study(workspace, monkeypatch):
    from db.session import database_url, make_engine

    monkeypatch.delenv("SYNTHCT_DATABASE_URL", raising=False)
    engine = make_engine(database_url(workspace.database))
    tokens = make_study(workspace, engine)
    return engine, tokens["Dr A"]


def _app(token: str | None, start: bool = True) -> AppTest:
    """The app as a rater opens it; `start` presses Start on the welcome page if it shows."""
    at = AppTest.from_file(APP, default_timeout=60)
    if token is not None:
        at.query_params["token"] = token
    at.run()
    if start and any(b.label == "Start" for b in at.button):
        next(b for b in at.button if b.label == "Start").click().run()
    return at


def _score(at) -> object:
    return at.button_group(key=f"score-{_position(at)}")


def _position(at) -> int:
    import re

    return int(re.search(r"Case (\d+) of", at.get("progress")[0].proto.text).group(1))


def _send(at) -> None:
    next(b for b in at.button if b.label == "Send answer").click().run()


def _n_ratings(engine) -> int:
    from db.models import Rating

    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(Rating)).scalar_one()


def test_rater_sees_only_the_rating_page_and_can_rate(study):
    engine, token = study
    at = _app(token, start=False)
    assert not at.exception
    # the welcome page: what the study is, how long it takes, that the link is personal
    assert at.title[0].value == "Visual Turing Test"
    assert at.subheader[0].value == "Welcome"
    text = " ".join(m.value for m in at.markdown)
    assert "6 cases" in text and "minutes" in text and "0 = certainly real" in text
    assert "personal to you" in " ".join(c.value for c in at.caption)
    assert len(at.get("component_instance")) == 0 and _n_ratings(engine) == 0
    next(b for b in at.button if b.label == "Start").click().run()
    assert at.title[0].value == "Visual Turing Test"
    # the first case: instructions open, the slab viewer, a 0–10 scale with nothing chosen
    assert at.expander[0].proto.expanded
    viewer = at.get("component_instance")
    assert len(viewer) == 1 and len(at.image) == 0
    args = viewer[0].proto
    assert args.component_name == "ui.rating.slab_viewer"
    for word in ("CHUM", "SYN", "set-a", "real", "synthetic"):
        assert word not in args.json_args
    assert [a.key for a in args.special_args] == ["sprite"]
    assert _score(at).options == [str(i) for i in range(11)] and _score(at).value is None
    # No researcher navigation is offered to a rater.
    assert "Browse" not in str(at.sidebar)
    # Sending without a score is refused.
    _send(at)
    assert any("pick a score" in w.value for w in at.warning)
    assert _n_ratings(engine) == 0
    _score(at).set_value(7)
    _send(at)
    assert _n_ratings(engine) == 1
    assert "Case 2 of 6" in at.get("progress")[0].proto.text
    assert not at.expander[0].proto.expanded  # open only on the first case


def test_the_slab_sent_is_the_padded_sealed_one(study, workspace):
    """What the viewer receives is the sealed slab, padded, with the study-wide layout."""
    import hashlib
    import json

    from synthct.vtt.blinding import strip_padding
    from synthct.vtt.design import study_dir

    _, token = study
    at = _app(token)
    args = at.get("component_instance")[0].proto
    sprite = args.special_args[0].bytes
    manifest = json.loads((study_dir(workspace, "demo-study") / "manifest.json").read_text())
    assert hashlib.sha256(strip_padding(sprite)).hexdigest() in {
        c["slab_sha256"] for c in manifest["cases"]
    }
    assert json.loads(args.json_args)["layout"] == manifest["slab"]


def test_rater_resumes_after_restart_and_finishes(study):
    engine, token = study
    at = _app(token)
    for _ in range(2):
        _score(at).set_value(3)
        _send(at)
    # A brand-new session (reload / server restart) continues at case 3, without the welcome.
    at2 = _app(token, start=False)
    assert "Case 3 of 6" in at2.get("progress")[0].proto.text
    for _ in range(4):
        _score(at2).set_value(9)
        _send(at2)
    assert _n_ratings(engine) == 6
    assert any("All cases are rated" in s.value for s in at2.success)


def test_invalid_token_gets_message_and_nothing_else(study):
    at = _app("not-a-real-token")
    assert not at.exception
    assert "not valid" in at.error[0].value
    assert len(at.button_group) == 0 and len(at.button) == 0


def test_a_study_sealed_without_slabs_shows_its_padded_mosaic(workspace, monkeypatch):
    """Studies sealed before slabs existed (or with stack=False) keep today's mosaic image."""
    from db.session import database_url, init_db, make_engine, session_scope
    from synthct.vtt.design import create_study
    from synthct.vtt.flow import invite
    from synthct.vtt.render import RenderConfig
    from tests.app.helpers import blob_pair

    monkeypatch.delenv("SYNTHCT_DATABASE_URL", raising=False)
    engine = make_engine(database_url(workspace.database))
    init_db(engine)
    with session_scope(engine) as s:
        create_study(
            s, workspace, "flat", {"CHUM-000": blob_pair(0)}, {"SYN-0000": blob_pair(1)},
            synthetic_source="set-a", params=RenderConfig(tiles=4, tile_px=32, stack=False),
        )  # fmt: skip
        token = invite(s, "flat", "Dr M").token
    at = _app(token)
    assert not at.exception
    assert len(at.get("component_instance")) == 0 and len(at.image) == 1
    _score(at).set_value(4)
    _send(at)
    assert _n_ratings(engine) == 1

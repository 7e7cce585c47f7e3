"""AppTest: the rater's page logic (role routing, rating, lock, resume, closing page)."""

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


def _app(token: str | None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    if token is not None:
        at.query_params["token"] = token
    return at.run()


def _n_ratings(engine) -> int:
    from db.models import Rating

    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(Rating)).scalar_one()


def test_rater_sees_only_the_rating_page_and_can_rate(study):
    engine, token = study
    at = _app(token)
    assert not at.exception
    assert at.title[0].value == "Visual Turing Test"
    assert len(at.image) == 1
    # The image URL is a content hash: no case id, file name or source.
    url = at.image[0].proto.imgs[0].url
    assert url.endswith(".png") and "CHUM" not in url and "SYN" not in url and "set-a" not in url
    # No researcher navigation is offered to a rater.
    assert "Browse" not in str(at.sidebar)
    # Sending without touching the slider is refused.
    at.button[0].click().run()
    assert any("move the slider" in w.value for w in at.warning)
    assert _n_ratings(engine) == 0
    at.select_slider[0].set_value(7)
    at.button[0].click().run()
    assert _n_ratings(engine) == 1
    assert "Case 2 of 6" in at.get("progress")[0].proto.text


def test_rater_resumes_after_restart_and_finishes(study):
    engine, token = study
    at = _app(token)
    for _ in range(2):
        at.select_slider[0].set_value(3)
        at.button[0].click().run()
    # A brand-new session (reload / server restart) continues at case 3.
    at2 = _app(token)
    assert "Case 3 of 6" in at2.get("progress")[0].proto.text
    for _ in range(4):
        at2.select_slider[0].set_value(9)
        at2.button[0].click().run()
    assert _n_ratings(engine) == 6
    assert any("All cases are rated" in s.value for s in at2.success)


def test_invalid_token_gets_message_and_nothing_else(study):
    at = _app("not-a-real-token")
    assert not at.exception
    assert "not valid" in at.error[0].value
    assert len(at.select_slider) == 0 and len(at.button) == 0

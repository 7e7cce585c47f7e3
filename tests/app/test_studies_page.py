"""AppTest: Studies — create and seal a study from a synthetic set, invite a rater (link shown),
revoke, and read the statistics once ratings exist."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.helpers import APP
from tests.app.tiny_workspace import SET
from ui.studies import default_base_url


def _page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/studies.py").run()
    assert not at.exception, at.exception
    return at


def _engine(ws):
    from db.session import database_url, make_engine

    return make_engine(database_url(ws.database))


def test_create_invite_rate_results_revoke(tiny_ws):
    from db.session import session_scope
    from synthct.vtt import flow

    at = _page()
    assert any("No studies yet" in i.value for i in at.info)
    at.text_input(key="st-name").input("vtt1")
    at.selectbox(key="st-set").set_value(SET)
    at.number_input(key="st-nreal").set_value(3)
    at.number_input(key="st-nsyn").set_value(3)
    at.number_input(key="st-dups").set_value(1)
    at.button(key="FormSubmitter:create-study-Create and seal").click().run()
    assert not at.exception, at.exception
    assert any("sealed: 7 cases" in s.value for s in at.success)
    assert at.dataframe[0].value.iloc[0]["study"] == "vtt1"

    for name in ("Dr A", "Dr B"):
        at.text_input(key="st-rater").input(name)
        at.button(key="FormSubmitter:invite-Invite").click().run()
    links = [c.value for c in at.code]
    assert len(links) == 2 and all(
        link.startswith("http://localhost:8501/?token=") for link in links
    )
    tokens = [link.split("token=", 1)[1] for link in links]
    engine = _engine(tiny_ws)

    # Dr A rates real cases 2, synthetic 8 (a perfect rater); Dr B rates everything 5.
    scores = {}
    with session_scope(engine) as s:
        for token, rule in zip(tokens, ({"real": 2, "synthetic": 8}, None), strict=True):
            rater = flow.rater_for_token(s, token)
            assert rater is not None
            while (case := flow.next_case(s, rater)) is not None:
                truth = _truth(s, rater, case.public_id)
                score = 5 if rule is None else rule[truth]
                flow.submit(s, rater, case.public_id, score)
                scores.setdefault((rater.name, truth), []).append(score)
    at.run()
    assert not at.exception, at.exception
    progress = at.dataframe[1].value.set_index("rater")
    assert list(progress["answered"]) == [7, 7] and list(progress["total"]) == [7, 7]
    raters = at.dataframe[2].value.set_index("rater")
    assert raters.loc["Dr A", "mean real"] == pytest.approx(2.0)
    assert raters.loc["Dr A", "mean synthetic"] == pytest.approx(8.0)
    assert raters.loc["Dr A", "AUC"] == pytest.approx(1.0)
    assert raters.loc["Dr B", "AUC"] == pytest.approx(0.5)
    assert raters.loc["Dr A", "n real"] == 3 and raters.loc["Dr A", "n synthetic"] == 3
    assert any("Small study" in w.value for w in at.warning)  # the power warning
    kappa = next(m for m in at.metric if m.label == "Fleiss κ (calls)")
    assert kappa.value != "n/a"
    assert at.get("download_button")[0].proto.label == "Download ratings (CSV)"
    charts = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("Dr A (AUC 1.00)" in spec for spec in charts)

    # revoking Dr B: the link stops working, the answers stay
    at.selectbox(key="st-revoke-who").set_value("Dr B")
    at.button(key="st-revoke").click().run()
    with session_scope(engine) as s:
        assert flow.rater_for_token(s, tokens[1]) is None
        assert flow.rater_for_token(s, tokens[0]) is not None
    assert list(at.dataframe[1].value.set_index("rater")["revoked"]) == [False, True]


def _truth(session, rater, public_id: str) -> str:
    from db.studies import study_case_by_public_id

    return study_case_by_public_id(session, rater.study_id, public_id).truth


def test_study_errors_are_shown_not_raised(tiny_ws):
    at = _page()
    at.text_input(key="st-name").input("bad name/..")
    at.button(key="FormSubmitter:create-study-Create and seal").click().run()
    assert not at.exception
    assert "not valid" in at.error[0].value


def test_default_base_url():
    assert default_base_url("https://vtt.example.org:8443/studies?x=1") == (
        "https://vtt.example.org:8443"
    )
    assert default_base_url("http://10.0.0.5:8501/studies", "/synthct/") == (
        "http://10.0.0.5:8501/synthct"
    )
    assert default_base_url(None) == "http://localhost:8501"
    assert default_base_url("not a url") == "http://localhost:8501"


def test_power_of_the_planned_study_is_shown_before_any_rating(tiny_ws):
    from synthct.vtt.stats import detectable_auc

    at = _page()
    warning = next(w.value for w in at.warning if w.value.startswith("Power:"))
    assert "5 real and 5 synthetic" in warning
    assert f"at least {detectable_auc(5, 5):.2f}" in warning
    assert f"3 raters at 0.05/3: from {detectable_auc(5, 5, alpha=0.05 / 3):.2f}" in warning
    at.number_input(key="st-nreal").set_value(30)
    at.number_input(key="st-nsyn").set_value(30)
    at.number_input(key="st-nraters").set_value(2).run()
    assert not any(w.value.startswith("Power:") for w in at.warning)  # large enough: no alarm
    caption = next(c.value for c in at.caption if c.value.startswith("Power:"))
    assert f"at least {detectable_auc(30, 30):.2f}" in caption

    # a sealed study without ratings: its own cases give the number, on the Results tab
    at.text_input(key="st-name").input("small")
    at.selectbox(key="st-set").set_value(SET)
    at.number_input(key="st-nreal").set_value(3)
    at.number_input(key="st-nsyn").set_value(3)
    at.number_input(key="st-dups").set_value(2)
    at.button(key="FormSubmitter:create-study-Create and seal").click().run()
    assert not at.exception, at.exception
    assert any("No ratings yet" in i.value for i in at.info)
    study = next(w.value for w in at.warning if w.value.startswith("Power of this study"))
    assert "3 real and 3 synthetic" in study  # duplicates are not independent cases
    assert "no rater, however good" in study

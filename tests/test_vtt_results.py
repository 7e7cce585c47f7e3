"""The study read-model (synthct.vtt.results) and the typed statistics (synthct.vtt.stats):
what `synthct study list|stats|export` and the Studies page show.

tests/data/study-0.1.0/ holds what synthct 0.1.0 printed and displayed for the study of the
0.1.0 workspace (tests/data/workspace-0.1.0.tar.gz) and the statistics JSON it computed for
`golden_rows()`; the CLI, the page and the numbers must still produce exactly those.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from db.ratings import ratings_of_study
from db.session import session_scope
from db.studies import get_study
from synthct.cli import app
from synthct.vtt import StudyError, TamperedStudyError, flow
from synthct.vtt.design import create_study
from synthct.vtt.results import (
    EXPORT_COLUMNS,
    rater_progress,
    study_overviews,
    study_ratings,
)
from synthct.vtt.stats import StudyStatistics, study_stats
from synthct.workspace import Workspace
from tests.app.helpers import APP, blob_pair

pytest_plugins = ["conftest_pg"]

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "study-0.1.0"
LEGACY_STUDY = "legacy-study"


def golden_rows() -> list[dict]:
    """Three raters over 4 real + 4 synthetic cases with two duplicates, a rater who rated
    only real cases, ties at the threshold and a name a spreadsheet would run as a formula."""
    real = {"R1": (2, 4, 7), "R2": (5, 5, 3), "R3": (3, 6, 6), "R4": (4, 3, 0)}
    syn = {"S1": (8, 5, 9), "S2": (6, 2, 5), "S3": (3, 7, 10), "S4": (9, 8, 6)}
    raters = ("Dr A", "=Dr B", "Dr C")
    rows = []
    for truth, table in (("real", real), ("synthetic", syn)):
        for case, scores in table.items():
            for k, (rater, score) in enumerate(zip(raters, scores, strict=True)):
                rows.append(
                    {"rater": rater, "public_id": f"p{case}", "truth": truth, "case_id": case,
                     "duplicate_of": None, "score": score, "duration_s": 2.5 + k + len(rows) / 8}
                )  # fmt: skip
    for rater, score_r1, score_s1 in (("Dr A", 3, 8), ("=Dr B", 6, 4), ("Dr C", 7, 9)):
        rows.append({"rater": rater, "public_id": "dR1", "truth": "real", "case_id": "R1",
                     "duplicate_of": "pR1", "score": score_r1, "duration_s": 4.0})  # fmt: skip
        rows.append({"rater": rater, "public_id": "dS1", "truth": "synthetic", "case_id": "S1",
                     "duplicate_of": "pS1", "score": score_s1, "duration_s": 3.0})  # fmt: skip
    rows.append({"rater": "Dr D", "public_id": "pR2", "truth": "real", "case_id": "R2",
                 "duplicate_of": None, "score": 1, "duration_s": 7.25})  # fmt: skip
    return rows


# -- typed statistics ------------------------------------------------------------------------------
def test_statistics_json_is_what_0_1_0_computed():
    out = {str(t): study_stats(golden_rows(), threshold=t).to_dict() for t in (5, 2)}
    assert json.dumps(out, indent=1) + "\n" == (GOLDEN / "statistics.json").read_text()


@pytest.mark.parametrize("rows", [golden_rows(), []], ids=["ratings", "no-ratings"])
def test_statistics_round_trip_through_json(rows):
    stats = study_stats(rows, threshold=5)
    back = StudyStatistics.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert back == stats
    assert back.to_dict() == stats.to_dict()


def test_statistics_without_ratings_keep_their_short_form():
    stats = study_stats([], threshold=4)
    assert stats.to_dict() == {"ratings": 0, "threshold": 4, "warning": "No ratings yet."}
    assert stats.raters == () and stats.agreement is None


def test_typed_fields_against_independent_computations():
    rows = golden_rows()
    stats = study_stats(rows, threshold=5)
    first = [r for r in rows if r["duplicate_of"] is None]
    by_name = {r.rater: r for r in stats.raters}
    assert list(by_name) == ["Dr A", "=Dr B", "Dr C", "Dr D"]  # order of first appearance
    for name in ("Dr A", "=Dr B", "Dr C"):
        syn = np.array(
            [r["score"] for r in first if r["rater"] == name and r["truth"] == "synthetic"]
        )
        real = np.array([r["score"] for r in first if r["rater"] == name and r["truth"] == "real"])
        summary = by_name[name]
        d = summary.discrimination
        assert (summary.n_real, summary.n_synthetic) == (real.size, syn.size) == (4, 4)
        assert summary.mean_real == pytest.approx(real.mean())
        assert summary.mean_synthetic == pytest.approx(syn.mean())
        y = np.r_[np.ones(syn.size), np.zeros(real.size)]
        assert d.auc == pytest.approx(roc_auc_score(y, np.r_[syn, real]))
        assert d.correct == int((syn > 5).sum() + (real <= 5).sum())
        assert d.auc_ci95[0] <= d.auc <= d.auc_ci95[1]
    only_real = by_name["Dr D"]
    assert only_real.discrimination is None and only_real.mean_synthetic is None
    assert "auc" not in only_real.to_dict()  # JSON: no discrimination keys, as before
    fooled = {c.case_id: c.fooled for c in stats.per_case}
    assert fooled["S2"] == ("=Dr B", "Dr C")  # scored 6, 2, 5: a 5 counts as a real call
    for c in stats.per_case:
        scores = {r["rater"]: r["score"] for r in first if r["case_id"] == c.case_id}
        assert c.n == len(scores) and c.mean == pytest.approx(np.mean(list(scores.values())))
        if c.truth == "real":
            assert c.fooled is None and "fooled" not in c.to_dict()
        else:
            assert c.fooled == tuple(sorted(r for r, v in scores.items() if v <= 5))
    assert (stats.n_real, stats.n_synthetic, stats.ratings) == (4, 4, len(rows))
    assert [r.pairs for r in stats.intra_rater] == [2, 2, 2]
    assert stats.agreement.raters == 4 and stats.agreement.fleiss_raters == 3
    assert stats.median_seconds_per_case == pytest.approx(
        np.median([r["duration_s"] for r in rows])
    )


# -- the read-model on a database ------------------------------------------------------------------
def _rated_study(ws, engine):
    """A sealed study (2 real + 2 synthetic, 2 duplicates); Dr A answers everything, "=Dr B"
    everything with a formula comment, Dr C one case and is then revoked."""

    real = {f"CHUM-{i:03d}": blob_pair(i) for i in range(2)}
    syn = {f"SYN-{i:04d}": blob_pair(100 + i) for i in range(2)}
    with session_scope(engine) as s:
        create_study(s, ws, "s1", real, syn, synthetic_source="set-a", duplicates=2, seed=4)
    with session_scope(engine) as s:
        tokens = {n: flow.invite(s, "s1", n).token for n in ("Dr A", "=Dr B", "Dr C")}
    with session_scope(engine) as s:
        for name, token in tokens.items():
            rater = flow.rater_for_token(s, token)
            i = 0
            while (case := flow.next_case(s, rater)) is not None and (name != "Dr C" or i < 1):
                flow.submit(s, rater, case.public_id, (3 * i) % 11, comment="=1+1" * (i % 2))
                i += 1
        flow.revoke(s, "s1", "Dr C")


def test_read_model_on_sqlite_and_postgres(workspace, db_engine):

    _rated_study(workspace, db_engine)
    with session_scope(db_engine) as s:
        (plain,) = study_overviews(s)
        (listed,) = study_overviews(s, with_progress=True)
        progress = rater_progress(s, "s1")
        ratings = study_ratings(s, workspace, "s1")
        rows = ratings_of_study(s, get_study(s, "s1").id)
    assert plain.rater_progress is None and "rater_progress" not in plain.to_dict()
    assert (listed.name, listed.cases, listed.raters, listed.active_raters) == ("s1", 6, 3, 2)
    assert listed.ratings == 6 + 6 + 1 == len(rows) == len(ratings.rows)
    assert listed.rater_progress == progress
    assert [(p.name, p.done, p.total, p.revoked) for p in progress] == [
        ("Dr A", 6, 6, False), ("=Dr B", 6, 6, False), ("Dr C", 1, 6, True)
    ]  # fmt: skip
    assert [p.fraction for p in progress] == [1.0, 1.0, pytest.approx(1 / 6)]
    assert ratings.statistics(3) == study_stats(rows, threshold=3)
    assert list(ratings.frame()["score"]) == [r["score"] for r in rows]

    table = list(csv.reader(io.StringIO(ratings.export_csv())))
    assert table[0] == EXPORT_COLUMNS and len(table) == 1 + len(rows)
    export = [dict(zip(table[0], r, strict=True)) for r in table[1:]]
    assert {r["rater"] for r in export} == {"Dr A", "'=Dr B", "Dr C"}  # through synthct.csvsafe
    assert {r["comment"] for r in export} == {"", "'=1+1"}
    assert {r["manifest_sha256"] for r in export} == {ratings.manifest_sha256}

    with session_scope(db_engine) as s, pytest.raises(StudyError, match="'nope' does not exist"):
        study_ratings(s, workspace, "nope")
    manifest = workspace.studies / "s1" / "manifest.json"
    manifest.write_text(manifest.read_text().replace("CHUM-000", "CHUM-009"))
    with session_scope(db_engine) as s, pytest.raises(TamperedStudyError, match="SHA-256"):
        study_ratings(s, workspace, "s1")


# -- the 0.1.0 study: CLI and page exactly as before -------------------------------------------
@pytest.fixture
def legacy(tmp_path, monkeypatch):

    with tarfile.open(DATA / "workspace-0.1.0.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    ws = Workspace.resolve(tmp_path / "ws")
    monkeypatch.setenv("SYNTHCT_WORKSPACE", str(ws.root))
    monkeypatch.delenv("SYNTHCT_DATABASE_URL", raising=False)
    monkeypatch.delenv("SYNTHCT_RESEARCHER_PASSWORD_HASH", raising=False)
    return ws


@pytest.mark.parametrize(
    ("args", "golden"),
    [
        (["list"], "list.txt"),
        (["list", "--json"], "list.json"),
        (["stats", LEGACY_STUDY], "stats.txt"),
        (["stats", LEGACY_STUDY, "--json"], "stats.json"),
        (["stats", LEGACY_STUDY, "--threshold", "2"], "stats-threshold-2.txt"),
    ],
)
def test_legacy_study_cli_prints_what_0_1_0_printed(legacy, args, golden):

    res = CliRunner().invoke(app, ["study", *args])
    assert res.exit_code == 0, res.output
    assert res.output == (GOLDEN / golden).read_text()


def test_legacy_study_export_is_what_0_1_0_wrote(legacy):

    res = CliRunner().invoke(app, ["study", "export", LEGACY_STUDY, "--out", "e.csv"])
    assert res.exit_code == 0, res.output
    assert res.output == f"wrote 4 ratings to {legacy.root / 'e.csv'}\n"
    assert (legacy.root / "e.csv").read_bytes() == (GOLDEN / "export.csv").read_bytes()


def page_text(at) -> str:
    """What the Studies page shows as text: captions, metrics and every table's values."""
    lines = [f"caption: {c.value}" for c in at.caption]
    lines += [f"metric: {m.label} = {m.value}" for m in at.metric]
    for i, d in enumerate(at.dataframe):
        v = d.value
        lines.append(f"dataframe {i}: dtypes {list(map(str, v.dtypes))}\n{v.to_csv()}")
    return "\n".join(lines) + "\n"


def test_legacy_study_page_shows_what_0_1_0_showed(legacy, monkeypatch):

    served: list[bytes] = []
    original = MemoryMediaFileStorage.load_and_get_id

    def record(self, data, mimetype, kind, filename=None):
        if filename == f"{LEGACY_STUDY}-ratings.csv":
            served.append(data)
        return original(self, data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/studies.py").run()
    assert not at.exception, at.exception
    assert page_text(at) == (GOLDEN / "page.txt").read_text()
    assert served[-1] == (GOLDEN / "export.csv").read_bytes()

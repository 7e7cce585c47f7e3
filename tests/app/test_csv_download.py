"""AppTest: the Studies page's "Download ratings (CSV)" serves bytes in which no rater name or
comment can run as a spreadsheet formula (each dangerous first character), numbers intact."""

from __future__ import annotations

import csv
import io

import pytest
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from tests.app.helpers import APP
from tests.test_csv_safety import ATTACKS, assert_no_formula_cells, rated_study


@pytest.fixture
def served(monkeypatch):
    """Every file the app hands to Streamlit's media storage: (bytes, mimetype, filename)."""
    files: list[tuple[bytes, str, str | None]] = []
    original = MemoryMediaFileStorage.load_and_get_id

    def record(self, path_or_data, mimetype, kind, filename=None):
        if isinstance(path_or_data, bytes):
            files.append((path_or_data, mimetype, filename))
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)
    return files


def test_ratings_download_neutralises_formulas(workspace, served, monkeypatch):
    from synthct.workspace import atomic_write_json

    monkeypatch.delenv("SYNTHCT_DATABASE_URL", raising=False)
    atomic_write_json(workspace.case_index, {"cases": []})  # ingested: no demo build on start
    given = rated_study(workspace)
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/studies.py").run()
    assert not at.exception, at.exception
    assert at.get("download_button")[0].proto.label == "Download ratings (CSV)"
    csvs = [data for data, mime, name in served if name == "inj-ratings.csv"]
    assert csvs, [(m, n) for _, m, n in served]
    rows = list(csv.reader(io.StringIO(csvs[-1].decode("utf-8"))))
    assert_no_formula_cells(rows)
    header, body = rows[0], rows[1:]
    table = [dict(zip(header, r, strict=True)) for r in body]
    assert len(table) == sum(len(v) for v in given.values())
    assert {r["comment"][1:] for r in table} == {a.strip() for a in ATTACKS}
    assert all(r["comment"].startswith("'") for r in table)
    assert all(r["score"].isdigit() for r in table)

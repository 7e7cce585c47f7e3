"""CSV files for people: no cell a spreadsheet would run as a formula.

OWASP "CSV Injection": Excel, LibreOffice and Google Sheets run a cell that begins with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return as a formula (``=HYPERLINK(…)`` sends
data away, ``=cmd|…`` runs programs through DDE). Text that reaches a CSV from people (rater
names and comments, study and case names) is therefore written with a leading single quote when
it begins with one of those characters (or their full-width forms, or after leading spaces);
spreadsheets show such a cell as the text itself.

Numbers stay numbers: numeric columns are never touched, and a text cell that is a plain
decimal number (``-0.5``, ``+3``, ``1e-4``) is left as it is — a spreadsheet reads it as that
number and runs nothing. Every CSV synthct writes for people goes through `to_csv_text` (a
DataFrame) or `csv_text` (rows); the app's downloads serve the same bytes.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

FORMULA_STARTS = frozenset("=+-@\t\r\n\uff1d\uff0b\uff0d\uff20")  # + full-width = + - @
_PLAIN_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")


def neutralise_cell(value: Any) -> Any:
    """`value` made safe for a spreadsheet: a text that a spreadsheet would run as a formula
    gets a leading "'"; numbers, plain-number texts and everything else are returned as they
    are."""
    if not isinstance(value, str) or not value:
        return value
    head = value.lstrip(" ")
    if head[:1] in FORMULA_STARTS and not _PLAIN_NUMBER.match(head):
        return "'" + value
    return value


def safe_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of `df` whose text cells and column names are neutralised (numeric columns,
    dates and booleans untouched)."""
    out = df.copy()
    for col in out.columns:
        series = out[col]
        if pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series):
            out[col] = series.map(neutralise_cell)
    out.columns = [neutralise_cell(c) for c in out.columns]
    return out


def to_csv_text(df: pd.DataFrame, **kwargs: Any) -> str:
    """`df.to_csv(index=False, **kwargs)` of the neutralised frame: the text of a CSV file."""
    kwargs.setdefault("index", False)
    return safe_frame(df).to_csv(**kwargs)


def csv_text(rows: Iterable[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    """CSV text ("\\n" line ends) of `rows` (and a `header`), every cell neutralised."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header is not None:
        writer.writerow([neutralise_cell(h) for h in header])
    for row in rows:
        writer.writerow([neutralise_cell(v) for v in row])
    return buf.getvalue()

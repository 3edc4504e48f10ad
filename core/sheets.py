"""CSV and XLSX exports that a spreadsheet cannot turn against its reader.

Every exported cell goes through :func:`safe_cell`:

* characters no export can hold (control characters, lone surrogates) are
  dropped, so one bad value stored before the input checks cannot break an
  export for everyone (openpyxl refuses them; UTF-8 cannot encode surrogates);
* text that a spreadsheet would read as a formula (starting with ``= + - @``,
  tab or carriage return: CSV/DDE injection, OWASP) is neutralised: in CSV
  with a leading apostrophe, in XLSX as a string cell with Excel's own
  "quote prefix" flag, which keeps the text exactly as typed.

Numbers stay numbers: only text can carry a formula.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fpdf import FPDF
from openpyxl import Workbook
from openpyxl.worksheet.worksheet import Worksheet

from core.inputs import clean_for_export

# PDF exports need a CJK font: the Debian package fonts-wqy-microhei (./hotline installs it), or HOTLINE_CJK_FONT.
CJK_FONT = Path(os.environ.get("HOTLINE_CJK_FONT", "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"))
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def safe_cell(value: Any) -> tuple[Any, bool]:
    """(the value to write, whether it is text a spreadsheet would evaluate)."""
    if value is None:
        return "", False
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        value = str(value)
    if not isinstance(value, str):
        return value, False
    value = clean_for_export(value)
    return value, value.startswith(FORMULA_START)


def csv_bytes(rows: Iterable[Sequence[Any]]) -> bytes:
    """UTF-8 CSV with a BOM (so Excel reads the Chinese), every cell through :func:`safe_cell`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        cells = []
        for raw in row:
            value, formula_like = safe_cell(raw)
            cells.append("'" + value if formula_like else value)
        writer.writerow(cells)
    return ("\ufeff" + buffer.getvalue()).encode()


def append_row(sheet: Worksheet, row: Sequence[Any]) -> None:
    """Append ``row`` to ``sheet``; formula-like text stays a (quote-prefixed) string cell."""
    values = [safe_cell(raw) for raw in row]
    sheet.append([value for value, _ in values])
    for column, (_value, formula_like) in enumerate(values, start=1):
        if formula_like:
            cell = sheet.cell(sheet.max_row, column)
            cell.data_type = "s"
            cell.quotePrefix = True


def workbook_bytes(book: Workbook) -> bytes:
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def xlsx_bytes(title: str, rows: Iterable[Sequence[Any]]) -> bytes:
    """A one-sheet workbook of ``rows``, every cell through :func:`safe_cell`."""
    book = Workbook()
    sheet = book.active
    sheet.title = title
    for row in rows:
        append_row(sheet, row)
    return workbook_bytes(book)


class MissingFont(RuntimeError):
    """The CJK font of the PDF exports is not installed; message in Chinese."""


def pdf_document() -> FPDF:
    """An A4 document with the CJK font as "cjk" and its first page (ticket forms, the yearly evaluation)."""
    if not CJK_FONT.exists():
        raise MissingFont(f"缺少中文字体 {CJK_FONT}，请安装 fonts-wqy-microhei")
    pdf = FPDF(format="A4")
    pdf.add_font("cjk", fname=str(CJK_FONT))
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()
    return pdf

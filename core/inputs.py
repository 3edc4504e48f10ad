"""One input-validation layer: small typed parsers for what people and browsers send.

Every parser either returns a clean value or raises :class:`InputError` with a
plain Chinese message naming the field; the ``input_errors`` middleware
(core/web.py) turns it into a 4xx, never a 500. Limits come from the
database columns (:func:`column_length`) so the API and the schema cannot drift
apart: the database never sees a value it would refuse or silently keep.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Column, Numeric, String

# Free text without a column length (Text columns, remarks, notes): long enough for a call's
# transcript, short enough that nobody can fill the database with one request.
TEXT_MAX_LENGTH = 20_000
# Integer primary keys are 32-bit on PostgreSQL.
MAX_ID = 2**31 - 1
MAX_JSON_DEPTH = 32
# Dates people can mean: earlier or later dates are typing errors (and 0001-01-01 overflows time zones).
FIRST_DATE, LAST_DATE = dt.date(1970, 1, 1), dt.date(2099, 12, 31)

# C0 controls except tab/newline/carriage return, DEL and C1 controls: invisible, refused by
# PostgreSQL (NUL) and by spreadsheets (openpyxl raises on them).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_LINE_BREAKS = re.compile(r"[\t\n\r]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class InputError(ValueError):
    """Refused input; ``message`` is Chinese and ``field`` names the input at fault (if any)."""

    def __init__(self, message: str, field: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status


def column_length(column: Column[Any] | None) -> int | None:
    """The declared length of a String column (None for Text and non-string columns)."""
    if column is None or not isinstance(column.type, String):
        return None
    return column.type.length


def text(value: Any, field: str, label: str, *, max_length: int | None = None, multiline: bool = True) -> str:
    """A stripped string without control characters or lone surrogates, at most ``max_length`` characters."""
    if not isinstance(value, str):
        raise InputError(f"{label}格式不正确", field)
    value = value.strip()
    if _SURROGATE.search(value):
        raise InputError(f"{label}含有无效的字符，请删除后重试", field)
    if _CONTROL.search(value) or (not multiline and _LINE_BREAKS.search(value)):
        raise InputError(f"{label}含有不可见的控制字符，请删除后重试", field)
    limit = max_length or TEXT_MAX_LENGTH
    if len(value) > limit:
        raise InputError(f"{label}不能超过 {limit} 个字符（现为 {len(value)} 个）", field)
    return value


def column_text(value: Any, field: str, label: str, column: Column[Any] | None) -> str:
    """:func:`text` for a value stored in ``column``: its length, single-line if it is a String column."""
    length = column_length(column)
    return text(value, field, label, max_length=length, multiline=length is None)


def integer(value: Any, field: str, label: str, low: int, high: int) -> int:
    """An integer in [low, high] from JSON (int, not bool) or a query string (digits)."""
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d{1,30}", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{label}应为整数", field)
    if not low <= value <= high:
        raise InputError(f"{label}应在 {low} 到 {high} 之间", field)
    return value


def record_id(value: Any, field: str, label: str) -> int:
    """A database id (positive, 32-bit)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InputError(f"{label}编号无效", field)
    try:
        return integer(value, field, label, 1, MAX_ID)
    except InputError:
        raise InputError(f"{label}编号无效", field) from None


def query_int(raw: str | None, field: str, label: str, default: int, low: int, high: int) -> int:
    """An integer query parameter, ``default`` when absent or empty."""
    if raw is None or raw == "":
        return default
    return integer(raw, field, label, low, high)


def iso_date(value: Any, field: str, label: str) -> dt.date:
    """A date written as 2025-10-08, within the years people mean."""
    try:
        day = dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise InputError(f"{label}应为日期（如 2025-10-08）", field) from None
    if not FIRST_DATE <= day <= LAST_DATE:
        raise InputError(f"{label}应在 {FIRST_DATE} 到 {LAST_DATE} 之间", field)
    return day


def amount(value: Any, field: str, label: str, column: Column[Any]) -> Decimal:
    """A non-negative amount that fits ``column`` (a Numeric(precision, scale)), rounded to its scale."""
    numeric = column.type
    assert isinstance(numeric, Numeric) and numeric.precision and numeric.scale is not None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InputError(f"{label}格式不正确", field)
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise InputError(f"{label}格式不正确", field) from None
    if not number.is_finite() or number < 0:
        raise InputError(f"{label}应为不小于 0 的数字", field)
    ceiling = Decimal(10) ** (numeric.precision - numeric.scale)
    if number >= ceiling:
        raise InputError(f"{label}过大（应小于 {ceiling:,.0f}）", field)
    return number.quantize(Decimal(1).scaleb(-numeric.scale))


def check_json(data: Any) -> None:
    """No nesting deeper than MAX_JSON_DEPTH, no lone surrogates in keys or strings (they cannot be stored)."""
    stack: list[tuple[Any, int, str | None]] = [(data, 0, None)]
    while stack:
        value, depth, top = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise InputError("请求内容嵌套层级过深", top)
        if isinstance(value, dict):
            for key, item in value.items():
                if _SURROGATE.search(key):  # not named in the answer: it could not be written back
                    raise InputError("请求内容含有无效的字符，请删除后重试", top)
                where = top if depth else key
                stack.append((item, depth + 1, where))
        elif isinstance(value, list):
            stack.extend((item, depth + 1, top) for item in value)
        elif isinstance(value, str) and _SURROGATE.search(value):
            raise InputError("请求内容含有无效的字符，请删除后重试", top)


def clean_for_export(value: str) -> str:
    """``value`` without the characters no export format can hold (defence for data stored before the checks)."""
    return _SURROGATE.sub("", _CONTROL.sub("", value))

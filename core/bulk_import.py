"""Bulk import and export from a spreadsheet template (XLSX or CSV), the way centres hand over staff lists.

One importer for every kind of row: a :class:`Kind` says its columns (Chinese headers), checks one row
against what the database holds and the rows above it, writes the checked rows and exports the existing
ones. Agents and phones are here (:data:`AGENTS`, :data:`PHONES`); units are tickets.unit_import's (their
tree is units.yaml's); the admin page lists every kind.

Every import is first a dry run: each row's problems (row number as the spreadsheet shows it, the
column's header, the reason in Chinese) are listed before anything is written. The import itself is
all or nothing: a file with any problem writes no row at all (the list of problems is the same as the
dry run's), so a half-imported staff list never has to be found and finished by hand; fix the rows and
import the file again.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from openpyxl import Workbook, load_workbook
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from core import accounts, admin_audit, provisioning
from core.db import Database
from core.models import Role, User
from core.settings import Settings
from core.sheets import append_row, csv_bytes, workbook_bytes

MAX_ROWS = 5000
ENCODINGS = ("utf-8-sig", "gb18030")  # Excel's "CSV UTF-8", and the GBK of a Chinese Excel's plain CSV


@dataclass(frozen=True)
class Column:
    key: str
    label: str  # the header in the template, as people read it
    required: bool
    example: str
    note: str = ""


@dataclass(frozen=True)
class Problem:
    row: int  # as the spreadsheet numbers it: the header is row 1
    column: str  # the column's header ("" for the whole row or file)
    reason: str


@dataclass
class Report:
    kind: str
    rows: int = 0  # data rows read
    problems: list[Problem] = field(default_factory=list)
    written: int = 0
    # (username or extension, name, generated password), shown once (the kind's password_header names them)
    passwords: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def bad_rows(self) -> list[int]:
        return sorted({p.row for p in self.problems})


class Kind(Protocol):
    name: str  # in URLs and audit rows
    title: str  # Chinese
    columns: tuple[Column, ...]
    password_header: tuple[str, str, str]  # the columns of the generated passwords' table (none: unused)
    password_note: str  # what to do with them (Chinese)

    async def context(self, session: AsyncSession, settings: Settings) -> Any:
        """What checking needs (the catalogue of queues, units, taken names…); rows checked add to it."""

    def check(self, values: dict[str, str], context: Any, row: int) -> tuple[Any | None, list[tuple[str, str]]]:
        """One row: (the checked item, []) or (None, [(column key, reason), …])."""

    async def write(self, session: AsyncSession, settings: Settings, actor: User | None, address: str | None,
                    items: list[Any], report: Report) -> None:
        """Write the checked items (every row of the file was good), each with its audit row."""

    async def export(self, db: Database) -> list[list[Any]]:
        """The existing rows, in the template's columns (header not included)."""


# --- reading a file ---------------------------------------------------------------------------------

class FileError(ValueError):
    """The file cannot be read at all (Chinese)."""


def read_table(data: bytes, filename: str) -> list[list[str]]:
    """The rows of an uploaded XLSX or CSV, every cell as stripped text."""
    name = filename.lower()
    if name.endswith(".xlsx") or data[:2] == b"PK":
        try:
            book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        except Exception as exc:  # noqa: BLE001 - openpyxl raises many kinds for a broken file
            raise FileError("无法读取该 Excel 文件，请使用下载的模板（.xlsx）") from exc
        sheet = book.worksheets[0]
        rows = [["" if cell is None else _cell_text(cell) for cell in row]
                for row in sheet.iter_rows(values_only=True)]
        book.close()
        return rows
    for encoding in ENCODINGS:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        return [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(text))]
    raise FileError("无法识别 CSV 文件的编码，请另存为“CSV UTF-8”后重试")


def _cell_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a number typed into Excel (工号 101) comes back as 101.0
    return str(value).strip()


# --- template, dry run, import, export --------------------------------------------------------------

def _header(kind: Kind) -> list[str]:
    return [column.label + ("*" if column.required else "") for column in kind.columns]


def template(kind: Kind, fmt: str) -> bytes:
    """The empty template: headers (required ones marked *), one example row, and in XLSX a sheet of notes."""
    example = [column.example for column in kind.columns]
    if fmt == "csv":
        return csv_bytes([_header(kind), example])
    book = Workbook()
    sheet = book.active
    sheet.title = kind.title
    append_row(sheet, _header(kind))
    append_row(sheet, example)
    notes = book.create_sheet("填写说明")
    append_row(notes, ["列", "必填", "说明"])
    for column in kind.columns:
        append_row(notes, [column.label, "是" if column.required else "否", column.note])
    return workbook_bytes(book)


def _columns(kind: Kind, header: Sequence[str], report: Report) -> dict[int, Column] | None:
    by_label = {column.label: column for column in kind.columns}
    found: dict[int, Column] = {}
    for index, raw in enumerate(header):
        label = raw.strip().rstrip("*＊").strip()
        if not label:
            continue
        column = by_label.get(label)
        if column is None:
            report.problems.append(Problem(1, raw, f"未知的列“{raw}”（模板的列：{'、'.join(by_label)}）"))
        elif column in found.values():
            report.problems.append(Problem(1, raw, f"列“{label}”重复"))
        else:
            found[index] = column
    missing = [c.label for c in kind.columns if c.required and c not in found.values()]
    if missing:
        report.problems.append(Problem(1, "", f"缺少必填的列：{'、'.join(missing)}"))
    return None if report.problems else found


async def _check(db: Database, settings: Settings, kind: Kind, rows: list[list[str]],
                 report: Report) -> list[Any]:
    if not rows:
        report.problems.append(Problem(1, "", "文件是空的：请使用下载的模板"))
        return []
    columns = _columns(kind, rows[0], report)
    data = [(number, row) for number, row in enumerate(rows[1:], start=2) if any(cell for cell in row)]
    report.rows = len(data)
    if columns is None:
        return []
    if len(data) > MAX_ROWS:
        report.problems.append(Problem(1, "", f"一次最多导入 {MAX_ROWS} 行（文件有 {len(data)} 行），请分批导入"))
        return []
    labels = {column.key: column.label for column in kind.columns}
    items = []
    async with db.session() as session:
        context = await kind.context(session, settings)
    for number, row in data:
        values = {column.key: (row[index] if index < len(row) else "") for index, column in columns.items()}
        item, problems = kind.check(values, context, number)
        report.problems += [Problem(number, labels.get(key, ""), reason) for key, reason in problems]
        items.append(item)
    return items


async def dry_run(db: Database, settings: Settings, kind: Kind, data: bytes, filename: str) -> Report:
    """Every problem of every row; nothing is written."""
    report = Report(kind.name)
    await _check(db, settings, kind, read_table(data, filename), report)
    return report


async def run_import(db: Database, settings: Settings, kind: Kind, data: bytes, filename: str,
                     actor: User | None, address: str | None) -> Report:
    """Check as the dry run does; write every row, or (any problem) none."""
    report = Report(kind.name)
    items = await _check(db, settings, kind, read_table(data, filename), report)
    if report.problems or not items:
        return report
    async with db.transaction() as session:
        await kind.write(session, settings, actor, address, items, report)
        admin_audit.record_change(session, actor, address, "import", kind.name, "import", None,
                                  {"file": filename, "rows": report.written})
    return report


async def export(db: Database, kind: Kind, fmt: str) -> bytes:
    """The existing rows in the template's columns: an export can be edited and imported again."""
    rows = [_header(kind), *await kind.export(db)]
    if fmt == "csv":
        return csv_bytes(rows)
    book = Workbook()
    book.active.title = kind.title
    for row in rows:
        append_row(book.active, row)
    return workbook_bytes(book)


# --- agents ---------------------------------------------------------------------------------------

@dataclass
class _AgentContext:
    catalog: accounts.Catalog
    rows_by_username: dict[str, int] = field(default_factory=dict)
    rows_by_number: dict[str, int] = field(default_factory=dict)


class Agents:
    """坐席: one row per agent; existing usernames are refused (edit those on the page)."""

    name = "agents"
    title = "坐席"
    password_header = ("用户名", "姓名", "初始密码")
    password_note = "初始密码（只显示这一次，请分发给本人；首次登录时须设置自己的密码）："
    columns = (
        Column("username", "用户名", True, "agent101", "登录名：2–32 位小写字母、数字或 _ . -，以字母开头"),
        Column("display_name", "姓名", True, "王丽"),
        Column("agent_number", "工号", True, "101", "1–8 位数字，不能与他人重复"),
        Column("skills", "技能队列", True, "12301-general:0; 12301-complaint:2",
               "队列:优先级，多个用分号分隔；优先级 0–99，数字越小越先分配来电"),
        Column("default_extension", "默认分机", False, "8001"),
        Column("unit", "所属单位编码", False, "callcentre"),
    )

    async def context(self, session: AsyncSession, settings: Settings) -> _AgentContext:
        return _AgentContext(await accounts.catalog(session, settings))

    def check(self, values: dict[str, str], context: _AgentContext, row: int) -> tuple[Any | None, list]:
        fields, problems = accounts.check_fields({**values, "role": Role.AGENT.value}, context.catalog)
        username = values.get("username", "").strip().lower()
        number = values.get("agent_number", "").strip()
        if username and username in context.rows_by_username:
            problems.append(("username", f"用户名 {username} 与第 {context.rows_by_username[username]} 行重复"))
            fields = None
        if number and number in context.rows_by_number:
            problems.append(("agent_number", f"工号 {number} 与第 {context.rows_by_number[number]} 行重复"))
            fields = None
        context.rows_by_username.setdefault(username, row)
        context.rows_by_number.setdefault(number, row)
        return fields, problems

    async def write(self, session: AsyncSession, settings: Settings, actor: User | None, address: str | None,
                    items: list[Any], report: Report) -> None:
        passwords = [accounts.generate_password(settings.passwords) for _ in items]
        hashes = await _hash_all(passwords)  # before the first write: SQLite's write lock is not held yet
        for fields, password, password_hash in zip(items, passwords, hashes, strict=True):
            user = accounts.add_user(session, actor, address, fields, password_hash)
            await session.flush()
            admin_audit.record_change(session, actor, address, "user", user.username, "create", None,
                                      {**accounts.audited(user), "password": "generated"})
            report.passwords.append((user.username, user.display_name, password))
        report.written = len(items)

    async def export(self, db: Database) -> list[list[Any]]:
        async with db.session() as session:
            users = (await session.scalars(select(User).options(selectinload(User.unit))
                                           .where(User.role == Role.AGENT, User.active.is_(True))
                                           .order_by(User.username))).all()
        rows = []
        for user in users:
            values = accounts.user_values(user)
            rows.append([values[column.key] for column in self.columns])
        return rows


AGENTS = Agents()


# --- phones (extensions) ----------------------------------------------------------------------------

@dataclass
class _PhoneContext:
    taken: set[str]
    rows_by_extension: dict[str, int] = field(default_factory=dict)


STATUS_LABELS = {"启用": True, "停用": False}


def status_of(values: dict[str, str], problems: list[tuple[str, str]]) -> bool:
    """The 状态 column: 启用 (or empty) or 停用."""
    raw = values.get("status", "").strip() or "启用"
    if raw not in STATUS_LABELS:
        problems.append(("status", f"状态应为 启用 或 停用，实际为“{raw}”"))
    return STATUS_LABELS.get(raw, True)


class Phones:
    """电话分机: one row per new phone (PJSIP endpoint), each with a generated password shown once; existing
    extensions are refused (edit those on the page)."""

    name = "extensions"
    title = "电话分机"
    password_header = ("分机号", "名称", "SIP 密码")
    password_note = "分机密码（只显示这一次，请配置到话机上；之后只能在分机页面重新生成）："
    columns = (
        Column("extension", "分机号", True, "8006", "8 开头的 4 位数字，不能与现有分机重复"),
        Column("label", "名称", True, "坐席 8006", "最多 64 个字"),
        Column("kind", "类型", False, "坐席话机", "坐席话机 或 班长话机；不填为坐席话机"),
        Column("status", "状态", False, "启用", "启用 或 停用；不填为启用，停用的分机不能注册"),
    )

    async def context(self, session: AsyncSession, settings: Settings) -> _PhoneContext:
        return _PhoneContext(set((await session.scalars(select(provisioning.Phone.extension))).all()))

    def check(self, values: dict[str, str], context: _PhoneContext, row: int) -> tuple[Any | None, list]:
        fields, problems = provisioning.check_phone(values)
        enabled = status_of(values, problems)
        extension = values.get("extension", "").strip()
        if extension in context.taken:
            problems.append(("extension", f"分机 {extension} 已存在"))
        elif extension in context.rows_by_extension:
            problems.append(("extension", f"分机 {extension} 与第 {context.rows_by_extension[extension]} 行重复"))
        context.rows_by_extension.setdefault(extension, row)
        return (None if problems else {**fields, "enabled": enabled}), problems

    async def write(self, session: AsyncSession, settings: Settings, actor: User | None, address: str | None,
                    items: list[Any], report: Report) -> None:
        for values in items:
            phone, password = provisioning.add_phone(session, actor, address, values)
            report.passwords.append((phone.extension, phone.label, password))
        report.written = len(items)

    async def export(self, db: Database) -> list[list[Any]]:
        return [[phone.extension, phone.label, provisioning.KIND_LABELS[provisioning.PhoneKind(phone.kind)],
                 "启用" if phone.enabled else "停用"] for phone in await provisioning.list_phones(db)]


PHONES = Phones()


async def _hash_all(passwords: list[str]) -> list[str]:
    """argon2 of each password on every core but one: 200 agents would otherwise take a minute of one core
    (and argon2 releases the GIL, so threads do run side by side)."""
    workers = max(1, (os.cpu_count() or 2) - 1)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="import-argon2") as pool:
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.run_in_executor(pool, User.hash_password, p) for p in passwords)))

"""Bulk import of agents from the template (issue 17 item 3), SQLite and PostgreSQL: a dry run of 200 agents
with 3 bad rows lists exactly those rows (row number, column, reason) and writes nothing; the import refuses
the whole file likewise (all or nothing); a good list is written, each agent audited, and the export gives
them back in the template's columns. The admin's page in process: the upload form (CSRF in the multipart body) and its report."""

from __future__ import annotations

import io
import re

import aiohttp
import openpyxl
import pytest
from sqlalchemy import func, select

from core import bulk_import
from core.admin_audit import AdminChange
from core.db import Database
from core.models import Role, User

PREFIX = "svc"
BAD = {17: ("工号", "工号应为 1–8 位数字"), 88: ("技能队列", "没有队列 12399-general"),
       150: ("用户名", f"用户名 {PREFIX}0005 与第 6 行重复")}


def staff_list(bad: bool, count: int = 200) -> bytes:
    """``count`` agents as a centre hands them over (an XLSX from the template); rows 17, 88 and 150 wrong if
    ``bad``."""
    book = openpyxl.load_workbook(io.BytesIO(bulk_import.template(bulk_import.AGENTS, "xlsx")))
    sheet = book.worksheets[0]
    sheet.delete_rows(2)  # the example row
    for i in range(1, count + 1):
        row = [f"{PREFIX}{i:04d}", f"坐席{i}", 5000 + i, "12301-general:0; 12365-general:2", "", "callcentre"]
        sheet.append(row)
    if bad:
        sheet.cell(17, 3).value = "12a"
        sheet.cell(88, 4).value = "12399-general:1"
        sheet.cell(150, 1).value = f"{PREFIX}0005"  # the agent of row 6 again
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


async def _count(database: Database) -> int:
    async with database.session() as session:
        return await session.scalar(select(func.count()).select_from(User).where(User.username.startswith(PREFIX),
                                                                          User.role == Role.AGENT))


async def test_200_agents_with_3_bad_rows_are_reported_and_none_written(service_db, file_settings):
    report = await bulk_import.dry_run(service_db, file_settings, bulk_import.AGENTS, staff_list(True), "坐席名单.xlsx")
    assert report.rows == 200 and report.bad_rows == sorted(BAD)
    assert {p.row: (p.column, p.reason) for p in report.problems} == BAD
    assert await _count(service_db) == 0

    refused = await bulk_import.run_import(service_db, file_settings, bulk_import.AGENTS, staff_list(True), "坐席名单.xlsx",
                                           None, "10.3.3.3")
    assert refused.problems == report.problems and refused.written == 0 and refused.passwords == []
    assert await _count(service_db) == 0



async def test_a_good_list_is_imported_audited_and_exported_in_the_template_columns(service_db, file_settings):
    # Few rows: each imported agent costs an argon2 hash of their generated password.
    done = await bulk_import.run_import(service_db, file_settings, bulk_import.AGENTS, staff_list(False, 6), "坐席名单.xlsx",
                                        None, "10.3.3.3")
    assert done.problems == [] and done.written == 6 and await _count(service_db) == 6
    username, _name, password = done.passwords[4]
    async with service_db.session() as session:
        user = await session.scalar(select(User).where(User.username == username))
        audit = (await session.scalars(select(AdminChange).order_by(AdminChange.id))).all()
    assert user.check_password(password) and user.must_change_password and user.role == Role.AGENT
    assert user.skills == {"12301-general": 0, "12365-general": 2} and user.agent_number == "5005"
    assert [a.action for a in audit] == ["create"] * 6 + ["import"]
    assert audit[-1].after == {"file": "坐席名单.xlsx", "rows": 6} and audit[0].address == "10.3.3.3"

    again = await bulk_import.dry_run(service_db, file_settings, bulk_import.AGENTS, staff_list(False, 6), "坐席名单.xlsx")
    assert again.bad_rows == [2, 3, 4, 5, 6, 7]  # already there: every username and agent number is taken

    exported = openpyxl.load_workbook(io.BytesIO(await bulk_import.export(service_db, bulk_import.AGENTS, "xlsx")))
    rows = [[c.value for c in r] for r in exported.active.iter_rows()]
    mine = [r for r in rows if str(r[0]).startswith(PREFIX)]
    assert rows[0][:2] == ["用户名*", "姓名*"] and len(mine) == 6
    assert mine[4] == [username, "坐席5", "5005", "12301-general:0; 12365-general:2", None, "callcentre"]


def test_csv_in_gbk_and_a_wrong_header_are_read_and_reported():
    text = "用户名*,姓名*,工号*,技能队列*,电话\r\nimpx,王五,9,12301-general,1\r\n"
    assert bulk_import.read_table(text.encode("gb18030"), "名单.csv")[1][:2] == ["impx", "王五"]
    report = bulk_import.Report("agents")
    assert bulk_import._columns(bulk_import.AGENTS, ["用户名*", "姓名", "工号", "电话"], report) is None
    assert [(p.row, p.reason) for p in report.problems] == [
        (1, "未知的列“电话”（模板的列：用户名、姓名、工号、技能队列、默认分机、所属单位编码）"),
        (1, "缺少必填的列：技能队列")]
    with pytest.raises(bulk_import.FileError):
        bulk_import.read_table(b"PK\x03\x04 not really a workbook", "x.xlsx")


async def test_the_import_page_checks_then_imports_a_csv(desk):
    await desk.login("admin", desk.settings.secrets["admin_password"])
    page = await desk.page("/admin/import/agents")
    token = re.search(r'name="_csrf" value="([^"]+)"', page).group(1)
    template = await desk.client.get("/admin/import/agents/template?format=csv")
    header = (await template.read()).decode("utf-8-sig").splitlines()[0]
    body = f"{header}\r\nimpweb1,网页导入,8801,12301-general:1,8001,callcentre\r\nimpweb2,,8802,12301-general,,\r\n"

    async def upload(mode: str, csrf: str = token):
        form = aiohttp.FormData()
        form.add_field("_csrf", csrf)
        form.add_field("mode", mode)
        form.add_field("file", body.encode("utf-8-sig"), filename="agents.csv", content_type="text/csv")
        return await desk.client.post("/admin/import/agents", data=form)

    assert (await upload("dry", "forged")).status == 403  # CSRF is checked in the multipart body
    checked = await upload("dry")
    page = await checked.text()
    assert checked.status == 400 and 'data-row="3"' in page and "请填写姓名" in page and "2 行" in page
    body = body.replace("impweb2,,", "impweb2,第二位,")
    imported = await upload("import")
    page = await imported.text()
    assert imported.status == 200 and "已导入 2 个坐席" in page and 'id="import-passwords"' in page
    listing = await desk.page("/admin/users?text=impweb")
    assert "网页导入" in listing and "第二位" in listing

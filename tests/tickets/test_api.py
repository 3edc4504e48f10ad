"""The JSON API through aiohttp's test client, with a tiny middleware standing in for the desk's login."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import AsyncIterator
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient, TestServer
from fpdf import FPDF
from openpyxl import load_workbook
from sqlalchemy import func, select
from ticket_helpers import complaint

from core.settings import load_settings
from core.web import DB_KEY, REDIS_KEY, SETTINGS_KEY, USER_KEY, input_errors
from tickets.api import routes
from tickets.models import Evidence, Ticket

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


class FakeRedis:
    def __init__(self) -> None:
        self.events: list[dict] = []

    async def xadd(self, stream, fields, **kw):
        self.events.append(fields)
        return "1-0"


@pytest.fixture
async def client(db, users, tmp_path) -> AsyncIterator[TestClient]:
    @web.middleware
    async def as_user(request: web.Request, handler):
        name = request.headers.get("X-Test-User")
        if name:
            request[USER_KEY] = users[name]
        return await handler(request)

    app = web.Application(middlewares=[input_errors, as_user])
    app[DB_KEY] = db
    app[SETTINGS_KEY] = load_settings(var_dir=tmp_path, env={})
    app[REDIS_KEY] = FakeRedis()
    app.add_routes(routes)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def who(name: str) -> dict[str, str]:
    return {"X-Test-User": name}


def _today_shanghai() -> str:
    return dt.datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()


async def _register(client, **overrides) -> dict:
    resp = await client.post("/api/tickets", json=complaint(**overrides), headers=who("agent"))
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def _action(client, number, user, action, inputs, status=200) -> dict:
    resp = await client.post(f"/api/tickets/{number}/actions", json={"action": action, "inputs": inputs},
                             headers=who(user))
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_follow_a_complaint_through_transfer_acceptance_mediation_and_review(client, units):
    t = await _register(client, unit_id=units["12301-GD"].id)
    n = t["number"]
    assert t["state"] == "pending" and t["unit"]["name"] == "广东省文化和旅游厅质监所"
    await _action(client, n, "gd_handler", "转办", {"target_unit_id": units["12301-GD-GZ"].id, "remark": "转广州"})
    await _action(client, n, "gz_handler", "转办", {"target_unit_id": units["12301-GD-GZ-TH"].id, "remark": "转天河"})
    body = await _action(client, n, "th_handler", "受理", {"note": "已电话联系诉求方"})
    assert body["ticket"]["state"] == "accepted" and body["ticket"]["days_left"] is not None
    await _action(client, n, "th_handler", "调解成功",
                  {"amount": "1200.5", "closing_date": _today_shanghai(), "remark": "旅行社退款", "document_issued": "是"})
    detail = await (await client.get(f"/api/tickets/{n}", headers=who("th_head"))).json()
    assert detail["state"] == "pending_review" and detail["actions"] == ["审核通过", "审核退回", "督办", "补充凭证", "关联来电", "调整风险等级"]
    body = await _action(client, n, "th_head", "审核通过", {"remark": "同意"})
    assert body["ticket"]["state"] == "mediated"
    log = (await (await client.get(f"/api/tickets/{n}/log", headers=who("gd_handler"))).json())["log"]
    assert [s["action"] for s in log] == ["审核通过", "调解成功", "受理", "转办", "转办", "登记"]
    assert log[1]["inputs"]["amount"] == "1200.50"

    pdf = await client.get(f"/api/tickets/{n}/archive?format=pdf", headers=who("th_head"))
    assert pdf.status == 200 and (await pdf.read()).startswith(b"%PDF")
    xlsx = await client.get(f"/api/tickets/{n}/archive?format=xlsx", headers=who("th_head"))
    sheet = load_workbook(io.BytesIO(await xlsx.read())).active
    values = {row[0]: row[1] for row in sheet.iter_rows(values_only=True)}
    assert sheet["A1"].value == "投诉处理归档表"
    assert values["是否调解"] == "是" and values["是否出具调解书或终止调解书"] == "是"
    assert values["审批情况"].startswith("天河区负责人") and values["投诉内容"].startswith("跟团游")


async def test_input_errors_are_4xx_with_a_chinese_message_naming_the_field(client, units):
    resp = await client.post("/api/tickets", json=complaint(complainant_phone=""), headers=who("agent"))
    assert resp.status == 400
    assert await resp.json() == {"error": "请填写诉求方电话", "field": "complainant_phone"}
    resp = await client.post("/api/tickets", data="not json", headers=who("agent"))
    assert resp.status == 400 and "JSON" in (await resp.json())["error"]
    t = await _register(client)
    body = await _action(client, t["number"], "th_handler", "转办", {"remark": "x"}, status=400)
    assert body == {"error": "请选择转办单位", "field": "target_unit_id"}
    body = await _action(client, t["number"], "th_handler", "调解成功", {}, status=409)
    assert body["field"] == "action" and "待受理" in body["error"]
    resp = await client.get("/api/tickets?expiry=1-2", headers=who("admin"))
    assert resp.status == 400 and (await resp.json())["field"] == "expiry"
    resp = await client.get("/api/tickets?page=x", headers=who("admin"))
    assert (await resp.json())["field"] == "page"


async def test_nothing_half_written_when_registration_fails(client, db):
    resp = await client.post("/api/tickets", json=complaint(call_ids=["missing"]), headers=who("agent"))
    assert resp.status == 400 and (await resp.json())["field"] == "call_ids"
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Ticket)) == 0


async def test_unit_boundaries_on_every_call(client, units):
    t = await _register(client)
    n = t["number"]
    for user in ("sc_handler", "zj_handler"):
        assert (await client.get(f"/api/tickets/{n}", headers=who(user))).status == 404
        assert (await client.get(f"/api/tickets/{n}/log", headers=who(user))).status == 404
        await _action(client, n, user, "受理", {"note": "x"}, status=404)
        listed = await (await client.get("/api/tickets", headers=who(user))).json()
        assert listed["total"] == 0
    await _action(client, n, "gd_handler", "受理", {"note": "x"}, status=403)  # sees it, does not hold it
    assert (await client.get(f"/api/tickets/{n}")).status == 401  # not logged in
    assert (await client.get("/api/tickets/counters")).status == 401


async def test_level_i_registration_alerts_team_leads(client):
    t = await _register(client, description="景区游乐设施倒塌，一名游客死亡")
    assert t["risk"]["level"] == "I"
    events = client.app[REDIS_KEY].events
    assert [e["name"] for e in events] == ["risk_alert"] and t["number"] in events[0]["data"]
    resp = await client.post(f"/api/tickets/{t['number']}/risk", json={"level": "III"}, headers=who("lead"))
    assert resp.status == 400 and (await resp.json())["field"] == "remark"
    resp = await client.post(f"/api/tickets/{t['number']}/risk", json={"level": "III", "remark": "核实为谣言"},
                             headers=who("lead"))
    assert (await resp.json())["ticket"]["risk"]["level"] == "III"


async def test_evidence_upload_checks_type_by_content_and_size(client, db, tmp_path):
    t = await _register(client)
    n = t["number"]

    async def upload(content: bytes, name: str, user: str = "th_handler"):
        form = FormData()
        form.add_field("file", content, filename=name, content_type="image/png")
        form.add_field("remark", "发票照片")
        return await client.post(f"/api/tickets/{n}/evidence", data=form, headers=who(user))

    resp = await upload(b"MZ\x90\x00 this is an exe", "发票.png")
    assert resp.status == 415 and (await resp.json())["field"] == "file"
    resp = await upload(b"%PDF-" + b"0" * (10 * 1024 * 1024), "big.pdf")
    assert resp.status == 413
    resp = await upload(PNG, "发票.png", user="sc_handler")
    assert resp.status == 404
    resp = await upload(PNG, "发票.png")
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["content_type"] == "image/png" and body["size_bytes"] == len(PNG)
    stored = list((tmp_path / "evidence" / n).iterdir())
    assert [p.read_bytes() for p in stored] == [PNG]
    pdf = FPDF()
    pdf.add_page()
    resp = await upload(bytes(pdf.output()), "合同.pdf")
    assert resp.status == 201 and (await resp.json())["content_type"] == "application/pdf"
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Evidence)) == 2
    log = (await (await client.get(f"/api/tickets/{n}/log", headers=who("th_handler"))).json())["log"]
    assert log[0]["action"] == "补充凭证" and "合同.pdf" in log[0]["remark"]


async def _upload(client, number: str, content: bytes, name: str, user: str = "th_handler") -> int:
    form = FormData()
    form.add_field("file", content, filename=name, content_type="application/octet-stream")
    resp = await client.post(f"/api/tickets/{number}/evidence", data=form, headers=who(user))
    assert resp.status == 201, await resp.text()
    return (await resp.json())["id"]


async def test_evidence_is_shown_and_downloaded_to_whoever_may_see_the_ticket(client, tmp_path):
    n = (await _register(client))["number"]  # dispatched to 天河区 (12301-GD-GZ-TH)
    pdf = FPDF()
    pdf.add_page()
    files = {  # original name -> (bytes, type recognised from the content)
        "发票 照片.png": (PNG + bytes(range(256)) * 40, "image/png"),
        "合同.pdf": (bytes(pdf.output()), "application/pdf"),
        "receipt-01.jpg": (b"\xff\xd8\xff\xe0" + bytes(range(255, -1, -1)) * 8, "image/jpeg"),
    }
    ids = {name: await _upload(client, n, content, name) for name, (content, _) in files.items()}

    listing = await (await client.get(f"/api/tickets/{n}/evidence", headers=who("gd_handler"))).json()
    assert [(e["filename"], e["content_type"], e["size_bytes"]) for e in listing["evidence"]] == \
        [(name, ctype, len(content)) for name, (content, ctype) in files.items()]
    assert listing["evidence"][0]["url"] == f"/api/tickets/{n}/evidence/{ids['发票 照片.png']}"

    for user in ("th_handler", "th_head", "gz_handler", "gd_handler", "nat12301", "agent", "admin"):
        for name, (content, ctype) in files.items():
            resp = await client.get(f"/api/tickets/{n}/evidence/{ids[name]}", headers=who(user))
            assert resp.status == 200, (user, name, await resp.text())
            assert await resp.read() == content
            assert resp.headers["Content-Type"] == ctype
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            disposition = resp.headers["Content-Disposition"]
            assert disposition.startswith("inline; ")
            assert f"filename*=UTF-8''{quote(name, safe='')}" in disposition
    resp = await client.get(f"/api/tickets/{n}/evidence/{ids['receipt-01.jpg']}?download=1", headers=who("gz_handler"))
    assert resp.headers["Content-Disposition"].startswith('attachment; filename="receipt-01.jpg"; ')
    resp = await client.get(f"/api/tickets/{n}/evidence/{ids['合同.pdf']}?download=1", headers=who("gz_handler"))
    assert resp.headers["Content-Disposition"].startswith(f'attachment; filename="evidence-{n}-{ids["合同.pdf"]}.pdf"; ')

    # Another province, another hotline's unit, nobody logged in: refused, in Chinese, without leaking the file.
    for user in ("sc_handler", "zj_handler", "xh_handler"):
        for path in (f"/api/tickets/{n}/evidence/{ids['合同.pdf']}", f"/api/tickets/{n}/evidence"):
            resp = await client.get(path, headers=who(user))
            assert resp.status == 404 and (await resp.json())["error"] == "工单不存在", (user, path)
    resp = await client.get(f"/api/tickets/{n}/evidence/{ids['合同.pdf']}")
    assert resp.status == 401 and (await resp.json())["error"] == "请先登录"

    # An evidence id of another ticket is not served through this one.
    other = (await _register(client))["number"]
    foreign = await _upload(client, other, PNG, "别的工单.png")
    resp = await client.get(f"/api/tickets/{n}/evidence/{foreign}", headers=who("th_handler"))
    assert resp.status == 404 and (await resp.json())["error"] == "该工单没有这份凭证"

    # A file gone from storage is reported in words, not as a server error.
    for stored in (tmp_path / "evidence" / n).iterdir():
        stored.unlink()
    resp = await client.get(f"/api/tickets/{n}/evidence/{ids['合同.pdf']}", headers=who("th_handler"))
    assert resp.status == 404 and "凭证文件已不在存储中" in (await resp.json())["error"]


async def test_list_filters_counters_export_and_suggestion(client, units):
    await _register(client)
    await _register(client, complainant_phone="13900000009", event_category="不合理低价")
    resp = await client.get("/api/tickets?event_category=不合理低价&province=广东省", headers=who("gd_handler"))
    body = await resp.json()
    assert body["total"] == 1 and body["items"][0]["complainant_phone"] == "13900000009"
    counters = await (await client.get("/api/tickets/counters", headers=who("th_handler"))).json()
    assert counters["per_state"]["pending"] == 2
    csv_resp = await client.get("/api/tickets/export?format=csv&state=pending", headers=who("agent"))
    text = (await csv_resp.read()).decode("utf-8-sig")
    assert text.splitlines()[0].startswith("工单号,类型") and len(text.splitlines()) == 3
    xlsx = await client.get("/api/tickets/export?format=xlsx", headers=who("agent"))
    rows = list(load_workbook(io.BytesIO(await xlsx.read())).active.iter_rows(values_only=True))
    assert len(rows) == 3 and rows[1][3] == "待受理"
    resp = await client.get("/api/tickets/suggest-unit?hotline=12301&province=广东省&city=广州市&county=天河区"
                            "&complaint_object=旅行社及导游领队", headers=who("agent"))
    assert (await resp.json())["unit"]["code"] == "12301-GD-GZ-TH"
    rates = await (await client.get("/api/tickets/closing-rates", headers=who("gd_head"))).json()
    assert rates == {"users": []}


async def test_archive_refused_until_closed(client):
    t = await _register(client)
    resp = await client.get(f"/api/tickets/{t['number']}/archive", headers=who("th_handler"))
    assert resp.status == 409 and "结案后" in (await resp.json())["error"]


async def test_openapi_document_describes_every_route(client):
    doc = await (await client.get("/api/tickets/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = set()
    for route in client.app.router.routes():
        info = route.resource.get_info()
        if route.method != "HEAD":  # aiohttp adds HEAD beside every GET
            served.add((info.get("path") or info["formatter"], route.method))
    assert served == documented
    actions = {b["title"] for b in doc["paths"]["/api/tickets/{number}/actions"]["post"]["requestBody"]
               ["content"]["application/json"]["schema"]["oneOf"]}
    assert {"受理", "转办", "转办退回", "移交", "退回", "不予受理", "自行和解", "调解成功", "调解失败",
            "启用质保金赔偿", "督办", "补充凭证"} <= actions


async def test_004_6_3_5_1_a_handed_over_case_is_archived_once_the_authority_result_is_recorded(client):
    n = (await _register(client))["number"]
    refused = await _action(client, n, "th_handler", "移交", {"authority": "随便写的单位", "remark": "x"}, status=400)
    assert refused["field"] == "authority" and "随便写的单位" in refused["error"]
    body = await _action(client, n, "th_handler", "移交", {"authority": "公安机关", "remark": "涉嫌诈骗，移送公安"})
    handover = body["ticket"]["handover"]
    assert handover["authority"] == "公安机关" and handover["due"] and handover["result"] is None
    resp = await client.get(f"/api/tickets/{n}/archive", headers=who("th_handler"))
    assert resp.status == 409 and "移交" in (await resp.json())["error"]
    body = await _action(client, n, "th_handler", "移交结果", {"result": "公安机关已立案"})
    assert body["ticket"]["handover"]["result"] == "公安机关已立案" and body["ticket"]["state"] == "handed_over"
    pdf = await client.get(f"/api/tickets/{n}/archive", headers=who("th_handler"))
    assert pdf.status == 200 and (await pdf.read()).startswith(b"%PDF")

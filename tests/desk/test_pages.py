"""The desk in process: log-in and sessions, CSRF, role menus, unit boundaries, escaping, recordings, report."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

from aiohttp import FormData
from openpyxl import load_workbook
from sqlalchemy import select

from agent_desk.auth import COOKIE, SESSION_PREFIX
from core.web import DB_KEY
from cti.models import CallRecord
from recordings.models import PlaybackLog, Recording

HOSTILE = "<script>alert('x')</script>导游强迫购物"


def complaint(**extra) -> dict:
    return {"kind": "complaint", "hotline": "12301", "description": HOSTILE, "complainant_phone": "13800000001",
            "complainant_name": "张三", "respondent_name": "某旅行社", "complaint_object": "旅行社及导游领队",
            "event_category": "强迫或变相强迫购物", "province": "广东省", "city": "广州市", "county": "天河区", **extra}


async def register(desk, **extra) -> dict:
    await desk.login("agent1")
    response = await desk.post_json("/api/tickets", complaint(**extra))
    assert response.status == 201, await response.text()
    return await response.json()


async def test_pages_need_a_login_and_apis_answer_401_in_chinese(desk):
    response = await desk.client.get("/desk", allow_redirects=False)
    assert response.status == 302 and unquote(response.headers["Location"]) == "/login?next=/desk"
    response = await desk.client.get("/api/tickets")
    assert response.status == 401 and "登录" in (await response.json())["error"]
    assert (await desk.client.get("/healthz")).status == 200
    assert (await desk.client.get("/static/desk.css")).status == 200


async def test_wrong_password_is_refused_and_the_session_cookie_is_httponly_lax_and_expires(desk):
    response = await desk.login("agent1", "wrong")
    assert response.status == 401 and "用户名或密码错误" in await response.text()
    response = await desk.login("agent1")
    assert response.status == 302 and response.headers["Location"] == "/desk"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    keys = await desk.tools_redis.keys(SESSION_PREFIX + "*")
    ttl = max([await desk.tools_redis.ttl(k) for k in keys])
    assert 0 < ttl <= desk.settings.web.session_minutes * 60


async def test_login_form_without_its_csrf_token_is_refused(desk):
    response = await desk.client.post("/login", data={"username": "agent1",
                                                       "password": desk.settings.secrets["demo_password"]})
    assert response.status == 403 and "页面已过期" in await response.text()


async def test_state_changing_requests_need_the_csrf_token(desk):
    await desk.login("agent1")
    refused = await desk.post_json("/api/tickets", complaint(), csrf=False)
    assert refused.status == 403 and "CSRF" in (await refused.json())["error"]
    forged = await desk.client.post("/api/tickets", json=complaint(), headers={"X-CSRF-Token": "forged"})
    assert forged.status == 403
    accepted = await desk.post_json("/api/tickets", complaint())
    assert accepted.status == 201


async def test_logout_ends_the_session(desk):
    await desk.login("agent1")
    assert (await desk.client.post("/logout", data={"_csrf": desk.csrf}, allow_redirects=False)).status == 302
    assert (await desk.client.get("/api/tickets")).status == 401


async def test_menus_follow_the_role_and_agents_cannot_open_the_lead_console(desk):
    await desk.login("agent1")
    page = await desk.page("/desk")
    assert "坐席工作台" in page and "服务质量报表" not in page and "签入" in page
    assert "您好，这里是浙江省12365热线，坐席" in page  # 004 B.1, the region and hotline filled in
    assert "{" not in page.split('data-pane="phrases"')[1].split("</div>")[0]  # no literal placeholder
    refused = await desk.client.get("/wallboard")
    assert refused.status == 403 and "无权" in await refused.text()
    await desk.login("lead1")
    page = await desk.page("/wallboard")
    assert "实时监控" in page and "服务质量报表" in page and "坐席工作台" not in page
    await desk.login("th_handler")
    page = await desk.page("/unit")
    assert "按状态" in page and "10天内过期" in page and "实时监控" not in page


async def test_ticket_text_is_escaped_and_another_unit_is_refused_the_ticket(desk):
    ticket = await register(desk)
    await desk.login("th_handler")  # 天河区: where a 广州天河 travel-agency complaint is dispatched
    page = await desk.page(f"/tickets/{ticket['number']}")
    assert "&lt;script&gt;alert(" in page and "<script>alert(" not in page
    assert "受理" in page and "工单跟踪" in page
    listing = await desk.page("/tickets?expiry=&state=pending&complaint_object=旅行社及导游领队")
    assert ticket["number"] in listing
    await desk.login("sc_handler")  # 四川: another unit
    refused = await desk.client.get(f"/tickets/{ticket['number']}")
    assert refused.status == 404 and "不存在" in await refused.text()
    assert ticket["number"] not in await desk.page("/tickets")


async def test_unit_actions_need_their_required_inputs(desk):
    ticket = await register(desk)
    await desk.login("th_handler")
    await desk.page(f"/tickets/{ticket['number']}")
    url = f"/api/tickets/{ticket['number']}/actions"
    missing = await desk.post_json(url, {"action": "受理", "inputs": {}})
    body = await missing.json()
    assert missing.status == 400 and body["field"] == "note" and "受理说明" in body["error"]
    assert (await desk.post_json(url, {"action": "受理", "inputs": {"note": "已联系双方"}})).status == 200
    page = await desk.page(f"/tickets/{ticket['number']}")
    assert "受理中" in page and "已联系双方" in page
    assert "调解成功" in page  # the next actions are offered


async def test_my_page_and_unit_home_show_the_closing_rate(desk):
    await desk.login("th_handler")
    page = await desk.page("/my")
    assert "结案率" in page and "天河区文化广电旅游体育局" in page


async def _recording_for(desk, call_agent_id: int | None) -> tuple[Recording, CallRecord]:
    root = desk.settings.recordings_dir
    call_id = f"hl-{uuid.uuid4().hex[:12]}"
    (root / "t").mkdir(parents=True, exist_ok=True)
    (root / "t" / f"{call_id}.wav").write_bytes(b"RIFF" + bytes(range(256)) * 40)
    call = CallRecord(call_id=call_id, hotline="12301", caller_number="13800000001", agent_id=call_agent_id,
                      started_at=datetime.now(UTC) - timedelta(minutes=2), queued_at=datetime.now(UTC),
                      answered_at=datetime.now(UTC), wait_seconds=4, talk_seconds=30)
    async with desk.app[DB_KEY].transaction() as db:
        db.add(call)
        recording = Recording(call_id=call_id, kind="call", path=f"t/{call_id}.wav", format="wav")
        db.add(recording)
    return recording, call


async def test_recordings_stream_with_ranges_only_to_allowed_users_and_every_playback_is_logged(desk):
    await desk.login("agent2")
    async with desk.app[DB_KEY].session() as db:
        from core.models import User
        agent_id = await db.scalar(select(User.id).where(User.username == "agent2"))
    recording, _call = await _recording_for(desk, agent_id)
    url = f"/recordings/{recording.id}"
    full = await desk.client.get(url)
    assert full.status == 200 and full.headers["Content-Type"] == "audio/wav"
    part = await desk.client.get(url, headers={"Range": "bytes=100-199"})
    assert part.status == 206 and len(await part.read()) == 100
    await desk.login("agent1")  # not their call, not linked to a ticket they see
    assert (await desk.client.get(url)).status == 403
    await desk.login("lead1")
    assert (await desk.client.get(url, headers={"Range": "bytes=0-"})).status == 206
    await desk.login("th_handler")
    assert (await desk.client.get(url)).status == 403
    async with desk.app[DB_KEY].session() as db:
        plays = (await db.scalars(select(PlaybackLog).where(PlaybackLog.recording_id == recording.id))).all()
    assert len(plays) == 2  # agent2's first request and lead1's; the seek within a playback is not a new one


async def test_recording_of_a_ticket_call_plays_for_the_handling_unit(desk):
    async with desk.app[DB_KEY].session() as db:
        from core.models import User
        agent_id = await db.scalar(select(User.id).where(User.username == "agent1"))
    recording, call = await _recording_for(desk, agent_id)
    ticket = await register(desk, call_ids=[call.ref])  # agent1 took the call: the pop's reference
    await desk.login("th_handler")
    page = await desk.page(f"/tickets/{ticket['number']}")
    assert f'src="/recordings/{recording.id}"' in page
    assert (await desk.client.get(f"/recordings/{recording.id}")).status == 200
    await desk.login("sc_handler")
    assert (await desk.client.get(f"/recordings/{recording.id}")).status == 403


async def test_ticket_page_links_each_evidence_file_for_the_units_that_see_it(desk):
    ticket = await register(desk)
    number = ticket["number"]
    await desk.login("th_handler")
    await desk.page(f"/tickets/{number}")
    content = b"%PDF-1.4\n" + bytes(range(256)) * 20
    form = FormData()
    form.add_field("file", content, filename="合同<扫描件>.pdf", content_type="application/pdf")
    upload = await desk.client.post(f"/api/tickets/{number}/evidence", data=form, headers={"X-CSRF-Token": desk.csrf})
    assert upload.status == 201, await upload.text()
    url = f"/api/tickets/{number}/evidence/{(await upload.json())['id']}"
    page = await desk.page(f"/tickets/{number}")
    assert f'href="{url}"' in page and f'href="{url}?download=1"' in page
    assert "合同&lt;扫描件&gt;.pdf" in page and "合同<扫描件>" not in page
    shown = await desk.client.get(url)
    assert shown.status == 200 and await shown.read() == content
    assert shown.headers["Content-Type"] == "application/pdf"
    assert shown.headers["X-Content-Type-Options"] == "nosniff"
    assert shown.headers["Content-Disposition"].startswith("inline; ")
    await desk.login("gd_handler")  # the province above sees the ticket, so its evidence too
    assert await (await desk.client.get(f"{url}?download=1")).read() == content
    await desk.login("sc_handler")  # another province: neither the page nor the file
    refused = await desk.client.get(url)
    assert refused.status == 404 and (await refused.json())["error"] == "工单不存在"
    assert (await desk.client.get(f"/tickets/{number}")).status == 404


async def test_wallboard_snapshot_and_report_with_exports(desk):
    await _recording_for(desk, None)
    await desk.login("lead1")
    snap = await (await desk.client.get("/api/wallboard")).json()
    assert {q["queue"] for q in snap["queues"]} >= {"12301-complaint", "12365-report"}
    assert [a["username"] for a in snap["agents"]][:2] == ["agent1", "agent2"]
    assert isinstance(snap["abandoned"], list)
    assert 'id="abandoned"' in await desk.page("/wallboard")
    page = await desk.page("/report?hotline=12301")
    assert "接线率" in page and 'class="echart"' in page and "答复率" in page and "办结率" in page
    # The charts' library is served by the desk itself from node_modules (npm, pinned), never a CDN.
    assert '<script src="/vendor/echarts/echarts.min.js">' in page and "//cdn" not in page
    library = await desk.client.get("/vendor/echarts/echarts.min.js")
    assert library.status == 200 and "echarts" in (await library.text())[:2000].lower()
    assert "004 §3.7" in page and "进入排队来电的人工接通率" in page and "15秒内接听率" in page
    csv_body = await (await desk.client.get("/report/export?format=csv&hotline=12301")).read()
    assert csv_body.startswith(b"\xef\xbb\xbf") and "接线率".encode() in csv_body
    xlsx = await (await desk.client.get("/report/export?format=xlsx")).read()
    sheet = load_workbook(io.BytesIO(xlsx)).active
    assert sheet["A1"].value == "服务质量报表"
    bad = await desk.client.get("/report?from=2025-02-01&to=2025-01-01", headers={"Accept": "application/json"})
    assert bad.status == 400


def test_abandoned_calls_are_listed_newest_first_with_whether_the_number_was_reached_since():
    import datetime as dt

    from agent_desk.lead import abandoned_rows
    from cti.models import CallRecord

    t0 = dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC)
    calls = [
        CallRecord(call_id="a", caller_number="13800000001", hotline="12301", queue="12301-general",
                   started_at=t0, abandoned=True, wait_seconds=70),
        CallRecord(call_id="b", caller_number="13800000002", hotline="12365", queue="12365-report",
                   started_at=t0 + dt.timedelta(minutes=5), abandoned=True, wait_seconds=12),
        CallRecord(call_id="c", caller_number="13800000001", hotline="12301", queue="12301-general",
                   started_at=t0 + dt.timedelta(minutes=9), answered_at=t0 + dt.timedelta(minutes=10)),
    ]
    rows = abandoned_rows(calls)
    assert [r["caller"] for r in rows] == ["13800000002", "13800000001"]
    assert rows[0]["reached_since"] is False and rows[1]["reached_since"] is True
    assert rows[1]["waited"] == 70 and rows[1]["queue"] == "12301-general"

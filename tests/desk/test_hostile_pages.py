"""Malformed input to the desk's pages and JSON routes answers a 4xx in Chinese, never a 500 (issue 12 item 11),
and the service-quality export keeps formula text as text (item 4). The real-stack suite is
tests/security/test_hostile_input.py."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime

from openpyxl import load_workbook
from sqlalchemy import select, update

from core.models import User
from core.web import DB_KEY
from cti.models import CallRecord


async def test_a_form_post_that_fails_csrf_gets_the_chinese_error_page(desk):
    await desk.login("agent1")
    response = await desk.client.post("/logout", data={"_csrf": "wrong"}, allow_redirects=False)
    assert response.status == 403
    page = await response.text()
    assert "请求校验失败（CSRF），请刷新页面后重试" in page and response.content_type == "text/html"
    response = await desk.client.post("/logout", data={}, allow_redirects=False)
    assert response.status == 403 and "CSRF" in await response.text()
    assert (await desk.client.get("/desk")).status == 200  # still logged in: nothing was done


async def test_malformed_ids_dates_pages_and_stream_ids_get_a_4xx(desk):
    await desk.login("lead1")
    for agent_id in ("abc", 10**30, -1, None, [1], 1.5):
        response = await desk.post_json("/api/wallboard/spy", {"agent_id": agent_id, "mode": "listen"})
        assert response.status == 400, (agent_id, await response.text())
        assert await response.json() == {"error": "坐席编号无效", "field": "agent_id"}
    for query in ("from=0001-01-01", "to=9999-12-31", "from=2025-13-01", "from=1e100"):
        for path in ("/report", "/report/export"):
            response = await desk.client.get(f"{path}?{query}")
            assert response.status == 400, (path, query, response.status)
            assert "日期" in await response.text()
    response = await desk.client.get("/tickets?page=" + "9" * 30)
    assert response.status == 200 and "页码应在 1 到" in await response.text()
    response = await desk.client.get("/events?last_id=99999999999999999999999-0")
    assert response.status == 400 and (await response.json())["field"] == "last_id"
    response = await desk.client.get("/recordings/" + "9" * 25)
    assert response.status == 400 and "录音编号无效" in await response.text()
    response = await desk.client.get("/api/tickets?phone=%00")
    assert response.status == 400 and "控制字符" in (await response.json())["error"]


async def test_a_callback_hotline_cannot_carry_ami_headers(desk):
    await desk.login("agent1")
    for hotline in ("12301\r\nAction: Command\r\nCommand: core stop now", "12301,CALLBACK_ID=7", "99999"):
        response = await desk.post_json("/api/desk/call/callback", {"number": "13800000001", "hotline": hotline})
        assert response.status == 400, await response.text()
        assert await response.json() == {"error": "热线应为 12301、12365 之一", "field": "hotline"}


async def test_the_service_quality_export_keeps_formula_text_as_text(desk):
    name = '=HYPERLINK("http://evil.example","x")'
    async with desk.app[DB_KEY].transaction() as db:
        agent = await db.scalar(select(User).where(User.username == "agent2"))
        old_name = agent.display_name
        agent.display_name = name
        now = datetime.now(UTC)
        db.add(CallRecord(call_id=f"hostile-{uuid.uuid4().hex[:12]}", hotline="12301", caller_number="13800000001",
                          agent_id=agent.id, queue="12301-general", started_at=now, queued_at=now, answered_at=now,
                          wait_seconds=3, talk_seconds=20))
    try:
        await desk.login("lead1")
        body = await (await desk.client.get("/report/export?format=csv")).read()
        rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
        assert ["'" + name] == [r[0] for r in rows if r and r[0].endswith(name)]
        body = await (await desk.client.get("/report/export?format=xlsx")).read()
        cells = [c for row in load_workbook(io.BytesIO(body)).active.iter_rows() for c in row if c.value == name]
        assert len(cells) == 1 and cells[0].data_type == "s" and cells[0].quotePrefix
    finally:
        async with desk.app[DB_KEY].transaction() as db:
            await db.execute(update(User).where(User.username == "agent2").values(display_name=old_name))

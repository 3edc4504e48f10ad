"""Real calls through the stack, then the report, its export and the wallboard show exactly what happened.

One scripted scenario (one agent, agent2 on a SIPp phone serving 12365-report): a call answered at once,
a call that waits for that agent (answered slow), a call that gives up in the queue, a call that hangs up in
the IVR's recording notice, and an after-hours call to 12301 that leaves a voice message. The figures are
read before and after: every count moves by exactly the scripted calls, and the waits move by the calls'
own arrival-to-answer times.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook
from pypdf import PdfReader
from sqlalchemy import select

from cli.democall import citizen_speech, originate_citizen
from cti.models import CallRecord
from quality import kpi
from sipdrivers.phones import agents_on_phones
from tests.desk.http_client import Desk

pytestmark = pytest.mark.stack

ROW = re.compile(r'<tr data-key="(\w+)"[^>]*>(?:<td[^>]*>.*?</td>){3}<td class="num">([^<]*)</td>'
                 r'<td class="num">([^<]*)</td>')
NAMES = {i.definition.name for i in kpi.INDICATORS}
OUTCOME = re.compile(r'<tr data-outcome="(\w+)"><td>[^<]*</td><td class="num">(\d+)</td>')


def _number(text: str) -> float:
    return 0.0 if text in ("—", "", "None") else float(text)


async def _figures(lead: Desk) -> dict:
    async with lead.http.get(f"{lead.base}/report") as resp:
        page = await resp.text()
    async with lead.http.get(f"{lead.base}/report/export?format=csv") as resp:
        rows = list(csv.reader(io.StringIO((await resp.read()).decode("utf-8-sig"))))
    status, board = await lead.get_json("/api/wallboard")
    assert status == 200
    queue = next(q for q in board["queues"] if q["queue"] == "12365-report")
    return {
        "page": {key: (_number(n), _number(d)) for key, n, d in ROW.findall(page)},
        "outcomes": {key: int(n) for key, n in OUTCOME.findall(page)},
        "export": {r[0]: (_number(r[2]), _number(r[3])) for r in rows if r and r[0] in NAMES},
        "wallboard": (queue["offered"], queue["answered"], queue["abandoned"]),
    }


async def _record(db, call_id: str) -> CallRecord | None:
    async with db.session() as session:
        return await session.scalar(select(CallRecord).where(CallRecord.call_id == call_id))


async def test_scripted_calls_move_the_report_export_and_wallboard_by_exactly_their_figures(
        stack, ami, db, redis, waiter, no_agents):
    from core.hours import set_override

    lead = Desk(stack.settings.web_url)
    await lead.login("lead1", stack.settings.secrets["demo_password"], "/report")
    before = await _figures(lead)
    async with agents_on_phones(stack.settings, stack.runtime, ami, redis, db, {"agent2": "8002"}):
        await set_override(redis, "12301", "closed")
        try:
            # After hours: greeting, hours and instructions take about 26 s, then the citizen speaks.
            late = await originate_citizen(ami, "12301", caller="13900000005", hold_seconds=2,
                                           speech_path=citizen_speech(stack.settings, "demo-complaint"),
                                           speech_delay_seconds=30)
            # Hangs up during the recording notice, never choosing anything.
            ivr = await originate_citizen(ami, "12365", caller="13900000004", hold_seconds=1)
            # 3 during the notice (key-ahead) = 举报: the 12365-report queue; stays 16 s after the key.
            fast = await originate_citizen(ami, "12365", keys="3", caller="13900000001", hold_seconds=16)
            await waiter(lambda: _answered(db, fast.call_id), timeout=60, what="the first call answered")
            # The only agent is busy now: this one waits for them, the next gives up in the queue.
            slow = await originate_citizen(ami, "12365", keys="3", caller="13900000002", hold_seconds=20)
            gone = await originate_citizen(ami, "12365", keys="3", caller="13900000003", hold_seconds=6)
            await waiter(lambda: _ivr_started(db, late.call_id), timeout=60, what="the after-hours IVR")
        finally:
            await set_override(redis, "12301", None)
        calls = (fast, slow, gone, ivr, late)

        async def all_ended():
            records = [await _record(db, c.call_id) for c in calls]
            return records if all(r is not None and r.ended_at is not None for r in records) else None

        records = dict(zip(("fast", "slow", "gone", "ivr", "late"), await waiter(
            all_ended, timeout=120, what="the five calls to end"), strict=True))
    assert records["slow"].answered_at is not None and records["slow"].agent_id == records["fast"].agent_id
    assert records["gone"].abandoned and records["gone"].queued_at is not None
    assert records["ivr"].queued_at is None and records["ivr"].ivr_path in (None, "")
    assert records["late"].ivr_path.startswith("after-hours") and records["late"].voicemail_file
    after = await _figures(lead)
    await lead.close()

    def moved(source: str, key: str) -> tuple[float, float]:
        if source == "export" and key in kpi.BY_KEY:  # the export names each figure in Chinese
            key = kpi.BY_KEY[key].definition.name
        (n0, d0), (n1, d1) = before[source][key], after[source][key]
        return n1 - n0, d1 - d0

    # Arrival to answer of the two answered calls, from their own records.
    waits = [(r.answered_at - r.started_at).total_seconds() for r in (records["fast"], records["slow"])]
    assert records["fast"].started_at < records["fast"].queued_at < records["fast"].answered_at
    for source in ("page", "export"):
        assert moved(source, "answering_rate") == (2, 5)       # 004 §3.7: 2 answered of 5 calls in
        assert moved(source, "offered_answer_rate") == (2, 3)  # the old figure: 2 of the 3 that queued
        assert moved(source, "abandon_rate") == (1, 3)
        assert moved(source, "ivr_abandon_rate") == (1, 5)
        assert moved(source, "wait_within_minute") == (sum(w <= 60 for w in waits), 3)
        assert moved(source, "answered_within_15") == (sum(w <= 15 for w in waits), 5)
    numerator, denominator = moved("export", "热线等待时间（平均）")
    assert denominator == 2 and numerator == pytest.approx(sum(waits), abs=1e-3)
    assert {k: after["outcomes"][k] - before["outcomes"][k] for k in after["outcomes"]} == {
        "answered": 2, "abandoned_queue": 1, "abandoned_ivr": 1, "voicemail": 1, "self_service": 0,
        "callback": 0, "cut_off": 0, "after_hours": 0, "in_progress": 0}
    # The wallboard's 12365-report row: 3 offered, 2 answered, 1 abandoned today.
    assert tuple(a - b for a, b in zip(after["wallboard"], before["wallboard"], strict=True)) == (3, 2, 1)
    await _evaluation_shows_the_reports_figures(stack)


EVAL_ROW = re.compile(r'<tr data-key="(\w+)"[^>]*>(?:<td[^>]*>.*?</td>){4}<td class="num"><b>([^<]*)</b></td>')
REPORT_DISPLAY = re.compile(r'<tr data-key="(\w+)"[^>]*>(?:<td[^>]*>.*?</td>){2}<td class="num"><b>([^<]*)</b></td>')


async def _evaluation_shows_the_reports_figures(stack) -> None:
    """The evaluation (004 §7.1) of today scores the same figures the report shows, on the page and in its
    XLSX and PDF exports."""
    lead = Desk(stack.settings.web_url)
    await lead.login("lead1", stack.settings.secrets["demo_password"], "/evaluation")
    today = dt.datetime.now(ZoneInfo(stack.settings.timezone)).date()
    query = f"from={today}&to={today}&hotline="
    async with lead.http.get(f"{lead.base}/report?{query}") as resp:
        report = dict(REPORT_DISPLAY.findall(await resp.text()))
    async with lead.http.get(f"{lead.base}/evaluation?{query}") as resp:
        assert resp.status == 200
        page = await resp.text()
    items = dict(EVAL_ROW.findall(page))
    assert "answering_rate" in items and "satisfaction_rate" in items, page[:2000]
    assert all(items[key] == report[key] for key in items), (items, report)
    total = re.search(r'<div class="kpi" id="total"><span>综合得分</span><b>([^<]+)</b>', page).group(1)
    async with lead.http.get(f"{lead.base}/evaluation/export?format=pdf&{query}") as resp:
        assert resp.status == 200 and resp.content_type == "application/pdf"
        text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(await resp.read())).pages).replace(" ", "")
    assert f"综合得分：{total}分" in text and items["answering_rate"] in text
    async with lead.http.get(f"{lead.base}/evaluation/export?format=xlsx&{query}") as resp:
        book = load_workbook(io.BytesIO(await resp.read()))
    values = {row[0]: row[4] for row in book["评价结果"].iter_rows(values_only=True) if row and row[0]}
    assert values["接线率"] == items["answering_rate"]
    assert [len(book[name]._charts) for name in ("月度趋势", "分热线", "分坐席")] == [1, 1, 1]
    async with lead.http.get(f"{lead.base}/evaluation/export?format=doc&{query}") as resp:
        assert resp.status == 400 and "导出格式" in (await resp.json())["error"]
    await lead.close()


async def _answered(db, call_id: str) -> bool:
    record = await _record(db, call_id)
    return record is not None and record.answered_at is not None


async def _ivr_started(db, call_id: str) -> bool:
    record = await _record(db, call_id)
    return record is not None and bool(record.ivr_path)

"""回访 end to end (issue 16 item 4) through the real stack: a complaint closed over the tickets API makes
a return-visit task; agent1 (a SIPp phone, logged in on the desk API) starts it from the desk's task list;
the platform places the once-only outbound call (agent's phone first, then the citizen through the carrier
trunk). The first time the citizen's line is busy (SIPp answers 486): the task waits for the next working
day and is refused before; the platform's clock (tickets/clock.py offset file) moves to that day, the
second call is answered by a SIPp citizen after the recording notice, the agent records 回访结果 and 满意度,
and the ticket, its tracking log, the desk's list and the team lead's report show them.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from zoneinfo import ZoneInfo

import chinese_calendar
import pytest
from sqlalchemy import select

from core.calls import CallbackRequest, CallbackStatus, CallRecord
from sipdrivers.carrier import carrier_answering
from sipdrivers.phones import SippPhone
from tests.desk.http_client import Desk
from tickets import clock
from tickets.models import Ticket

pytestmark = pytest.mark.stack


def _complaint(phone: str) -> dict:
    return {"kind": "complaint", "hotline": "12301", "description": "回访测试：导游强迫购物",
            "complainant_phone": phone, "complainant_name": "李四", "respondent_name": "某旅行社",
            "complaint_object": "旅行社及导游领队", "event_category": "强迫或变相强迫购物",
            "province": "广东省", "city": "广州市", "county": "天河区"}


async def _task(db, number: str) -> CallbackRequest:
    async with db.session() as session:
        return await session.scalar(select(CallbackRequest).where(CallbackRequest.ticket_number == number))


async def _outbound(db, phone: str) -> list[CallRecord]:
    async with db.session() as session:
        return list((await session.scalars(select(CallRecord).where(
            CallRecord.caller_number == phone, CallRecord.direction == "outbound")
            .order_by(CallRecord.started_at))).all())


async def test_closed_complaint_is_visited_after_a_busy_line_on_the_next_working_day_and_reported(
        stack, db, waiter, no_agents):
    settings = stack.settings
    zone = ZoneInfo(settings.timezone)
    phone = "137" + "".join(random.choices("0123456789", k=8))
    password = settings.secrets["demo_password"]
    desks = {u: Desk(settings.web_url) for u in ("agent1", "th_handler", "th_head", "gz_head", "lead1")}
    carrier = None
    clock.set_offset(settings, 0)
    try:
        for name, desk in desks.items():
            await desk.login(name, password, "/my")
        agent = desks["agent1"]
        status, ticket = await agent.post("/api/tickets", _complaint(phone))
        assert status == 201, ticket
        number = ticket["number"]
        today = dt.datetime.now(zone).date().isoformat()
        for user, action, inputs in (("th_handler", "受理", {"note": "已联系投诉人"}),
                                     ("th_handler", "调解成功", {"amount": "300", "closing_date": today,
                                                                 "remark": "旅行社退款"}),
                                     # Two review levels on the test stack's 12301 rules (001 §6.3 逐级审核).
                                     ("th_head", "审核通过", {"remark": "同意"}),
                                     ("gz_head", "审核通过", {"remark": "同意"})):
            status, body = await desks[user].post(f"/api/tickets/{number}/actions", {"action": action, "inputs": inputs})
            assert status == 200, (action, body)

        async def listed() -> dict | None:
            status, body = await agent.get_json("/api/desk/visits")
            assert status == 200, body
            return next((v for v in body["visits"] if v["ticket"] == number), None)

        visit = await listed()
        assert visit and visit["number"] == phone and visit["due"] and visit["outcome"] == "调解成功"
        assert (visit["attempts"], visit["max_attempts"]) == (0, 3)

        with SippPhone(settings, "8001") as sipp_phone:
            await sipp_phone.wait_registered(stack.runtime)
            status, body = await agent.post("/api/desk/state", {"action": "login", "phone": "8001"})
            assert status == 200, body
            try:
                # Attempt 1: the citizen's line is busy.
                carrier = carrier_answering(settings, scenario="carrier_busy.xml")
                start = {"number": phone, "callback_id": visit["id"]}
                status, body = await agent.post("/api/desk/call/callback", start)
                assert status == 200, body

                async def retry_set() -> CallbackRequest | None:
                    task = await _task(db, number)
                    return task if task.status == CallbackStatus.PENDING and task.attempts == 1 else None

                task = await waiter(retry_set, timeout=60, what="the busy attempt counted")
                assert carrier.wait(timeout=30) == 0, carrier.stderr.read().decode()[-500:]  # one INVITE, busy
                assert "BUSY" in task.note
                # Hand computation: the test stack is staffed always, so the next try is 00:00 Shanghai of the
                # first working day (Chinese calendar) after today.
                day = dt.datetime.now(zone).date() + dt.timedelta(days=1)
                while not chinese_calendar.is_workday(day):
                    day += dt.timedelta(days=1)
                assert task.next_attempt_at == dt.datetime.combine(day, dt.time(0), zone)
                status, body = await agent.post("/api/desk/call/callback", start)  # not before that day
                assert status == 409 and "下一个工作日" in body["error"], body
                assert not (await listed())["due"]

                # The platform's clock moves to a minute after the retry time: due again, and answered.
                clock.set_offset(settings, (task.next_attempt_at - dt.datetime.now(dt.UTC)).total_seconds() + 60)
                assert (await listed())["due"]
                carrier = carrier_answering(settings)
                status, body = await agent.post("/api/desk/call/callback", start)
                assert status == 200, body
                call_id = body["call_id"]

                async def talking() -> CallRecord | None:
                    calls = [c for c in await _outbound(db, phone) if c.call_id == call_id and c.answered_at]
                    return calls[0] if calls else None

                await waiter(talking, timeout=60, what="agent and citizen connected for the visit")
                status, body = await agent.post("/api/desk/call/callback", start)  # once only
                assert status == 409, body
                status, body = await agent.post(f"/api/desk/visits/{visit['id']}", {"result": "", "satisfaction": "x"})
                assert status == 400 and body["field"] == "result", body
                status, body = await agent.post(f"/api/desk/visits/{visit['id']}",
                                                {"result": "退款已到账，但对旅行社态度不满意", "satisfaction": "dissatisfied"})
                assert status == 200 and body["ticket"] == number, body
                status, body = await agent.post("/api/desk/call/hangup", {})
                assert status == 200, body
                assert carrier.wait(timeout=30) == 0, carrier.stderr.read().decode()[-500:]  # answered, then BYE

                async def ended() -> list[CallRecord] | None:
                    calls = await _outbound(db, phone)
                    done = len(calls) == 2 and all(c.ended_at for c in calls)
                    return calls if done else None

                first, second = await waiter(ended, timeout=40, what="both visit calls closed")
                assert first.answered_at is None and second.call_id == call_id and second.recording_file
                task = await _task(db, number)
                assert task.status == CallbackStatus.DONE and task.attempts == 2
            finally:
                await agent.post("/api/desk/state", {"action": "logout"})

        # On the ticket (GB/T 33358: 回访结果 in the 工单), with a step of the tracking log.
        status, detail = await desks["lead1"].get_json(f"/api/tickets/{number}")
        assert status == 200, detail
        assert detail["return_visit"]["result"] == "退款已到账，但对旅行社态度不满意"
        assert detail["return_visit"]["satisfaction"] == "dissatisfied"
        status, log = await desks["lead1"].get_json(f"/api/tickets/{number}/log")
        step = log["log"][0]
        assert status == 200 and step["action"] == "回访" and "满意度：不满意" in step["remark"], log
        assert await listed() is None  # worked: off the desk's list

        # The team lead's report for today: this visit among today's; its ticket in the 不满意 list.
        async with desks["lead1"].http.get(f"{settings.web_url}/report?from={today}&to={today}") as resp:
            page = await resp.text()
        assert resp.status == 200
        # Other tests of the session close cases too: the second source is the database, counted here by
        # the definition (tickets registered today with a visit task; reached = graded).
        lo = dt.datetime.combine(dt.date.fromisoformat(today), dt.time(0), zone)
        async with db.session() as session:
            rows = (await session.execute(select(Ticket.visit_satisfaction).join(
                CallbackRequest, (CallbackRequest.ticket_number == Ticket.number) & (CallbackRequest.source == "visit"))
                .where(Ticket.created_at >= lo, Ticket.created_at < lo + dt.timedelta(days=1)))).scalars().all()
        expected = (sum(g in ("satisfied", "basic", "dissatisfied") for g in rows), len(rows))
        for key, (part, whole) in (("return_visit_rate", expected),
                                   ("visit_satisfaction_rate", (sum(g in ("satisfied", "basic") for g in rows),
                                                                expected[0]))):
            row = re.search(rf'data-key="{key}".*?</tr>', page, re.S).group(0)
            assert re.findall(r'<td class="num">([^<]*)</td>', row) == [str(part), str(whole)], row
        assert expected[0] >= 1 and "dissatisfied" in rows
        unhappy = re.search(r'id="dissatisfied".*?</table>', page, re.S).group(0)
        assert number in unhappy and "对旅行社态度不满意" in unhappy
    finally:
        clock.set_offset(settings, 0)
        if carrier is not None and carrier.poll() is None:
            carrier.kill()
        for desk in desks.values():
            await desk.close()

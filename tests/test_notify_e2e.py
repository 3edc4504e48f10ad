"""One complaint through the real stack with injected time: dispatch, reminders, acceptance, closing.

What is checked against a second source: every SMS as Kannel's ``fakesmsc`` handset received it through
the real bearerbox/smsbox (var/log/sms_handset.log), the e-mail as the aiosmtpd server received it, the
messages in each user's message centre over HTTP. The scheduler's clock is moved with
``var/run/clock-offset`` (``HOTLINE_NOTIFY_CLOCK=offset_file`` in the test stack) and the scheduler is
stopped and started in the middle: no reminder is lost or repeated.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import re
from collections import Counter
from typing import Any

import aiohttp
import pytest
from aiosmtpd.controller import Controller

from cli.stack import supervisorctl
from tests.desk.http_client import Desk
from tickets import clock
from tickets.kannel import HANDSET_LOG, handset_messages

pytestmark = pytest.mark.stack

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
UNIT_PHONE = "13900000004"  # 天河区's SMS contact (config/notices.yaml)
GD_EMAIL = "gd12301@example.cn"


class Mailbox:
    def __init__(self) -> None:
        self.mails: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.mails.append(envelope)
        return "250 OK"


def complaint(phone: str, **extra: str) -> dict[str, Any]:
    return {"kind": "complaint", "hotline": "12301", "description": "端到端测试：导游强迫购物",
            "complainant_phone": phone, "complainant_name": "李四", "respondent_name": "某旅行社",
            "complaint_object": "旅行社及导游领队", "event_category": "强迫或变相强迫购物",
            "province": "广东省", "city": "广州市", "county": "天河区", **extra}


def shift_to(settings: Any, day: dt.date) -> None:
    """Move the rules' clock to 09:00 Shanghai on ``day``."""
    target = dt.datetime.combine(day, dt.time(9), SHANGHAI)
    clock.set_offset(settings, (target - dt.datetime.now(dt.UTC)).total_seconds())


async def test_000_s3_001_s3_s5_004_s6_3_2_2_s6_4_5_complaint_with_reminders_notices_and_messages(stack, waiter):
    settings = stack.settings
    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=int(settings.notify.smtp_port))
    smtp.start()
    users = ("agent1", "lead1", "th_handler", "th_head", "sc_handler", "gd_handler")
    desks = {u: Desk(settings.web_url) for u in users}
    try:
        for name, desk in desks.items():
            await desk.login(name, settings.secrets["demo_password"], "/my")
        phone = "137" + "".join(random.choices("0123456789", k=8))

        def sms(to: str) -> list[str]:
            return [text for recipient, text in handset_messages(stack.log(HANDSET_LOG.removesuffix(".log")))
                    if recipient.endswith(to[-11:])]

        async def messages(user: str, number: str) -> list[dict]:
            status, body = await desks[user].get_json("/api/messages")
            assert status == 200
            return [m for m in body["messages"] if m["ticket_number"] == number]

        async def sms_with(to: str, number: str, marker: str, count: int = 1) -> list[str]:
            return await waiter(lambda: _async([t for t in sms(to) if number in t and marker in t], count),
                                timeout=60, what=f"SMS «{marker}» for {number} to {to}")

        # Registration by the agent: dispatched to 天河区, receipt to the citizen (004 §6.3.2.2).
        status, ticket = await desks["agent1"].post("/api/tickets", complaint(phone))
        assert status == 201, ticket
        number = ticket["number"]
        await sms_with(phone, number, "已登记")
        assert [m["kind"] for m in await messages("th_handler", number)] == ["dispatched"]
        assert await messages("sc_handler", number) == []

        # Acceptance overdue the day after the 5-working-day limit: a message and the unit contact's SMS;
        # the unit home's overdue counter counts it (it used to say 0 for tickets late for acceptance).
        acceptance_due = dt.date.fromisoformat(ticket["acceptance_due"])
        shift_to(settings, acceptance_due + dt.timedelta(days=1))
        await sms_with(UNIT_PHONE, number, "超过受理时限")
        assert "acceptance_overdue" in [m["kind"] for m in await messages("th_handler", number)]
        async with desks["th_handler"].http.get(f"{settings.web_url}/unit") as resp:
            home = await resp.text()
        assert int(re.search(r'counter danger"><b>(\d+)</b>', home).group(1)) >= 1

        # 受理 (real time): the citizen is told the time limit and the unit's telephone (001 §3.2).
        status, body = await desks["th_handler"].post(f"/api/tickets/{number}/actions",
                                                      {"action": "受理", "inputs": {"note": "已联系投诉人"}})
        assert status == 200, body
        accepted_on = dt.datetime.fromisoformat(body["step"]["at"]).astimezone(SHANGHAI).date()
        await sms_with(phone, number, "020-12303")

        # 001 §5.1: reminders 20, 30 and 45 days after acceptance; the scheduler is stopped and started
        # again between the steps and restarted at the same moment: each step exactly once.
        shift_to(settings, accepted_on + dt.timedelta(days=20))
        await sms_with(UNIT_PHONE, number, "科室负责人催办")
        assert supervisorctl(settings, "stop", "scheduler").returncode == 0
        shift_to(settings, accepted_on + dt.timedelta(days=30))
        assert supervisorctl(settings, "start", "scheduler").returncode == 0
        await sms_with(UNIT_PHONE, number, "分管领导催办")
        assert supervisorctl(settings, "restart", "scheduler").returncode == 0
        shift_to(settings, accepted_on + dt.timedelta(days=45))
        await sms_with(UNIT_PHONE, number, "承办人书面报告")

        # The team lead's page lists the ticket at its reminder step with the date.
        async with desks["lead1"].http.get(f"{settings.web_url}/reminders") as resp:
            page = await resp.text()
        due45 = (accepted_on + dt.timedelta(days=45)).isoformat()
        assert re.search(rf"{number}.*?承办人书面报告</td><td>{due45}", page, re.S), page[-2000:]

        # 督办 by the lead: the unit hears of it in its message centre and by SMS.
        status, body = await desks["lead1"].post(f"/api/tickets/{number}/actions",
                                                 {"action": "督办", "inputs": {"note": "重点督办"}})
        assert status == 200, body
        await sms_with(UNIT_PHONE, number, "督办：")

        # The SMS gateway goes down: the closing goes through all the same, its notice waits.
        assert supervisorctl(settings, "stop", "kannel_smsbox").returncode == 0
        today = dt.datetime.now(SHANGHAI).date().isoformat()
        status, body = await desks["th_handler"].post(f"/api/tickets/{number}/actions", {
            "action": "调解成功", "inputs": {"amount": "300", "closing_date": today, "remark": "双方和解"}})
        assert status == 200, body
        assert "review" in [m["kind"] for m in await messages("th_head", number)]
        assert "review" not in [m["kind"] for m in await messages("th_handler", number)]
        status, body = await desks["th_head"].post(f"/api/tickets/{number}/actions",
                                                   {"action": "审核通过", "inputs": {}})
        assert status == 200, body

        async def waiting_on_ticket_page() -> bool:
            async with desks["th_handler"].http.get(f"{settings.web_url}/tickets/{number}") as resp:
                page = await resp.text()
            return "短信网关不可用" in page and 'data-state="pending"' in page
        await waiter(waiting_on_ticket_page, timeout=60, what="the failed attempt shown on the ticket page")
        assert supervisorctl(settings, "start", "kannel_smsbox").returncode == 0
        await sms_with(phone, number, "已办结")

        # Exactly once each, through a restart and an outage; nothing for the wrong unit.
        citizen = Counter(_marker(t) for t in sms(phone) if number in t)
        assert citizen == Counter({"已登记": 1, "受理": 1, "已办结": 1}), sms(phone)
        unit = Counter(t for t in sms(UNIT_PHONE) if number in t)
        assert all(n == 1 for n in unit.values()) and len(unit) >= 5, unit
        assert await messages("sc_handler", number) == []
        assert await messages("gd_handler", number) == []  # the province above is not addressed

        # E-mail: a 督办 on a case at the Guangdong unit, whose contact has an address.
        status, other = await desks["agent1"].post("/api/tickets", complaint(phone, city="", county=""))
        assert status == 201 and other["unit"]["name"].startswith("广东省"), other
        status, body = await desks["lead1"].post(f"/api/tickets/{other['number']}/actions",
                                                 {"action": "督办", "inputs": {"note": "省级督办"}})
        assert status == 200, body

        async def supervision_mail() -> list[Any]:
            return [m for m in mailbox.mails if GD_EMAIL in m.rcpt_tos
                    and "督办" in m.content.decode("utf-8", "replace") and other["number"] in
                    m.content.decode("utf-8", "replace")]
        await waiter(supervision_mail, timeout=60, what="the 督办 e-mail at the SMTP server")
        status, box = await desks["gd_handler"].get_json("/api/messages")
        assert box["unread"] >= 1
        status, read = await desks["gd_handler"].post("/api/messages/read", {})
        assert status == 200 and read["unread"] == 0
    finally:
        clock.set_offset(settings, 0)
        supervisorctl(settings, "start", "kannel_smsbox", "scheduler")
        smtp.stop()
        for desk in desks.values():
            await desk.close()


def _marker(text: str) -> str:
    for marker in ("已登记", "已办结", "受理"):
        if marker in text:
            return marker
    return text


async def _async(items: list, count: int) -> list | None:
    return items if len(items) >= count else None


async def test_live_inbox_event_reaches_only_the_addressed_unit(stack, waiter):
    """A new message is pushed to the addressed unit's users over /events, never to another unit's."""
    settings = stack.settings
    th, sc, agent = Desk(settings.web_url), Desk(settings.web_url), Desk(settings.web_url)
    try:
        for desk, name in ((th, "th_handler"), (sc, "sc_handler"), (agent, "agent1")):
            await desk.login(name, settings.secrets["demo_password"], "/my")
        seen: dict[str, list[str]] = {"th": [], "sc": []}
        connected = {"th": asyncio.Event(), "sc": asyncio.Event()}
        number: dict[str, str] = {}

        async def listen(desk: Desk, key: str) -> None:
            async with desk.http.get(f"{settings.web_url}/events",
                                     timeout=aiohttp.ClientTimeout(total=90)) as resp:
                connected[key].set()
                async for line in resp.content:
                    text = line.decode()
                    if text.startswith("data:") and "ticket_number" in text:
                        seen[key].append(text)
                        if key == "th" and number.get("n", "-") in text:
                            return

        th_task = asyncio.create_task(listen(th, "th"))
        sc_task = asyncio.create_task(listen(sc, "sc"))
        await asyncio.wait_for(asyncio.gather(connected["th"].wait(), connected["sc"].wait()), 30)
        status, ticket = await agent.post("/api/tickets", complaint("13700000001"))
        assert status == 201
        number["n"] = ticket["number"]
        await asyncio.wait_for(th_task, 60)
        sc_task.cancel()
        assert any(ticket["number"] in s for s in seen["th"])
        assert not any(ticket["number"] in s for s in seen["sc"])
    finally:
        for desk in (th, sc, agent):
            await desk.close()

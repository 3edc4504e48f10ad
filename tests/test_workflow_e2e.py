"""The handling workflow through the real stack (issue 15 "Done when"), with injected time.

One scripted scenario on the session's platform (Asterisk, CTI, desk HTTP, scheduler, Kannel): the rules'
clock is moved with ``var/run/clock-offset`` (``HOTLINE_NOTIFY_CLOCK=offset_file`` in the test stack), and
the workflow's own steps (registration, 受理, closing dates, reviews) run on that same clock, so dates,
deadlines and reminders agree. What is checked against a second source: every SMS as Kannel's ``fakesmsc``
handset received it through the real bearerbox/smsbox (var/log/sms_handset.log), the e-mail as an aiosmtpd
server received it, every message in each user's message centre over HTTP as that user, the archive form.
The test stack runs 12301 closings over two review levels (tests/conftest.py ``TEST_REVIEW_LEVELS``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import random
import re
from collections import Counter
from typing import Any

import aiohttp
import pytest
from aiosmtpd.controller import Controller
from openpyxl import load_workbook
from playwright.async_api import async_playwright, expect

from cli.stack import supervisorctl
from tests.desk.http_client import Desk
from tests.desk.test_browser import CHROMIUM_ARGS, DESKTOP, LIVE, open_as
from tickets import clock
from tickets.kannel import HANDSET_LOG, handset_messages

pytestmark = pytest.mark.stack

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
UNIT_PHONE = "13900000004"  # 天河区's SMS contact (config/notices.yaml)
GD_EMAIL = "gd12301@example.cn"
AUTHORITY = "市场监督管理部门（12315）"  # from the 12301 profile's list (config/rules.yaml)


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


def quality_complaint(phone: str) -> dict[str, Any]:
    return {"kind": "complaint", "hotline": "12365", "description": "端到端测试：电热水壶漏电",
            "complainant_phone": phone, "complainant_name": "王五", "respondent_name": "某电器厂",
            "complaint_object": "生产企业", "event_category": "产品质量问题",
            "province": "浙江省", "city": "杭州市", "county": "西湖区"}


def random_mobile() -> str:
    return "137" + "".join(random.choices("0123456789", k=8))


def shift_to(settings: Any, day: dt.date) -> None:
    """Move the rules' clock to 09:00 Shanghai on ``day`` (always ahead of real time: see the caller)."""
    target = dt.datetime.combine(day, dt.time(9), SHANGHAI)
    clock.set_offset(settings, (target - dt.datetime.now(dt.UTC)).total_seconds())


def local_day(iso: str) -> dt.date:
    return dt.datetime.fromisoformat(iso).astimezone(SHANGHAI).date()


async def _enough(items: list, count: int) -> list | None:
    return items if len(items) >= count else None


async def act(desk: Desk, number: str, action: str, **inputs: Any) -> tuple[int, Any]:
    return await desk.post(f"/api/tickets/{number}/actions", {"action": action, "inputs": inputs})


async def test_000_s3_001_s1_s3_s5_s6_3_004_s6_3_5_complaint_path_refusals_handover_and_walk_in(stack, waiter):
    """000 §3 / 001 §3, §5.1–5.3, §6.3 3) / 004 §6.3.2.2, §6.3.5.1, §6.4.5: an agent's complaint is dispatched,
    reminded at the policy's days (the scheduler restarted between them), supervised, accepted, proposed for
    closing, approved by two levels of heads and archived; a 12365 case refuses the tourism rules by name; a
    移交 is tracked to its result; a unit registers a walk-in; every SMS once, nothing for the wrong unit."""
    settings = stack.settings
    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=int(settings.notify.smtp_port))
    smtp.start()
    users = ("agent1", "lead1", "th_handler", "th_head", "gz_head", "sc_handler", "gd_handler", "xh_handler")
    desks = {u: Desk(settings.web_url) for u in users}
    try:
        for name, desk in desks.items():
            await desk.login(name, settings.secrets["demo_password"], "/my")
        phone, walk_in_phone = random_mobile(), random_mobile()

        def sms(to: str) -> list[str]:
            return [text for recipient, text in handset_messages(stack.log(HANDSET_LOG.removesuffix(".log")))
                    if recipient.endswith(to[-11:])]

        async def sms_with(to: str, number: str, marker: str) -> list[str]:
            return await waiter(lambda: _enough([t for t in sms(to) if number in t and marker in t], 1),
                                timeout=90, what=f"SMS «{marker}» for {number} to {to}")

        async def messages(user: str, number: str) -> list[dict]:
            status, body = await desks[user].get_json(f"/api/messages?ticket={number}")
            assert status == 200, body
            return body["messages"]

        async def kinds(user: str, number: str) -> Counter:
            return Counter(m["kind"] for m in await messages(user, number))

        async def message_of(user: str, number: str, kind: str) -> list[dict]:
            async def found() -> list[dict] | None:
                return [m for m in await messages(user, number) if m["kind"] == kind] or None
            return await waiter(found, timeout=60, what=f"message {kind} for {user} on {number}")

        # The clock starts tomorrow 09:00 so that it only ever moves ahead of real time.
        start = dt.datetime.now(SHANGHAI).date() + dt.timedelta(days=1)
        shift_to(settings, start)

        # --- registration and dispatch (000 §3.1, 004 §6.3.2.2): receipt to the citizen, message to 天河区.
        status, ticket = await desks["agent1"].post("/api/tickets", complaint(phone))
        assert status == 201, ticket
        number = ticket["number"]
        assert local_day(ticket["created_at"]) == start  # registered on the rules' clock
        await sms_with(phone, number, "已登记")
        assert await kinds("th_handler", number) == Counter({"dispatched": 1})

        # --- 移交 (000 §3.2.1 3), 004 §6.3.5.1): an authority from the list, with the required note.
        status, handed = await desks["agent1"].post("/api/tickets", complaint(random_mobile()))
        assert status == 201, handed
        handed_no = handed["number"]
        status, body = await act(desks["th_handler"], handed_no, "移交", authority="随便写的单位", remark="不属本单位")
        assert status == 400 and body["field"] == "authority" and AUTHORITY in body["error"], body
        status, body = await act(desks["th_handler"], handed_no, "移交", authority=AUTHORITY)
        assert status == 400 and "移交说明" in body["error"], body
        status, body = await act(desks["th_handler"], handed_no, "移交", authority=AUTHORITY,
                                 remark="属产品质量问题，已电话告知投诉人并移送市场监管部门")
        assert status == 200, body
        handover_due = dt.date.fromisoformat(body["ticket"]["handover"]["due"])
        assert handover_due == dt.date.fromisoformat(handed["acceptance_due"])  # 5 working days, as acceptance
        async with desks["th_handler"].http.get(f"{settings.web_url}/api/tickets/{handed_no}/archive") as resp:
            assert resp.status == 409 and "处理结果" in (await resp.json())["error"]

        # --- 12365 keeps its own rules (rules.yaml quality): tourism-only outcomes and clauses refused by name.
        status, quality = await desks["agent1"].post("/api/tickets", quality_complaint(random_mobile()))
        assert status == 201 and quality["unit"]["name"] == "西湖区市场监督管理局", quality
        quality_no = quality["number"]
        tourism_clause = "超过旅游合同结束之日90天的"
        status, body = await act(desks["xh_handler"], quality_no, "不予受理", clauses=[tourism_clause], remark="超期")
        assert status == 400 and body["field"] == "clauses", body
        assert body["error"] == f"不予受理条款不适用于 12365 热线：{tourism_clause}"
        status, body = await act(desks["xh_handler"], quality_no, "受理", note="已联系投诉人")
        assert status == 200, body
        assert "启用质保金赔偿" not in body["ticket"]["actions"] and "调解成功" in body["ticket"]["actions"]
        status, body = await act(desks["xh_handler"], quality_no, "启用质保金赔偿", amount="500",
                                 closing_date=start.isoformat(), facts="赔偿")
        assert status == 400 and body["error"] == "12365 热线（质量监督（12365））的工单不能以「启用质保金赔偿」结案", body
        status, body = await act(desks["xh_handler"], quality_no, "自行和解", amount="1",
                                 closing_date=start.isoformat(), remark="和解")
        assert status == 400 and "「自行和解」" in body["error"], body
        status, log = await desks["xh_handler"].get_json(f"/api/tickets/{quality_no}/log")
        assert [a["action"] for a in log["log"]] == ["受理", "登记"]  # the refusals left nothing behind
        status, body = await desks["xh_handler"].get_json(f"/api/tickets/{quality_no}")
        assert body["state"] == "accepted"

        # --- intake by a unit (001 §1.1 1), 004 §6.1.2): 天河区 registers a walk-in complaint and keeps it.
        status, body = await desks["th_handler"].post("/api/tickets", complaint(walk_in_phone))
        assert status == 403 and "来访" in body["error"], body  # a unit registers only what it received itself
        status, walk_in = await desks["th_handler"].post("/api/tickets", complaint(walk_in_phone, source="walk_in"))
        assert status == 201, walk_in
        walk_in_no = walk_in["number"]
        assert (walk_in["source"], walk_in["unit"]["name"]) == ("walk_in", "天河区文化广电旅游体育局"), walk_in
        await sms_with(walk_in_phone, walk_in_no, "已登记")
        status, log = await desks["th_head"].get_json(f"/api/tickets/{walk_in_no}/log")
        assert "来源：来访" in log["log"][-1]["remark"] and log["log"][-1]["operator"] == "天河区经办人", log
        status, _ = await desks["sc_handler"].get_json(f"/api/tickets/{walk_in_no}")
        assert status == 404

        # --- the day after the acceptance limit (004 §6.3.2.2: 5 working days): overdue, and the 移交's limit.
        acceptance_due = dt.date.fromisoformat(ticket["acceptance_due"])
        day1 = acceptance_due + dt.timedelta(days=1)
        shift_to(settings, day1)
        await sms_with(UNIT_PHONE, number, "超过受理时限")
        await message_of("th_handler", number, "acceptance_overdue")
        await sms_with(UNIT_PHONE, handed_no, "移交已超过时限")
        await message_of("th_handler", handed_no, "handover_overdue")
        async with desks["th_handler"].http.get(f"{settings.web_url}/unit") as resp:
            home = await resp.text()
        assert int(re.search(r'counter danger"><b>(\d+)</b>', home).group(1)) >= 2

        # The receiving authority's result: the 移交 is complete and archivable.
        status, body = await act(desks["th_handler"], handed_no, "移交结果", result="市场监管部门已立案处理")
        assert status == 200 and body["ticket"]["handover"]["result"] == "市场监管部门已立案处理", body
        async with desks["th_handler"].http.get(
                f"{settings.web_url}/api/tickets/{handed_no}/archive?format=xlsx") as resp:
            assert resp.status == 200
            form = _cells(await resp.read())
        assert f"{AUTHORITY}；处理结果：市场监管部门已立案处理" in form, form

        # --- 受理 on the rules' clock: the citizen is told the time limit and the unit's telephone (001 §3.2).
        status, body = await act(desks["th_handler"], number, "受理", note="已联系投诉人")
        assert status == 200, body
        accepted_on = local_day(body["step"]["at"])
        assert accepted_on == day1 == local_day(body["ticket"]["accepted_at"])
        await sms_with(phone, number, "020-12303")

        # --- 001 §5.1: 催办 20, 30 and 45 days after acceptance; the scheduler stopped and started between
        # the steps and restarted at the same moment: each step exactly once.
        shift_to(settings, accepted_on + dt.timedelta(days=20))
        await sms_with(UNIT_PHONE, number, "科室负责人催办")
        assert supervisorctl(settings, "stop", "scheduler").returncode == 0
        shift_to(settings, accepted_on + dt.timedelta(days=30))
        assert supervisorctl(settings, "start", "scheduler").returncode == 0
        await sms_with(UNIT_PHONE, number, "分管领导催办")
        assert supervisorctl(settings, "restart", "scheduler").returncode == 0
        shift_to(settings, accepted_on + dt.timedelta(days=45))
        await sms_with(UNIT_PHONE, number, "承办人书面报告")
        report = await message_of("th_head", number, "reminder")
        assert any("请提交书面报告" in m["text"] for m in report)

        # The team lead's page lists the ticket at its reminder step with the date.
        async with desks["lead1"].http.get(f"{settings.web_url}/reminders") as resp:
            page = await resp.text()
        due45 = (accepted_on + dt.timedelta(days=45)).isoformat()
        assert re.search(rf"{number}.*?承办人书面报告</td><td>{due45}", page, re.S), page[-2000:]

        # --- 督办 by the lead (001 §5.3), and its follow-up 5 days later while still open.
        status, body = await act(desks["lead1"], number, "督办", note="重点督办")
        assert status == 200, body
        await sms_with(UNIT_PHONE, number, "督办：")
        await message_of("th_handler", number, "supervised")
        last_day = accepted_on + dt.timedelta(days=50)
        shift_to(settings, last_day)
        await sms_with(UNIT_PHONE, number, "督办跟踪")

        # --- closing proposal dated today on the rules' clock, while the SMS gateway is down: the action goes
        # through, its notice waits (and is shown waiting on the ticket page).
        assert supervisorctl(settings, "stop", "kannel_smsbox").returncode == 0
        status, body = await act(desks["th_handler"], number, "调解成功", amount="300",
                                 closing_date=last_day.isoformat(), remark="双方和解")
        assert status == 200, body
        await message_of("th_head", number, "review")
        assert "review" not in await kinds("th_handler", number)
        assert "review" not in await kinds("gz_head", number)

        # --- 逐级审核 (001 §6.3 3)), two levels: not the proposer, 天河区's head, then 广州市's head.
        status, body = await act(desks["th_handler"], number, "审核通过")
        assert status == 403, body
        status, body = await act(desks["th_head"], number, "审核通过", remark="同意")
        assert status == 200 and body["ticket"]["state"] == "pending_review", body
        assert "第 1 级，共 2 级" in body["step"]["remark"]
        await message_of("gz_head", number, "review")
        status, body = await act(desks["th_head"], number, "审核通过")
        assert status == 403 and "本级审核单位" in body["error"], body
        status, body = await act(desks["gz_head"], number, "审核通过", remark="同意结案")
        assert status == 200 and body["ticket"]["state"] == "mediated", body
        assert local_day(body["ticket"]["closed_at"]) == last_day

        async def waiting_on_ticket_page() -> bool:
            async with desks["th_handler"].http.get(f"{settings.web_url}/tickets/{number}") as resp:
                page = await resp.text()
            return "短信网关不可用" in page and 'data-state="pending"' in page
        await waiter(waiting_on_ticket_page, timeout=60, what="the failed attempt shown on the ticket page")
        assert supervisorctl(settings, "start", "kannel_smsbox").returncode == 0
        await sms_with(phone, number, "已办结")

        # --- archive (004 Appendix D): the outcome and the last level's approval.
        async with desks["th_handler"].http.get(f"{settings.web_url}/api/tickets/{number}/archive?format=xlsx") as resp:
            assert resp.status == 200
            form = _cells(await resp.read())
        assert "调解成功：" in form and "双方和解" in form, form
        assert "广州市负责人" in form and "审核通过" in form, form

        # --- exactly once each, through scheduler restarts and the outage; nothing for the wrong unit.
        citizen = Counter(_marker(t) for t in sms(phone) if number in t)
        assert citizen == Counter({"已登记": 1, "受理": 1, "已办结": 1}), sms(phone)
        for case in (number, handed_no):
            unit = Counter(t for t in sms(UNIT_PHONE) if case in t)
            assert unit and all(n == 1 for n in unit.values()), unit
        assert len([t for t in sms(UNIT_PHONE) if number in t]) >= 6  # overdue, 3 催办, 督办, 督办跟踪
        handler = await kinds("th_handler", number)
        assert handler["reminder"] == 3 and all(n == 1 for k, n in handler.items() if k != "reminder"), handler
        assert {"dispatched", "acceptance_overdue", "supervised", "supervision_followup"} <= set(handler)
        assert await kinds("gz_head", number) == Counter({"review": 1})
        for case in (number, handed_no, walk_in_no):
            for other in ("sc_handler", "gd_handler", "xh_handler"):
                assert await messages(other, case) == [], (other, case)
        assert await messages("th_handler", quality_no) == []

        # --- e-mail (where the unit contact has an address): a 督办 on a case at the Guangdong unit.
        status, other = await desks["agent1"].post("/api/tickets", complaint(phone, city="", county=""))
        assert status == 201 and other["unit"]["name"].startswith("广东省"), other
        status, body = await act(desks["lead1"], other["number"], "督办", note="省级督办")
        assert status == 200, body

        async def supervision_mail() -> list[Any]:
            return [m for m in mailbox.mails if GD_EMAIL in m.rcpt_tos
                    and "督办" in m.content.decode("utf-8", "replace") and other["number"] in
                    m.content.decode("utf-8", "replace")]
        await waiter(supervision_mail, timeout=60, what="the 督办 e-mail at the SMTP server")
    finally:
        clock.set_offset(settings, 0)
        supervisorctl(settings, "start", "kannel_smsbox", "scheduler")
        smtp.stop()
        for desk in desks.values():
            await desk.close()


def _cells(xlsx: bytes) -> str:
    sheet = load_workbook(io.BytesIO(xlsx)).active
    return "\n".join(str(c.value) for row in sheet.iter_rows() for c in row if c.value is not None)


def _marker(text: str) -> str:
    for marker in ("已登记", "已办结", "受理"):
        if marker in text:
            return marker
    return text


async def test_message_centre_badge_counts_live_in_chromium_and_drops_when_read(stack):
    """Issue 15 item 2: a unit user's page shows the unread count live when a ticket is dispatched to the
    unit (no reload: the scheduler's inbox event over the desk's stream), and it drops when read."""
    settings, base = stack.settings, stack.settings.web_url
    password = settings.secrets["demo_password"]
    agent = Desk(base)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            await agent.login("agent1", password, "/my")
            unit = await open_as(browser, base, "xh_handler", password, DESKTOP)
            console_errors: list[str] = []  # e.g. an inline script the CSP blocked (the read-all button once)
            unit.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            await unit.goto(f"{base}/messages")
            await unit.click("#read-all")
            await unit.wait_for_load_state("networkidle")
            badge = unit.locator("#inbox-unread")
            await expect(badge).to_have_text("0", timeout=LIVE)
            status, ticket = await agent.post("/api/tickets", quality_complaint(random_mobile()))
            assert status == 201 and ticket["unit"]["name"] == "西湖区市场监督管理局", ticket
            await expect(badge).to_have_text("1", timeout=LIVE)  # live, the page was not reloaded
            await expect(unit.locator("h1 [data-unread]")).to_have_text("1")
            await expect(unit.locator("#toast")).to_contain_text(ticket["number"], timeout=LIVE)
            await unit.click("#read-all")
            await unit.wait_for_load_state("networkidle")
            await expect(badge).to_have_text("0", timeout=LIVE)
            await unit.goto(f"{base}/unit")  # every page's badge reads the same count
            await expect(unit.locator("#inbox-unread")).to_have_text("0", timeout=LIVE)
            assert console_errors == []
        finally:
            await browser.close()
            await agent.close()


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

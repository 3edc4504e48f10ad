"""The administration of people in Chromium against the real stack (issue 17 items 1, 2 and 4).

One scenario: the admin creates an agent (skill 12301-general, default extension 8005); the agent logs in
with the password shown once, must set their own, and signs in on a SIPp phone. A citizen waits in
12301-complaint, whose only member (agent3) is paused; the admin gives the logged-in agent that skill (penalty 3): the CTI
makes the phone a member at once and the waiting call is put through to it. Asterisk says so itself
(QueueStatus: the member with penalty 3; queue_log: ADDMEMBER and CONNECT in 12301-complaint), the
agent's desk pops the call, the call record names the agent, and the audit log shows every change.
"""

from __future__ import annotations

import pytest
from playwright.async_api import async_playwright, expect
from sqlalchemy import select
from test_browser import (
    CHROMIUM_ARGS,
    DESKTOP,
    LIVE,
    PAGE_ERRORS,
    create_agent_by_form,
    first_log_in,
    open_as,
    screenshots_dir,
)

from cli.democall import originate_citizen
from core.models import User
from cti.models import CallRecord
from sipdrivers.phones import SippPhone
from tests.desk.http_client import Desk

pytestmark = pytest.mark.stack

CALLER = "13912340077"
QUEUE = "12301-complaint"
USERNAME = "fengzx"
NEW_PASSWORD = "Feng-Zuo-Xi-2026"


async def _queue_status(ami, queue: str) -> list[dict]:
    reply = await ami.action({"Action": "QueueStatus", "Queue": queue}, as_list=True, timeout=10)
    return [dict(m) for m in reply if m.get("Event") in ("QueueMember", "QueueEntry")]


async def test_admin_creates_an_agent_whose_new_skill_takes_a_waiting_call_at_once(stack, ami, db, waiter, no_agents):
    base, shots = stack.settings.web_url, screenshots_dir()
    queue_log = stack.runtime.host_path(stack.runtime.inside("log", "queue_log"))
    phone, holder = SippPhone(stack.settings, "8005"), SippPhone(stack.settings, "8003")
    colleague = Desk(base)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            with phone, holder:
                await phone.wait_registered(stack.runtime)
                await holder.wait_registered(stack.runtime)
                # agent3 serves 12301-complaint but stays paused: the queue is not empty (joinempty), so the
                # citizen waits in it, and nobody takes the call until the new agent has the skill.
                await colleague.login("agent3", stack.settings.secrets["demo_password"])
                assert (await colleague.post("/api/desk/state", {"action": "login", "phone": "8003"}))[0] == 200
                admin = await open_as(browser, base, "admin", stack.settings.secrets["admin_password"], DESKTOP)
                await admin.click(".mainnav >> text=系统管理")
                password = await create_agent_by_form(admin, USERNAME, "冯坐席", "707", "12301-general", "8005")
                assert len(password) == stack.settings.passwords.generated_length
                await admin.screenshot(path=shots / "admin-user-created.png")

                agent = await first_log_in(browser, base, USERNAME, password, NEW_PASSWORD, DESKTOP)
                assert await agent.locator("#phone").input_value() == "8005"  # the default extension
                await agent.click("#btn-login")
                await expect(agent.locator("#state-label")).to_have_text("暂停", timeout=LIVE)
                await agent.click("#btn-ready")
                await expect(agent.locator("#state-label")).to_have_text("就绪", timeout=LIVE)

                # The edit form is ready before the citizen calls: the queue's max wait is short on the test stack.
                await admin.click("#to-user")
                await admin.locator(f'[name=skill][value="{QUEUE}"]').check()
                await admin.fill(f'[name="penalty_{QUEUE}"]', "3")

                await originate_citizen(ami, "12301", keys="2wwwwww1", caller=CALLER, hold_seconds=40, delay_seconds=2)

                async def caller_waiting():
                    status = await _queue_status(ami, QUEUE)
                    return [e for e in status if e["Event"] == "QueueEntry" and e.get("CallerIDNum") == CALLER]

                await waiter(caller_waiting, timeout=40, what="the citizen waiting in 12301-complaint")
                members = [m for m in await _queue_status(ami, QUEUE) if m["Event"] == "QueueMember"]
                assert [(m["StateInterface"], m["Paused"]) for m in members] == [("PJSIP/8003", "1")]

                await admin.click("#save-user")
                await expect(admin.locator("#user-notice")).to_contain_text("立即生效", timeout=LIVE)
                await expect(agent.locator("#pop-caller")).to_have_text(CALLER, timeout=LIVE)

                members = [m for m in await _queue_status(ami, QUEUE) if m["Event"] == "QueueMember"]
                assert sorted((m["StateInterface"], m["Penalty"], m["Paused"]) for m in members) == [
                    ("PJSIP/8003", "0", "1"), ("PJSIP/8005", "3", "0")]

                async def answered():
                    async with db.session() as session:
                        return await session.scalar(select(CallRecord).where(
                            CallRecord.caller_number == CALLER, CallRecord.answered_at.is_not(None)))

                record = await waiter(answered, timeout=40, what="the waiting call answered")
                async with db.session() as session:
                    user = await session.scalar(select(User).where(User.username == USERNAME))
                assert (record.agent_id, record.queue, record.agent_extension) == (user.id, QUEUE, "8005")
                assert user.skills == {"12301-general": 0, QUEUE: 3} and not user.must_change_password
                book = queue_log.read_text(errors="replace").splitlines()
                member = f"冯坐席({USERNAME})"
                assert any(f"|{QUEUE}|{member}|ADDMEMBER|" in line for line in book)
                assert any(line.split("|")[1:5] == [record.call_id, QUEUE, member, "CONNECT"] for line in book)

                await admin.click(".admin-nav >> text=审计日志")
                await admin.fill("#audit-filters [name=text]", USERNAME)
                await admin.keyboard.press("Enter")
                rows = admin.locator("#audit tbody tr")
                await expect(rows).to_have_count(3, timeout=LIVE)
                await expect(rows.nth(0)).to_contain_text("修改")
                await expect(rows.nth(0)).to_contain_text(QUEUE)
                await expect(rows.nth(1)).to_contain_text("修改密码")
                await expect(rows.nth(2)).to_contain_text("新建")
                await expect(admin.locator("#audit")).not_to_contain_text(password)
                await admin.screenshot(path=shots / "admin-audit.png")
                await agent.click("#btn-logout")
                await expect(agent.locator("#state-label")).to_have_text("离线", timeout=LIVE)
        finally:
            await colleague.post("/api/desk/state", {"action": "logout"})
            await colleague.close()
            await browser.close()
    assert PAGE_ERRORS == []

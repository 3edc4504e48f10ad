"""Issue 17 "done when", in Chromium against the real stack, without a restart: the admin creates a phone
(its password shown once) and a queue on the admin pages; a new agent (made through the service: the
agent form of the admin area is not there yet) signs in on a SIPp phone registered with the new
credentials and takes a real call into the new queue through the queue's own number (<hotline>-<business>,
dialplans/hotline.conf). Checked against Asterisk's own books (queue_log CONNECT in the new queue by the new
agent's member name), the call record, the audit log and Asterisk's unchanged start time.
"""

from __future__ import annotations

from playwright.async_api import async_playwright, expect
from sqlalchemy import select

from cli.democall import originate_citizen
from core import admin_audit
from core.models import Role, User
from cti.models import CallRecord
from sipdrivers.browser import CHROMIUM_ARGS
from sipdrivers.phones import SippPhone
from tests.desk.test_browser import DESKTOP, LIVE, PAGE_ERRORS, open_as, screenshots_dir

EXTENSION, BUSINESS = "8066", "newline"
QUEUE = f"12301-{BUSINESS}"
CALLER = "13912346601"


async def _new_agent(db, password: str) -> User:
    async with db.transaction() as session:
        agent = User(username="agent66", display_name="周新", role=Role.AGENT, skills={QUEUE: 0}, agent_number="166")
        agent.set_password(password)
        session.add(agent)
    return agent


async def test_admin_creates_phone_and_queue_and_a_new_agent_takes_a_call_in_it_without_restart(
        stack, ami, db, waiter, no_agents):
    shots = screenshots_dir()
    base = stack.settings.web_url
    started = (await ami.action({"Action": "CoreStatus"}))["CoreStartupTime"]
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            admin = await open_as(browser, base, "admin", stack.settings.secrets["admin_password"], DESKTOP)
            await admin.goto(f"{base}/admin/extensions")
            await admin.focus("#new-extension")  # by keyboard: the link, Enter, the form's first field focused
            await admin.keyboard.press("Enter")
            await admin.wait_for_url("**/admin/extensions/new")
            await expect(admin.locator("input[name=extension]")).to_be_focused()
            await admin.fill("input[name=extension]", "80666")
            await admin.fill("input[name=label]", "新坐席 66")
            # The browser refuses the pattern itself; without it the server's own refusal is shown.
            await admin.evaluate("document.querySelector('input[name=extension]').removeAttribute('pattern')")
            await admin.press("input[name=label]", "Enter")
            await expect(admin.locator("#form-error")).to_contain_text("8 开头的 4 位数字")
            await admin.fill("input[name=extension]", EXTENSION)
            await admin.press("input[name=label]", "Enter")
            password = (await admin.locator("#sip-password").inner_text()).strip()
            assert len(password) == 12
            await expect(admin.locator("#problem")).to_have_count(0)  # applied on every node at once
            await admin.screenshot(path=shots / "admin-01-phone-password-once.png")

            await admin.goto(f"{base}/admin/queues/new")
            await admin.fill("input[name=business]", BUSINESS)
            await admin.fill("input[name=ring_seconds]", "20")
            await admin.select_option("select[name=strategy]", "leastrecent")
            await admin.click("#save")
            await expect(admin.locator("#done")).to_contain_text(f"队列 {QUEUE} 已新建")
            await expect(admin.locator("#problem")).to_have_count(0)
            await expect(admin.locator("#queues")).to_contain_text("最久未接来电者优先")
            await admin.screenshot(path=shots / "admin-02-queue-created.png")

            await _new_agent(db, stack.settings.secrets["demo_password"])
            with SippPhone(stack.settings, EXTENSION, password=password) as phone:
                await phone.wait_registered(stack.runtime)
                agent = await open_as(browser, base, "agent66", stack.settings.secrets["demo_password"], DESKTOP)
                await agent.select_option("#phone", EXTENSION)
                await agent.click("#btn-login")
                await expect(agent.locator("#state-label")).to_have_text("暂停", timeout=LIVE)
                await agent.click("#btn-ready")
                await expect(agent.locator("#state-label")).to_have_text("就绪", timeout=LIVE)

                call = await originate_citizen(ami, QUEUE, caller=CALLER, hold_seconds=30, delay_seconds=1)
                await expect(agent.locator("#pop-caller")).to_have_text(CALLER, timeout=LIVE)
                await expect(agent.locator("#pop-status")).to_have_text("通话中", timeout=LIVE)
                await agent.screenshot(path=shots / "admin-03-new-agent-talking.png")

                async def answered():
                    async with db.session() as session:
                        record = await session.scalar(select(CallRecord).where(CallRecord.call_id == call.call_id))
                    return record if record and record.answered_at else None

                record = await waiter(answered, timeout=60, what="the call record answered")
                assert (record.queue, record.agent_id) == (QUEUE, (await _agent_id(db)))
                queue_log = stack.runtime.host_path(stack.runtime.inside("log", "queue_log")).read_text()
                assert any(line.split("|")[1:5] == [call.call_id, QUEUE, "周新(agent66)", "CONNECT"]
                           for line in queue_log.splitlines()), "queue_log has no CONNECT in the new queue"
                await agent.click("#btn-logout")
            await ami.action({"Action": "Hangup", "Channel": f"/^Local.{QUEUE}@from-carrier/"})

            await admin.goto(f"{base}/admin/audit?text={EXTENSION}")
            await expect(admin.locator("#audit")).to_contain_text("电话分机")
            await admin.goto(f"{base}/admin/audit?entity=queue&text={BUSINESS}")
            await expect(admin.locator("#audit")).to_contain_text(QUEUE)
        finally:
            await browser.close()
    assert (await ami.action({"Action": "CoreStatus"}))["CoreStartupTime"] == started, "Asterisk was restarted"
    _total, rows = await admin_audit.search(db, admin_audit.AuditQuery(text=EXTENSION))
    assert [r.action for r in rows if r.entity == "extension"] == ["create"]
    assert password not in str([(r.before, r.after) for r in rows])
    assert not PAGE_ERRORS, PAGE_ERRORS


async def _agent_id(db) -> int:
    async with db.session() as session:
        return await session.scalar(select(User.id).where(User.username == "agent66"))

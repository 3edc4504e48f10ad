"""Issue 17 "done when", in Chromium against the real stack, without a restart, all through the admin's forms:
the admin creates a phone (its password shown once), a queue with its own wrap-up time and an agent (the
agent form: skill in the new queue, the new phone as default extension, the password shown once); the agent
logs in with that password, sets their own, signs in on a SIPp phone registered with the phone's new
credentials and takes a real call into the new queue through the queue's own number
(<hotline>-<business>, dialplans/hotline.conf). When the call ends, the agent's 话后整理 lasts the new
queue's wrap-up time (not the global [queues] wrapup_seconds), the value Asterisk's own wrapuptime of that
queue carries too (GetConfig). Then the admin locks the agent: the CTI signs them out of the queue at once
(QueueStatus no longer has the member, queue_log says REMOVEMEMBER, the agent's state is offline).
Checked against Asterisk's own books (queue_log CONNECT in the new queue by the new agent's member name),
the call record, the audit log (each change, through the audit page) and Asterisk's unchanged start time.
"""

from __future__ import annotations

import json

from playwright.async_api import async_playwright, expect
from sqlalchemy import select

from cli.democall import originate_citizen
from core import admin_audit
from core.models import User
from cti.models import CallRecord
from cti.read import AGENT_SESSIONS
from sipdrivers.browser import CHROMIUM_ARGS
from sipdrivers.phones import SippPhone
from tests.desk.test_browser import (
    DESKTOP,
    LIVE,
    PAGE_ERRORS,
    create_agent_by_form,
    first_log_in,
    open_as,
    screenshots_dir,
)

EXTENSION, BUSINESS = "8066", "newline"
QUEUE = f"12301-{BUSINESS}"
CALLER = "13912346601"
USERNAME, MEMBER = "agent66", "周新(agent66)"
NEW_PASSWORD = "Zhou-Xin-6606"
WRAPUP = 8  # the new queue's; the test stack's global wrap-up is 1 s (tests/conftest.py)


async def _queue_members(ami) -> list[str]:
    reply = await ami.action({"Action": "QueueStatus", "Queue": QUEUE}, as_list=True, timeout=10)
    return [m.get("StateInterface") for m in reply if m.get("Event") == "QueueMember"]


async def _session(redis, agent_id: int) -> dict:
    raw = await redis.hget(AGENT_SESSIONS, str(agent_id))
    return json.loads(raw) if raw else {}


async def test_admin_creates_phone_queue_and_agent_who_takes_a_call_in_it_without_restart_then_is_locked_out(
        stack, ami, db, redis, waiter, no_agents):
    shots = screenshots_dir()
    base = stack.settings.web_url
    queue_log = stack.runtime.host_path(stack.runtime.inside("log", "queue_log"))
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
            await admin.fill("input[name=wrapup_seconds]", str(WRAPUP))
            await admin.select_option("select[name=strategy]", "leastrecent")
            await admin.click("#save")
            await expect(admin.locator("#done")).to_contain_text(f"队列 {QUEUE} 已新建")
            await expect(admin.locator("#problem")).to_have_count(0)
            await expect(admin.locator("#queues")).to_contain_text("最久未接来电者优先")
            await admin.screenshot(path=shots / "admin-02-queue-created.png")
            config = await ami.action({"Action": "GetConfig", "Filename": "queues.conf", "Category": QUEUE})
            assert f"wrapuptime={WRAPUP}" in [str(v).replace(" ", "") for k, v in dict(config).items()
                                              if k.startswith("Line-")], config

            # The agent, through the agent form as a centre's admin makes one.
            # (its skill the queue made a moment ago, its default extension the new phone)
            first_password = await create_agent_by_form(admin, USERNAME, "周新", "166", QUEUE, EXTENSION)
            assert len(first_password) == stack.settings.passwords.generated_length
            await admin.screenshot(path=shots / "admin-03-agent-created.png")

            with SippPhone(stack.settings, EXTENSION, password=password) as phone:
                await phone.wait_registered(stack.runtime)
                agent = await first_log_in(browser, base, USERNAME, first_password, NEW_PASSWORD, DESKTOP)
                assert await agent.locator("#phone").input_value() == EXTENSION  # the default extension
                await agent.click("#btn-login")
                await expect(agent.locator("#state-label")).to_have_text("暂停", timeout=LIVE)
                await agent.click("#btn-ready")
                await expect(agent.locator("#state-label")).to_have_text("就绪", timeout=LIVE)

                call = await originate_citizen(ami, QUEUE, caller=CALLER, hold_seconds=30, delay_seconds=1)
                await expect(agent.locator("#pop-caller")).to_have_text(CALLER, timeout=LIVE)
                await expect(agent.locator("#pop-status")).to_have_text("通话中", timeout=LIVE)
                await agent.screenshot(path=shots / "admin-04-new-agent-talking.png")

                async def answered():
                    async with db.session() as session:
                        record = await session.scalar(select(CallRecord).where(CallRecord.call_id == call.call_id))
                    return record if record and record.answered_at else None

                record = await waiter(answered, timeout=60, what="the call record answered")
                agent_id = await _agent_id(db)
                assert (record.queue, record.agent_id) == (QUEUE, agent_id)
                assert any(line.split("|")[1:5] == [call.call_id, QUEUE, MEMBER, "CONNECT"]
                           for line in queue_log.read_text(errors="replace").splitlines()), \
                    "queue_log has no CONNECT in the new queue"

                # The call ends: 话后整理 for the new queue's wrap-up time, then ready again.
                await ami.action({"Action": "Hangup", "Channel": f"/^Local.{QUEUE}@from-carrier/"})

                async def state_is(state: str):
                    session = await _session(redis, agent_id)
                    return session if session.get("state") == state else None

                wrapup = await waiter(lambda: state_is("wrapup"), timeout=30, what="the agent in wrap-up")
                await expect(agent.locator("#state-label")).to_have_text("话后整理", timeout=LIVE)
                ready = await waiter(lambda: state_is("ready"), timeout=60, what="the agent ready after wrap-up")
                assert ready["since"] - wrapup["since"] >= WRAPUP - 0.5, (wrapup, ready)  # not the global 1 s
                assert wrapup.get("wrapup_seconds") == WRAPUP and wrapup.get("call_queue") == QUEUE
                await expect(agent.locator("#state-label")).to_have_text("就绪", timeout=LIVE)
                assert await _queue_members(ami) == [f"PJSIP/{EXTENSION}"]

                # Locked by the admin: out of the queue at once, on Asterisk's own word.
                await admin.click("#to-user")
                await admin.click("#lock-user")
                await expect(admin.locator("#user-notice")).to_contain_text("已从队列签出", timeout=LIVE)
                assert await _queue_members(ami) == []
                assert any(f"|{QUEUE}|{MEMBER}|REMOVEMEMBER|" in line
                           for line in queue_log.read_text(errors="replace").splitlines())
                assert (await _session(redis, agent_id))["state"] == "offline"
                await agent.reload()
                assert agent.url.startswith(f"{base}/login")  # and the desk session ended

            await admin.goto(f"{base}/admin/audit?text={EXTENSION}")
            await expect(admin.locator("#audit")).to_contain_text("电话分机")
            await admin.goto(f"{base}/admin/audit?entity=queue&text={BUSINESS}")
            await expect(admin.locator("#audit")).to_contain_text(QUEUE)
            await admin.goto(f"{base}/admin/audit?entity=user&text={USERNAME}")
            rows = admin.locator("#audit tbody tr")
            for position, action in enumerate(("签出队列", "锁定", "修改密码", "新建")):
                await expect(rows.nth(position)).to_contain_text(action)
            await admin.screenshot(path=shots / "admin-05-audit.png")
        finally:
            await browser.close()
    assert (await ami.action({"Action": "CoreStatus"}))["CoreStartupTime"] == started, "Asterisk was restarted"
    _total, rows = await admin_audit.search(db, admin_audit.AuditQuery(text=EXTENSION))
    assert [r.action for r in rows if r.entity == "extension"] == ["create"]
    assert password not in str([(r.before, r.after) for r in rows])
    _total, rows = await admin_audit.search(db, admin_audit.AuditQuery(entity="user", text=USERNAME))
    assert first_password not in str([(r.before, r.after) for r in rows])
    assert rows[0].before == {"phone": EXTENSION, "queues": [QUEUE]} and rows[0].after == {"phone": None, "queues": []}
    assert not PAGE_ERRORS, PAGE_ERRORS


async def _agent_id(db) -> int:
    async with db.session() as session:
        return await session.scalar(select(User.id).where(User.username == USERNAME))

"""The agent calls a citizen back from the desk's inbox in a real browser: the agent's phone rings, the
citizen is dialled over the carrier trunk, the call is recorded, the agent hangs up from the desk and
the request is done. A second click on the same request (a stale page, or a colleague) is refused."""

from __future__ import annotations

import uuid
from datetime import timedelta

from playwright.async_api import async_playwright, expect
from sqlalchemy import func, select

from core.db import utcnow
from cti.models import CallbackRequest, CallbackStatus, CallRecord
from sipdrivers.carrier import carrier_answering
from sipdrivers.phones import SippPhone
from tests.desk.test_browser import CHROMIUM_ARGS, DESKTOP, PAGE_ERRORS, open_as, screenshots_dir

CITIZEN = "13833334444"


async def test_agent_calls_a_voicemail_caller_back_from_the_inbox(stack, ami, db, waiter, no_agents):
    async with db.transaction() as session:
        # The inbox lists the oldest places in line first: this message was left before any other
        # request earlier tests of the session may have left open.
        oldest = await session.scalar(select(func.min(CallbackRequest.position_at)))
        request = CallbackRequest(call_id=f"vm-{uuid.uuid4().hex[:12]}", number=CITIZEN, hotline="12365",
                                  source="voicemail", note="留言回拨",
                                  position_at=min(oldest, utcnow()) - timedelta(minutes=1) if oldest else utcnow())
        session.add(request)
        await session.flush()
        request_id = request.id
    carrier = carrier_answering(stack.settings)
    phone = SippPhone(stack.settings, "8001")
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            try:
                with phone:
                    await phone.wait_registered(stack.runtime)
                    agent = await open_as(browser, stack.settings.web_url, "agent1",
                                          stack.settings.secrets["demo_password"], DESKTOP)
                    await agent.select_option("#phone", "8001")
                    await agent.click("#btn-login")
                    await expect(agent.locator("#state-label")).to_have_text("暂停")
                    await agent.click('[data-tab="inbox"]')
                    dial = agent.locator(f'[data-callback="{request_id}"]')
                    await dial.click()
                    await expect(agent.locator("#toast")).to_contain_text(f"正在呼叫 {CITIZEN}")

                    async def talking():
                        async with db.session() as session:
                            row = await session.get(CallbackRequest, request_id)
                            call = await session.scalar(select(CallRecord).where(
                                CallRecord.call_id == row.outbound_call_id)) if row.outbound_call_id else None
                        return call if call and call.answered_at else None

                    await waiter(talking, timeout=60, what="agent and citizen connected")
                    await agent.screenshot(path=screenshots_dir() / "10-agent-callback-from-inbox.png")
                    await dial.click()  # the same request again, from the page as it was
                    await expect(agent.locator("#toast")).to_contain_text("该回拨已由其他坐席处理或已结束")
                    await agent.click('[data-call="hangup"]')

                    async def finished():
                        async with db.session() as session:
                            row = await session.get(CallbackRequest, request_id)
                        return row if row.status not in (CallbackStatus.PENDING, CallbackStatus.DIALING) else None

                    done = await waiter(finished, timeout=60, what="the callback to end")
            finally:
                await browser.close()
        assert carrier.wait(timeout=30) == 0, carrier.stderr.read().decode()[-500:]  # dialled once, answered
    finally:
        if carrier.poll() is None:
            carrier.kill()
    assert done.status == CallbackStatus.DONE and done.attempts == 1, done.note
    async with db.session() as session:
        outbound = (await session.scalar(select(CallRecord).where(CallRecord.call_id == done.outbound_call_id)))
    assert outbound.direction == "outbound" and outbound.caller_number == CITIZEN
    assert outbound.answered_at is not None and outbound.recording_file
    assert not PAGE_ERRORS, PAGE_ERRORS

"""Service-level alerts on the wallboard (issue 16 item 7) in Chromium against the real platform.

The team lead sets the longest-wait threshold for the shift to 3 s on the wallboard's API (the two rates out
of reach, so only this figure can alarm); a real citizen call (a Local channel keying through the IVR) waits
in the 12301 complaint queue with the only agent logged in but paused. The wallboard turns the figure red,
shows the alert and beeps once (Web Audio, counted through the page's AudioContext); the team lead's message
centre holds one message for the episode however many times the wallboard refreshed; muting is remembered
after a reload (no beep then); when the caller is gone the alert clears.
"""

from __future__ import annotations

import pytest
from playwright.async_api import async_playwright, expect
from sqlalchemy import select

from cli.democall import originate_citizen
from core.models import User
from cti import control
from sipdrivers.phones import SippPhone
from tests.desk.http_client import Desk
from tests.desk.test_browser import CHROMIUM_ARGS, DESKTOP, LIVE, open_as, screenshots_dir

pytestmark = pytest.mark.stack

CALLER = "13912340077"
# Counts the tones the page starts: the wallboard's beep is an OscillatorNode.
COUNT_BEEPS = """
window.__beeps = 0;
const original = AudioContext.prototype.createOscillator;
AudioContext.prototype.createOscillator = function () { window.__beeps += 1; return original.call(this); };
"""


async def _alert_messages(lead: Desk) -> list[dict]:
    status, body = await lead.get_json("/api/messages")
    assert status == 200, body
    return [m for m in body["messages"] if m["kind"] == "service_alert"]


async def test_longest_wait_alert_shows_beeps_once_messages_the_lead_once_and_mute_is_remembered(
        stack, ami, db, redis, waiter, no_agents):
    base, password = stack.settings.web_url, stack.settings.secrets["demo_password"]
    lead = Desk(base)
    async with db.session() as session:
        agent = await session.scalar(select(User).where(User.username == "agent1"))
    await lead.login("lead1", password, next_url="/wallboard")
    status, body = await lead.post("/api/wallboard/alerts", {"longest_wait_seconds": "3"})
    assert status == 400 and body["field"] == "longest_wait_seconds", body  # refused in plain words
    status, body = await lead.post("/api/wallboard/alerts", {"longest_wait_seconds": 3, "service_level_below": 0,
                                                             "abandon_rate_above": 1})
    assert status == 200 and body["longest_wait_seconds"] == 3, body
    before = len(await _alert_messages(lead))
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            with SippPhone(stack.settings, "8001") as phone:
                await phone.wait_registered(stack.runtime)
                await control.agent_login(ami, redis, agent, "8001")  # paused: the caller waits in the queue
                try:
                    page = await open_as(browser, base, "lead1", password, DESKTOP)
                    await page.add_init_script(COUNT_BEEPS)
                    await page.reload()
                    await expect(page.locator("#alert-mute")).to_have_text("开")
                    await expect(page.locator("#sl-alerts")).to_be_hidden()
                    assert await page.evaluate("window.__beeps") == 0
                    status, body = await lead.get_json("/api/messages")
                    unread = body["unread"]
                    await expect(page.locator("#inbox-unread")).to_have_text(str(unread))
                    refreshes = []
                    page.on("response", lambda r: refreshes.append(r) if r.url.endswith("/api/wallboard") else None)

                    await originate_citizen(ami, "12301", keys="2wwwwww1", caller=CALLER, hold_seconds=25,
                                            delay_seconds=3)
                    await expect(page.locator('tr[data-queue="12301-complaint"]')).to_contain_text(CALLER,
                                                                                                    timeout=LIVE)
                    await expect(page.locator("#sl-alerts")).to_contain_text("最长等待", timeout=LIVE)
                    await expect(page.locator('[data-figure="longest_wait"]')).to_have_class("kpi alarm")
                    await page.screenshot(path=screenshots_dir() / "wallboard-alert.png")
                    assert await page.evaluate("window.__beeps") == 1

                    # Muted, and still muted after a reload: the alert shows again without a beep.
                    await page.click("#alert-mute")
                    await expect(page.locator("#alert-mute")).to_have_text("已静音")
                    await page.reload()
                    await expect(page.locator("#alert-mute")).to_have_text("已静音")
                    await expect(page.locator("#sl-alerts")).to_contain_text("最长等待", timeout=LIVE)
                    assert await page.evaluate("window.__beeps") == 0
                    assert await page.evaluate("localStorage.getItem('hotline.wallboard.alertsMuted')") == "1"

                    # However often the wallboards refreshed during the episode (and a second page load): one
                    # message, and the message centre's badge went up by one, live.
                    shown_at = len(refreshes)
                    await waiter(lambda: _async(len(refreshes) >= shown_at + 2), timeout=30,
                                 what="more wallboard refreshes during the alert")
                    messages = await _alert_messages(lead)
                    assert len(messages) == before + 1, messages
                    assert "最长等待" in messages[0]["text"] and "超过 3 秒" in messages[0]["text"]
                    await expect(page.locator("#inbox-unread")).to_have_text(str(unread + 1), timeout=LIVE)

                    # The caller hangs up: the episode ends and the wallboard is calm again.
                    await expect(page.locator("#sl-alerts")).to_be_hidden(timeout=LIVE)
                    await expect(page.locator('[data-figure="longest_wait"]')).to_have_class("kpi")
                    assert len(await _alert_messages(lead)) == before + 1
                finally:
                    await control.agent_logout(ami, redis, agent)
        finally:
            await browser.close()
            await lead.post("/api/wallboard/alerts", {"reset": True})
            await lead.close()


async def _async(value):
    return value or None

"""Issue 6, item 6, in a real browser against the real platform (Asterisk, CTI, IVR, recordings, desk).

An agent logs in with a SIPp phone and goes ready; a citizen call goes through
the IVR into the 12301 complaint queue; the team lead's wallboard shows the
caller waiting, then the answered call; the pop appears on that agent's desk
and the ticket saved from it is linked to the call and its recording; the
handling unit accepts and closes the ticket (refused without the required
inputs); a user of another unit is refused it. Screenshots go to
$HOTLINE_SCREENSHOTS (default var/screenshots).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from zoneinfo import ZoneInfo

from playwright.async_api import Browser, Page, async_playwright, expect
from sqlalchemy import select

from cli.democall import originate_citizen
from core.settings import REPO_ROOT
from recordings.models import Recording
from sipdrivers.browser import CHROMIUM_ARGS
from sipdrivers.phones import SippPhone
from tickets.models import Ticket, TicketCall

DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
CALLER = "13912340001"
PAGE_ERRORS: list[str] = []  # JavaScript errors of any page: there must be none
LIVE = 60_000  # ms: generous upper bound for live things to show; the test moves on as soon as they do


def screenshots_dir() -> Path:
    path = Path(os.environ.get("HOTLINE_SCREENSHOTS") or REPO_ROOT / "var" / "screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


async def open_as(browser: Browser, base: str, username: str, password: str, viewport: dict) -> Page:
    context = await browser.new_context(viewport=viewport, locale="zh-CN")
    page = await context.new_page()
    page.on("pageerror", lambda exc: PAGE_ERRORS.append(f"{username}: {exc}"))
    await page.goto(f"{base}/login")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.wait_for_load_state("networkidle")
    return page


async def create_agent_by_form(admin: Page, username: str, display_name: str, agent_number: str, skill: str,
                               extension: str) -> str:
    """An agent made on the admin's form (用户与坐席 → 新建用户), submitted from the keyboard; returns the
    password shown once."""
    await admin.click(".admin-nav >> text=用户与坐席")
    await admin.click("#new-user")
    form = admin.locator("#user-form")
    await form.locator("[name=username]").fill(username)
    await form.locator("[name=display_name]").fill(display_name)
    await form.locator("[name=role]").select_option("agent")
    await form.locator("[name=unit]").select_option("callcentre")
    await form.locator("[name=agent_number]").fill(agent_number)
    await form.locator(f'[name=skill][value="{skill}"]').check()
    await form.locator("[name=default_extension]").select_option(extension)
    await admin.keyboard.press("Enter")  # keyboard: the form submits from any field
    return (await admin.locator("#one-time-password").text_content() or "").strip()


async def first_log_in(browser: Browser, base: str, username: str, password: str, new_password: str,
                       viewport: dict) -> Page:
    """A new user's first log-in: the password shown once, then their own before anything else."""
    page = await open_as(browser, base, username, password, viewport)
    assert page.url.endswith("/account/password")
    await expect(page.locator("#must-change")).to_be_visible()
    await page.fill("[name=current]", password)
    await page.fill("[name=new]", new_password)
    await page.fill("[name=again]", new_password)
    await page.click("#password-form button")
    await page.wait_for_url(f"{base}/desk")
    return page


async def act(page: Page, action: str, inputs: dict[str, str], refused_with: str) -> None:
    """Open an action's dialog, submit it empty (refused), then with the inputs."""
    await page.click(f'[data-action="{action}"]')
    await page.click("#action-submit")
    await expect(page.locator("#action-error")).to_contain_text(refused_with)
    for name, value in inputs.items():
        await page.fill(f'#action-fields [name="{name}"]', value)
    await submit_action(page, action)


async def submit_action(page: Page, action: str) -> None:
    """Submit the open dialog and wait for its outcome: the dialog closes when the action is done (the
    page then reloads itself); a refusal keeps it open and fails the test with the page's own words."""
    await page.click("#action-submit")
    try:
        await expect(page.locator("#action-dialog")).to_be_hidden(timeout=LIVE)
    except AssertionError:
        raise AssertionError(f"「{action}」 not done: {await page.locator('#action-error').inner_text()}") from None


async def test_call_pop_ticket_wallboard_and_unit_handling_in_the_browser(stack, ami, db, waiter, no_agents):
    shots = screenshots_dir()
    base = stack.settings.web_url
    password = stack.settings.secrets["demo_password"]
    phone = SippPhone(stack.settings, "8001")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            with phone:
                await phone.wait_registered(stack.runtime)
                agent = await open_as(browser, base, "agent1", password, DESKTOP)
                assert agent.url.endswith("/desk")
                await agent.select_option("#phone", "8001")
                await agent.click("#btn-login")
                await expect(agent.locator("#state-label")).to_have_text("暂停")
                await agent.screenshot(path=shots / "01-agent-desk-idle.png")

                lead = await open_as(browser, base, "lead1", password, DESKTOP)
                assert lead.url.endswith("/wallboard")

                # The citizen keys 2 (complaint) then 1 (travel agency) and waits in the complaint queue.
                answered = lead.locator('tr[data-queue="12301-complaint"] .answered')
                answered_before = int((await answered.text_content() or "0").strip() or 0)
                call = await originate_citizen(ami, "12301", keys="2wwwwww1", caller=CALLER, hold_seconds=40,
                                               delay_seconds=3)
                waiting = lead.locator('tr[data-queue="12301-complaint"] .waiting')
                await expect(waiting).to_have_text("1", timeout=LIVE)
                await expect(lead.locator('tr[data-queue="12301-complaint"]')).to_contain_text(CALLER)
                await lead.screenshot(path=shots / "02-wallboard-caller-waiting.png")

                await agent.click("#btn-ready")
                await expect(agent.locator("#pop-caller")).to_have_text(CALLER, timeout=LIVE)
                await expect(agent.locator("#pop-hotline")).to_have_text("12301")
                await expect(agent.locator("#pop-status")).to_have_text("通话中", timeout=LIVE)
                form = agent.locator("#ticket-form")
                assert await form.locator("[name=kind]").input_value() == "complaint"
                assert await form.locator("[name=complainant_phone]").input_value() == CALLER
                assert await form.locator("[name=complaint_object]").input_value() == "旅行社及导游领队"
                await agent.screenshot(path=shots / "03-agent-screen-pop.png")

                # Other tests of the session may have answered calls in this queue today: one more.
                await expect(answered).to_have_text(str(answered_before + 1), timeout=LIVE)
                await expect(waiting).to_have_text("0")
                await lead.screenshot(path=shots / "04-wallboard-call-answered.png")

                await form.locator("[name=complainant_name]").fill("王先生")
                await form.locator("[name=respondent_name]").fill("广州某某国际旅行社")
                await form.locator("[name=event_category]").select_option("强迫或变相强迫购物")
                await form.locator("[name=province]").fill("广东省")
                await form.locator("[name=city]").fill("广州市")
                await form.locator("[name=county]").fill("天河区")
                await form.locator("[name=description]").fill("导游在行程中强迫游客购物 <b>不买不让走</b>")
                await agent.click("#btn-save")
                saved = agent.locator("#saved-ticket")
                await expect(saved).to_be_visible(timeout=LIVE)
                number = await saved.inner_text()
                await agent.screenshot(path=shots / "05-agent-ticket-saved.png")

            async def linked_recording():
                async with db.session() as session:
                    ticket = await session.scalar(select(Ticket).where(Ticket.number == number))
                    link = await session.scalar(select(TicketCall).where(TicketCall.ticket_id == ticket.id))
                    recording = await session.scalar(select(Recording).where(Recording.call_id == call.call_id))
                    return (link, recording) if link and recording else None

            link, recording = await waiter(linked_recording, timeout=90, what="the call's recording to be filed")
            assert link.call_id == call.call_id

            # The handling unit (天河区, where a 广州天河 travel-agency complaint goes) on a phone.
            unit = await open_as(browser, base, "th_handler", password, PHONE)
            await unit.screenshot(path=shots / "06-unit-home-phone.png", full_page=True)
            await unit.goto(f"{base}/tickets?state=pending")
            await unit.screenshot(path=shots / "07-unit-ticket-list-phone.png", full_page=True)
            await unit.goto(f"{base}/tickets/{number}")
            await expect(unit.locator("#ticket-description")).to_have_text("导游在行程中强迫游客购物 <b>不买不让走</b>")
            await expect(unit.locator(f'audio[data-recording="{recording.id}"]')).to_have_count(1)
            played = await unit.request.get(f"{base}/recordings/{recording.id}", headers={"Range": "bytes=0-99"})
            assert played.status == 206
            await unit.screenshot(path=shots / "08-unit-ticket-detail-phone.png", full_page=True)
            await act(unit, "受理", {"note": "已电话联系投诉人，组织双方调解"}, "受理说明")
            await expect(unit.locator("#ticket-state")).to_have_text("受理中", timeout=LIVE)
            await unit.click('[data-action="调解成功"]')
            await unit.click("#action-submit")
            await expect(unit.locator("#action-error")).to_contain_text("赔偿金额")
            await unit.screenshot(path=shots / "09-unit-action-refused-phone.png")
            await unit.click("#action-cancel")
            await act(unit, "调解成功", {"amount": "1200", "closing_date": dt.datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat(), "remark": "旅行社退还购物款"},
                      "赔偿金额")
            await expect(unit.locator("#ticket-state")).to_have_text("待审核结案", timeout=LIVE)

            # 逐级审核 (001 §6.3 3)), two levels on the test stack: 天河区's head, then 广州市's.
            for reviewer, state_after in (("th_head", "待审核结案"), ("gz_head", "调解成功")):
                head = await open_as(browser, base, reviewer, password, DESKTOP)
                await head.goto(f"{base}/tickets/{number}")
                await head.click('[data-action="审核通过"]')
                await submit_action(head, "审核通过")
                await expect(head.locator("#ticket-state")).to_have_text(state_after, timeout=LIVE)
            await head.click("#timeline-toggle")
            await head.screenshot(path=shots / "10-ticket-closed-with-tracking-log.png", full_page=True)

            other = await open_as(browser, base, "sc_handler", password, DESKTOP)
            response = await other.goto(f"{base}/tickets/{number}")
            assert response.status == 404  # as for a ticket that does not exist (issue 12 item 15)
            await expect(other.locator("h1")).to_contain_text("不存在")
            await other.screenshot(path=shots / "11-other-unit-refused.png")

            await lead.goto(f"{base}/report?hotline=12301")
            await expect(lead.locator(".kpi").first).to_contain_text("接线率")
            await lead.screenshot(path=shots / "12-service-quality-report.png", full_page=True)
            assert PAGE_ERRORS == []
        finally:
            await browser.close()

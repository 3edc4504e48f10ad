"""Issue 18, item 4: the README's "first five minutes", step by step as written, in a real Chromium.

Against the session's throwaway stack instead of `./hotline up` on the default ports (the demo stack may be
running beside the tests): open the desk's address, log in as agent1, 签入 with 网页电话, 就绪; the README's
own command `./hotline call 12301 --keys 2w1` places the demo citizen; the browser rings with the pop, the
agent presses 接听 and hears the citizen's Mandarin (sound energy on the browser's received stream: speech, a
pause, speech again, so a newcomer who reads the pop first still hears the citizen); the
pre-filled draft is completed with exactly the fields the README names, saved, and the agent hangs up; lead1
logs in (another browser profile) and the wallboard shows the answered call. Each step leaves a screenshot
(newcomer-*.png) in $HOTLINE_SCREENSHOTS (default var/screenshots); their names are printed.
"""

from __future__ import annotations

import subprocess

import pytest
from playwright.async_api import async_playwright, expect
from sqlalchemy import select

from core.settings import REPO_ROOT
from sipdrivers.browser import BROWSER_PHONE_ARGS, chromium_in_namespace
from tests.desk.http_client import Desk
from tests.desk.test_browser import DESKTOP, LIVE, screenshots_dir
from tickets.models import Ticket

pytestmark = pytest.mark.stack
QUEUE = "12301-complaint"  # where 2 (complaint) then 1 (travel agency) leads

# In the page: RMS of ~0.7 s of what the browser phone plays to the agent.
LOUDNESS = """async () => {
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser(); analyser.fftSize = 32768;
  ctx.createMediaStreamSource(document.getElementById("wp-remote").srcObject).connect(analyser);
  await new Promise((r) => setTimeout(r, 900));
  const buf = new Float32Array(analyser.fftSize); analyser.getFloatTimeDomainData(buf);
  let sum = 0; for (const x of buf) sum += x * x;
  await ctx.close(); return Math.sqrt(sum / buf.length);
}"""


async def _answered_in_queue(base: str, password: str) -> int:
    lead = Desk(base)
    try:
        await lead.login("lead1", password, next_url="/wallboard")
        _status, snapshot = await lead.get_json("/api/wallboard")
    finally:
        await lead.close()
    return next(q["answered"] for q in snapshot["queues"] if q["queue"] == QUEUE)


async def test_the_readme_first_five_minutes_work_as_written(stack, db, waiter, no_agents, tmp_path):
    shots, taken = screenshots_dir(), []
    base, password = stack.settings.web_url, stack.settings.secrets["demo_password"]

    async def shot(page, name: str) -> None:
        await page.screenshot(path=shots / name, full_page=True)
        taken.append(name)

    answered_before = await _answered_in_queue(base, password)
    async with async_playwright() as p:
        with chromium_in_namespace(tmp_path) as (chromium, _namespace):
            browser = await p.chromium.launch(executable_path=str(chromium), args=BROWSER_PHONE_ARGS)  # fake microphone
            try:
                # 1. Open the desk's address and log in as agent1 with the printed password.
                agent = await (await browser.new_context(viewport=DESKTOP, locale="zh-CN")).new_page()
                agent.context.set_default_timeout(LIVE)  # a loaded machine: every step may take long
                errors: list[str] = []
                agent.on("pageerror", lambda exc: errors.append(str(exc)))
                await agent.goto(f"{base}/")
                await expect(agent.locator("input[name=username]")).to_be_visible()
                await shot(agent, "newcomer-1-login.png")
                await agent.fill("input[name=username]", "agent1")
                await agent.fill("input[name=password]", password)
                await agent.click("button[type=submit]")
                await agent.wait_for_load_state("networkidle")  # the desk's scripts have run
                await expect(agent.locator("#btn-login")).to_be_enabled(timeout=LIVE)

                # 2. 网页电话 beside 签入, 签入, then 就绪.
                await agent.select_option("#phone", label="网页电话")
                await agent.click("#btn-login")
                await expect(agent.locator("#webphone")).to_have_attribute("data-registered", "yes", timeout=LIVE)
                await agent.click("#btn-ready")
                await expect(agent.locator("#state-label")).to_have_text("就绪", timeout=LIVE)
                await shot(agent, "newcomer-2-signed-in-browser-phone.png")

                # 3. The README's command: the desk rings with the pop; 接听; the citizen's Mandarin.
                placed = subprocess.run([str(REPO_ROOT / "hotline"), "call", "12301", "--keys", "2w1"],
                                        capture_output=True, text=True, timeout=120)
                assert placed.returncode == 0, placed.stdout + placed.stderr
                await expect(agent.locator("#wp-answer")).to_be_enabled(timeout=LIVE)
                await expect(agent.locator("#pop-card")).to_be_visible()
                await expect(agent.locator("#pop-hotline")).to_have_text("12301")
                await shot(agent, "newcomer-3-ringing-with-pop.png")
                await agent.click("#wp-answer")
                await expect(agent.locator("#webphone")).to_have_attribute("data-call", "talking", timeout=LIVE)
                # The citizen speaks, pauses and speaks again: a newcomer who first reads the pop still hears them.
                await waiter(lambda: _loud(agent), timeout=60, what="the demo citizen's speech in the browser")
                await waiter(lambda: _quiet(agent), timeout=60, what="the citizen's pause")
                await waiter(lambda: _loud(agent), timeout=60, what="the citizen speaking again")
                await shot(agent, "newcomer-4-talking.png")

                # 4. The pre-filled draft: 投诉 and the object chosen by the IVR; the fields the README names.
                form = agent.locator("#ticket-form")
                assert await form.locator("[name=kind]").input_value() == "complaint"
                assert await form.locator("[name=complaint_object]").input_value() == "旅行社及导游领队"
                await form.locator("[name=complainant_name]").fill("王先生")
                await form.locator("[name=respondent_name]").fill("某某国际旅行社")
                await form.locator("[name=event_category]").select_option("强迫或变相强迫购物")
                await form.locator("[name=province]").fill("广东省")
                await form.locator("[name=description]").fill("导游在行程中强迫游客购物")
                await agent.click("#btn-save")
                saved = agent.locator("#saved-ticket")
                await expect(saved).to_be_visible(timeout=LIVE)
                number = await saved.inner_text()
                await shot(agent, "newcomer-5-ticket-saved.png")
                await agent.click('[data-call="hangup"]')
                await expect(agent.locator("#webphone")).to_have_attribute("data-call", "idle", timeout=LIVE)
                await shot(agent, "newcomer-6-hung-up.png")

                # 5. lead1 in another browser profile: the wallboard shows the call.
                lead = await (await browser.new_context(viewport=DESKTOP, locale="zh-CN")).new_page()
                lead.context.set_default_timeout(LIVE)
                lead.on("pageerror", lambda exc: errors.append(str(exc)))
                await lead.goto(f"{base}/")
                await lead.fill("input[name=username]", "lead1")
                await lead.fill("input[name=password]", password)
                await lead.click("button[type=submit]")
                await lead.wait_for_load_state("networkidle")
                await expect(lead.locator(f'tr[data-queue="{QUEUE}"] .answered')).to_have_text(
                    str(answered_before + 1), timeout=LIVE)
                await shot(lead, "newcomer-7-wallboard.png")
                await agent.click("#btn-logout")
                assert errors == []
            finally:
                await browser.close()
    async with db.session() as session:
        ticket = await session.scalar(select(Ticket).where(Ticket.number == number))
    assert ticket is not None and ticket.hotline == "12301"
    print("newcomer screenshots in", shots, ":", ", ".join(taken))


async def _loud(page) -> bool:
    return await page.evaluate(LOUDNESS) > 0.01


async def _quiet(page) -> bool:
    return await page.evaluate(LOUDNESS) < 0.002

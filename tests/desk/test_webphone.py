"""Issue 18, items 1-3 and 5: the browser phone (网页电话) in real Chromium against the real platform.

agent1 signs in with 网页电话 (Chromium's fake microphone plays a 1200 Hz tone); a SIPp citizen calls
12301 through the carrier trunk and streams a 440 Hz tone; the browser rings with the pop and the agent
answers with Alt+A. Audio both ways is proven by frequency: the browser's received stream carries 440 Hz
(Goertzel in the page, on the <audio> element's stream) and the call's stereo recording carries the
citizen's 440 Hz on the left and the browser's 1200 Hz on the right. Then hold (the browser hears no
citizen) and resume (it does again), a second tab that is refused the phone, and a blind transfer to a
SIPp agent phone (8002), which answers while the browser's leg ends. Signing out deletes the endpoint and
its password. Screenshots go to $HOTLINE_SCREENSHOTS (default var/screenshots), named webphone-*.png.

Chromium takes its ICE host candidate from the machine's network interface (its own address: the packets
stay inside the kernel); it ignores loopback addresses, even 127.0.1.1 on a veth of the host namespace.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import aiohttp
from playwright.async_api import expect
from sqlalchemy import select

from agent_desk.webphone import endpoint_name
from core.models import User
from sipdrivers.audio import raw_stereo_channels, tone_power
from sipdrivers.carrier import run_citizen_calls
from sipdrivers.phones import SippPhone
from tests.desk.test_browser import CHROMIUM_ARGS, DESKTOP, LIVE, open_as, screenshots_dir

CITIZEN_HZ, BROWSER_HZ = 440, 1200

# In the page: Goertzel power of each frequency over ~0.7 s of what the browser phone plays to the agent.
RECEIVED = """async ([f1, f2]) => {
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser(); analyser.fftSize = 32768;
  ctx.createMediaStreamSource(document.getElementById("wp-remote").srcObject).connect(analyser);
  await new Promise((r) => setTimeout(r, 900));
  const buf = new Float32Array(analyser.fftSize); analyser.getFloatTimeDomainData(buf);
  const power = (f) => { const c = 2 * Math.cos(2 * Math.PI * f / ctx.sampleRate); let s1 = 0, s2 = 0;
    for (const x of buf) { const s = x + c * s1 - s2; s2 = s1; s1 = s; }
    return (s1 * s1 + s2 * s2 - c * s1 * s2) / (buf.length * buf.length); };
  const result = [power(f1), power(f2)]; await ctx.close(); return result;
}"""


def tone_file(folder: Path, name: str, freq: int, rate: int, encoding: list[str]) -> Path:
    target = folder / name
    subprocess.run(["sox", "-n", "-r", str(rate), "-c", "1", *encoding, str(target), "synth", "120", "sine",
                    str(freq), "vol", "0.5"], check=True, capture_output=True)
    return target


async def hears(page, freq: int, other: int) -> bool:
    wanted, unwanted = await page.evaluate(RECEIVED, [freq, other])
    return wanted > 1e-5 and wanted > 20 * unwanted


def newest_recording(stack, since: float) -> Path | None:
    spool = stack.recording_path("")
    files = [p for p in spool.rglob("*.raw") if p.stat().st_mtime >= since]
    return max(files, key=lambda p: p.stat().st_mtime, default=None)


async def test_agent_takes_a_call_in_the_browser_phone_with_audio_both_ways(stack, ami, db, waiter, no_agents,
                                                                             tmp_path):
    from playwright.async_api import async_playwright

    shots = screenshots_dir()
    mic = tone_file(tmp_path, "browser.wav", BROWSER_HZ, 48000, ["-b", "16"])
    citizen = tone_file(tmp_path, "citizen.ulaw", CITIZEN_HZ, 8000, ["-t", "raw", "-e", "u-law"])
    base, password = stack.settings.web_url, stack.settings.secrets["demo_password"]
    async with db.session() as session:
        agent1 = await session.scalar(select(User).where(User.username == "agent1"))
    endpoint = endpoint_name(agent1.id)
    args = [*CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic}", "--autoplay-policy=no-user-gesture-required",
            "--disable-features=WebRtcHideLocalIpsWithMdns"]
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        try:
            with SippPhone(stack.settings, "8002") as colleague:
                await colleague.wait_registered(stack.runtime)
                page = await open_as(browser, base, "agent1", password, DESKTOP)
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.select_option("#phone", "webrtc")
                await page.click("#btn-login")
                await expect(page.locator("#webphone")).to_have_attribute("data-registered", "yes", timeout=LIVE)
                await expect(page.locator("#state-phone")).to_have_text("网页电话")
                assert f"{endpoint}/" in stack.runtime.rx(f"pjsip show aor {endpoint}")  # registered contact
                await page.click("#btn-ready")
                await expect(page.locator("#state-label")).to_have_text("就绪")
                await page.screenshot(path=shots / "webphone-01-signed-in.png")

                # A second tab of the same agent gets no phone, and says so.
                second = await page.context.new_page()
                await second.goto(f"{base}/desk")
                await expect(second.locator("#wp-status")).to_contain_text("另一个窗口", timeout=LIVE)
                await second.screenshot(path=shots / "webphone-02-second-tab.png")
                await second.close()

                started = time.time()
                call = asyncio.create_task(asyncio.to_thread(
                    run_citizen_calls, stack.settings, "12301", "21", ["13912340018"], citizen,
                    hold_ms=60000, delay_ms=3000, timeout=120))
                await expect(page.locator("#wp-answer")).to_be_enabled(timeout=LIVE)
                await expect(page.locator("#pop-card")).to_be_visible()
                await expect(page.locator("#pop-caller")).to_have_text("13912340018")
                await page.screenshot(path=shots / "webphone-03-ringing-with-pop.png")
                await page.keyboard.press("Alt+a")
                await expect(page.locator("#webphone")).to_have_attribute("data-call", "talking", timeout=LIVE)
                await expect(page.locator("#state-label")).to_have_text("通话中", timeout=LIVE)  # the CTI follows web<id>

                # Asterisk -> browser: the citizen's tone reaches the agent's ear.
                await waiter(lambda: hears(page, CITIZEN_HZ, BROWSER_HZ), timeout=30, what="the citizen heard")
                await page.screenshot(path=shots / "webphone-04-talking.png")
                # Browser -> Asterisk: the recording's right channel (what the citizen hears) is the browser's tone.
                recording = await waiter(lambda: _recorded(stack, started), timeout=30,
                                         what="both tones in the call's stereo recording")
                assert recording

                await page.click('[data-call="hold"]')
                await waiter(lambda: _silent(page), timeout=30, what="the citizen held (no tone in the browser)")
                await page.screenshot(path=shots / "webphone-05-on-hold.png")
                await page.click('[data-call="resume"]')
                await waiter(lambda: hears(page, CITIZEN_HZ, BROWSER_HZ), timeout=30, what="the citizen back")

                await page.select_option("#transfer-target", "8002")
                await page.click('[data-transfer="blind"]')
                await expect(page.locator("#webphone")).to_have_attribute("data-call", "idle", timeout=LIVE)
                # The held call ended outside Queue() (no AgentComplete): still 话后整理, then 就绪.
                await expect(page.locator("#state-label")).to_have_text("话后整理", timeout=LIVE)
                await waiter(lambda: _bridged_to(ami, "PJSIP/8002-"), timeout=30, what="the citizen with 8002")
                await expect(page.locator("#state-label")).to_have_text("就绪", timeout=LIVE)
                await page.screenshot(path=shots / "webphone-06-transferred.png")

                # The connection drops (its TCP sockets killed): the agent is paused as 网页电话离线, so no call
                # is offered to a dead browser; the page reconnects, registers again and the agent is ready again.
                queue_log = stack.runtime.host_path(stack.runtime.inside("log", "queue_log"))
                member = "(agent1)|"  # queue_log names the member as agent_login named it
                logged = queue_log.read_text().count(member)
                subprocess.run(["ss", "-K", "dst", "127.0.0.1", "dport", "=", str(stack.settings.web.port)],
                               check=True, capture_output=True)
                await expect(page.locator("#wp-status")).to_contain_text("连接中断", timeout=LIVE)
                await page.screenshot(path=shots / "webphone-07-connection-lost.png")
                await expect(page.locator("#webphone")).to_have_attribute("data-registered", "yes", timeout=LIVE)
                await expect(page.locator("#state-label")).to_have_text("就绪", timeout=LIVE)
                lines = [line for line in queue_log.read_text().splitlines() if member in line]
                assert any("|PAUSE" in line and line.endswith("|phone") for line in lines[logged:]), lines[logged:]
                assert "|UNPAUSE" in lines[-1], lines[logged:]

                await page.click("#btn-logout")
                await expect(page.locator("#state-label")).to_have_text("离线")
                assert "Unable to find object" in stack.runtime.rx(f"pjsip show endpoint {endpoint}")
                cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
                async with aiohttp.ClientSession(cookies=cookies) as http:
                    async with http.get(f"{base}/api/desk/webphone") as resp:
                        assert resp.status == 409  # the password is gone with the sign-out
                assert errors == []
                result = await call
                assert result.successful == 1, result.output
        finally:
            await browser.close()


async def _recorded(stack, since: float) -> bool:
    path = newest_recording(stack, since)
    if path is None:
        return False
    left, right = raw_stereo_channels(path)
    left, right = left[-8000:], right[-8000:]  # the last second
    return (tone_power(left, CITIZEN_HZ) > 20 * tone_power(left, BROWSER_HZ)
            and tone_power(right, BROWSER_HZ) > 20 * tone_power(right, CITIZEN_HZ)
            and tone_power(right, BROWSER_HZ) > 1e3)


async def _silent(page) -> bool:
    wanted, _ = await page.evaluate(RECEIVED, [CITIZEN_HZ, BROWSER_HZ])
    return wanted < 1e-7


async def _bridged_to(ami, prefix: str) -> bool:
    from cti.control import live_channels

    return any(c.get("Channel", "").startswith(prefix) and c.get("BridgeId") for c in await live_channels(ami))


def test_the_cti_knows_browser_phones_by_their_channels_and_never_takes_the_carrier_for_one():
    from cti.books import phone_of

    assert phone_of("PJSIP/web7-0000002a") == "web7" and phone_of("PJSIP/web12") == "web12"
    assert phone_of("PJSIP/8001-00000001") == "8001"
    assert phone_of("PJSIP/carrier-00000003") is None and phone_of("PJSIP/webby-01") is None

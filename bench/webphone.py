"""Browser-phone capacity: simultaneous calls answered in headless Chromium (one page per agent, WebRTC with
DTLS-SRTP, ICE and rtcp-mux through the desk's /phone/ws) against the same number of SIPp agent phones
(plain RTP), with Asterisk's CPU per call for each, in one run.

Each level N: N agents sign in (网页电话 in N browser contexts of one Chromium, in its own network
namespace; or N SIPp phones that stream a tone back, so both kinds send audio both ways), N SIPp citizens
call 12301 (key 0, the general queue) and stream a tone; once all N are talking, Asterisk's CPU time (and
Chromium's, for the browser phone) is read over WINDOW_S seconds. A browser level passes when every page
answered and hears its citizen's tone (Goertzel in the page) and SIPp counts no failed call; the levels go
up until the first failure or the largest level (the extensions configured for the run,
``HOTLINE_BENCH_WEBPHONE_LEVELS``). The machine's other load is printed with the rows.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench.capacity import _cpu_seconds, _pids
from bench.live import BENCH_SETTINGS, bench_agents
from bench.report import Report
from cli.stack import throwaway_stack
from sipdrivers.phones import streaming_answer

WINDOW_S = 10   # CPU is measured over this long with all N calls up
HOLD_S = 60     # each citizen stays this long after the keys: set-up of all N plus the window fit in it
CITIZEN_HZ, AGENT_HZ = 440, 1200
DEFAULT_LEVELS = "2,4,8,12,16"


def _levels(quick: bool) -> list[int]:
    raw = os.environ.get("HOTLINE_BENCH_WEBPHONE_LEVELS") or ("2,4" if quick else DEFAULT_LEVELS)
    return [int(x) for x in raw.split(",") if x.strip()]


def _load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def webphone(report: Report, quick: bool) -> None:
    levels = _levels(quick)
    extensions = [f"8{i:03d}" for i in range(1, max(levels) + 1)]
    overrides = {**BENCH_SETTINGS, "HOTLINE_SIP_AGENT_EXTENSIONS": ",".join(extensions),
                 "HOTLINE_SIP_RTP_START": "40000", "HOTLINE_SIP_RTP_END": "44999",
                 "HOTLINE_QUEUES_MAX_WAIT_SECONDS": "600"}
    with throwaway_stack(overrides, "hotline-bench-", say=lambda _line: None) as (settings, runtime), \
            tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_run(settings, runtime, levels, Path(tmp), report))


async def _run(settings, runtime, levels: list[int], folder: Path, report: Report) -> None:
    from playwright.async_api import async_playwright

    from sipdrivers.browser import BROWSER_PHONE_ARGS, chromium_in_namespace, tone_file

    browser_agents = list(await bench_agents(settings, "bench", max(levels), "8"))
    sipp_agents = list(await bench_agents(settings, "sipp", max(levels), "9"))
    citizen = tone_file(folder, "citizen.ulaw", CITIZEN_HZ, 8000, ["-t", "raw", "-e", "u-law"])
    mic = tone_file(folder, "agent.wav", AGENT_HZ, 48000, ["-b", "16"])
    scenario = streaming_answer(folder, tone_file(folder, "agent.ulaw", AGENT_HZ, 8000, ["-t", "raw", "-e", "u-law"]),
                                "agent_answer_tone.xml")
    ast = _pids(f"-C {runtime.inside('etc', 'asterisk.conf')}")
    carried = {"browser": 0, "sipp": 0}
    async with async_playwright() as p:
        with chromium_in_namespace(folder) as (chromium, namespace):
            browser = await p.chromium.launch(executable_path=str(chromium),
                                              args=[*BROWSER_PHONE_ARGS, f"--use-file-for-fake-audio-capture={mic}"])
            pages: list = []
            previous = 0
            try:
                for level in levels:
                    browser_row = await _browser_level(settings, browser, namespace, pages, browser_agents[:level],
                                                       citizen, ast)
                    sipp_row = await _sipp_level(settings, runtime, sipp_agents[:level], citizen, scenario, ast)
                    report.add("webphone", f"{level} simultaneous calls: Asterisk CPU per call (% of one core)",
                               f"browser phone (DTLS-SRTP, ICE): {_describe(browser_row)}",
                               f"SIPp agent phones (plain RTP): {_describe(sipp_row)}",
                               f"over {WINDOW_S} s with all calls up, audio both ways on every call; {_load()}")
                    if sipp_row["ok"] and carried["sipp"] == previous:  # every level so far carried
                        carried["sipp"] = level
                    previous = level
                    if not browser_row["ok"]:
                        break
                    carried["browser"] = level
            finally:
                for page in pages:
                    await _sign_out(page)
                await browser.close()
    largest = max(levels)
    report.add("webphone", "simultaneous browser-phone calls carried (each page answered and heard its citizen)",
               f"{carried['browser']}" + (" (largest level tried)" if carried["browser"] == largest else ""),
               f"SIPp agent phones, same levels: {carried['sipp']}",
               f"levels {','.join(map(str, levels))}; one headless Chromium, one page (browser context) per agent")


def _describe(row: dict) -> str:
    if not row["ok"]:
        return f"failed ({row['why']})"
    text = f"{row['asterisk_per_call']:.2f} %"
    if "chromium_per_call" in row:
        text += f" (Chromium {row['chromium_per_call']:.1f} % per call)"
    return text


def _namespace_pids(namespace: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


async def _window(ast: list[int], namespace: str | None, level: int) -> dict:
    chromium = _namespace_pids(namespace) if namespace else []
    before, chrome_before, began = _cpu_seconds(ast), _cpu_seconds(chromium), time.monotonic()
    await asyncio.sleep(WINDOW_S)
    wall = time.monotonic() - began
    row = {"asterisk_per_call": (_cpu_seconds(ast) - before) / wall / level * 100}
    if namespace:
        row["chromium_per_call"] = (_cpu_seconds(chromium) - chrome_before) / wall / level * 100
    return row


async def _sign_in(browser, base: str, username: str, password: str):
    from playwright.async_api import expect

    context = await browser.new_context()
    context.set_default_timeout(60_000)  # the machine is loaded by the calls themselves
    page = await context.new_page()
    await page.goto(f"{base}/login")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.wait_for_load_state("networkidle")  # the desk's scripts have run
    if not page.url.endswith("/desk"):
        raise RuntimeError(f"{username} landed on {page.url}: {(await page.inner_text('body'))[:120]!r}")
    await expect(page.locator("#btn-login")).to_be_enabled()
    await page.select_option("#phone", "webrtc")
    await page.click("#btn-login")
    await expect(page.locator("#webphone")).to_have_attribute("data-registered", "yes", timeout=60_000)
    return page


async def _sign_out(page) -> None:
    try:
        await page.click("#btn-logout", timeout=10_000)
    except Exception:  # noqa: BLE001 - the page may be gone; the stack is thrown away anyway
        pass


async def _ready(page, ready: bool) -> None:
    from playwright.async_api import expect

    await page.click("#btn-ready" if ready else "#btn-pause")
    await expect(page.locator("#state-label")).to_have_text("就绪" if ready else "暂停", timeout=30_000)


async def _answer(page) -> None:
    from playwright.async_api import expect

    await expect(page.locator("#wp-answer")).to_be_enabled(timeout=90_000)
    await page.click("#wp-answer")
    await expect(page.locator("#webphone")).to_have_attribute("data-call", "talking", timeout=30_000)


def _callers(kind: int, level: int) -> list[str]:
    return [f"136{kind}{level:03d}{i:04d}" for i in range(level)]


async def _browser_level(settings, browser, namespace: str, pages: list, agents: list[str], citizen: Path,
                         ast: list[int]) -> dict:
    from sipdrivers.browser import hears
    from sipdrivers.carrier import run_citizen_calls

    base, password = settings.web_url, settings.secrets["demo_password"]
    level = len(agents)
    try:
        for name in agents[len(pages):]:
            pages.append(await _sign_in(browser, base, name, password))
        await asyncio.gather(*(_ready(page, True) for page in pages))
    except Exception as exc:  # noqa: BLE001 - a level that cannot even sign in has failed
        return {"ok": False, "why": f"sign-in: {type(exc).__name__}: {' '.join(str(exc).split())[:100]}"}
    call = asyncio.create_task(asyncio.to_thread(
        run_citizen_calls, settings, "12301", "0", _callers(6, level), citizen, hold_ms=HOLD_S * 1000,
        delay_ms=3000, rate=max(10, level), timeout=HOLD_S + 180))
    try:
        answered = await asyncio.gather(*(_answer(page) for page in pages), return_exceptions=True)
        missed = sum(1 for a in answered if isinstance(a, BaseException))
        row = await _window(ast, namespace, level) if not missed else {}
        heard = await asyncio.gather(*(hears(page, CITIZEN_HZ, AGENT_HZ) for page in pages)) if not missed else []
    finally:
        result = await call
        await asyncio.gather(*(_ready(page, False) for page in pages), return_exceptions=True)
    deaf = heard.count(False)
    ok = not missed and not deaf and result.failed == 0 and result.successful == level
    return {**row, "ok": ok, "why": f"{missed} pages did not answer, {deaf} did not hear their citizen, "
                                    f"SIPp {result.successful} carried, {result.failed} failed"}


async def _sipp_level(settings, runtime, agents: list[str], citizen: Path, scenario: Path, ast: list[int]) -> dict:
    from core.ami import AmiClient
    from core.db import Database
    from core.redis import connect
    from cti.control import live_channels
    from sipdrivers.carrier import run_citizen_calls
    from sipdrivers.phones import agents_on_phones

    level = len(agents)
    ami, redis, db = AmiClient(settings, "tools"), connect(settings, "tools"), Database(settings.database_url)
    await ami.connect()
    try:
        phones = {name: f"8{i:03d}" for i, name in enumerate(agents, 1)}
        async with agents_on_phones(settings, runtime, ami, redis, db, phones, answer=str(scenario)):
            call = asyncio.create_task(asyncio.to_thread(
                run_citizen_calls, settings, "12301", "0", _callers(7, level), citizen, hold_ms=HOLD_S * 1000,
                delay_ms=3000, rate=max(10, level), timeout=HOLD_S + 180))
            deadline, row = time.monotonic() + 90, {}
            while time.monotonic() < deadline and not call.done():
                up = [c for c in await live_channels(ami) if c.get("Channel", "").startswith("PJSIP/80")
                      and c.get("BridgeId")]
                if len(up) >= level:
                    row = await _window(ast, None, level)
                    break
                await asyncio.sleep(0.5)
            result = await call
    finally:
        await ami.close()
        await redis.aclose()
        await db.close()
    ok = bool(row) and result.failed == 0 and result.successful == level
    return {**row, "ok": ok, "why": f"SIPp {result.successful} carried, {result.failed} failed"
                                    + ("" if row else ", not all calls were up at once")}

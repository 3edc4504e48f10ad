"""Log-in cost against a throwaway stack's desk (issue 12 item 6).

* Unknown username vs wrong password, timed from the client: they should cost the same (the desk
  verifies unknown names against a dummy argon2 hash), so timing tells nothing about which names exist.
* /healthz latency idle vs while 4 clients log in continuously: argon2 runs in a worker thread, so
  the event loop keeps answering other requests.
The stack runs with the lockout limits raised, or the measurement would lock itself out.
"""

from __future__ import annotations

import asyncio
import os
import re
import time

import aiohttp

from bench.live import desk_login
from bench.report import Report, percentile
from cli.stack import throwaway_stack

LIMITS = {"HOTLINE_WEB_LOGIN_ACCOUNT_FAILURES": "1000000", "HOTLINE_WEB_LOGIN_ADDRESS_FAILURES": "1000000"}


async def _attempt(http: aiohttp.ClientSession, base: str, username: str, password: str) -> float:
    """Milliseconds of one log-in POST (its form's CSRF token fetched before the clock starts)."""
    async with http.get(f"{base}/login") as resp:
        token = re.search(r'name="_csrf" value="([^"]+)"', await resp.text()).group(1)
    began = time.perf_counter()
    async with http.post(f"{base}/login", data={"_csrf": token, "username": username, "password": password},
                         allow_redirects=False) as resp:
        await resp.read()
        if resp.status not in (302, 401):
            raise RuntimeError(f"log-in answered {resp.status}")
    return (time.perf_counter() - began) * 1000


async def _healthz(http: aiohttp.ClientSession, base: str, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        async with http.get(f"{base}/healthz") as resp:
            await resp.read()
        samples.append((time.perf_counter() - began) * 1000)
        await asyncio.sleep(0.01)
    return samples


def _ms(samples: list[float]) -> str:
    return f"p50 {percentile(samples, 50):.1f} ms, p95 {percentile(samples, 95):.1f} ms"


async def _measure(settings, report: Report, attempts: int, probes: int) -> None:
    base, password = settings.web_url, settings.secrets["demo_password"]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await desk_login(http, base, "agent1", password)  # warm: the dummy hash, connections, templates
        unknown, wrong = [], []
        for i in range(attempts):
            unknown.append(await _attempt(http, base, f"nobody{i}", "wrong-password"))
            wrong.append(await _attempt(http, base, "agent2", "wrong-password"))
        report.add("login", "log-in POST, unknown username", _ms(unknown), f"wrong password: {_ms(wrong)}",
                   f"{attempts} each, sequential")
        idle = await _healthz(http, base, probes)
        stop = asyncio.Event()

        async def keep_logging_in(n: int) -> None:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as own:
                while not stop.is_set():
                    await _attempt(own, base, f"agent{n}", password)

        loaders = [asyncio.create_task(keep_logging_in(n)) for n in (2, 3, 4, 5)]
        await asyncio.sleep(0.5)
        busy = await _healthz(http, base, probes)
        stop.set()
        await asyncio.gather(*loaders)
        report.add("login", "/healthz while 4 clients log in continuously", _ms(busy), f"idle: {_ms(idle)}",
                   f"{probes} probes each")


def login(report: Report, quick: bool) -> None:
    attempts = int(os.environ.get("HOTLINE_BENCH_LOGIN_ATTEMPTS") or (10 if quick else 50))
    probes = 50 if quick else 200
    with throwaway_stack({"HOTLINE_HOURS_MODE": "always", **LIMITS}, "hotline-bench-",
                         say=lambda _line: None) as (settings, _runtime):
        asyncio.run(_measure(settings, report, attempts, probes))

"""Log-in cost against a throwaway stack's desk (issue 12 item 6).

* Unknown username vs wrong password, timed from the client: they should cost the same (the desk
  verifies unknown names against a dummy argon2 hash), so timing tells nothing about which names exist.
* /healthz latency idle vs while 4 clients log in continuously: argon2 runs in a worker thread, so
  the event loop keeps answering other requests.
* The desk's resident memory before and after eight concurrent 19 MB log-in POSTs (item 7): they are
  refused with 413 on their Content-Length, never buffered.
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
from cli.stack import supervisorctl, throwaway_stack

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


def desk_rss_mb(settings) -> float:
    pid = supervisorctl(settings, "pid", "agent_desk").stdout.strip()
    status = open(f"/proc/{pid}/status").read()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


async def _oversized_logins(settings, report: Report, count: int = 8, size: int = 19 * 1024 * 1024) -> None:
    base = settings.web_url
    before = desk_rss_mb(settings)
    body = b"username=agent1&password=" + b"x" * size

    async def post() -> int:
        async with aiohttp.ClientSession() as http:
            try:
                async with http.post(f"{base}/login", data=body, headers={
                        "Content-Type": "application/x-www-form-urlencoded"}) as resp:
                    return resp.status
            except aiohttp.ClientError:  # the desk closed the connection while the body was still going
                return 413

    statuses = await asyncio.gather(*(post() for _ in range(count)))
    after = desk_rss_mb(settings)
    report.add("login", f"desk memory after {count} concurrent {size // 2**20} MB log-in POSTs",
               f"{after:.0f} MB ({after - before:+.0f} MB)", f"before: {before:.0f} MB",
               f"answers: {sorted(set(statuses))}; the issue saw 562 MB → over 1 GB before the limit")


def _ms(samples: list[float]) -> str:
    return f"p50 {percentile(samples, 50):.1f} ms, p95 {percentile(samples, 95):.1f} ms"


def _machine() -> str:
    """The load this run shared the machine with: these are latencies, and the CPU was not ours alone."""
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the start"


async def _measure(settings, report: Report, attempts: int, probes: int) -> None:
    base, password = settings.web_url, settings.secrets["demo_password"]
    machine = _machine()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await desk_login(http, base, "agent1", password)  # warm: the dummy hash, connections, templates
        unknown, wrong = [], []
        for i in range(attempts):
            unknown.append(await _attempt(http, base, f"nobody{i}", "wrong-password"))
            wrong.append(await _attempt(http, base, "agent2", "wrong-password"))
        report.add("login", "log-in POST, unknown username", _ms(unknown), f"wrong password: {_ms(wrong)}",
                   f"{attempts} each, sequential; {machine}; before the fix the issue saw 3.6 ms vs 102 ms")
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
                   f"{probes} probes each; {machine}; before the fix the issue saw 93 ms vs 2 ms")
    await _oversized_logins(settings, report)


def login(report: Report, quick: bool) -> None:
    attempts = int(os.environ.get("HOTLINE_BENCH_LOGIN_ATTEMPTS") or (10 if quick else 50))
    probes = 50 if quick else 200
    with throwaway_stack({"HOTLINE_HOURS_MODE": "always", **LIMITS}, "hotline-bench-",
                         say=lambda _line: None) as (settings, _runtime):
        asyncio.run(_measure(settings, report, attempts, probes))

"""Benchmarks against a running platform (a throwaway stack on free ports).

Ring-to-pop: the time from Asterisk's AgentCalled (its event timestamp, carried in
the pop) to the moment an agent's desk connection receives the screen pop over
the real /events stream, logged in like a browser. Comparison point in the same
run: the AMI event's own delivery to a plain AMI client (the floor any CTI has).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from contextlib import asynccontextmanager

import aiohttp

from bench.report import Report, percentile
from cli.democall import originate_citizen
from cli.stack import throwaway_stack
from core.ami import AmiClient
from core.db import Database

AGENTS = {"agent1": "8001", "agent3": "8003", "agent4": "8004", "agent5": "8005"}  # all serve 12301-general
BENCH_SETTINGS = {"HOTLINE_HOURS_MODE": "always", "HOTLINE_QUEUES_WRAPUP_SECONDS": "0",
                  "HOTLINE_QUEUES_RING_SECONDS": "15"}


async def desk_login(http: aiohttp.ClientSession, base: str, username: str, password: str) -> None:
    async with http.get(f"{base}/login") as resp:
        page = await resp.text()
    token = re.search(r'name="_csrf" value="([^"]+)"', page).group(1)
    async with http.post(f"{base}/login", data={"_csrf": token, "username": username, "password": password,
                                                "next": ""}, allow_redirects=False) as resp:
        if resp.status not in (302, 303):
            raise RuntimeError(f"desk login failed for {username}: HTTP {resp.status}")


async def collect_pops(base: str, username: str, password: str, sink: list[float], ready: asyncio.Event) -> None:
    """One agent's desk connection: record ring-to-pop for every screen pop received."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # 127.0.0.1 cookies
        await desk_login(http, base, username, password)
        async with http.get(f"{base}/events", timeout=aiohttp.ClientTimeout(total=None)) as resp:
            ready.set()
            event = None
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event == "screen_pop":
                    received = time.time()
                    data = json.loads(line[5:])
                    sink.append((received - float(data["agent_called_ts"])) * 1000)


@asynccontextmanager
async def logged_in_agents(settings, runtime):
    """The AGENTS on auto-answering SIPp phones (test tooling), ready; yields the AMI client."""
    import redis.asyncio as aioredis

    from tests.sipp import agents_on_phones

    ami = AmiClient(settings)
    await ami.connect()
    redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    db = Database(settings.database_url)
    try:
        async with agents_on_phones(settings, runtime, ami, redis, db, AGENTS):
            yield ami
    finally:
        await ami.close()
        await redis.aclose()
        await db.close()


async def _ring_to_pop(settings, runtime, calls: int, report: Report) -> None:
    latencies: list[float] = []
    ami_floor: list[float] = []
    async with logged_in_agents(settings, runtime) as ami:
        ami.on_event("AgentCalled", lambda _m, e: ami_floor.append((time.time() - float(e["Timestamp"])) * 1000))
        readies = [asyncio.Event() for _ in AGENTS]
        listeners = [asyncio.create_task(collect_pops(settings.web_url, user, settings.secrets["demo_password"],
                                                      latencies, ready))
                     for user, ready in zip(AGENTS, readies, strict=True)]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)
        began = time.monotonic()
        # 0 = agent at once; the citizen stays 6 s after keying. One call every 2 s keeps the four
        # agents busy without a growing queue, so every call rings someone within seconds.
        for placed in range(calls):
            await originate_citizen(ami, "12301", keys="0", caller=f"139{placed:08d}", hold_seconds=6,
                                    delay_seconds=4)
            await asyncio.sleep(2)
        deadline = time.monotonic() + 60
        while len(latencies) < calls and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        for task in listeners:
            task.cancel()
        elapsed = time.monotonic() - began
    report.add("ring-to-pop", f"AgentCalled -> desk /events, {len(latencies)} of {calls} calls (idle)",
               f"p50 {percentile(latencies, 50):.1f} ms, p95 {percentile(latencies, 95):.1f} ms, "
               f"p99 {percentile(latencies, 99):.1f} ms",
               f"AMI delivery alone p50 {percentile(ami_floor, 50):.1f} ms, p99 {percentile(ami_floor, 99):.1f} ms",
               f"{len(AGENTS)} agents on SIPp phones, real desk login and SSE, {elapsed:.0f} s")


def ring_to_pop(report: Report, quick: bool) -> None:
    calls = int(os.environ.get("HOTLINE_BENCH_POP_CALLS") or (30 if quick else 500))
    with throwaway_stack(BENCH_SETTINGS, "hotline-bench-", say=lambda _line: None) as (settings, runtime):
        asyncio.run(_ring_to_pop(settings, runtime, calls, report))

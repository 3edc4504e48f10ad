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
import tempfile
import time
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp

from bench.report import Report, percentile
from cli.democall import originate_citizen
from cli.stack import throwaway_stack
from core.ami import AmiClient
from core.db import Database
from core.metrics import clear_samples, read_samples
from sipdrivers.carrier import run_citizen_calls, ulaw_from_wav
from sipdrivers.phones import agents_on_phones

AGENTS = {"agent1": "8001", "agent3": "8003", "agent4": "8004", "agent5": "8005"}  # all serve 12301-general
BENCH_SETTINGS = {"HOTLINE_ASTERISK_BENCH_ECHO": "true",  # DID 10000, the plain-echo comparison of bench/capacity.py
                  "HOTLINE_HOURS_MODE": "always", "HOTLINE_QUEUES_WRAPUP_SECONDS": "0",
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


async def bench_agents(settings, prefix: str, count: int, number_prefix: str,
                       extensions: list[str] | None = None) -> dict[str, int]:
    """Agents <prefix>01… (username -> id) with the 12301 general queue's skill (the demo has only five), made
    by the user service as an admin's form or the demo seeding makes them (core.accounts.ensure_user);
    ``extensions``: each agent's default phone, which must exist (bench_phones)."""
    from core import accounts
    from core.models import User

    names = [f"{prefix}{i:02d}" for i in range(1, count + 1)]
    # One hash for all: argon2 costs a second a password on a loaded machine, and these agents sign in
    # through the CTI (as the desk does after its log-in), not through the desk's log-in form.
    password_hash = User.hash_password(settings.secrets["demo_password"])
    db = Database(settings.database_url)
    try:
        async with db.transaction() as session:
            known = await accounts.catalog(session, settings)
            made = {}
            for number, name in enumerate(names, start=1):
                user = await accounts.ensure_user(session, known, None, {
                    "username": name, "display_name": f"压测坐席 {name}", "role": "agent",
                    "agent_number": f"{number_prefix}{number:04d}", "skills": "12301-general",
                    "default_extension": extensions[number - 1] if extensions else None}, password_hash)
                await session.flush()
                made[name] = user.id
    finally:
        await db.close()
    return made


async def bench_phones(settings, redis, extensions: list[str]) -> dict[str, str]:
    """Agent phones (extension -> its generated password) made by the provisioning service as the admin page
    电话分机 makes them (core.provisioning.create_phone), then applied to Asterisk by the CTI's
    ``telephony_apply`` (render and reload, no restart), as the page asks after a change."""
    from core import provisioning
    from cti import protocol

    db = Database(settings.database_url)
    try:
        made = {}
        for extension in extensions:
            _phone, password = await provisioning.create_phone(
                db, {"extension": extension, "label": f"压测话机 {extension}", "kind": "agent"})
            made[extension] = password
    finally:
        await db.close()
    await protocol.send(redis, "telephony_apply", {}, execution=120)
    return made


@asynccontextmanager
async def logged_in_agents(settings, runtime):
    """The AGENTS on auto-answering SIPp phones (test tooling), ready; yields the AMI client."""
    from core.redis import connect as redis_connect

    ami = AmiClient(settings, "tools")
    await ami.connect()
    redis = redis_connect(settings, "tools")
    db = Database(settings.database_url)
    try:
        async with agents_on_phones(settings, runtime, ami, redis, db, AGENTS):
            yield ami
    finally:
        await ami.close()
        await redis.aclose()
        await db.close()


class EventCounter:
    """A bare AMI connection subscribed to some event classes, counting what Asterisk sends it."""

    def __init__(self, settings, classes: str) -> None:
        self.classes = classes
        self.client = AmiClient(settings, "tools", events=classes)
        self.events = 0
        self.bytes = 0
        self.by_name: dict[str, int] = {}
        self.delays: list[float] = []  # ms from each event's own timestamp to its arrival here
        self.client.on_event("*", self._count)

    def _count(self, _manager, event) -> None:
        stamp = event.get("Timestamp")
        if stamp:
            self.delays.append((time.time() - float(stamp)) * 1000)
        self.events += 1
        self.bytes += sum(len(str(k)) + len(str(v)) + 4 for k, v in event.items()) + 2  # "Key: value\r\n"
        name = event.get("Event", "?")
        self.by_name[name] = self.by_name.get(name, 0) + 1

    def reset(self) -> None:
        self.events, self.bytes, self.by_name, self.delays = 0, 0, {}, []


async def _place_calls(ami, calls: int, prefix: str) -> None:
    # 0 = an agent at once (keyed 4 s in, during the greeting); the citizen stays 6 s after keying.
    # One call every 2 s keeps four agents busy without a growing queue, so every call rings someone
    # within seconds.
    for placed in range(calls):
        await originate_citizen(ami, "12301", keys="0", caller=f"{prefix}{placed:07d}", hold_seconds=6,
                                delay_seconds=4)
        await asyncio.sleep(2)


async def _phase(settings, ami, redis, calls: int, label: str, report: Report, ami_floor: list[float],
                 same_classes: EventCounter, counters: list[EventCounter] | None = None) -> None:
    """Place ``calls`` calls and report ring-to-pop, CTI lag and FastAGI round trips for them;
    ``ami_floor`` receives AgentCalled's delivery delay to a bare AMI client meanwhile, and ``same_classes``
    (a bare client subscribed to the CTI's classes) every event's: the floor of the CTI's lag, same events."""
    latencies: list[float] = []
    ami_floor.clear()
    for service, metric in (("cti", "event_lag"), ("cti", "event_own"), ("ivr", "agi_rtt"), ("cti", "gc_pause"),
                            ("cti", "loop_delay"), ("cti", "pop_lag")):
        await clear_samples(redis, service, metric)
    for counter in {id(c): c for c in [same_classes, *(counters or [])]}.values():
        counter.reset()
    readies = [asyncio.Event() for _ in AGENTS]
    listeners = [asyncio.create_task(collect_pops(settings.web_url, user, settings.secrets["demo_password"],
                                                  latencies, ready))
                 for user, ready in zip(AGENTS, readies, strict=True)]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)
    began = time.monotonic()
    await _place_calls(ami, calls, "139" if label == "idle" else "138")
    deadline = time.monotonic() + 60
    while len(latencies) < calls and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    await asyncio.sleep(12)  # the last calls end; their events and metrics are flushed
    for task in listeners:
        task.cancel()
    elapsed = time.monotonic() - began
    report.add("ring-to-pop", f"AgentCalled -> desk /events, {len(latencies)} of {calls} calls ({label})",
               f"p50 {percentile(latencies, 50):.1f} ms, p95 {percentile(latencies, 95):.1f} ms, "
               f"p99 {percentile(latencies, 99):.1f} ms",
               f"AMI delivery alone p50 {percentile(ami_floor, 50):.1f} ms, p99 {percentile(ami_floor, 99):.1f} ms",
               f"{len(AGENTS)} agents on SIPp phones, real desk login and SSE, {elapsed:.0f} s")
    lag = await read_samples(redis, "cti", "event_lag")
    own = await read_samples(redis, "cti", "event_own")
    rtt = await read_samples(redis, "ivr", "agi_rtt")
    floor = same_classes.delays
    report.add("cti", f"CTI lag behind Asterisk ({label})",
               f"p50 {percentile(lag, 50):.1f} ms, p99 {percentile(lag, 99):.1f} ms",
               f"the same classes' events ({same_classes.classes}) delivered to a bare AMI client: "
               f"p50 {percentile(floor, 50):.1f} ms, p99 {percentile(floor, 99):.1f} ms ({len(floor)} events)",
               f"event timestamp -> handled (record written, pop published); {len(lag)} events; "
               "one lane per call, record writes committed together (core.db.GroupWriter)")
    report.add("cti", f"CTI's own share of the lag ({label})",
               f"p50 {percentile(own, 50):.1f} ms, p99 {percentile(own, 99):.1f} ms",
               f"Asterisk's delivery of the same classes' events, as above: p99 {percentile(floor, 99):.1f} ms",
               f"event read off the AMI socket -> handled (record written, pop published); {len(own)} events")
    published = await read_samples(redis, "cti", "pop_lag")
    report.add("ring-to-pop", f"AgentCalled -> pop on the live-event stream, the CTI's part ({label})",
               f"p50 {percentile(published, 50):.1f} ms, p95 {percentile(published, 95):.1f} ms, "
               f"p99 {percentile(published, 99):.1f} ms",
               f"AMI delivery alone p50 {percentile(ami_floor, 50):.1f} ms, p99 {percentile(ami_floor, 99):.1f} ms",
               f"{len(published)} pops; the rest of ring-to-pop is Redis, the desk and its SSE")
    pauses = await read_samples(redis, "cti", "gc_pause")
    late = await read_samples(redis, "cti", "loop_delay")
    report.add("cti", f"CTI's event loop: timer wake-up delay and garbage-collection pauses ({label})",
               f"wake-up p50 {percentile(late, 50):.1f} ms, p99 {percentile(late, 99):.1f} ms; "
               f"GC {len(pauses)} pauses, p99 {percentile(pauses, 99):.1f} ms, longest {max(pauses, default=0):.1f} ms",
               "", "a 50 ms timer's lateness: the wait a ready event has before the CTI runs it")
    report.add("fastagi", f"round trip per AGI command ({label})",
               f"p50 {percentile(rtt, 50):.2f} ms, p99 {percentile(rtt, 99):.2f} ms",
               "", f"GET/SET VARIABLE, ANSWER, VERBOSE (not playback); {len(rtt)} commands")
    if counters:
        everything, subscribed = counters
        per_call = {c.classes: (c.events / calls, c.bytes / calls) for c in counters}
        top = ", ".join(f"{name} {count / calls:.1f}" for name, count in
                        sorted(everything.by_name.items(), key=lambda kv: -kv[1])[:6])
        report.add("ami", "AMI events per call (IVR, queue, answer, hang-up)",
                   f"{per_call[subscribed.classes][0]:.0f} events, {per_call[subscribed.classes][1] / 1024:.1f} KiB "
                   f"(CTI's classes: {subscribed.classes})",
                   f"all classes the AMI user may read: {per_call[everything.classes][0]:.0f} events, "
                   f"{per_call[everything.classes][1] / 1024:.1f} KiB",
                   f"most frequent of all: {top}; CEL is off (cel.conf) and adds none")


CEL_ON = """[general]
enable = yes
apps = all
events = ALL
[manager]
enabled = yes
"""


async def _cel_cost(settings, runtime, ami, counters: list[EventCounter], calls: int, report: Report) -> None:
    """The same calls with channel event logging to AMI switched on for a while (it is off in cel.conf)."""
    conf = runtime.host_path(runtime.inside("etc", "cel.conf"))
    original = conf.read_text()
    conf.write_text(CEL_ON)
    runtime.rx("module reload cel")
    runtime.rx("module load cel_manager.so")
    try:
        for counter in counters:
            counter.reset()
        await _place_calls(ami, calls, "137")
        await asyncio.sleep(15)
    finally:
        conf.write_text(original)
        runtime.rx("module unload cel_manager.so")
        runtime.rx("module reload cel")
    subscribed = counters[1]
    cel = subscribed.by_name.get("CEL", 0)
    report.add("ami", "what CEL would add per call (CEL is off)",
               f"{cel / calls:.0f} CEL events per call into the CTI's subscription "
               f"({subscribed.events / calls:.0f} events, {subscribed.bytes / calls / 1024:.1f} KiB per call with it)",
               "CEL off: the CTI's figures in the row above", f"{calls} calls with cel.conf enable = yes, apps = all")


@contextmanager
def scheduled_as_cti(settings):
    """This process's main thread (its AMI comparison clients and desk connections) scheduled as the CTI is
    ([priority] realtime): the comparison is then Asterisk's own delivery, not this process's wait for a core.
    SCHED_RESET_ON_FORK: the SIPp drivers it starts (from worker threads, which reset too) stay ordinary."""
    if "cti" not in settings.priority.realtime:
        yield
        return
    try:
        os.sched_setscheduler(0, os.SCHED_RR | os.SCHED_RESET_ON_FORK,
                              os.sched_param(settings.priority.realtime_priority))
    except PermissionError:
        pass  # the CTI could not take it either (core.service): both ordinary
    try:
        yield
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


async def _ring_to_pop(settings, runtime, calls: int, background: int, report: Report) -> None:
    from core.redis import connect as redis_connect

    redis = redis_connect(settings, "tools")
    counters = [EventCounter(settings, "on"), EventCounter(settings, settings.ami.cti_events)]
    for counter in counters:
        await counter.client.connect()
    try:
        async with logged_in_agents(settings, runtime) as ami:
            floor: list[float] = []
            ami.on_event("AgentCalled", lambda _m, e: floor.append((time.time() - float(e["Timestamp"])) * 1000))
            await _phase(settings, ami, redis, calls, "idle", report, floor, counters[1], counters)
            await _cel_cost(settings, runtime, ami, counters, min(calls, 30), report)
            if not background:
                return
            # The load: citizens through the IVR into 12365's queue, recorded, waiting with music and
            # position announcements (its one agent is paused); the measured calls go to 12301.
            for phone in ("8003", "8004", "8005"):
                for queue in ("12365-general", "12365-consult", "12365-complaint", "12365-report"):
                    await ami.action({"Action": "QueueRemove", "Queue": queue, "Interface": f"PJSIP/{phone}"})
            db = Database(settings.database_url)
            try:
                async with agents_on_phones(settings, runtime, ami, redis, db, {"agent2": "8002"}) as (agent2,):
                    from cti import control

                    await control.agent_pause(ami, redis, agent2, "meeting")
                    from cli.democall import citizen_speech

                    citizen_speech(settings, "demo-complaint")
                    wav = runtime.host_path(runtime.inside("sounds", "demo-complaint.wav"))
                    with tempfile.TemporaryDirectory() as tmp:
                        speech = ulaw_from_wav(wav, Path(tmp) / "citizen.ulaw")
                        # Held through the whole phase (a call placed every 2 s, then up to 72 s for the last
                        # pops and flush): their hang-up burst comes after the measurement, not inside it.
                        hold_ms = (2 * calls + 120) * 1000
                        load = asyncio.create_task(asyncio.to_thread(
                            run_citizen_calls, settings, "12365", "0",
                            [f"1370{i:07d}" for i in range(background)], speech, hold_ms=hold_ms,
                            delay_ms=3000, rate=max(10, background), timeout=hold_ms / 1000 + 180))
                        await asyncio.sleep(15)  # every background call is in the queue
                        await _phase(settings, ami, redis, calls, f"under load: {background} calls in IVR/queue, "
                                     "recorded", report, floor, counters[1])
                        result = await load
                    report.add("ring-to-pop", f"background load held during the measurement ({background} calls)",
                               "pass" if result.failed == 0 and result.successful == background
                               else f"{result.failed} failed", "", "SIPp FailedCall counter of the load")
            finally:
                await db.close()
    finally:
        for counter in counters:
            await counter.client.close()
        await redis.aclose()


def ring_to_pop(report: Report, quick: bool) -> None:
    calls = int(os.environ.get("HOTLINE_BENCH_POP_CALLS") or (30 if quick else 500))
    background = int(os.environ.get("HOTLINE_BENCH_POP_LOAD") or (10 if quick else 100))
    with throwaway_stack({**BENCH_SETTINGS, "HOTLINE_SIP_RTP_START": "40000", "HOTLINE_SIP_RTP_END": "44999",
                          "HOTLINE_QUEUES_MAX_WAIT_SECONDS": "3600"},
                         "hotline-bench-", say=lambda _line: None) as (settings, runtime):
        with scheduled_as_cti(settings):
            asyncio.run(_ring_to_pop(settings, runtime, calls, background, report))

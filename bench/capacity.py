"""Call capacity over real SIP/RTP on loopback: conversations with agents, plus callers waiting.

The agents and their phones are made as a centre's administrator makes them: each phone by the
provisioning service (core.provisioning.create_phone with its generated password, then the CTI's
``telephony_apply`` renders and reloads Asterisk, as the admin page 电话分机 does), each agent by the user
service (core.accounts.ensure_user: skill 12301-general, that phone as default extension). One SIPp process
registers every phone with its own credentials and answers each call to any of them, streaming speech back
(sipdrivers.phones.PhoneBank); the agents sign in and get ready through the CTI's command channel, as the
desk does.

A level of the hotline path is T conversations plus W callers waiting (W = T / 2 by default): exactly T agents
are ready, T + W citizens call from the carrier address (SIPp, RFC 4733 key 0 through the IVR into the
12301 general queue, streaming speech), every call recorded in full and followed by the CTI. A level passes
when SIPp counts no failed call, Asterisk logs no task-processor warning, the IVR served every call,
Asterisk's own queue (QueueSummary) showed all T agents busy with W callers waiting at one moment and its
channels (CoreShowChannels) T agent legs bridged, and the call records show at least T calls answered by an
agent and every call recorded. Levels rise until the first failure: the last passing level is the ceiling
and the first failing one says what failed first. The comparison point, in the same run on the same
Asterisk, is DID 10000: a bare G.711 echo call (no IVR, no recording, no queue; dialplans/bench.conf), the
same search with as many calls per level. Then the same hotline levels with the IVR as classic per-call AGI
(pyst2), and the call set-up rate: N new short calls a second for ten seconds, both paths.
Asterisk is pinned to one core, SIPp and the Python services to the other; CPU per call is read over
WINDOW_S seconds with every call of the level up.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import classic
from bench.live import BENCH_SETTINGS, bench_agents, bench_phones
from bench.report import Report
from cli.stack import throwaway_stack
from sipdrivers.carrier import run_citizen_calls, ulaw_from_wav
from sipdrivers.phones import PhoneBank, streaming_answer

ASTERISK_CPUS = {0}
LOAD_CPUS = "1" if (os.cpu_count() or 1) > 1 else "0"
RATE_SECONDS = 10     # how long each set-up rate is kept up
RATE_HOLD_MS = 2000   # a short call: IVR greeting, keys, 2 s in the queue or echo, hang-up
WINDOW_S = 10         # CPU is read over this long with every call of a level up
RAMP_S = 10           # a level's calls start over about this long (a burst would measure set-up, not capacity)
KEY_DELAY_MS = 4000   # the citizen keys 0 during the greeting
QUEUE = "12301-general"
FIRST_EXTENSION = 8200  # bench phones 8200…8999 (the dialplan's _8XXX); the demo's are 8001-8005 and 8101
CAPACITY_SETTINGS = {**BENCH_SETTINGS, "HOTLINE_SIP_RTP_START": "40000", "HOTLINE_SIP_RTP_END": "49999",
                     "HOTLINE_QUEUES_MAX_WAIT_SECONDS": "600"}


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15]) / tick  # own and waited-for children (classic AGI)
        except (OSError, IndexError):
            pass
    return total


def _pids(pattern: str, var: str | None = None) -> list[int]:
    """Processes whose command line holds ``pattern``; with ``var``, only those of the stack whose HOTLINE_VAR
    it is (other sessions' stacks on the machine run the same services and SIPp scenarios)."""
    found = []
    mark = f"HOTLINE_VAR={var}\0".encode() if var else None
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if pattern in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace") and (
                        mark is None or mark in (entry / "environ").read_bytes()):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def pin(pids: list[int], cpus: set[int]) -> None:
    """Every thread of these processes onto ``cpus`` (Asterisk apart from the load generator)."""
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                os.sched_setaffinity(int(task.name), cpus)
            except OSError:
                pass


def _taskprocessor_warnings(runtime) -> int:
    log = runtime.host_path(runtime.inside("log", "messages.log"))
    if not log.exists():
        return 0
    return log.read_text(errors="replace").count("Task processor")


def _load() -> str:
    return "load " + " / ".join(f"{x:.1f}" for x in os.getloadavg())


@dataclass
class Rig:
    """The running stack, the tools' connections and the bench agents (id -> phone) with who is ready now."""

    settings: Any
    runtime: Any
    ami: Any
    redis: Any
    speech: Path
    agents: list[tuple[int, str]]
    logged_in: set[int] = field(default_factory=set)
    ready: set[int] = field(default_factory=set)

    def process_groups(self) -> dict[str, list[int]]:
        groups = {"asterisk": _pids(f"-C {self.runtime.inside('etc', 'asterisk.conf')}")}
        var = os.environ.get("HOTLINE_VAR")  # set by throwaway_stack for this stack, inherited by its processes
        groups |= {name: _pids(f"-m {name}", var) for name in ("ivr", "cti", "recordings", "agent_desk")}
        groups |= {"sipp citizens": _pids("citizen_call.xml", var), "sipp agents": _pids("agents_register.xml", var)}
        return groups


async def _agent_command(rig: Rig, agent_id: int, action: str, **args: str) -> None:
    from cti import protocol

    await protocol.send(rig.redis, "agent_state", {"agent_id": agent_id, "action": action, **args}, execution=30)


async def set_ready_agents(rig: Rig, count: int) -> None:
    """Exactly ``count`` bench agents ready: sign in (the CTI's login, then 就绪) or pause the others, as the
    desk's buttons do."""
    gate = asyncio.Semaphore(8)

    async def ready(agent_id: int, phone: str) -> None:
        async with gate:
            if agent_id not in rig.logged_in:
                await _agent_command(rig, agent_id, "login", phone=phone)
                rig.logged_in.add(agent_id)
            await _agent_command(rig, agent_id, "ready")
            rig.ready.add(agent_id)

    async def pause(agent_id: int) -> None:
        async with gate:
            await _agent_command(rig, agent_id, "pause", reason="meeting")
            rig.ready.discard(agent_id)

    wanted = rig.agents[:count]
    await asyncio.gather(*(ready(a, p) for a, p in wanted if a not in rig.ready),
                         *(pause(a) for a, _p in rig.agents[count:] if a in rig.ready))


async def _queue_summary(ami, paused: int) -> tuple[int, int]:
    """(agents busy, callers waiting) in the 12301 general queue, as app_queue counts them: its LoggedIn
    counts the ``paused`` members too, its Available only idle members not paused."""
    reply = await ami.action({"Action": "QueueSummary", "Queue": QUEUE}, as_list=True, timeout=10)
    for message in reply if isinstance(reply, list) else []:
        if message.get("Event") == "QueueSummary":
            busy = int(message.get("LoggedIn") or 0) - int(message.get("Available") or 0) - paused
            return busy, int(message.get("Callers") or 0)
    return 0, 0


async def _bridged_agent_legs(ami) -> int:
    from cti.control import live_channels

    return sum(1 for c in await live_channels(ami)
               if str(c.get("Channel", "")).startswith("PJSIP/8") and c.get("BridgeId")
               and int(str(c.get("Channel"))[6:10]) >= FIRST_EXTENSION)


async def _current_calls(ami) -> int:
    reply = await ami.action({"Action": "CoreStatus"}, timeout=10)
    return int(reply.get("CoreCurrentCalls") or 0)


async def _drain(ami, timeout: float = 180) -> None:
    """Wait until Asterisk has no call left (an overloaded level's calls end late)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await _current_calls(ami) == 0:
                return
        except Exception:  # noqa: BLE001 - the AMI link may be reconnecting after an overload
            pass
        await asyncio.sleep(2)


async def _window(rig: Rig, calls: int) -> dict[str, float]:
    """CPU per call over WINDOW_S seconds, % of one core, per process group; and Asterisk's own total."""
    groups = rig.process_groups()
    before, began = {name: _cpu_seconds(pids) for name, pids in groups.items()}, time.monotonic()
    await asyncio.sleep(WINDOW_S)
    wall = time.monotonic() - began
    used = {name: (_cpu_seconds(pids) - before[name]) / wall * 100 for name, pids in groups.items()}
    return {"per_call": {name: value / calls for name, value in used.items()}, "asterisk_total": used["asterisk"]}


def _cpu_text(window: dict | None) -> str:
    if not window:
        return "CPU not read (the level never had all its calls up)"
    parts = ", ".join(f"{name} {value:.2f}" for name, value in window["per_call"].items() if value > 0.005)
    return f"CPU per call (% of one core): {parts}; Asterisk in all {window['asterisk_total']:.0f} % of its core"


async def _call_records(settings, callers: list[str], timeout: float = 90) -> dict[str, int]:
    """What the CTI wrote for these calls once they have all ended: answered by an agent, recorded, not
    served by the IVR (the dialplan's fallback sent them on: a slow IVR must not pass for a carried call)."""
    from sqlalchemy import func, select

    from core.db import Database
    from cti.models import CallRecord

    mine = CallRecord.caller_number.in_(callers)

    def count(*conditions):
        return select(func.count()).select_from(CallRecord).where(mine, *conditions)

    db = Database(settings.database_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            async with db.session() as session:  # a fresh session each time: a new snapshot of SQLite
                ended = await session.scalar(count(CallRecord.ended_at.is_not(None)))
                if ended >= len(callers) or time.monotonic() > deadline:
                    return {"ended": ended,
                            "answered": await session.scalar(count(CallRecord.answered_at.is_not(None),
                                                                   CallRecord.agent_id.is_not(None))),
                            "recorded": await session.scalar(count(CallRecord.recording_file.is_not(None))),
                            "unserved": await session.scalar(count(CallRecord.ivr_path.contains("ivr-unavailable")))}
            await asyncio.sleep(2)
    finally:
        await db.close()


async def _level(rig: Rig, path: str, talking: int, waiting: int, hold_s: int) -> dict:
    """One level: ``talking`` + ``waiting`` calls at once on ``path`` (hotline, classic: agents answer
    ``talking`` of them; plain: echo). Returns whether it passed, what failed, and the CPU window."""
    calls = talking + waiting
    prefix = {"hotline": "1361", "plain": "1362", "classic": "1363"}[path]
    callers = [f"{prefix}{calls:03d}{i:04d}" for i in range(calls)]  # 11 digits, calls < 1000
    did, keys = ("10000", "") if path == "plain" else ("12301", "0")
    warnings_before = _taskprocessor_warnings(rig.runtime)
    sipp = asyncio.create_task(asyncio.to_thread(
        run_citizen_calls, rig.settings, did, keys, callers, rig.speech, hold_ms=hold_s * 1000,
        delay_ms=KEY_DELAY_MS, rate=max(10, calls // RAMP_S), timeout=hold_s + 150, cpus=LOAD_CPUS))
    # All up: every agent bridged to a citizen with the rest waiting (app_queue's count and the channels),
    # or for echo every call up; in time for the CPU window before the first calls end.
    deadline = time.monotonic() + KEY_DELAY_MS / 1000 + RAMP_S + hold_s - WINDOW_S - 2
    window, peak, bridged = None, (0, 0), 0
    while time.monotonic() < deadline and not sipp.done():
        try:
            if path == "plain":
                up = await _current_calls(rig.ami) >= calls
            else:
                busy, queued = await _queue_summary(rig.ami, len(rig.logged_in - rig.ready))
                up = busy >= talking and queued >= waiting
                if up:  # busy counts ringing agents too: the channels say who is talking
                    bridged = await _bridged_agent_legs(rig.ami)
                    up = bridged >= talking
                peak = max(peak, (busy, queued))
        except Exception:  # noqa: BLE001 - an overloaded Asterisk answers late: keep trying until the deadline
            up = False
        if up:
            window = await _window(rig, calls)
            break
        await asyncio.sleep(1)
    result = await sipp
    problems = []
    if result.returncode != 0 or result.failed or result.successful != calls:
        problems.append(f"SIPp: {result.failed} failed, {result.successful} of {calls} completed")
    warnings = _taskprocessor_warnings(rig.runtime) - warnings_before
    if warnings:
        problems.append(f"{warnings} task-processor warnings from Asterisk")
    if window is None:
        problems.append("never all up at once" + (f" (at most {peak[0]} agents busy, {peak[1]} waiting; {bridged} bridged when last read)"
                                                  if path != "plain" else ""))
    if path != "plain":
        records = await _call_records(rig.settings, callers)
        if records["unserved"]:
            problems.append(f"{records['unserved']} calls not served by the IVR")
        if records["answered"] < talking:
            problems.append(f"{records['answered']} of {talking} conversations answered")
        if records["recorded"] < calls:
            problems.append(f"{records['recorded']} of {calls} calls recorded")
        if records["ended"] < calls:
            problems.append(f"{calls - records['ended']} call records not closed within 90 s")
    return {"ok": not problems, "why": "; ".join(problems), "window": window, "load": _load()}


def _level_name(path: str, talking: int, waiting: int) -> str:
    if path == "plain":
        return f"plain: {talking + waiting} echo calls at once"
    return f"{path}: {talking} conversations + {waiting} waiting at once"


async def _search(rig: Rig, report: Report, path: str, levels: list[tuple[int, int]], hold_s: int) -> dict:
    """Raise the level until the first failure; the last passing level and the first failing one."""
    best, failed = None, None
    for talking, waiting in levels:
        if path != "plain":
            await set_ready_agents(rig, talking)
        outcome = await _level(rig, path, talking, waiting, hold_s)
        report.add("capacity", _level_name(path, talking, waiting),
                   "pass" if outcome["ok"] else f"FAIL: {outcome['why']}", "",
                   f"{_cpu_text(outcome['window'])}; held {hold_s} s; {outcome['load']}")
        await _drain(rig.ami)
        if not outcome["ok"]:
            failed = (talking, waiting, outcome["why"])
            break
        best = (talking, waiting)
        await asyncio.sleep(3)
    return {"best": best, "failed": failed}


def _ceiling(path: str, found: dict, levels: list[tuple[int, int]]) -> str:
    def calls(level: tuple[int, int]) -> str:
        talking, waiting = level
        return f"{talking + waiting} calls" if path == "plain" else f"{talking} conversations + {waiting} waiting"

    if found.get("skipped"):
        return "not measured in this run"
    text = calls(found["best"]) if found["best"] else f"below {calls(levels[0])}"
    if found["failed"]:
        return f"{text} (first failure at {calls(found['failed'][:2])}: {found['failed'][2]})"
    return f"≥ {text} (largest level tried)"


async def _setup_rate(rig: Rig, did: str, keys: str, rate: int) -> dict:
    """``rate`` new calls a second for RATE_SECONDS; all must be answered and end cleanly."""
    callers = [f"1350{rate:03d}{i:04d}" for i in range(rate * RATE_SECONDS)]
    warnings_before = _taskprocessor_warnings(rig.runtime)
    result = await asyncio.to_thread(run_citizen_calls, rig.settings, did, keys, callers, rig.speech,
                                     hold_ms=RATE_HOLD_MS, delay_ms=3000, rate=rate, timeout=RATE_SECONDS + 120,
                                     cpus=LOAD_CPUS)
    warnings = _taskprocessor_warnings(rig.runtime) - warnings_before
    return {"ok": result.returncode == 0 and result.failed == 0 and result.successful == len(callers)
            and warnings == 0, "failed": result.failed, "warnings": warnings}


async def _setup_rates(rig: Rig, report: Report, setup_rates: list[int]) -> None:
    rates = {"hotline": 0, "plain": 0}
    for did, keys, name in (("12301", "0", "hotline"), ("10000", "", "plain")):
        for rate in setup_rates:
            outcome = await _setup_rate(rig, did, keys, rate)
            report.add("setup-rate", f"{name}: {rate} new calls per second for {RATE_SECONDS} s",
                       "pass" if outcome["ok"] else f"FAIL ({outcome['failed']} failed, "
                       f"{outcome['warnings']} task-processor warnings)", "",
                       f"{rate * RATE_SECONDS} calls, each {RATE_HOLD_MS / 1000:.0f} s after its keys; "
                       f"{len(rig.ready)} agents ready; {_load()}")
            if not outcome["ok"]:
                break
            rates[name] = rate
            await asyncio.sleep(5)
    report.add("setup-rate", "call set-up rate with zero failed calls",
               f"{rates['hotline']} calls/s (IVR + queue + agent + recording + CTI)",
               f"plain G.711 echo: {rates['plain']} calls/s", f"rates tried: {setup_rates}")


async def _set_agi_url(ami, url: str) -> None:
    """Point the dialplan's AGI(${AGI_URL}/ivr) at FastAGI or at the classic AGI wrappers (a global).
    Retried: after an overloaded level the AMI link may still be reconnecting."""
    for _attempt in range(30):
        try:
            await ami.action({"Action": "Setvar", "Variable": "AGI_URL", "Value": url}, timeout=10)
            return
        except Exception:  # noqa: BLE001
            await asyncio.sleep(2)
    raise RuntimeError(f"could not set AGI_URL to {url}")


async def _capacity(settings, runtime, report: Report, levels: list[tuple[int, int]], hold_s: int,
                    setup_rates: list[int], folder: Path) -> None:
    from cli.democall import citizen_speech
    from core.ami import AmiClient
    from core.redis import connect as redis_connect

    citizen_speech(settings, "demo-complaint")
    speech = ulaw_from_wav(runtime.host_path(runtime.inside("sounds", "demo-complaint.wav")), folder / "citizen.ulaw")
    count = max(talking for talking, _w in levels)
    extensions = [str(FIRST_EXTENSION + i) for i in range(min(count, 9999 - FIRST_EXTENSION))]
    # No events: this client only asks (QueueSummary, CoreStatus, channels); all of a level's events would
    # keep it too busy to answer AMI's pings on the loaded core.
    ami, redis = AmiClient(settings, "tools", events="off"), redis_connect(settings, "tools")
    await ami.connect()
    began = time.monotonic()
    passwords = await bench_phones(settings, redis, extensions)
    agents = await bench_agents(settings, "cap", len(extensions), "7", extensions)
    bank = PhoneBank(settings, passwords, streaming_answer(folder, speech), cpus=LOAD_CPUS).start()
    rig = Rig(settings, runtime, ami, redis, speech, list(zip(agents.values(), extensions, strict=True)))
    try:
        await bank.wait_registered(runtime, timeout=60 + len(extensions) / 5)
        report.add("capacity", "bench agents and phones made through the administration services",
                   f"{len(extensions)} agents on {len(extensions)} SIPp phones in {time.monotonic() - began:.0f} s",
                   "", "core.provisioning.create_phone + CTI telephony_apply, core.accounts.ensure_user; "
                   "sign-in through the CTI's command channel; one SIPp process registers and answers all phones")
        # Asterisk on core 0; SIPp (citizens and agent phones) and our Python services on the other.
        pin(rig.process_groups()["asterisk"], ASTERISK_CPUS)
        pin([pid for name, pids in rig.process_groups().items() if name != "asterisk" for pid in pids],
            {int(c) for c in LOAD_CPUS.split(",")})
        if setup_rates:  # first: the classic-AGI levels end by overloading Asterisk
            await set_ready_agents(rig, levels[0][0])
            await _setup_rates(rig, report, setup_rates)
        paths = os.environ.get("HOTLINE_BENCH_PATHS", "hotline,plain,classic").split(",")
        skipped = {"best": None, "failed": None, "skipped": True}
        hotline = await _search(rig, report, "hotline", levels, hold_s) if "hotline" in paths else skipped
        plain = await _search(rig, report, "plain", levels, hold_s) if "plain" in paths else skipped
        per_process = skipped
        if "classic" in paths:
            await _set_agi_url(ami, classic.prepare(settings, runtime, say=print))
            try:  # the same calls, the IVR as one new process per call (pyst2)
                per_process = await _search(rig, report, "classic", levels, hold_s)
            finally:
                await _set_agi_url(ami, f"agi://{settings.agi.host}:{settings.agi.port}")
                classic.cleanup(settings, runtime)
        report.add("capacity", "single-node ceiling: the largest level with zero failures",
                   f"{_ceiling('hotline', hotline, levels)}: IVR + queue + agent on a SIPp phone (speech both "
                   "ways) + full recording + CTI",
                   f"plain G.711 echo through the same Asterisk: {_ceiling('plain', plain, levels)}; classic "
                   f"per-call AGI (pyst2) instead of FastAGI: {_ceiling('classic', per_process, levels)}",
                   f"levels tried (conversations + waiting): {', '.join(f'{t}+{w}' for t, w in levels)}; "
                   f"Asterisk on one core; {_load()}")
    finally:
        for agent_id in list(rig.logged_in):
            try:
                await _agent_command(rig, agent_id, "logout")
            except Exception:  # noqa: BLE001 - the stack is thrown away next
                pass
        bank.stop()
        await ami.close()
        await redis.aclose()


def _numbers(variable: str, default: list[int]) -> list[int]:
    """A comma-separated list from the environment (empty: skip that part), else the default."""
    value = os.environ.get(variable)
    return default if value is None else [int(v) for v in value.split(",") if v.strip()]


def capacity(report: Report, quick: bool) -> None:
    # Conversations per level; each level adds HOTLINE_BENCH_WAITING_PERCENT (50) % of them waiting.
    talking = _numbers("HOTLINE_BENCH_LEVELS", [4, 8] if quick else [50, 100, 150, 200, 250, 300, 400, 500])
    percent = int(os.environ.get("HOTLINE_BENCH_WAITING_PERCENT") or 50)
    levels = [(t, t * percent // 100) for t in talking]
    hold_s = 40  # after the keys: a slow IVR on a loaded machine still leaves every call up for the window
    setup_rates = _numbers("HOTLINE_BENCH_RATES", [2, 5] if quick else [5, 10, 20, 30, 40])
    if not levels:
        return
    with throwaway_stack(CAPACITY_SETTINGS, "hotline-bench-", say=lambda _line: None) as (settings, runtime), \
            tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_capacity(settings, runtime, report, levels, hold_s, setup_rates, Path(tmp)))

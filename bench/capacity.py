"""Call capacity over real SIP/RTP on loopback.

Citizen calls from the carrier address (SIPp, RFC 4733 keys, streamed speech)
go through the IVR into the 12301 general queue, where four SIPp agent phones
answer; every call is recorded in full and followed by the CTI. Each level
holds N calls at once for a while; a level passes with SIPp's FailedCall at 0,
no task-processor high-water warning from Asterisk and every call served by
the IVR (none sent on by the dialplan's fallback). The comparison point,
in the same run and on the same Asterisk, is DID 10000: a bare G.711 echo call
with no IVR, no recording and no queue (dialplans/test-callers.conf). Then the
call set-up rate: N new short calls a second for ten seconds, both paths.
Asterisk is pinned to one core, SIPp and the Python services to the other, so
CPU per call is Asterisk's own.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from bench import classic
from bench.live import BENCH_SETTINGS, logged_in_agents
from bench.report import Report
from cli.stack import throwaway_stack
from sipdrivers.carrier import run_citizen_calls, ulaw_from_wav

ASTERISK_CPUS = {0}
LOAD_CPUS = "1" if (os.cpu_count() or 1) > 1 else "0"
RATE_SECONDS = 10     # how long each set-up rate is kept up
RATE_HOLD_MS = 2000   # a short call: IVR greeting, keys, 2 s in the queue or echo, hang-up
CAPACITY_SETTINGS = {**BENCH_SETTINGS, "HOTLINE_SIP_RTP_START": "40000", "HOTLINE_SIP_RTP_END": "44999",
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


def _pids(pattern: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if pattern in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
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


def _taskprocessor_warnings(settings, runtime) -> int:
    log = runtime.host_path(runtime.inside("log", "messages.log"))
    if not log.exists():
        return 0
    return log.read_text(errors="replace").count("Task processor")


async def _level(settings, runtime, did: str, keys: str, concurrent: int, hold_s: int, speech: Path,
                 report_name: str) -> dict:
    prefix = {"hotline": "1361", "plain": "1362", "classic": "1363"}[report_name]
    callers = [f"{prefix}{concurrent:03d}{i:04d}" for i in range(concurrent)]
    ast = _pids(f"-C {runtime.inside('etc', 'asterisk.conf')}")
    services = {name: _pids(f"-m {name}") for name in ("ivr", "cti", "recordings", "agent_desk")}
    before = {"asterisk": _cpu_seconds(ast), **{n: _cpu_seconds(p) for n, p in services.items()}}
    warnings_before = _taskprocessor_warnings(settings, runtime)
    began = time.monotonic()
    # All calls start within about a second and are held together for hold_s.
    result = await asyncio.to_thread(run_citizen_calls, settings, did, keys, callers, speech,
                                     hold_ms=hold_s * 1000, delay_ms=4000, rate=max(10, concurrent),
                                     timeout=hold_s + 120, cpus=LOAD_CPUS)
    wall = time.monotonic() - began
    after = {"asterisk": _cpu_seconds(ast), **{n: _cpu_seconds(p) for n, p in services.items()}}
    cpu = {name: (after[name] - before[name]) for name in after}
    unserved = await _ivr_unserved(settings, callers) if did != "10000" else 0
    return {"ok": result.returncode == 0 and result.failed == 0 and result.successful == concurrent
            and unserved == 0, "failed": result.failed, "successful": result.successful, "wall": wall,
            "cpu": cpu, "unserved": unserved,
            "warnings": _taskprocessor_warnings(settings, runtime) - warnings_before, "name": report_name}


async def _ivr_unserved(settings, callers: list[str]) -> int:
    """Calls the IVR did not serve (the dialplan's fallback sent them on), from the CTI's call records:
    a slow or failing IVR must not pass for a carried call."""
    from sqlalchemy import func, select

    from core.db import Database
    from cti.models import CallRecord

    await asyncio.sleep(3)  # the last records are written at hang-up
    db = Database(settings.database_url)
    try:
        async with db.session() as session:
            return await session.scalar(select(func.count()).select_from(CallRecord).where(
                CallRecord.caller_number.in_(callers), CallRecord.ivr_path.contains("ivr-unavailable")))
    finally:
        await db.close()


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


async def _setup_rate(settings, runtime, did: str, keys: str, rate: int, speech: Path) -> dict:
    """``rate`` new calls a second for RATE_SECONDS; all must be answered and end cleanly."""
    callers = [f"1350{rate:03d}{i:04d}" for i in range(rate * RATE_SECONDS)]
    warnings_before = _taskprocessor_warnings(settings, runtime)
    result = await asyncio.to_thread(run_citizen_calls, settings, did, keys, callers, speech,
                                     hold_ms=RATE_HOLD_MS, delay_ms=3000, rate=rate, timeout=RATE_SECONDS + 120,
                                     cpus=LOAD_CPUS)
    warnings = _taskprocessor_warnings(settings, runtime) - warnings_before
    return {"ok": result.returncode == 0 and result.failed == 0 and result.successful == len(callers)
            and warnings == 0, "failed": result.failed, "warnings": warnings}


async def _capacity(settings, runtime, report: Report, levels: list[int], hold_s: int,
                    setup_rates: list[int]) -> None:
    from cli.democall import citizen_speech

    citizen_speech(settings, "demo-complaint")
    wav = runtime.host_path(runtime.inside("sounds", "demo-complaint.wav"))
    with tempfile.TemporaryDirectory() as tmp:
        speech = ulaw_from_wav(wav, Path(tmp) / "citizen.ulaw")
        async with logged_in_agents(settings, runtime) as ami:
            # Asterisk on core 0; SIPp (citizens and agent phones) and our Python services on the other.
            pin(_pids(f"-C {runtime.inside('etc', 'asterisk.conf')}"), ASTERISK_CPUS)
            pin([pid for pattern in ("agent_register.xml", "-m ivr", "-m cti", "-m recordings", "-m agent_desk")
                 for pid in _pids(pattern)], {int(c) for c in LOAD_CPUS.split(",")})
            # Set-up rates first: the classic-AGI levels end by overloading Asterisk.
            rates = {"hotline": 0, "plain": 0}
            for did, keys, name in (("12301", "0", "hotline"), ("10000", "", "plain")):
                for rate in setup_rates:
                    outcome = await _setup_rate(settings, runtime, did, keys, rate, speech)
                    report.add("setup-rate", f"{name}: {rate} new calls per second for {RATE_SECONDS} s",
                               "pass" if outcome["ok"] else f"FAIL ({outcome['failed']} failed, "
                               f"{outcome['warnings']} task-processor warnings)", "",
                               f"{rate * RATE_SECONDS} calls, each {RATE_HOLD_MS / 1000:.0f} s after its keys")
                    if not outcome["ok"]:
                        break
                    rates[name] = rate
                    await asyncio.sleep(5)
            report.add("setup-rate", "call set-up rate with zero failed calls",
                       f"{rates['hotline']} calls/s (IVR + queue + recording + CTI)",
                       f"plain G.711 echo: {rates['plain']} calls/s", f"rates tried: {setup_rates}")
            best = {"hotline": 0, "plain": 0, "classic": 0}
            for did, keys, name in (("12301", "0", "hotline"), ("10000", "", "plain"), ("12301", "0", "classic")):
                if name == "classic":  # the same calls, the IVR as one new process per call (pyst2)
                    await _set_agi_url(ami, classic.prepare(settings, runtime, say=print))
                for level in levels:
                    outcome = await _level(settings, runtime, did, keys, level, hold_s, speech, name)
                    ok = outcome["ok"] and outcome["warnings"] == 0
                    per_call = {k: v / level for k, v in outcome["cpu"].items()}
                    cpu_text = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in per_call.items() if v > 0)
                    report.add("capacity", f"{name}: {level} concurrent calls held {hold_s} s",
                               "pass" if ok else f"FAIL ({outcome['failed']} failed, {outcome['warnings']} "
                               f"task-processor warnings, {outcome['unserved']} not served by the IVR)", "",
                               f"CPU per call: {cpu_text}")
                    if not ok:
                        break
                    best[name] = level
                    await asyncio.sleep(3)
                if name == "classic":
                    await _set_agi_url(ami, f"agi://{settings.agi.host}:{settings.agi.port}")
                    classic.cleanup(settings, runtime)
            if not levels:
                return

            def reached(name: str) -> str:  # "≥" where even the largest level tried passed
                return f"{'≥ ' if best[name] == levels[-1] else ''}{best[name]} calls"

            report.add("capacity", "largest level with zero failed calls",
                       f"{reached('hotline')} (IVR + queue + recording + CTI)",
                       f"plain G.711 echo through the same Asterisk: {reached('plain')}; classic per-call AGI "
                       f"(pyst2) instead of FastAGI: {reached('classic')}", f"levels tried: {levels}")


def _numbers(variable: str, default: list[int]) -> list[int]:
    """A comma-separated list from the environment (empty: skip that part), else the default."""
    value = os.environ.get(variable)
    return default if value is None else [int(v) for v in value.split(",") if v.strip()]


def capacity(report: Report, quick: bool) -> None:
    levels = _numbers("HOTLINE_BENCH_LEVELS", [5, 10, 20] if quick else [25, 50, 100, 150, 200, 300])
    hold_s = 15 if quick else 30
    setup_rates = _numbers("HOTLINE_BENCH_RATES", [2, 5] if quick else [5, 10, 20, 30, 40])
    with throwaway_stack(CAPACITY_SETTINGS, "hotline-bench-", say=lambda _line: None) as (settings, runtime):
        asyncio.run(_capacity(settings, runtime, report, levels, hold_s, setup_rates))

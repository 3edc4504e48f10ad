"""Cluster mode (issue 19 item 6c): Kamailio in front of two Asterisk nodes on this machine, and one lost.

One throwaway two-node stack on PostgreSQL (`./hotline up --nodes 2`), bare echo calls on DID 10000 from
the carrier address through Kamailio (the plain path: what the nodes and Kamailio cost, without the IVR):

1. calls carried: ``HOTLINE_BENCH_CLUSTER_CALLS`` calls (default 100, quick 20) started over 10 s and held
   10 s, SIPp's successes and failures, how many each node's own CDR has, and the CPU per call (ms) of
   Kamailio and of each node over the run;
2. a node lost: calls keep arriving (10 a second); node1 is SIGKILLed and kept down. Measured: when
   Kamailio's dispatcher marks it down, when the first call begun after the kill is answered on node2
   (node2's own AMI events: the carrier channel's Newchannel and its Newstate Up, Asterisk's timestamps),
   and the calls begun after the kill: answered or failed (SIPp).
"""

from __future__ import annotations

import asyncio
import csv
import os
import tempfile
import time
from pathlib import Path

from bench.capacity import _cpu_seconds, _pids
from bench.live import BENCH_SETTINGS
from bench.report import Report
from cli.supervisor import kill_and_keep_down, program_pid
from core import kamailio
from core.ami import AmiClient
from core.asterisk_runtime import node_runtimes
from cti.books import CDR_COLUMNS
from sipdrivers.browser import tone_file
from sipdrivers.carrier import SIPP_DIR, run_citizen_calls

SECTION = "cluster"
PROXIED = SIPP_DIR / "citizen_proxied.xml"
RAMP_S = 10
HOLD_MS = 10_000
LOSS_RATE = 10  # new calls per second while node1 is killed
LOSS_HOLD_MS = 3000


def _callers(phase: int, count: int) -> list[str]:
    return [f"138{phase:02d}{index:06d}" for index in range(count)]


def _cdr_answered(runtime, callers: set[str]) -> int:
    path = runtime.host_path(runtime.inside("log", "cdr-csv", "Master.csv"))
    if not path.exists():
        return 0
    src, disposition = CDR_COLUMNS.index("src"), CDR_COLUMNS.index("disposition")
    return sum(1 for row in csv.reader(path.read_text(errors="replace").splitlines())
               if len(row) > max(src, disposition) and row[src] in callers and row[disposition] == "ANSWERED")


def _part_pids(settings) -> dict[str, list[int]]:
    """Kamailio (all its processes: its command line names the instance's own run folder) and each node."""
    parts = {"kamailio": _pids(str(kamailio.run_dir(settings) / "kamailio.cfg"))}
    for node in settings.nodes:
        parts[node.name] = [program_pid(settings, node.program)]
    return parts


async def _wait_up(settings, name: str, up: bool, timeout: float) -> float:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        state = await asyncio.to_thread(kamailio.dispatcher_state, settings)
        if name in state and state[name].up is up:
            return time.monotonic() - began
        await asyncio.sleep(0.1)
    raise RuntimeError(f"dispatcher did not mark {name} {'up' if up else 'down'} within {timeout:.0f} s")


async def _carried(settings, runtimes, report: Report, speech: Path, calls: int) -> None:
    callers = _callers(1, calls)
    pids = _part_pids(settings)
    before = {part: _cpu_seconds(p) for part, p in pids.items()}
    result = await asyncio.to_thread(run_citizen_calls, settings, "10000", "", callers, speech, hold_ms=HOLD_MS,
                                     rate=calls / RAMP_S, timeout=RAMP_S + HOLD_MS / 1000 + 60, scenario=PROXIED)
    used = {part: _cpu_seconds(p) - before[part] for part, p in pids.items()}
    per_node = {name: _cdr_answered(runtime, set(callers)) for name, runtime in runtimes.items()}
    report.add(SECTION, f"calls carried ({calls} over {RAMP_S} s, held {HOLD_MS // 1000} s)",
               f"{result.successful} answered, {result.failed} failed",
               note=", ".join(f"{name} {count}" for name, count in per_node.items()) + " (each node's CDR)")
    report.add(SECTION, "CPU per call (ms, whole call)",
               ", ".join(f"{part} {used[part] * 1000 / max(1, result.successful):.0f}" for part in used))


async def _lost(settings, report: Report, speech: Path, quick: bool) -> None:
    survivor = settings.node("node2")
    events = AmiClient(settings, "tools", events="call", node=survivor)
    began: dict[str, float] = {}   # channel -> Newchannel timestamp (Asterisk's)
    answered: list[tuple[float, float]] = []  # (began, answered) of carrier channels on node2

    def on_event(_manager, event) -> None:
        channel, stamp = event.get("Channel") or "", event.get("Timestamp")
        if not stamp or not channel.startswith("PJSIP/carrier"):
            return
        if event.get("Event") == "Newchannel":
            began[channel] = float(stamp)
        elif event.get("Event") == "Newstate" and event.get("ChannelStateDesc") == "Up" and channel in began:
            answered.append((began[channel], float(stamp)))

    events.on_event("*", on_event)
    await events.connect()
    try:
        seconds = 10 if quick else 20
        callers = _callers(2, LOSS_RATE * seconds)
        load = asyncio.create_task(asyncio.to_thread(
            run_citizen_calls, settings, "10000", "", callers, speech, hold_ms=LOSS_HOLD_MS, rate=LOSS_RATE,
            timeout=seconds + 60, scenario=PROXIED))
        await asyncio.sleep(seconds / 3)  # calls on both nodes
        killed = time.time()
        await asyncio.to_thread(kill_and_keep_down, settings, settings.node("node1").program)
        down = await _wait_up(settings, "node1", False, 30)
        result = await load
        after = sorted(answer - killed for start, answer in answered if start > killed)
        report.add(SECTION, "node1 SIGKILLed: dispatcher marks it down after", f"{down:.1f} s",
                   note=f"OPTIONS every {settings.cluster.ping_seconds} s")
        report.add(SECTION, "SIGKILL to the first new call answered on node2",
                   f"{after[0] * 1000:.0f} ms" if after else "none answered",
                   note=f"{LOSS_RATE} new calls/s through Kamailio, round robin: node2 takes its share throughout "
                   "(node2's AMI timestamps: a carrier channel made after the kill, up)")
        report.add(SECTION, f"calls during the loss ({len(callers)} at {LOSS_RATE}/s, node1 killed after "
                   f"{seconds // 3} s)", f"{result.successful} answered, {result.failed} failed",
                   note=f"{len(after)} begun after the kill answered on node2 (SIPp's counts; the failed include "
                   "the calls up on node1 when it died)")
    finally:
        await events.close()


async def _cluster(settings, runtime, report: Report, calls: int, quick: bool, folder: Path) -> None:
    runtimes = node_runtimes(settings, runtime)
    for node in settings.nodes:
        await _wait_up(settings, node.name, True, 60)
    speech = tone_file(folder, "tone.ulaw", 440, 8000, ["-t", "raw", "-e", "u-law"], seconds=5)
    report.add(SECTION, "machine", f"{os.cpu_count()} cores, load " + " / ".join(f"{x:.1f}" for x in os.getloadavg()))
    await _carried(settings, runtimes, report, speech, calls)
    await _lost(settings, report, speech, quick)


def cluster(report: Report, quick: bool) -> None:
    from cli.postgres import throwaway_postgresql
    from cli.stack import throwaway_stack

    calls = int(os.environ.get("HOTLINE_BENCH_CLUSTER_CALLS") or (20 if quick else 100))
    with throwaway_postgresql(prefix="hotline-bench-cluster-pg-") as url:
        overrides = {**BENCH_SETTINGS, "HOTLINE_CLUSTER_NODES": "2", "HOTLINE_DATABASE_URL": url}
        with throwaway_stack(overrides, "hotline-bench-cluster-", say=lambda _line: None) as (settings, runtime), \
                tempfile.TemporaryDirectory() as tmp:
            asyncio.run(_cluster(settings, runtime, report, calls, quick, Path(tmp)))

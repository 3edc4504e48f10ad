"""Cluster mode (issue 19 items 6b and 6c): Kamailio in front of two Asterisk nodes on this machine, one ACD
across them, and one node lost.

One throwaway two-node stack on PostgreSQL (`./hotline up --nodes 2`), bare echo calls on DID 10000 from
the carrier address through Kamailio (the plain path: what the nodes and Kamailio cost, without the IVR):

0. Kamailio's cost per call (6b): the same echo calls (``HOTLINE_BENCH_CLUSTER_CALLS``) to node1 straight
   (from Kamailio's node-side address, the one node1 takes carrier calls from) and then through Kamailio with
   node2 taken out of the dispatcher (``dispatcher.set_state d``), so Kamailio is in front of that one node:
   CPU per call of Kamailio and node1, and call set-up (INVITE to 200 OK, SIPp's own timing) p50/p95 for both;
1. calls carried: ``HOTLINE_BENCH_CLUSTER_CALLS`` calls (default 100, quick 20) started over 10 s and held
   10 s, SIPp's successes and failures, how many each node's own CDR has, and the CPU per call (ms) of
   Kamailio and of each node over the run;
2. a node lost: calls keep arriving (10 a second); node1 is SIGKILLed and kept down. Measured: when
   Kamailio's dispatcher marks it down, when the first call begun after the kill is answered on node2
   (node2's own AMI events: the carrier channel's Newchannel and its Newstate Up, Asterisk's timestamps),
   and the calls begun after the kill: answered or failed (SIPp).

Between 1 and 2, the ACD across the nodes (6c): ``HOTLINE_BENCH_CLUSTER_WAITING`` callers (default 100, quick
20) call the 12301 general queue's own number through Kamailio (recording notice, recording, queue) while the
bench's agents (made by the administration services, SIPp phones registered with Kamailio, talking 1 s) are
signed in but not ready, so all of them wait over both nodes; then the agents press 就绪 and serve them all.
Double rings and order inversions are counted from both nodes' own AMI events (sipdrivers/acd_events.py, the
counting of tests/cti/test_cluster_acd.py): target 0.
"""

from __future__ import annotations

import asyncio
import csv
import os
import tempfile
import time
from pathlib import Path

from bench.capacity import _cpu_seconds, _pids
from bench.live import BENCH_SETTINGS, bench_agents, bench_phones
from bench.report import Report
from cli.supervisor import kill_and_keep_down, program_pid
from core import kamailio
from core.ami import AmiClient, AmiNodes
from core.asterisk_runtime import node_runtimes
from core.redis import connect as redis_connect
from cti.books import CDR_COLUMNS
from sipdrivers.acd_events import NodeEvents
from sipdrivers.browser import tone_file
from sipdrivers.carrier import SIPP_DIR, run_citizen_calls
from sipdrivers.phones import SippPhone, answer_then_hang_up

SECTION = "cluster"
PROXIED = SIPP_DIR / "citizen_proxied.xml"
RAMP_S = 10
HOLD_MS = 10_000
LOSS_RATE = 10  # new calls per second while node1 is killed
LOSS_HOLD_MS = 3000
ACD_QUEUE = "12301-general"
ACD_TALK_MS = 1000
WRAPUP_SECONDS = 1


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


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


async def _kamailio_cost(settings, runtimes, report: Report, speech: Path, calls: int) -> None:
    """6b: the same echo calls to node1 straight and through Kamailio in front of node1 alone."""
    node1, node2 = settings.node("node1"), settings.node("node2")
    pids = _part_pids(settings)
    rows = {}
    for phase, label in ((3, "straight to node1"), (4, "through Kamailio")):
        callers = _callers(phase, calls)
        straight = phase == 3
        before = {part: _cpu_seconds(p) for part, p in pids.items()}
        result = await asyncio.to_thread(
            run_citizen_calls, settings, "10000", "", callers, speech, hold_ms=HOLD_MS, rate=calls / RAMP_S,
            timeout=RAMP_S + HOLD_MS / 1000 + 60, scenario=PROXIED, rtt=True,
            source=settings.cluster.proxy_address if straight else None,
            target=f"{node1.address}:{node1.sip_port}" if straight else None)
        used = {part: (_cpu_seconds(p) - before[part]) * 1000 / max(1, result.successful) for part, p in pids.items()}
        on_node2 = _cdr_answered(runtimes["node2"], set(callers))
        rows[label] = (result, used, on_node2)
        if straight:  # Kamailio in front of node1 alone: node2 out of the dispatcher for the next phase
            await asyncio.to_thread(kamailio.rpc, settings, "dispatcher.set_state", "d", "1", kamailio.node_uri(node2))
    await asyncio.to_thread(kamailio.rpc, settings, "dispatcher.set_state", "a", "1", kamailio.node_uri(node2))
    await _wait_up(settings, "node2", True, 30)
    for label, (result, used, on_node2) in rows.items():
        times = result.response_ms
        report.add(SECTION, f"Kamailio's cost: {calls} echo calls {label} (over {RAMP_S} s, held "
                   f"{HOLD_MS // 1000} s)",
                   f"set-up p50 {_percentile(times, 0.5):.0f} ms, p95 {_percentile(times, 0.95):.0f} ms; "
                   f"{len(times)} of {calls} answered (200 OK), SIPp: {result.failed} failed",
                   comparison=f"CPU per call: node1 {used['node1']:.0f} ms, Kamailio {used['kamailio']:.0f} ms",
                   note=f"INVITE to 200 OK (SIPp); node2's CDR has {on_node2} of them")


async def _acd(settings, report: Report, speech: Path, waiting: int, folder: Path) -> None:
    """6c: ``waiting`` callers waiting over both nodes at once, then served by agents following the oldest."""
    from cti import protocol

    agents_count = 4 if waiting >= 50 else 2
    extensions = [f"84{i:02d}" for i in range(1, agents_count + 1)]
    redis = redis_connect(settings, "tools")
    tools = AmiNodes.for_settings(settings, "tools")
    front = type("Front", (), {"address": settings.sip.bind, "sip_port": settings.sip.port})
    phones: list[SippPhone] = []
    ids: list[int] = []
    try:
        passwords = await bench_phones(settings, redis, extensions)
        ids = list((await bench_agents(settings, "acd", agents_count, "9", extensions)).values())
        answer = str(answer_then_hang_up(folder, ACD_TALK_MS))
        phones = [SippPhone(settings, ext, node=front, password=passwords[ext], answer=answer).start()
                  for ext in extensions]
        for ext in extensions:
            await _until(lambda ext=ext: bool(kamailio.registered_contacts(settings, ext)), 30,
                         f"{ext} registered with Kamailio")
        await tools.connect()
        seen = NodeEvents(tools, WRAPUP_SECONDS)

        async def command(agent_id: int, action: str, **args: str) -> None:
            await protocol.send(redis, "agent_state", {"agent_id": agent_id, "action": action, **args}, execution=30)

        for agent_id, ext in zip(ids, extensions, strict=True):
            await command(agent_id, "login", phone=ext)
        callers = _callers(5, waiting)
        calls = asyncio.create_task(asyncio.to_thread(
            run_citizen_calls, settings, ACD_QUEUE, "", callers, speech, hold_ms=400_000, rate=10,
            timeout=600, scenario=PROXIED))
        wanted = set(callers)
        await _until(lambda: len({e["CallerIDNum"] for e in seen.of("QueueCallerJoin")} & wanted) == waiting,
                     waiting / 10 + 60, "every caller waiting")
        joins = [e for e in seen.of("QueueCallerJoin") if e.get("CallerIDNum") in wanted]
        per_node = {n: sum(1 for e in joins if e["node"] == n) for n in ("node1", "node2")}
        began = time.monotonic()
        for agent_id in ids:
            await command(agent_id, "ready")
        await _until(lambda: len(seen.connected(wanted)) == waiting, waiting * 3 + 60, "every caller answered")
        served = time.monotonic() - began
        doubles, inversions = seen.double_rings(), seen.order_inversions()
        told = [a for a in seen.announcements() if (a["join"] or {}).get("CallerIDNum") in wanted]
        report.add(SECTION, f"one ACD across the nodes: {waiting} callers waiting at once ({per_node['node1']} "
                   f"on node1, {per_node['node2']} on node2), then served by {agents_count} agents",
                   f"{len(inversions)} order inversions, {len(doubles)} double rings",
                   comparison="target 0", note=f"counted from both nodes' AMI events; all answered in {served:.0f} s "
                   f"(agents talk {ACD_TALK_MS // 1000} s, wrap-up {WRAPUP_SECONDS} s); {len(told)} position "
                   "announcements counted over both nodes"
                   + (f"; inversions (earlier, later caller): {inversions[:5]}" if inversions else ""))
        try:  # each caller's call ends in the survey after its agent hangs up
            await asyncio.wait_for(asyncio.shield(calls), 180)
        except TimeoutError:
            pass  # SIPp's own -timeout ends the rest
    finally:
        for agent_id in ids:
            try:
                await protocol.send(redis, "agent_state", {"agent_id": agent_id, "action": "logout"}, execution=30)
            except Exception:  # noqa: BLE001 - the stack goes away after the bench anyway
                pass
        for phone in phones:
            phone.stop()
        await tools.close()
        await redis.aclose()


async def _until(check, timeout: float, what: str) -> None:
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(0.25)


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


async def _cluster(settings, runtime, report: Report, calls: int, waiting: int, quick: bool, folder: Path) -> None:
    runtimes = node_runtimes(settings, runtime)
    for node in settings.nodes:
        await _wait_up(settings, node.name, True, 60)
    speech = tone_file(folder, "tone.ulaw", 440, 8000, ["-t", "raw", "-e", "u-law"], seconds=5)
    report.add(SECTION, "machine", f"{os.cpu_count()} cores, load " + " / ".join(f"{x:.1f}" for x in os.getloadavg()))
    await _kamailio_cost(settings, runtimes, report, speech, calls)
    await _carried(settings, runtimes, report, speech, calls)
    await _acd(settings, report, speech, waiting, folder)
    report.add(SECTION, "machine after the runs", "load " + " / ".join(f"{x:.1f}" for x in os.getloadavg()))
    await _lost(settings, report, speech, quick)


def cluster(report: Report, quick: bool) -> None:
    from cli.postgres import throwaway_postgresql
    from cli.stack import throwaway_stack

    calls = int(os.environ.get("HOTLINE_BENCH_CLUSTER_CALLS") or (20 if quick else 100))
    waiting = int(os.environ.get("HOTLINE_BENCH_CLUSTER_WAITING") or (20 if quick else 100))
    with throwaway_postgresql(prefix="hotline-bench-cluster-pg-") as url:
        # The queue's callers wait until the agents are ready (no voicemail offer meanwhile), and a wrap-up
        # of 1 s (not the bench's 0: README, a wrap-up of 0 leaves app_queue a moment before the router).
        # RTP ports for a few hundred calls per node (a throwaway stack's own range holds 40 calls).
        overrides = {**BENCH_SETTINGS, "HOTLINE_CLUSTER_NODES": "2", "HOTLINE_DATABASE_URL": url,
                     "HOTLINE_SIP_RTP_START": "40000", "HOTLINE_SIP_RTP_END": "44999",
                     "HOTLINE_QUEUES_MAX_WAIT_SECONDS": "900", "HOTLINE_QUEUES_WRAPUP_SECONDS": str(WRAPUP_SECONDS)}
        with throwaway_stack(overrides, "hotline-bench-cluster-", say=lambda _line: None) as (settings, runtime), \
                tempfile.TemporaryDirectory() as tmp:
            asyncio.run(_cluster(settings, runtime, report, calls, waiting, quick, Path(tmp)))

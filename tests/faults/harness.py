"""The fault-injection harness: calls in the IVR, waiting and talking while one part of the platform dies.

A scenario puts SIPp citizens through the carrier into the 12301 complaint queue, answered by agents on
SIPp phones, kills one part at the moment chosen (an agent's phone ringing, an answer, a citizen hanging
up, calls in the IVR) -- SIGKILL through the supervisor's pid (it restarts the part at once) or a 15 s
outage (stopped, then started) -- then places one more call once everything is healthy again, and
compares what the platform recorded with independent sources:

* Asterisk's queue_log (ENTERQUEUE, CONNECT, COMPLETE*, ABANDON) and CDR (Master.csv),
* SIPp's own count of the calls it placed and finished, and AMI events watched by the harness itself
  (which agent's phone rang for which call),
* Asterisk's live channels (stranded calls) and QueueStatus (agent states),
* ``check_health`` (what ``./hotline status`` prints) while the part is down.

Each scenario gives one :class:`Outcome`, a row of the table the suite prints at the end.
"""

from __future__ import annotations

import asyncio
import csv
import itertools
import os
import signal
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from cli.stack import check_health, supervisorctl
from core.events import STREAM
from core.telephony import chan_var
from cti import control
from cti.books import CDR_COLUMNS, CdrCall, QueueCall, lines_since, phone_of, read_cdr_calls, read_queue_log
from cti.crash import RESTART_CAUSE
from cti.models import CallbackRequest, CallbackStatus, CallRecord
from recordings.models import Recording
from sipdrivers.carrier import SippResult, carrier_answering, run_citizen_calls
from sipdrivers.phones import free_udp_block

OUTAGE_SECONDS = 15
HEALTH_NAME = {"agent_desk": "agent_desk"}  # supervisor program -> name in check_health (same for the rest)
# Parts whose absence means nobody can publish a pop: rings while they are down have none, by nature.
POPLESS_WHILE_DOWN = {"cti", "redis", "asterisk"}
DID, KEYS = "12301", "21"  # complaint -> travel agencies: queue 12301-complaint (agent1 and agent3)


_SCENARIOS = itertools.count(1)  # caller-number blocks handed out in this test process


@dataclass(frozen=True)
class Fault:
    part: str    # supervisor program: ivr, cti, redis, agent_desk, recordings, asterisk
    mode: str    # "kill": SIGKILL, restarted by the supervisor; "outage": stopped for OUTAGE_SECONDS
    moment: str  # "ring", "answer", "hangup" (of a citizen) or "ivr" (calls inside the IVR)

    @property
    def name(self) -> str:
        return f"{self.part} {self.mode} @{self.moment}"


@dataclass
class Outcome:
    fault: Fault
    calls: int = 0
    stranded: int = 0
    missing: int = 0
    wrong: int = 0
    recordings_lost: int = 0
    pops_lost: int = 0
    pops_lost_while_up: int = 0
    duplicate_originates: int = 0
    agents_wrong: int = 0
    health_honest: bool = True
    recovery_seconds: float | None = None
    records_closed_seconds: float | None = None  # Asterisk faults: restart -> every open record closed
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.problems.append(text)

    @property
    def clean(self) -> bool:
        return not (self.stranded or self.missing or self.wrong or self.recordings_lost or self.pops_lost_while_up
                    or self.duplicate_originates or self.agents_wrong or not self.health_honest)


TABLE_HEADER = ("| fault | calls | stranded | records missing | wrong | recordings lost | pops lost "
                "| duplicate originates | agent states wrong | status honest | recovery |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|\n")


def table_row(o: Outcome) -> str:
    recovery = f"{o.recovery_seconds:.1f} s" if o.recovery_seconds is not None else "-"
    if o.records_closed_seconds is not None:
        recovery += f", open records closed {o.records_closed_seconds:.1f} s after restart"
    return (f"| {o.fault.name} | {o.calls} | {o.stranded} | {o.missing} | {o.wrong} | {o.recordings_lost} "
            f"| {o.pops_lost} | {o.duplicate_originates} | {o.agents_wrong} | {'yes' if o.health_honest else 'NO'} "
            f"| {recovery} |\n")


OUTCOMES: list[Outcome] = []   # every scenario's row, in the order run
TABLE_FILES: list[Path] = []   # where the table is written (the pytest temp folder)


def table() -> str:
    """The table for the closing note, then each scenario's problems in words."""
    lines = [f"  {o.fault.name}: {p}\n" for o in OUTCOMES for p in o.problems]
    return TABLE_HEADER + "".join(table_row(o) for o in OUTCOMES) + "".join(lines)


def record(outcome: Outcome) -> None:
    """Keep the row for the summary and rewrite the file as soon as a scenario ends."""
    OUTCOMES.append(outcome)
    for path in TABLE_FILES:
        path.write_text(table())


# --- Asterisk's own books ----------------------------------------------------------------------------

class Books:
    """Asterisk's queue_log and Master.csv, from the scenario's start on."""

    def __init__(self, stack: Any) -> None:
        runtime = stack.runtime
        self.queue_log = runtime.host_path(runtime.inside("log", "queue_log"))
        self.cdr = runtime.host_path(runtime.inside("log", "cdr-csv", "Master.csv"))
        self.since = datetime.now(UTC) - timedelta(seconds=2)  # whole seconds in both files

    def queue_calls(self) -> dict[str, QueueCall]:
        return read_queue_log(self.queue_log, self.since)

    def cdr_calls(self) -> dict[str, CdrCall]:
        """Citizen legs of hotline calls (inbound), one per call."""
        return read_cdr_calls(self.cdr, self.since)

    def outbound_legs(self, numbers: list[str]) -> dict[str, set[str]]:
        """Per citizen number, the outbound calls (desk originates, callbacks) Asterisk billed."""
        legs: dict[str, set[str]] = defaultdict(set)
        for row in csv.reader(lines_since(self.cdr, self.since.timestamp(), lambda _line: None)):
            cdr = dict(zip(CDR_COLUMNS, row, strict=False))
            if cdr.get("dcontext") == "from-desk" and cdr.get("dst") in numbers:
                legs[cdr["dst"]].add(cdr["uniqueid"])
        return legs


def _queue_story(q: QueueCall | None) -> str:
    if q is None:
        return "not in queue_log"
    said = [f"queue_log {q.queue}"]
    if q.connected:
        said.append(f"CONNECT {q.member} after {q.holdtime}s")
    if q.calltime is not None:
        said.append(f"COMPLETE talk {q.calltime}s")
    if q.abandoned_wait is not None:
        said.append(f"ABANDON after {q.abandoned_wait}s")
    return ", ".join(said)


# --- what the harness sees for itself over AMI --------------------------------------------------------

@dataclass(frozen=True)
class AmiFacts:
    causes: dict[str, str]  # citizen leg -> Cause-txt of its Hangup event
    recorded: set[str]      # calls whose HotlineRecording event came (MixMonitor began)
    node: str               # the node every scenario's call is on


class Watcher:
    """The harness's own AMI connection: rings, answers and citizen hang-ups as they happen."""

    def __init__(self, settings: Any) -> None:
        from core.ami import AmiClient

        self.client = AmiClient(settings, "tools", events="call,agent,user")
        self.seen: list[tuple[float, str, dict[str, Any]]] = []  # (epoch, event name, event)
        self._changed = asyncio.Event()
        self.client.on_event("*", self._on_event)

    def _on_event(self, _manager: Any, event: Any) -> None:
        name = event.get("Event")
        if name in ("AgentCalled", "AgentConnect", "Hangup", "UserEvent"):
            self.seen.append((time.time(), name, dict(event)))
            self._changed.set()

    async def start(self) -> None:
        await self.client.connect()

    async def close(self) -> None:
        await self.client.close()

    def mark(self) -> int:
        return len(self.seen)

    def events(self, since: int, name: str, callers: set[str]) -> list[tuple[float, dict[str, Any]]]:
        found = []
        for at, seen_name, event in self.seen[since:]:
            if seen_name != name:
                continue
            if name == "Hangup" and chan_var(event, "CALL_ID") != event.get("Uniqueid"):
                continue  # only a citizen's own leg
            if event.get("CallerIDNum") in callers or event.get("ConnectedLineNum") in callers:
                found.append((at, event))
        return found

    async def nth(self, since: int, name: str, callers: set[str], n: int, timeout: float = 60,
                  user_event: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            matches = [e for _, e in self.events(since, name, callers)
                       if user_event is None or e.get("UserEvent") == user_event]
            if len(matches) >= n:
                return matches[n - 1]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {name} #{n} of the scenario's calls within {timeout}s")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1))
            except TimeoutError:
                pass


# --- the scenario ---------------------------------------------------------------------------------

def tone_ulaw(target: Path) -> Path:
    """The citizen's voice: a steady tone, headerless 8 kHz u-law as SIPp's rtp_stream wants it."""
    if not target.exists():
        subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-t", "raw", "-e", "u-law", str(target),
                        "synth", "60", "sine", "440"], check=True, capture_output=True)
    return target


class FaultRunner:
    def __init__(self, stack: Any, ami: Any, db: Any, redis: Any, agents: list[Any], watcher: Watcher,
                 tmp: Path) -> None:
        self.stack = stack
        self.ami = ami
        self.db = db
        self.redis = redis
        self.agents = agents
        self.watcher = watcher
        self.speech = tone_ulaw(tmp / "citizen.ulaw")
        self.dirty = False  # the last scenario left something wrong: start the next one from a clean CTI
        self.running_since: float | None = None  # when the part last killed ran again (a new process)

    # -- killing parts --------------------------------------------------
    async def restore(self) -> None:
        """Leave the stack as the next test module expects it: a CTI a fault broke is restarted."""
        await self.fresh_redis()
        if self.dirty:
            await asyncio.to_thread(self._ctl, "restart", "cti")
            await self._wait_back("cti", None, time.time(), Outcome(Fault("cti", "restart", "end")))

    async def fresh_redis(self) -> None:
        """The harness's own pooled Redis connections died with a Redis restart: open new ones."""
        await self.redis.connection_pool.disconnect()

    def _ctl(self, *args: str) -> str:
        result = supervisorctl(self.stack.settings, *args)
        return (result.stdout + result.stderr).strip()

    def kill(self, part: str) -> str:
        pid = self._ctl("pid", part)
        assert pid.isdigit() and int(pid) > 0, f"supervisor has no pid for {part}: {pid}"
        os.kill(int(pid), signal.SIGKILL)
        return pid

    def running_again(self, part: str, old_pid: str | None) -> bool:
        """The supervisor runs the part again, in a new process."""
        pid = self._ctl("pid", part)
        return pid.isdigit() and int(pid) > 0 and pid != old_pid and "RUNNING" in self._ctl("status", part)

    def health(self) -> dict[str, bool]:
        return {h.name: h.ok for h in check_health(self.stack.settings, self.stack.runtime)}

    async def _healthy(self) -> bool:
        return all((await asyncio.to_thread(self.health)).values())

    # -- calls ----------------------------------------------------------
    def _callers(self, count: int) -> list[str]:
        # Numbered per process, not per runner: the fault suite and the upgrade test run in one session and
        # each made its own runner, so both called from the same numbers and found each other's records.
        base = 13900000000 + os.getpid() % 1000 * 100000 + next(_SCENARIOS) * 100
        return [str(base + i) for i in range(count)]

    def _place(self, callers: list[str], hold_ms: int, rate: float = 1.0) -> asyncio.Task[SippResult]:
        port = free_udp_block(self.stack.settings.sip.carrier_address)
        return asyncio.create_task(asyncio.to_thread(
            run_citizen_calls, self.stack.settings, DID, KEYS, callers, self.speech, hold_ms=hold_ms,
            delay_ms=4000, rate=rate, local_port=port, timeout=150))

    async def run(self, fault: Fault) -> Outcome:
        """One scenario: 4 calls (2 answered at once, 2 waiting for them), the fault, one call after it."""
        outcome = Outcome(fault)
        # Scenarios are independent: a CTI a previous fault broke is restarted (what an operator would
        # do), so each row of the table shows only its own fault's damage.
        await self.restore()
        self.dirty = True  # until this scenario is found clean
        await self.fresh_redis()
        books = Books(self.stack)
        mark = self.watcher.mark()
        stream_start = (await self.redis.xrevrange(STREAM, count=1) or [("0-0", {})])[0][0]
        first, second, probe = self._callers(2), self._callers(2), self._callers(1)
        callers = [*first, *second, *probe]
        outcome.calls = len(callers)
        carrier = ender = None
        if fault.part == "asterisk":
            # The citizens a crash cuts off are called back as soon as an agent is free: SIPp answers as
            # their phones on the carrier side, from before the crash on, and the agents end those calls.
            # Room for more calls than citizens: SIPp stops taking INVITEs once it has handled ``calls`` (a
            # stray request counts as one), and an ignored INVITE is a NOANSWER whose retry comes minutes later.
            carrier = carrier_answering(self.stack.settings, calls=4 * len(callers), timeout_s=600)
            ender = asyncio.create_task(self._end_callbacks())
        try:
            groups = [self._place(first, hold_ms=10000)]
            await asyncio.sleep(2)
            groups.append(self._place(second, hold_ms=16000))
            down_from, down_until = await self._inject(fault, mark, callers, outcome)
            if fault.part == "asterisk":
                await self._closed_after_restart(callers, self.running_since or down_until, outcome)
            results = [await g for g in groups]
            # The platform must follow calls again: one more call once every part is back.
            results.append(await self._place(probe, hold_ms=3000))
            for group, result in zip([first, second, probe], results, strict=True):
                outcome.stranded += max(0, len(group) - result.successful - result.failed)  # never finished
                if result.failed and (fault.part != "asterisk" or group is probe):
                    outcome.wrong += result.failed
                    outcome.problem(f"SIPp: {result.failed} call(s) of {group} failed: {result.output[-300:]}")
            await self._compare(outcome, books, callers, mark, stream_start, down_from, down_until)
            self.dirty = not outcome.clean
        finally:
            if ender is not None:
                ender.cancel()
            if carrier is not None:
                if carrier.poll() is None:
                    carrier.kill()
                carrier.wait()
                if not outcome.clean:  # what the citizens' side saw, for a callback that went wrong
                    said = (carrier.stderr.read() if carrier.stderr else b"").decode(errors="replace").strip()
                    outcome.problem(f"carrier SIPp (rc {carrier.returncode}): {said[-400:] or '(nothing)'}")
                await self.cancel_callbacks(callers)
        return outcome

    async def _inject(self, fault: Fault, mark: int, callers: list[str], outcome: Outcome) -> tuple[float, float]:
        """Wait for the moment, then kill the part: back at once (kill) or after OUTAGE_SECONDS (outage).
        Returns when it went down and when it was back."""
        name, n, user_event = {"ring": ("AgentCalled", 1 if fault.mode == "outage" else 2, None),
                               "answer": ("AgentConnect", 2 if fault.part == "asterisk" else 1, None),
                               "hangup": ("Hangup", 1, None),
                               "ivr": ("UserEvent", 2, "HotlineRecording")}[fault.moment]
        await self.watcher.nth(mark, name, set(callers), n, user_event=user_event)
        if fault.moment == "ivr":
            await asyncio.sleep(0.5)  # the recording notice is over: the call sits in the AGI
        down_from = time.time()
        old_pid = await asyncio.to_thread(self.kill, fault.part)
        if fault.mode == "kill":
            return down_from, await self._wait_back(fault.part, old_pid, down_from, outcome)
        # Killed, and kept down: the supervisor is told to leave it stopped (a restart it began is stopped).
        await asyncio.to_thread(self._ctl, "stop", fault.part)  # may wait for a restart it interrupts
        stopped = time.time()
        health_name = HEALTH_NAME.get(fault.part, fault.part)
        while time.time() - stopped < OUTAGE_SECONDS:
            await asyncio.sleep(1)
        # Honest status: at the end of the outage ./hotline status must say the part is down.
        health = await asyncio.to_thread(self.health)
        if health.get(health_name, True):
            outcome.health_honest = False
            outcome.problem(f"status said {fault.part} OK while it was down: {health}")
        started = time.time()
        await asyncio.to_thread(self._ctl, "start", fault.part)
        return down_from, await self._wait_back(fault.part, None, started, outcome)

    async def _end_callbacks(self) -> None:
        """The agents on callbacks hang up once the citizen is on the line (the SIPp phones never do)."""
        while True:
            for channel in await self._live_channels():
                if str(channel.get("Uniqueid", "")).startswith("out-") and channel.get("BridgeId") \
                        and channel.get("ChannelStateDesc") == "Up":
                    try:
                        await control.hangup(self.ami, channel["Channel"])
                    except Exception:  # noqa: BLE001 - already gone
                        pass
            await asyncio.sleep(1)

    async def _closed_after_restart(self, callers: list[str], restarted: float, outcome: Outcome,
                                    within: float = 30) -> None:
        """Issue 13: after Asterisk restarts, no record of a call it had up stays open beyond 30 s."""
        deadline = restarted + within
        while True:
            still_open = [r for r in await self._records(callers) if r.ended_at is None]
            if not still_open:
                outcome.records_closed_seconds = time.time() - restarted
                return
            if time.time() > deadline:
                outcome.wrong += len(still_open)
                outcome.problem(f"{len(still_open)} record(s) still open {within:.0f} s after the restart: "
                                + ", ".join(r.caller_number for r in still_open))
                return
            await asyncio.sleep(0.25)

    async def _wait_back(self, part: str, old_pid: str | None, since: float, outcome: Outcome,
                         timeout: float = 90) -> float:
        """Recovery: from the kill (or the start after an outage) until the part runs again in a new
        process and every part passes its health check."""
        deadline = time.monotonic() + timeout
        self.running_since = None
        while time.monotonic() < deadline:
            running = await asyncio.to_thread(self.running_again, part, old_pid)
            if running and self.running_since is None:
                self.running_since = time.time()  # e.g. Asterisk started again
            if running and await self._healthy():
                now = time.time()
                outcome.recovery_seconds = now - since
                return now
            await asyncio.sleep(0.25)
        outcome.health_honest = False
        outcome.problem(f"not healthy {timeout}s after the fault: {await asyncio.to_thread(self.health)}")
        return time.time()

    # -- comparing ------------------------------------------------------
    async def _records(self, callers: list[str]) -> list[CallRecord]:
        async with self.db.session() as session:
            return list((await session.scalars(select(CallRecord).where(
                CallRecord.caller_number.in_(callers), CallRecord.direction == "inbound"))).all())

    async def _settled(self, callers: list[str], timeout: float) -> list[CallRecord]:
        deadline = time.monotonic() + timeout
        while True:
            rows = await self._records(callers)
            if (len({r.caller_number for r in rows}) == len(callers) and all(r.ended_at for r in rows)) \
                    or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(0.5)

    async def _live_channels(self) -> list[dict[str, Any]]:
        try:
            return await control.live_channels(self.ami)
        except Exception:  # noqa: BLE001 - AMI reconnecting after an Asterisk restart
            return []

    async def _compare(self, outcome: Outcome, books: Books, callers: list[str], mark: int, stream_start: str,
                       down_from: float, down_until: float) -> None:
        fault = outcome.fault
        await self.fresh_redis()
        # Stranded: channels Asterisk still holds for these citizens once every SIPp call is over.
        deadline = time.monotonic() + 20
        while True:
            left = [c for c in await self._live_channels()
                    if (c.get("CallerIDNum") in callers or c.get("ConnectedLineNum") in callers)
                    and not str(c.get("Linkedid", "")).startswith("out-")]  # callbacks: checked below
            if not left or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        if left:
            outcome.stranded += len(left)
            outcome.problem(f"channels left in Asterisk: {[c.get('Channel') for c in left]}")

        settle = 30 if fault.part == "asterisk" else 45
        records = await self._settled(callers, settle)
        by_number: dict[str, list[CallRecord]] = defaultdict(list)
        for record in records:
            by_number[record.caller_number].append(record)
        queue_log = books.queue_calls()
        cdr = {uid: c for uid, c in books.cdr_calls().items() if c.caller in callers}
        users = {a.username: a.id for a in self.agents}
        # Asterisk's own word over AMI, as the harness saw it: each citizen leg's hang-up cause, and the
        # calls whose recording began (a record of one of them must name its file).
        said = AmiFacts(
            causes={e.get("Uniqueid"): e.get("Cause-txt") for _, e in self.watcher.events(mark, "Hangup", set(callers))},
            recorded={e.get("CallId") for _, e in self.watcher.events(mark, "UserEvent", set(callers))
                      if e.get("UserEvent") == "HotlineRecording"},
            node=self.stack.settings.nodes[0].name)

        for number in callers:
            rows = by_number.get(number, [])
            if not rows:
                outcome.missing += 1
                outcome.problem(f"{number}: no call record")
                continue
            if len(rows) > 1:
                outcome.wrong += len(rows) - 1
                outcome.problem(f"{number}: {len(rows)} call records")
            record = rows[0]
            errors = self._check(record, queue_log.get(record.call_id), cdr.get(record.call_id), users, fault, said)
            if errors:
                outcome.wrong += 1
                outcome.problem(f"{number} ({record.call_id}, {_queue_story(queue_log.get(record.call_id))}): "
                                + "; ".join(errors))
        # Every citizen leg Asterisk billed has a record (calls the harness did not count included).
        async with self.db.session() as session:
            recorded = set((await session.scalars(select(CallRecord.call_id).where(
                CallRecord.call_id.in_(list(cdr))))).all())
        for uid, row in cdr.items():
            if uid not in recorded:
                outcome.missing += 1
                outcome.problem(f"CDR {uid} from {row.caller} has no call record")

        await self._check_recordings(outcome, records, queue_log)
        self._check_pops(outcome, await self._pops(stream_start), mark, callers, users, down_from, down_until)
        if fault.part == "asterisk":
            await self._check_callbacks(outcome, records, callers)
        await self._check_originates(outcome, books, callers)
        await self._check_agents(outcome)

    @staticmethod
    def _check(record: CallRecord, q: QueueCall | None, cdr: CdrCall | None, users: dict[str, int],
               fault: Fault, said: AmiFacts) -> list[str]:
        """The record against queue_log, the CDR and AMI, within their whole-second resolution."""
        if record.ended_at is None:
            return [f"still open (state {record.state})"]
        errors = []
        if (record.hotline, record.did, record.direction) != (DID, DID, "inbound"):
            errors.append(f"hotline {record.hotline}, did {record.did}, {record.direction}")
        if record.node != said.node:
            errors.append(f"node {record.node}, not {said.node}")
        # Whole seconds in the CDR; a call already up when a restarted CTI came back is dated by its
        # channel's age (whole seconds too).
        if cdr is not None and not -0.01 <= (record.started_at - cdr.start).total_seconds() <= 2.1:
            errors.append(f"started {record.started_at:%H:%M:%S.%f} vs CDR {cdr.start:%H:%M:%S}")
        cause = said.causes.get(record.call_id)
        if fault.part != "asterisk" and (not record.hangup_cause or (cause and record.hangup_cause != cause)):
            errors.append(f"hangup cause {record.hangup_cause!r}, AMI said {cause!r}")
        if record.call_id in said.recorded and not record.recording_file:
            errors.append("no recording file, though Asterisk began recording the call")
        finished = q is not None and (q.calltime is not None or q.abandoned_wait is not None or q.timed_out)
        if fault.part == "asterisk" and cdr is None and not finished:
            # Cut off by the crash: no COMPLETE, no ABANDON, no CDR. Closed with its own cause.
            if record.hangup_cause != RESTART_CAUSE:
                errors.append(f"hangup cause {record.hangup_cause!r}, not {RESTART_CAUSE}")
            if record.abandoned:
                errors.append("marked abandoned by the citizen")
        if q is not None:
            if q.queue and record.queue != q.queue:
                errors.append(f"queue {record.queue} vs queue_log {q.queue}")
            if q.connected:
                if record.answered_at is None:
                    errors.append(f"not answered, queue_log CONNECT to {q.member}")
                if record.agent_id != users.get(q.username or ""):
                    errors.append(f"agent {record.agent_id} vs queue_log {q.member}")
                if record.abandoned:
                    errors.append("abandoned although answered")
                # queue_log counts whole seconds read from a clock a moment apart from the events' own
                # timestamps (which the record uses): a few milliseconds beyond one second are resolution.
                if record.wait_seconds is None or abs(record.wait_seconds - (q.holdtime or 0)) > 1.1:
                    errors.append(f"wait {record.wait_seconds} vs queue_log {q.holdtime}")
                if q.calltime is not None and (record.talk_seconds is None
                                               or abs(record.talk_seconds - q.calltime) > 1.5):
                    errors.append(f"talk {record.talk_seconds} vs queue_log {q.calltime}")
            elif q.abandoned_wait is not None:
                if not record.abandoned or record.answered_at is not None:
                    errors.append(f"abandoned={record.abandoned} answered={record.answered_at}, queue_log ABANDON")
                if record.wait_seconds is None or abs(record.wait_seconds - q.abandoned_wait) > 1.5:
                    errors.append(f"wait {record.wait_seconds} vs queue_log ABANDON {q.abandoned_wait}")
        if cdr is not None and abs((record.ended_at - cdr.end).total_seconds()) > 1.5:
            errors.append(f"ended {record.ended_at:%H:%M:%S.%f} vs CDR {cdr.end:%H:%M:%S}")
        return errors

    async def _check_recordings(self, outcome: Outcome, records: list[CallRecord],
                                queue_log: dict[str, QueueCall]) -> None:
        wanted = {r.call_id for r in records if r.recording_file or (queue_log.get(r.call_id)
                                                                     and queue_log[r.call_id].connected)}
        store = self.stack.settings.recordings_dir
        # 45 s after the last one filed: a worker compressing a backlog (many calls, a loaded machine) is
        # slow, not losing recordings.
        deadline, filed_before = time.monotonic() + 45, 0

        async def filed() -> dict[str, Recording]:
            async with self.db.session() as session:
                rows = (await session.scalars(select(Recording).where(
                    Recording.call_id.in_(list(wanted)), Recording.kind == "call"))).all()
            return {r.call_id: r for r in rows if r.format != "missing" and (store / r.path).exists()}

        while len(found := await filed()) < len(wanted) and time.monotonic() < deadline:
            if len(found) > filed_before:
                deadline, filed_before = time.monotonic() + 45, len(found)
            await asyncio.sleep(1)
        for call_id in wanted - set(found):
            outcome.recordings_lost += 1
            outcome.problem(f"{call_id}: no filed recording")

    async def _pops(self, since: str) -> list[dict[str, Any]]:
        import json

        entries = await self.redis.xrange(STREAM, min=since)
        return [json.loads(f["data"]) for _, f in entries if f.get("name") == "screen_pop"]

    def _check_pops(self, outcome: Outcome, pops: list[dict[str, Any]], mark: int, callers: list[str],
                    users: dict[str, int], down_from: float, down_until: float) -> None:
        """Every ring of one of our agents' phones (seen by the harness) gave that agent a pop."""
        by_phone = {"8001": users.get("agent1"), "8003": users.get("agent3")}
        popped = {(p.get("call_id"), p.get("agent_id")) for p in pops}
        for at, event in self.watcher.events(mark, "AgentCalled", set(callers)):
            call_id = chan_var(event, "CALL_ID") or event.get("Uniqueid")
            agent_id = by_phone.get(phone_of(event.get("Interface")) or "")
            if (call_id, agent_id) in popped:
                continue
            outcome.pops_lost += 1
            during = down_from - 0.5 <= at <= down_until + 2
            if not (during and outcome.fault.part in POPLESS_WHILE_DOWN):
                outcome.pops_lost_while_up += 1
                outcome.problem(f"no pop for agent {agent_id} ringing for {call_id}")

    async def _check_callbacks(self, outcome: Outcome, records: list[CallRecord], callers: list[str]) -> None:
        """The citizens an Asterisk restart cut off are on the callback list, and each is called back once:
        the agents' phones answer, the carrier (SIPp) answers as the citizen, the harness ends each call."""
        cut = [r for r in records if r.hangup_cause == RESTART_CAUSE]
        if not cut:
            outcome.wrong += 1
            outcome.problem("no call record closed with the Asterisk restart as its cause")
        numbers = {r.caller_number for r in cut}

        async def requests() -> list[CallbackRequest]:
            async with self.db.session() as session:
                return list((await session.scalars(select(CallbackRequest).where(
                    CallbackRequest.call_id.in_([r.call_id for r in cut])))).all())

        listed = {r.number for r in await requests()}
        for number in sorted(numbers - listed):
            outcome.wrong += 1
            outcome.problem(f"{number}: cut off by the restart but not on the callback list")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # the callbacks are dialled (and ended by _end_callbacks)
            if not [r for r in await requests() if r.status in (CallbackStatus.PENDING, CallbackStatus.DIALING)]:
                break
            await asyncio.sleep(1)
        for request in await requests():
            if request.status != CallbackStatus.DONE:
                outcome.wrong += 1
                outcome.problem(f"callback to {request.number}: {request.status} ({request.note})")

    async def _check_originates(self, outcome: Outcome, books: Books, callers: list[str]) -> None:
        """No citizen is dialled twice: outbound calls to each number, in the records and in the CDR."""
        async with self.db.session() as session:
            outbound = (await session.scalars(select(CallRecord).where(
                CallRecord.direction == "outbound", CallRecord.caller_number.in_(callers)))).all()
        recorded: dict[str, int] = defaultdict(int)
        for record in outbound:
            recorded[record.caller_number] += 1
        billed = books.outbound_legs(callers)  # the carrier legs Asterisk dialled, per number
        for number in callers:
            dialled = max(recorded.get(number, 0), len(billed.get(number, ())))
            if dialled > 1:
                outcome.duplicate_originates += dialled - 1
                outcome.problem(f"{number} was dialled {dialled} times")

    async def _check_agents(self, outcome: Outcome) -> None:
        """Each agent's state in Redis agrees with Asterisk's QueueStatus once the calls are over."""
        deadline = time.monotonic() + 25
        while True:
            wrong = await self._agent_mismatches()
            if not wrong or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        outcome.agents_wrong = len(wrong)
        for line in wrong:
            outcome.problem(line)

    async def _agent_mismatches(self) -> list[str]:
        try:
            reply = await self.ami.action({"Action": "QueueStatus"}, as_list=True, timeout=10)
        except Exception as exc:  # noqa: BLE001
            return [f"QueueStatus failed: {exc}"]
        members: dict[str, dict[str, bool]] = {}
        for m in (x for x in reply if x.get("Event") == "QueueMember"):
            phone = phone_of(m.get("StateInterface") or m.get("Location"))
            entry = members.setdefault(phone, {"paused": True, "in_call": False})
            entry["paused"] = entry["paused"] and m.get("Paused") == "1"
            entry["in_call"] = entry["in_call"] or m.get("InCall") == "1"
        wrong = []
        for agent in self.agents:
            session = await control.agent_session(self.redis, agent.id) or {}
            member = members.get(session.get("phone") or "")
            if member is None:
                wrong.append(f"{agent.username}: Redis {session.get('state')}, not a queue member in Asterisk")
                continue
            expected = "on_call" if member["in_call"] else "paused" if member["paused"] else "ready"
            if session.get("state") != expected:
                wrong.append(f"{agent.username}: Redis says {session.get('state')}, Asterisk says {expected}")
        return wrong

    async def cancel_callbacks(self, numbers: list[str]) -> None:
        """Leave no callback request behind for the next scenario's agents."""
        from sqlalchemy import update

        async with self.db.transaction() as session:
            await session.execute(update(CallbackRequest).where(
                CallbackRequest.number.in_(numbers),
                CallbackRequest.status.in_([CallbackStatus.PENDING, CallbackStatus.DIALING]))
                .values(status=CallbackStatus.CANCELLED))

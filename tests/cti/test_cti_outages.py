"""Issue 13 items 1, 2 and 6: the CTI's books stay right through a Redis outage, a stalled consumer and its
own outage, checked against Asterisk's own queue_log.

The Redis outage runs last: on the code before the fix it killed the consumer for good, and the
other tests would not show their own failure.

Citizens are real calls through the hotline (Local/ channels keying the IVR), answered by SIPp agent
phones. Every record is compared with what Asterisk wrote itself: the queue_log line of the answer
(CONNECT: time, member name, hold time) and of the end (COMPLETECALLER/COMPLETEAGENT: call time), and
the CDR's end of the call (Master.csv), read here with a plain split, independent of the CTI's own
reader. Both books have whole seconds, so a value is right when it is within Asterisk's second of it.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import sqlite3
import time
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from cli.democall import originate_citizen
from cli.stack import check_health, supervisorctl
from core.ami import AmiClient
from core.events import STREAM
from core.models import User
from cti import control
from cti.models import CallRecord, CallState
from quality import kpi
from recordings.models import Recording
from sipdrivers.phones import agents_on_phones

pytestmark = pytest.mark.stack

COMPLAINT_KEYS = "21"  # 2 = complaint, 1 = travel agencies: 12301-complaint, served by agent1 and agent3


# --- Asterisk's own books, read independently ------------------------------------------------------

@dataclass
class QueueFacts:
    queue: str
    entered: int
    connected: int | None = None
    member: str | None = None
    holdtime: int | None = None
    completed: int | None = None
    calltime: int | None = None
    abandoned: bool = False


def queue_log_facts(stack, call_id: str) -> QueueFacts | None:
    path = stack.asterisk_path(stack.runtime.inside("log", "queue_log"))
    facts = None
    for line in path.read_text(errors="replace").splitlines():
        fields = line.split("|")
        if len(fields) < 5 or fields[1] != call_id:
            continue
        stamp, event, data = int(fields[0]), fields[4], fields[5:]
        if event == "ENTERQUEUE" and facts is None:
            facts = QueueFacts(queue=fields[2], entered=stamp)
        elif facts is None:
            continue
        elif event == "CONNECT" and facts.connected is None:
            facts.connected, facts.member, facts.holdtime = stamp, fields[3], int(data[0])
        elif event in ("COMPLETECALLER", "COMPLETEAGENT"):
            facts.completed, facts.calltime = stamp, int(data[1])
        elif event in ("ABANDON", "EXITWITHTIMEOUT"):
            facts.abandoned = True
    return facts


def cdr_end(stack, call_id: str) -> float | None:
    """When Master.csv says the call ended (its rows with the call as party A; whole seconds, UTC)."""
    path = stack.asterisk_path(stack.runtime.inside("log", "cdr-csv", "Master.csv"))
    rows = csv.reader(io.StringIO(path.read_text(errors="replace"))) if path.exists() else []
    ends = [datetime.strptime(row[11], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
            for row in rows if len(row) > 16 and row[16] == call_id]  # 11: end, 16: uniqueid
    return max(ends) if ends else None


async def assert_matches_queue_log(stack, db, record: CallRecord) -> QueueFacts:
    facts = queue_log_facts(stack, record.call_id)
    assert facts is not None and facts.connected and facts.completed, f"queue_log of {record.call_id}: {facts}"
    username = re.search(r"\(([^()]+)\)$", facts.member).group(1)
    async with db.session() as session:
        agent = await session.scalar(select(User).where(User.username == username))
    where = f"record of {record.caller_number} ({record.source}) vs queue_log {facts}"
    assert record.state == CallState.ENDED and record.ended_at is not None, where
    assert record.queue == facts.queue, where
    assert record.answered_at is not None and not record.abandoned, where
    # queue_log truncates to the second: the real moment lies in [t, t + 1).
    assert facts.connected - 0.01 <= record.answered_at.timestamp() <= facts.connected + 1.01, where
    assert record.agent_id == agent.id, where
    assert record.agent_extension and record.agent_extension.startswith("80"), where
    assert record.wait_seconds is not None and abs(record.wait_seconds - facts.holdtime) <= 1.01, where
    assert record.talk_seconds is not None and abs(record.talk_seconds - facts.calltime) <= 1.51, where
    for _ in range(40):  # Asterisk writes the CDR as the channel goes away
        ended = cdr_end(stack, record.call_id)
        if ended is not None:
            break
        await asyncio.sleep(0.25)
    assert ended is not None and ended - 0.01 <= record.ended_at.timestamp() <= ended + 1.01, (ended, where)
    return facts


# --- helpers -----------------------------------------------------------------------------------------

async def _record(db, call_id: str) -> CallRecord | None:
    async with db.session() as session:
        return await session.scalar(select(CallRecord).where(CallRecord.call_id == call_id))


async def _cti_health(stack) -> tuple[bool, str]:
    health = await asyncio.to_thread(check_health, stack.settings, stack.runtime)
    cti = next(h for h in health if h.name == "cti")
    return cti.ok, cti.detail


async def _wait_healthy(stack, waiter, timeout: float, what: str) -> None:
    async def healthy():
        ok, _ = await _cti_health(stack)
        return ok

    await waiter(healthy, timeout=timeout, what=what)


async def _hang_up(ami, call_id: str) -> None:
    channel = next(c["Channel"] for c in await control.live_channels(ami) if c.get("Uniqueid") == call_id)
    await control.hangup(ami, channel)


async def _answered_in_asterisk(stack, call_id: str, waiter) -> QueueFacts:
    async def connected():
        facts = queue_log_facts(stack, call_id)
        return facts if facts and facts.connected else None

    return await waiter(connected, timeout=40, what=f"queue_log CONNECT of {call_id}")


async def _ended_in_asterisk(stack, call_id: str, waiter) -> QueueFacts:
    async def completed():
        facts = queue_log_facts(stack, call_id)
        return facts if facts and facts.completed else None

    return await waiter(completed, timeout=20, what=f"queue_log COMPLETE* of {call_id}")


async def _settled(db, call_id: str, waiter, timeout: float = 60) -> CallRecord:
    """The record closed and answered (the CTI may still be repairing it from Asterisk's books)."""
    async def check():
        record = await _record(db, call_id)
        return record if record and record.ended_at and record.answered_at and record.agent_id \
            and record.talk_seconds is not None else None

    try:
        return await waiter(check, timeout=timeout, what=f"a closed, answered record of {call_id}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; record: {_describe(await _record(db, call_id))}") from None


def _describe(record: CallRecord | None) -> str:
    if record is None:
        return "none"
    return (f"answered_at={record.answered_at} agent={record.agent_id} queue={record.queue} "
            f"ended_at={record.ended_at} abandoned={record.abandoned} wait={record.wait_seconds} "
            f"talk={record.talk_seconds} source={record.source}")


async def _reconnect(redis) -> None:
    """The test's own pooled connections died with Redis: drop them."""
    with suppress(Exception):
        await redis.ping()
    await redis.ping()


class LeadDesk:
    """The real desk over HTTP, logged in as the team lead: the wallboard and the KPI report."""

    def __init__(self, stack) -> None:
        self.base = stack.settings.web_url
        self.password = stack.settings.secrets["demo_password"]
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def __aenter__(self) -> LeadDesk:
        page = await (await self.http.get(f"{self.base}/login")).text()
        token = re.search(r'name="_csrf" value="([^"]+)"', page).group(1)
        response = await self.http.post(f"{self.base}/login", data={
            "username": "lead1", "password": self.password, "_csrf": token}, allow_redirects=False)
        assert response.status == 302, await response.text()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.http.close()

    async def wallboard_abandoned_callers(self) -> list[str]:
        response = await self.http.get(f"{self.base}/api/wallboard")
        assert response.status == 200
        return [row["caller"] for row in (await response.json())["abandoned"]]

    async def report(self) -> dict[str, str]:
        response = await self.http.get(f"{self.base}/report/export", params={"format": "csv", "hotline": "12301"})
        assert response.status == 200
        rows = csv.reader(io.StringIO((await response.read()).decode("utf-8-sig")))
        return {row[0]: row[1] for row in rows if len(row) >= 2}


@pytest.fixture(autouse=True)
async def no_call_left_up(stack, ami):
    """A failed test must not leave its citizen talking to an agent phone the next test needs."""
    yield
    for channel in await control.live_channels(ami):
        with suppress(Exception):
            await control.hangup(ami, channel["Channel"])


@pytest.fixture
async def two_agents(stack, ami, db, redis, no_agents):
    async with agents_on_phones(stack.settings, stack.runtime, ami, redis, db,
                                {"agent1": "8001", "agent3": "8003"}) as agents:
        yield agents


@pytest.fixture
async def agent1(stack, ami, db, redis, no_agents):
    async with agents_on_phones(stack.settings, stack.runtime, ami, redis, db, {"agent1": "8001"}) as (agent,):
        yield agent


async def _queued(db, call_id: str, waiter) -> CallRecord:
    async def check():
        record = await _record(db, call_id)
        return record if record and record.queued_at else None

    return await waiter(check, timeout=40, what=f"{call_id} queued")


# --- item 6: waits to the event timestamps -----------------------------------------------------------

async def test_c_wait_time_has_the_precision_of_the_ami_event_timestamps(stack, ami, db, agent1, waiter):
    watcher = AmiClient(stack.settings, "tools")
    seen: dict[str, dict[str, Any]] = {}
    watcher.on_event("QueueCallerJoin", lambda _m, e: seen.setdefault(f"join:{e.get('Uniqueid')}", dict(e)))
    watcher.on_event("AgentConnect", lambda _m, e: seen.setdefault(f"connect:{e.get('Uniqueid')}", dict(e)))
    await watcher.connect()
    try:
        call = await originate_citizen(ami, "12301", keys=COMPLAINT_KEYS, caller="13700000331", hold_seconds=300)

        async def connected():
            return seen.get(f"connect:{call.call_id}")

        connect = await waiter(connected, timeout=40, what="AgentConnect of the call")
        join = seen[f"join:{call.call_id}"]
        await asyncio.sleep(1)
        await _hang_up(ami, call.call_id)
        record = await _settled(db, call.call_id, waiter)
    finally:
        await watcher.close()
    waited = float(connect["Timestamp"]) - float(join["Timestamp"])
    assert abs(record.wait_seconds - waited) < 0.005, (record.wait_seconds, waited, connect.get("HoldTime"))


# --- item 2: answered while the CTI was down ---------------------------------------------------------

@pytest.mark.parametrize("ends", ["after_the_cti_is_back", "during_the_outage"])
async def test_b_a_call_answered_while_the_cti_is_down_is_answered_not_abandoned(
        stack, ami, db, redis, agent1, waiter, ends):
    caller = "1370000032" + ("1" if ends == "during_the_outage" else "2")
    async with LeadDesk(stack) as lead:
        before = await lead.report()
        await control.agent_pause(ami, redis, agent1, "break")  # the citizen has to wait
        call = await originate_citizen(ami, "12301", keys=COMPLAINT_KEYS, caller=caller, hold_seconds=300)
        await _queued(db, call.call_id, waiter)
        supervisorctl(stack.settings, "stop", "cti")
        try:
            await control.agent_ready(ami, redis, agent1)  # answered while nobody follows
            await _answered_in_asterisk(stack, call.call_id, waiter)
            await asyncio.sleep(2)
            if ends == "during_the_outage":
                await _hang_up(ami, call.call_id)
                await _ended_in_asterisk(stack, call.call_id, waiter)
        finally:
            supervisorctl(stack.settings, "start", "cti")
        if ends == "after_the_cti_is_back":
            await _wait_healthy(stack, waiter, 30, "the CTI back")
            await asyncio.sleep(2)
            await _hang_up(ami, call.call_id)
            await _ended_in_asterisk(stack, call.call_id, waiter)
        record = await _settled(db, call.call_id, waiter)
        await assert_matches_queue_log(stack, db, record)
        assert record.agent_id == agent1.id
        assert caller not in await lead.wallboard_abandoned_callers()
        after = await lead.report()
    abandoned, answered = kpi.OUTCOME_LABELS[kpi.Outcome.ABANDONED_QUEUE], kpi.OUTCOME_LABELS[kpi.Outcome.ANSWERED]
    assert int(after.get(abandoned, 0)) == int(before.get(abandoned, 0)), (before, after)
    assert int(after.get(answered, 0)) == int(before.get(answered, 0)) + 1, (before, after)


def cdr_rows(stack, call_id: str) -> list[list[str]]:
    path = stack.asterisk_path(stack.runtime.inside("log", "cdr-csv", "Master.csv"))
    rows = csv.reader(io.StringIO(path.read_text(errors="replace"))) if path.exists() else []
    return [row for row in rows if len(row) > 16 and row[16] == call_id]  # 16: uniqueid


def cdr_start(stack, call_id: str) -> float | None:
    """When Master.csv says the call began (its earliest row with the call as party A)."""
    starts = [datetime.strptime(row[9], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
              for row in cdr_rows(stack, call_id)]  # 9: start
    return min(starts) if starts else None


async def assert_complete(stack, db, record: CallRecord, caller: str, hangup_causes: dict[str, str],
                          waiter) -> None:
    """Issue 20: everything a call record says about a call, each against Asterisk's own account: the
    caller and hotline, its start (CDR), the cause AMI gave for the citizen's hang-up, the IVR's findings,
    the node, and its recording filed and on disk."""
    where = (f"record of {caller}: {_describe(record)} hotline={record.hotline} cause={record.hangup_cause} "
             f"ivr={record.ivr_path} recording={record.recording_file}; CDR {cdr_rows(stack, record.call_id)}")
    assert (record.caller_number, record.hotline, record.did, record.direction) == (caller, "12301", "12301",
                                                                                    "inbound"), where
    assert record.node == stack.settings.nodes[0].name, where
    # Whole seconds in the CDR; a call already up when the CTI came back is dated by its channel's age.
    started = cdr_start(stack, record.call_id)
    assert started is not None and started - 0.01 <= record.started_at.timestamp() <= started + 2.1, (started, where)
    assert record.hangup_cause and record.hangup_cause == hangup_causes.get(record.call_id), (hangup_causes, where)
    assert record.business == "complaint" and record.ivr_path, where
    assert record.recording_file and record.recording_file.endswith(f"{record.call_id}.raw"), where

    async def filed():
        async with db.session() as session:
            row = await session.scalar(select(Recording).where(Recording.call_id == record.call_id,
                                                                Recording.kind == "call"))
        return row if row and row.format not in ("missing", "none") \
            and (stack.settings.recordings_dir / row.path).exists() else None

    await waiter(filed, timeout=60, what=f"the recording of {caller} filed")


def queue_log_events(stack, call_id: str, event: str) -> list[list[str]]:
    path = stack.asterisk_path(stack.runtime.inside("log", "queue_log"))
    return [fields for fields in (line.split("|") for line in path.read_text(errors="replace").splitlines())
            if len(fields) > 4 and fields[1] == call_id and fields[4] == event]


async def test_b_a_transfer_made_while_the_cti_is_down_is_on_the_record(stack, ami, db, redis, two_agents, waiter):
    agent1, agent3 = two_agents
    await control.agent_pause(ami, redis, agent3, "meeting")  # agent1 answers; agent3 takes the transfer
    call = await originate_citizen(ami, "12301", keys=COMPLAINT_KEYS, caller="13700000341", hold_seconds=300)
    await _answered_in_asterisk(stack, call.call_id, waiter)
    supervisorctl(stack.settings, "stop", "cti")
    try:
        await control.blind_transfer(ami, await control.agent_channel(ami, "8001"), "8003")

        async def transferred():
            return queue_log_events(stack, call.call_id, "BLINDTRANSFER") and \
                await control.agent_channel(ami, "8003")

        await waiter(transferred, timeout=20, what="the citizen transferred to 8003")
    finally:
        supervisorctl(stack.settings, "start", "cti")
    await _wait_healthy(stack, waiter, 30, "the CTI back")
    await asyncio.sleep(1)
    await _hang_up(ami, call.call_id)
    record = await _settled(db, call.call_id, waiter)
    facts = queue_log_facts(stack, call.call_id)
    (line,) = queue_log_events(stack, call.call_id, "BLINDTRANSFER")
    where = f"record {_describe(record)} transfers={record.transfers} vs queue_log {line}"
    assert [(t["kind"], t["to"]) for t in record.transfers] == [("blind", "8003")], where
    assert record.agent_id == agent1.id and not record.abandoned, where
    assert facts.connected - 0.01 <= record.answered_at.timestamp() <= facts.connected + 1.01, where
    assert abs(record.wait_seconds - facts.holdtime) <= 1.01, where


# --- issue 20: a CTI restart (an upgrade) leaves every record complete ----------------------------

async def test_b_calls_that_begin_while_the_cti_is_down_have_complete_records(
        stack, ami, db, redis, two_agents, waiter):
    """The window of a CTI restart, made wide: stopped, one citizen calls, is answered and hangs up, another
    calls and is answered; started again, the second hangs up. Both records must be as complete as one the
    CTI followed live (before the fix the first had no hang-up cause and its recording was never filed)."""
    causes: dict[str, str] = {}  # citizen leg -> the cause Asterisk gave in its own Hangup event
    watcher = AmiClient(stack.settings, "tools")
    watcher.on_event("Hangup", lambda _m, e: causes.__setitem__(e.get("Uniqueid"), e.get("Cause-txt")))
    await watcher.connect()
    try:
        supervisorctl(stack.settings, "stop", "cti")
        try:
            inside = await originate_citizen(ami, "12301", keys=COMPLAINT_KEYS, caller="13700000331",
                                             hold_seconds=300)
            await _answered_in_asterisk(stack, inside.call_id, waiter)
            across = await originate_citizen(ami, "12301", keys=COMPLAINT_KEYS, caller="13700000332",
                                             hold_seconds=300)
            await _answered_in_asterisk(stack, across.call_id, waiter)
            await asyncio.sleep(2)
            await _hang_up(ami, inside.call_id)
            await _ended_in_asterisk(stack, inside.call_id, waiter)
        finally:
            supervisorctl(stack.settings, "start", "cti")
        await _wait_healthy(stack, waiter, 90, "the CTI back")  # a loaded machine starts it slowly
        await asyncio.sleep(2)
        await _hang_up(ami, across.call_id)
        await _ended_in_asterisk(stack, across.call_id, waiter)
        for call in (inside, across):
            record = await _settled(db, call.call_id, waiter)
            await assert_matches_queue_log(stack, db, record)
            await assert_complete(stack, db, record, call.caller, causes, waiter)
    finally:
        await watcher.close()


# --- item 1: a stalled consumer is reported and its work repaired -----------------------------------

def _lock_database(path: Path, seconds: float) -> None:
    """Hold SQLite's write lock, as a stuck writer would: every writer waits (busy_timeout) then fails."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        time.sleep(seconds)
        conn.rollback()
    finally:
        conn.close()


async def test_a_stalled_consumer_makes_the_cti_unhealthy_and_its_lost_work_is_repaired(
        stack, ami, db, redis, agent1, waiter):
    url = stack.settings.database_url
    assert url.startswith("sqlite"), "the stall is made with SQLite's write lock"
    path = Path(url.split("///", 1)[1])
    await control.agent_pause(ami, redis, agent1, "break")
    call = await originate_citizen(ami, "12301", keys=COMPLAINT_KEYS, caller="13700000311", hold_seconds=300)
    await _queued(db, call.call_id, waiter)
    lock = asyncio.create_task(asyncio.to_thread(_lock_database, path, 25))
    try:
        await asyncio.sleep(0.5)
        await control.agent_ready(ami, redis, agent1)  # the agent answers while the CTI cannot write

        async def unhealthy():
            ok, detail = await _cti_health(stack)
            return detail if not ok else None

        await _answered_in_asterisk(stack, call.call_id, waiter)
        await waiter(unhealthy, timeout=20, what="status to show the stalled CTI as unhealthy")
    finally:
        await lock

    await _wait_healthy(stack, waiter, 60, "the CTI healthy again")
    await asyncio.sleep(1)
    await _hang_up(ami, call.call_id)
    await _ended_in_asterisk(stack, call.call_id, waiter)
    await assert_matches_queue_log(stack, db, await _settled(db, call.call_id, waiter))


# --- item 1: Redis down for 15 s --------------------------------------------------------------------

async def test_a_redis_outage_loses_no_call_and_the_cti_stays_honest(stack, ami, db, redis, two_agents, waiter):
    first = await originate_citizen(ami, "12301", keys=COMPLAINT_KEYS, caller="13700000301", hold_seconds=300)

    async def talking():
        record = await _record(db, first.call_id)
        return record if record and record.answered_at else None

    await waiter(talking, timeout=40, what="the first call answered")
    supervisorctl(stack.settings, "stop", "redis")
    stopped = time.monotonic()
    try:
        # During the outage: a second call comes in (answered by the other agent while Redis is down),
        # the first call ends, a third call comes in and is answered around Redis' return.
        second = await originate_citizen(ami, "12301", keys=COMPLAINT_KEYS, caller="13700000302",
                                         hold_seconds=300)
        await asyncio.sleep(3)
        ok, detail = await _cti_health(stack)
        assert not ok, f"status said the CTI is fine with Redis down: {detail}"
        await asyncio.sleep(3)
        await _hang_up(ami, first.call_id)
        await _ended_in_asterisk(stack, first.call_id, waiter)
        await asyncio.sleep(max(0.0, 10 - (time.monotonic() - stopped)))
        third = await originate_citizen(ami, "12301", keys=COMPLAINT_KEYS, caller="13700000303",
                                        hold_seconds=300, delay_seconds=4)
        await asyncio.sleep(max(0.0, 15 - (time.monotonic() - stopped)))
    finally:
        supervisorctl(stack.settings, "start", "redis")
    redis_back = time.time()
    await _reconnect(redis)
    last = (await redis.xrevrange(STREAM, count=1) or [("0-0", {})])[0][0]

    await _wait_healthy(stack, waiter, 30, "the CTI healthy again after Redis came back")
    await _answered_in_asterisk(stack, second.call_id, waiter)
    await _answered_in_asterisk(stack, third.call_id, waiter)
    await asyncio.sleep(2)
    for call in (second, third):
        await _hang_up(ami, call.call_id)
    for call in (first, second, third):
        await _ended_in_asterisk(stack, call.call_id, waiter)
        record = await _settled(db, call.call_id, waiter)
        await assert_matches_queue_log(stack, db, record)
    # While the CTI says it is healthy it really follows calls: the third call, rung after Redis was back
    # or just before, has its pop (the pop itself cannot be delivered while Redis is down).
    if queue_log_facts(stack, third.call_id).connected >= redis_back + 2:
        pops = [fields for _id, fields in await redis.xrange(STREAM, min=last) if fields["name"] == "screen_pop"]
        assert any(third.call_id in fields["data"] for fields in pops), "no pop for the call after the outage"
    # Agent states are Asterisk's again: both agents free (their calls ended, wrap-up is 1 s).

    async def both_ready():
        sessions = [await control.agent_session(redis, a.id) for a in two_agents]
        return sessions if all(s and s["state"] == "ready" for s in sessions) else None

    try:
        await waiter(both_ready, timeout=20, what="both agents ready after their calls")
    except AssertionError:
        raise AssertionError(f"agent sessions: {[await control.agent_session(redis, a.id) for a in two_agents]}")\
            from None

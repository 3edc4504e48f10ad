"""Asterisk crash recovery (cti/crash.py) on SQLite and PostgreSQL, with Asterisk's answers faked.

The real crash runs in test_faults.py (Asterisk SIGKILLed under the supervisor with calls up); here
the rules: only a changed start moment means a restart; a record whose call is still up, or whose
call ended in the CDR before the crash, is not the crash's; each citizen is put on the callback list
once, with their place in line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, select

from core.db import Database
from cti.callbacks import LOST_NOTE, LOST_SOURCE
from cti.crash import (
    ASTERISK_STARTED,
    CALLBACK_NOTE,
    LOST_CAUSE,
    RESTART_CAUSE,
    CrashRecovery,
    close_lost_calls,
)
from cti.models import CallbackRequest, CallbackStatus, CallRecord, CallState


class FakeAmi:
    def __init__(self, started: str, live: list[str] = ()) -> None:
        self.started = started
        self.live = list(live)

    async def action(self, action: dict[str, Any], **_: Any) -> Any:
        if action["Action"] == "CoreStatus":
            date, clock = self.started.split()
            return {"Response": "Success", "CoreStartupDate": date, "CoreStartupTime": clock}
        assert action["Action"] == "CoreShowChannels"
        return [{"Event": "CoreShowChannel", "Uniqueid": uid, "Context": "hotline-queue"} for uid in self.live]


class FakeRedis:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.down = False

    async def get(self, key: str) -> str | None:
        if self.down:
            raise ConnectionError("Redis is down")
        return self.values.get(key)

    async def set(self, key: str, value: str) -> None:
        if self.down:
            raise ConnectionError("Redis is down")
        self.values[key] = value


class Log:
    def warning(self, *_: Any, **__: Any) -> None: ...


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    async with database.transaction() as session:
        await session.execute(delete(CallbackRequest))
        await session.execute(delete(CallRecord))
    yield database
    await database.close()


def _cdr(path: Path, uniqueid: str, caller: str, start: datetime, end: datetime) -> Path:
    fmt = "%Y-%m-%d %H:%M:%S"
    row = ["", caller, "12301", "hotline-queue", caller, "PJSIP/carrier-1", "", "Queue", "", start.strftime(fmt),
           start.strftime(fmt), end.strftime(fmt), "30", "30", "ANSWERED", "DOCUMENTATION", uniqueid, ""]
    path.write_text(",".join(f'"{v}"' for v in row) + "\n")
    return path


async def test_a_restart_closes_the_calls_it_cut_off_and_lists_the_citizens_for_a_callback(db, tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    before, restart = now - timedelta(minutes=5), now - timedelta(seconds=20)
    async with db.transaction() as session:
        session.add_all([
            CallRecord(call_id="talking", caller_number="13800000001", hotline="12301", queue="12301-complaint",
                       started_at=before, queued_at=before + timedelta(seconds=20),
                       answered_at=before + timedelta(seconds=30), agent_id=1, state=CallState.TALKING),
            CallRecord(call_id="waiting", caller_number="13800000002", hotline="12301", queue="12301-complaint",
                       started_at=before, queued_at=before + timedelta(seconds=40), state=CallState.QUEUED),
            CallRecord(call_id="in-ivr", caller_number="13800000003", hotline="12365", started_at=before,
                       state=CallState.IVR),
            CallRecord(call_id="ended-before", caller_number="13800000004", hotline="12301", started_at=before,
                       state=CallState.TALKING),
            CallRecord(call_id="still-up", caller_number="13800000005", hotline="12301", started_at=before,
                       state=CallState.IVR),
        ])
    cdr = _cdr(tmp_path / "Master.csv", "ended-before", "13800000004", before, before + timedelta(seconds=50))
    redis = FakeRedis()
    recovery = CrashRecovery(db, redis, cdr, Log())
    fmt = "%Y-%m-%d %H:%M:%S"
    redis.values[ASTERISK_STARTED] = (before - timedelta(hours=1)).strftime(fmt)

    # Same start moment: a reconnect, not a restart; nothing is touched.
    ami = FakeAmi((before - timedelta(hours=1)).strftime(fmt), live=["still-up"])
    assert await recovery.after_connect(ami) == 0
    # Asterisk started again: the three calls it had up are closed, by the restart.
    ami.started = restart.strftime(fmt)
    assert await recovery.after_connect(ami) == 3
    assert redis.values[ASTERISK_STARTED] == restart.strftime(fmt)
    assert await recovery.after_connect(ami) == 0  # once only

    async with db.session() as session:
        records = {r.call_id: r for r in (await session.scalars(select(CallRecord))).all()}
        requests = {r.call_id: r for r in (await session.scalars(select(CallbackRequest))).all()}
    for call_id in ("talking", "waiting", "in-ivr"):
        record = records[call_id]
        assert record.hangup_cause == RESTART_CAUSE and record.state == CallState.ENDED
        assert record.ended_at == restart and not record.abandoned
    assert records["talking"].talk_seconds == (restart - records["talking"].answered_at).total_seconds()
    assert records["waiting"].wait_seconds == (restart - records["waiting"].queued_at).total_seconds()
    for call_id in ("ended-before", "still-up"):  # reconciliation's (CDR) and the live tracker's
        assert records[call_id].ended_at is None and records[call_id].hangup_cause is None
    assert set(requests) == {"talking", "waiting", "in-ivr"}
    assert requests["waiting"].number == "13800000002" and requests["waiting"].queue == "12301-complaint"
    assert requests["waiting"].position_at == records["waiting"].queued_at  # keeps the place in line
    assert requests["in-ivr"].queue == "12365-general" and requests["in-ivr"].note == CALLBACK_NOTE


async def test_a_restart_is_noticed_with_redis_down_and_without_a_remembered_start(db, tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    fmt = "%Y-%m-%d %H:%M:%S"
    async with db.transaction() as session:
        session.add_all([
            CallRecord(call_id="old", caller_number="13800000011", hotline="12301",
                       started_at=now - timedelta(minutes=3), state=CallState.IVR),
            CallRecord(call_id="new", caller_number="13800000012", hotline="12301",
                       started_at=now - timedelta(seconds=5), state=CallState.IVR),
        ])
    redis = FakeRedis()
    recovery = CrashRecovery(db, redis, tmp_path / "Master.csv", Log())
    # Nothing remembered (Redis lost it): only a call that began before Asterisk did can be its victim;
    # "new" began after the start and is not live in this fake only because the fake says so.
    ami = FakeAmi((now - timedelta(minutes=1)).strftime(fmt))
    assert await recovery.after_connect(ami) == 1
    # Redis down: the start moment this process saw still tells a restart from a reconnect.
    redis.down = True
    ami.started = now.strftime(fmt)
    assert await recovery.after_connect(ami) == 1
    async with db.session() as session:
        causes = dict((await session.execute(select(CallRecord.call_id, CallRecord.hangup_cause))).all())
    assert causes == {"old": RESTART_CAUSE, "new": RESTART_CAUSE}


async def test_a_lost_node_s_open_calls_are_closed_as_node_lost_with_one_callback_task_per_number(db):
    """cti.crash.close_lost_calls (the node that stays down; the real kill is tests/cti/test_kamailio_cluster.py):
    only that node's open records, each with its own cause; the callback task is the number's one of the day,
    shared with the missed-call tasks; a callback being dialled from the node is put back."""
    zone = ZoneInfo("Asia/Shanghai")
    now = datetime.now(UTC).replace(microsecond=0)
    lost_at, before = now - timedelta(seconds=10), now - timedelta(minutes=2)
    day = before.astimezone(zone).date().isoformat()

    def call(call_id: str, number: str, node: str = "node1", **extra: Any) -> CallRecord:
        return CallRecord(call_id=call_id, caller_number=number, hotline="12301", started_at=before, node=node,
                          direction="inbound", **extra)

    async with db.transaction() as session:
        session.add_all([
            call("talking", "13800000021", answered_at=before + timedelta(seconds=30), queued_at=before,
                 agent_id=7, state=CallState.TALKING),
            call("waiting", "13800000022", queued_at=before + timedelta(seconds=5), state=CallState.QUEUED),
            call("elsewhere", "13800000023", node="node2", state=CallState.IVR),
            call("ended", "13800000024", ended_at=before + timedelta(seconds=9), state=CallState.ENDED,
                 hangup_cause="Normal Clearing"),
            CallRecord(call_id="dialling", caller_number="13800000025", started_at=before, node="node1",
                       direction="outbound", state=CallState.TALKING),
            # The number of "waiting" already has today's task: answered since (done), it is opened again.
            CallbackRequest(call_id="earlier", number="13800000022", source="missed", missed_day=day,
                            position_at=before - timedelta(hours=1), status=CallbackStatus.DONE, note="漏接回拨"),
            CallbackRequest(call_id="queued-cb", number="13800000025", source="queue", position_at=before,
                            status=CallbackStatus.DIALING, attempts=1, outbound_call_id="dialling"),
        ])
    closed = await close_lost_calls(db, "node1", lost_at, max_attempts=3, zone=zone)
    assert {r.call_id for r in closed} == {"talking", "waiting", "dialling"}
    async with db.session() as session:
        records = {r.call_id: r for r in (await session.scalars(select(CallRecord))).all()}
        tasks = {r.number: r for r in (await session.scalars(select(CallbackRequest))).all()}
    for call_id in ("talking", "waiting", "dialling"):
        record = records[call_id]
        assert (record.hangup_cause, record.state, record.ended_at, record.abandoned) == \
            (LOST_CAUSE, CallState.ENDED, lost_at, False)
    assert records["talking"].talk_seconds == (lost_at - records["talking"].answered_at).total_seconds()
    assert records["waiting"].wait_seconds == (lost_at - records["waiting"].queued_at).total_seconds()
    assert records["elsewhere"].ended_at is None and records["ended"].hangup_cause == "Normal Clearing"
    assert (tasks["13800000021"].source, tasks["13800000021"].missed_day, tasks["13800000021"].note) == \
        (LOST_SOURCE, day, LOST_NOTE)
    again = tasks["13800000022"]  # still one task for the number that day
    assert (again.call_id, again.status, again.note) == ("earlier", CallbackStatus.PENDING, f"漏接回拨 {LOST_NOTE}")
    assert "13800000023" not in tasks and "13800000024" not in tasks
    assert tasks["13800000025"].status == CallbackStatus.PENDING  # to be dialled again, from a live node
    # Closed ones stay closed: the same loss seen again (or the node's return) closes nothing more.
    assert await close_lost_calls(db, "node1", now, max_attempts=3, zone=zone) == []

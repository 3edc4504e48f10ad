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

import pytest
from sqlalchemy import delete, select

from core.db import Database
from cti.crash import ASTERISK_STARTED, CALLBACK_NOTE, RESTART_CAUSE, CrashRecovery
from cti.models import CallbackRequest, CallRecord, CallState


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

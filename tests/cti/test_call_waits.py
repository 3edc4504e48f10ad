"""The two waits the service-quality report sums (call_records.arrival_wait, answer_wait; issue 16's report
bench) are stored by the writers of the call record: the live tracker from Asterisk's events, and
reconciliation when it corrects an old call from queue_log. A migrated SQLite file (the platform's
schema), no stack; the report's SQL path reads these columns, its row-by-row path the timestamps
(tests/tickets/test_kpi.py checks both against hand computations)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from cli.stack import migrate
from core.db import Database
from core.settings import Settings, load_settings
from cti.books import QueueCall
from cti.models import CallRecord
from cti.reconcile import apply_queue_facts
from cti.tracker import CallTracker
from tests.cti.test_no_silent_loss import Log

T0 = 1717257599.5  # 2024-06-01 23:59:59.5 in Shanghai: the call is answered after local midnight


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = load_settings(var_dir=tmp_path_factory.mktemp("call-waits"))
    migrate(settings)
    yield settings


def _event(name: str, call_id: str, stamp: float, **more) -> dict:
    return {"Event": name, "Uniqueid": call_id, "Queue": "12301-general", "CallerIDNum": "13800000001",
            "Timestamp": f"{stamp:.6f}", "ChanVariable": [f"CALL_ID={call_id}"], **more}


async def _waits(db: Database, call_id: str) -> tuple:
    async with db.session() as session:
        return (await session.execute(select(CallRecord.arrival_wait, CallRecord.answer_wait)
                                      .where(CallRecord.call_id == call_id))).one()


async def test_the_tracker_and_reconciliation_store_the_reports_waits(settings):
    db = Database(settings.database_url)

    async def publish(_event) -> None:
        return None

    async def history(_number):
        return {}

    async def nobody(_phone):
        return None

    try:
        tracker = CallTracker(db, publish, nobody, history, Log())
        start = _event("UserEvent", "w-1", T0, UserEvent="HotlineCallStart", Hotline="12301", Caller="13800000001")
        assert await tracker.handle(start)
        assert await _waits(db, "w-1") == (None, None)  # in the IVR: nothing waited for yet
        assert await tracker.handle(_event("QueueCallerJoin", "w-1", T0 + 8.25))
        assert await _waits(db, "w-1") == (None, None)
        assert await tracker.handle(_event("AgentConnect", "w-1", T0 + 20.5, HoldTime="12"))
        # Arrival -> answer 20.5 s (004 §3.8), queue entry -> answer 12.25 s (ASA), from the event stamps.
        assert await _waits(db, "w-1") == (20.5, 12.25)
        assert await tracker.handle(_event("Hangup", "w-1", T0 + 80, **{"Cause-txt": "Normal"}))
        assert await _waits(db, "w-1") == (20.5, 12.25)

        # A call the tracker saw queue and hang up (abandoned, waited 30 s there), which queue_log later
        # shows answered 14 s after the queue entry: reconciliation's correction moves both waits with it.
        assert await tracker.handle({**start, "Uniqueid": "w-2", "Timestamp": f"{T0 - 5:.6f}",
                                     "ChanVariable": ["CALL_ID=w-2"]})
        for name, stamp in (("QueueCallerJoin", T0), ("Hangup", T0 + 30)):
            assert await tracker.handle(_event(name, "w-2", stamp, **{"Cause-txt": "Normal"}))
        assert await _waits(db, "w-2") == (None, 30.0)  # unanswered: the CTI's queue wait, no arrival wait
        entered = dt.datetime.fromtimestamp(T0, dt.UTC)
        async with db.transaction() as session:
            record = await session.scalar(select(CallRecord).where(CallRecord.call_id == "w-2"))
            queue = QueueCall("w-2", queue="12301-general", entered=entered,
                              connected=entered + dt.timedelta(seconds=14), holdtime=14)
            assert apply_queue_facts(record, queue, None, None)
        # Answered 19 s after arrival (5 s in the IVR, 14 s in the queue).
        assert await _waits(db, "w-2") == (19.0, 14.0)
    finally:
        await db.close()

"""Issue 14 item 8: the CTI's write path under a burst. The tracker's record writes are committed together
(core.db.GroupWriter) instead of one transaction per event taking turns for SQLite's single write lock,
each caller learns of its write only once it is committed, and one bad write fails alone.

A migrated SQLite file (the platform's schema), no stack: the burst is 60 calls queueing at once and
then hanging up at once, as the bench's 100 background callers do when their hold time ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from core import events as ev
from core.db import Database, GroupWriter
from core.settings import Settings, load_settings
from cti.models import CallRecord, CallState
from cti.tracker import CallTracker
from tests.cti.test_no_silent_loss import Log

CALLS = 60


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    from cli.stack import migrate

    settings = load_settings(var_dir=tmp_path_factory.mktemp("cti-writes"))
    migrate(settings)
    yield settings


def _event(name: str, call_id: str, stamp: float, **more) -> dict:
    return {"Event": name, "Uniqueid": call_id, "Queue": "12301-general", "CallerIDNum": "13800000001",
            "Timestamp": f"{stamp:.6f}", "ChanVariable": [f"CALL_ID={call_id}"], **more}


async def test_a_burst_of_calls_is_written_in_a_few_transactions_each_pop_after_its_commit(settings):
    db = Database(settings.database_url)
    reader = Database(settings.database_url)  # another connection: what the desk would see
    published: list[tuple[ev.Event, bool]] = []

    async def publish(event: ev.Event) -> None:
        # The live event goes out only once its record is committed: another connection already sees it.
        async with reader.session() as session:
            record = await session.scalar(select(CallRecord).where(CallRecord.call_id == event.call_id))
        ended = isinstance(event, ev.CallEnded)
        published.append((event, record is not None and (record.ended_at is not None) == ended))

    async def history(_number):
        return {}

    async def nobody(_phone):
        return None

    try:
        tracker = CallTracker(db, publish, nobody, history, Log())
        ids = [f"burst-{n}" for n in range(CALLS)]
        joined = await asyncio.gather(*(tracker.handle(_event("QueueCallerJoin", c, 1700000000.0)) for c in ids))
        assert all(joined)
        after_join = tracker.writes.batches
        ended = await asyncio.gather(*(tracker.handle(_event("Hangup", c, 1700000030.0, **{"Cause-txt": "Normal"}))
                                       for c in ids))
        assert all(ended)
        # One transaction per event taking turns would be 2 x 60; what waited together was committed together.
        assert after_join <= CALLS // 4 and tracker.writes.batches - after_join <= CALLS // 4, tracker.writes.batches
        assert len(published) == 2 * CALLS and all(seen for _event, seen in published), \
            [e.call_id for e, seen in published if not seen][:5]
        async with reader.session() as session:
            rows = (await session.execute(select(CallRecord.state, CallRecord.abandoned, func.count())
                                          .where(CallRecord.call_id.in_(ids))
                                          .group_by(CallRecord.state, CallRecord.abandoned))).all()
        assert rows == [(CallState.ENDED, True, CALLS)]  # queued, never answered: abandoned, 30 s waited
    finally:
        await db.close()
        await reader.close()


async def test_one_bad_write_in_a_batch_fails_alone_and_the_others_land(settings):
    db = Database(settings.database_url)
    writer = GroupWriter(db)

    def add(call_id: str, fail: bool = False):
        async def work(session) -> str:
            session.add(CallRecord(call_id=call_id, caller_number="13800000002"))
            await session.flush()
            if fail:
                raise ValueError("this event's write is broken")
            return call_id
        return work

    try:
        names = [f"alone-{n}" for n in range(10)]
        results = await asyncio.gather(*(writer.write(add(name, fail=name == "alone-4")) for name in names),
                                       return_exceptions=True)
        assert isinstance(results[4], ValueError)
        assert [r for i, r in enumerate(results) if i != 4] == [n for n in names if n != "alone-4"]
        async with db.session() as session:
            stored = set((await session.scalars(select(CallRecord.call_id)
                                                .where(CallRecord.call_id.like("alone-%")))).all())
        assert stored == set(names) - {"alone-4"}
        # A duplicate is refused by the database alone, after the batch's roll-back: the rest still lands.
        again = await asyncio.gather(writer.write(add("alone-0")), writer.write(add("alone-new")),
                                     return_exceptions=True)
        assert isinstance(again[0], Exception) and again[1] == "alone-new"
    finally:
        await db.close()

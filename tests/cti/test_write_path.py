"""Issue 14 item 8: the CTI's write path under a burst. The tracker's record writes are committed together
(core.db.GroupWriter) instead of one transaction per event taking turns for SQLite's single write lock,
each caller learns of its write only once it is committed, and one bad write fails alone.

A migrated SQLite file (the platform's schema), no stack: the burst is 60 calls queueing at once and
then hanging up at once, as the bench's 100 background callers do when their hold time ends.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from core import events as ev
from core.db import Database, GroupWriter
from core.settings import Settings, load_settings
from cti.books import QueueCall
from cti.models import CallRecord, CallState
from cti.reconcile import apply_queue_facts
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


def _tracker(db: Database, publish) -> CallTracker:  # noqa: ANN001 (the event sink)
    """The live tracker with no callers' history and no agents logged in."""
    async def history(_number):
        return {}

    async def nobody(_phone):
        return None

    return CallTracker(db, publish, nobody, history, Log())


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

    try:
        tracker = _tracker(db, publish)
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


# The two waits the service-quality report sums (call_records.arrival_wait, answer_wait; issue 16's report
# bench) are stored by the writers of the call record: the live tracker from Asterisk's events, and
# reconciliation when it corrects an old call from queue_log. The report's SQL path reads these columns, its
# row-by-row path the timestamps (tests/tickets/test_kpi.py checks both against hand computations).
T0 = 1717257599.5  # 2024-06-01 23:59:59.5 in Shanghai: the call is answered after local midnight


async def _waits(db: Database, call_id: str) -> tuple:
    async with db.session() as session:
        return (await session.execute(select(CallRecord.arrival_wait, CallRecord.answer_wait)
                                      .where(CallRecord.call_id == call_id))).one()


async def test_the_tracker_and_reconciliation_store_the_reports_waits(settings):
    db = Database(settings.database_url)

    async def publish(_event) -> None:
        return None

    try:
        tracker = _tracker(db, publish)
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


async def test_the_screen_pop_leaves_before_its_ring_is_committed_and_shows_the_stored_call(db_url):
    """The pop does not wait for the ring's own write: built from the call's record as last committed and the
    event's IVR variables, with the caller's history asked for when the call joined the queue."""
    db = Database(db_url)
    reader = Database(db_url)
    pops: list[ev.ScreenPop] = []
    histories: list[str | None] = []

    async def publish(event: ev.Event) -> None:
        if isinstance(event, ev.ScreenPop):
            pops.append(event)

    async def history(number):
        histories.append(number)
        return {"calls": [], "tickets": [{"number": "T-earlier"}]}

    async def agent_on(phone):
        return 7 if phone == "8001" else None

    call = "pop-first-1"
    ivr = [f"CALL_ID={call}", "HOTLINE=12301", "IVR_PATH=1>2", "BUSINESS=complaint", "CATEGORY=景区"]
    try:
        tracker = CallTracker(db, publish, agent_on, history, Log())
        assert await tracker.handle({"Event": "UserEvent", "UserEvent": "HotlineCallStart", "Uniqueid": call,
                                     "Caller": "13900000077", "Hotline": "12301", "Timestamp": "1700000000.0",
                                     "ChanVariable": [f"CALL_ID={call}"]})
        assert await tracker.handle(_event("QueueCallerJoin", call, 1700000010.0, ChanVariable=ivr))
        # Every record write of the CTI now waits behind a batch that does not commit until released.
        release = asyncio.Event()

        async def stalled(_session) -> None:
            await release.wait()

        stall = asyncio.create_task(tracker.writes.write(stalled))
        await asyncio.sleep(0)
        ring = asyncio.create_task(tracker.handle(_event("AgentCalled", call, 1700000013.5, ChanVariable=ivr,
                                                         Interface="PJSIP/8001", MemberName="Agent 8001")))
        await asyncio.wait_for(_until(lambda: pops), 10)
        assert not ring.done()  # its write is still waiting: the pop did not
        async with reader.session() as session:
            state = await session.scalar(select(CallRecord.state).where(CallRecord.call_id == call))
        assert state == CallState.QUEUED
        release.set()
        assert await ring
        await stall
        async with reader.session() as session:
            record = await session.scalar(select(CallRecord).where(CallRecord.call_id == call))
        assert record.state == CallState.RINGING
        (pop,) = pops
        assert (pop.agent_id, pop.call_ref, pop.caller_number, pop.hotline, pop.ivr_path, pop.business,
                pop.category, pop.waited_seconds) == (7, record.ref, "13900000077", "12301", "1>2", "complaint",
                                                      "景区", 3.5)
        assert pop.draft["call_ref"] == record.ref and pop.draft["complainant_phone"] == "13900000077"
        assert pop.history == {"calls": [], "tickets": [{"number": "T-earlier"}]}
        assert histories == ["13900000077"]  # asked once, at the queue join
    finally:
        await db.close()
        await reader.close()


async def _until(check) -> None:  # noqa: ANN001 (a condition)
    while not check():
        await asyncio.sleep(0.01)

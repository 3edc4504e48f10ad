"""Reconciliation from Asterisk's books on SQLite and PostgreSQL (migrated by alembic).

queue_log and Master.csv are written here in Asterisk's own formats; CoreShowChannels comes from a
stand-in for the AMI link. The stack tests (test_cti_outages.py) do the same with real calls.
"""

from __future__ import annotations

import csv
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from core.db import Database
from core.logrotate import rotate_file
from core.models import Role, User
from cti.books import CDR_COLUMNS
from cti.models import CallRecord, CallState
from cti.reconcile import reconcile


class Log:
    def info(self, *_a, **_k) -> None:
        pass


class Ami:
    def __init__(self, channels: list[dict]) -> None:
        self.channels = channels

    async def action(self, action: dict, **_kw):
        assert action["Action"] == "CoreShowChannels"
        return [{"Event": "CoreShowChannel", **c} for c in self.channels]


@pytest.fixture
async def books_db(db_url: str):
    database = Database(db_url)
    yield database
    await database.close()


def _cdr_row(**values: str) -> list[str]:
    return [values.get(column, "") for column in CDR_COLUMNS]


@pytest.mark.parametrize("rotated", [False, True], ids=["one-file", "rotated-mid-way"])
async def test_records_of_the_gap_are_rebuilt_from_queue_log_and_the_cdr(books_db, tmp_path: Path, rotated: bool):
    """``rotated``: both books were rotated (core.logrotate) half-way through the gap: the calls before
    are in queue_log.1 and Master.csv.1, the rest in new files."""
    tag = uuid.uuid4().hex[:8]
    username = f"rc{tag}"
    ids = {name: f"hl-{name}-{tag}" for name in ("open", "guessed", "unseen", "live")}
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)

    def at(seconds: float) -> datetime:
        return base + timedelta(seconds=seconds)

    def stamp(seconds: float) -> int:
        return int(at(seconds).timestamp())

    async with books_db.transaction() as session:
        agent = User(username=username, display_name="王丽", password_hash="x", role=Role.AGENT)
        session.add(agent)
        # Queued, then the CTI went away: answered and ended unseen.
        session.add(CallRecord(call_id=ids["open"], started_at=at(0), queued_at=at(8.25), queue="12301-complaint",
                               state=CallState.QUEUED, caller_number="1"))
        # Closed by a CTI that missed the answer: called abandoned, wait up to the hang-up.
        session.add(CallRecord(call_id=ids["guessed"], started_at=at(100), queued_at=at(108.5), ended_at=at(160.4),
                               abandoned=True, wait_seconds=51.9, state=CallState.ENDED, caller_number="2"))
        # Still up, answered while the CTI was away.
        session.add(CallRecord(call_id=ids["live"], started_at=at(300), queued_at=at(306.1), state=CallState.QUEUED,
                               caller_number="4"))
    member = f"王丽({username})"
    lines = [
        f"{stamp(8)}|{ids['open']}|12301-complaint|NONE|ENTERQUEUE||1|1",
        f"{stamp(20)}|{ids['open']}|12301-complaint|{member}|CONNECT|12|1.2|1",
        f"{stamp(50)}|{ids['open']}|12301-complaint|{member}|COMPLETECALLER|12|30|1",
        f"{stamp(108)}|{ids['guessed']}|12301-general|NONE|ENTERQUEUE||2|1",
        f"{stamp(113)}|{ids['guessed']}|12301-general|{member}|CONNECT|5|1.3|1",
        f"{stamp(160)}|{ids['guessed']}|12301-general|{member}|COMPLETEAGENT|5|47|1",
        f"{stamp(205)}|{ids['unseen']}|12365-report|NONE|ENTERQUEUE||3|1",
        f"{stamp(214)}|{ids['unseen']}|12365-report|{member}|CONNECT|9|1.4|1",
        f"{stamp(240)}|{ids['unseen']}|12365-report|{member}|COMPLETECALLER|9|26|1",
        f"{stamp(306)}|{ids['live']}|12301-consult|NONE|ENTERQUEUE||4|1",
        f"{stamp(311)}|{ids['live']}|12301-consult|{member}|CONNECT|5|1.5|1",
    ]
    queue_log = tmp_path / "queue_log"
    cdr = tmp_path / "Master.csv"
    fmt = "%Y-%m-%d %H:%M:%S"
    calls = (("open", 0, 50, "8001"), ("guessed", 100, 160, "8002"), ("unseen", 200, 240, "8003"))
    for part in (slice(0, 4), slice(4, None)):  # queue_log up to the first ENTERQUEUE of 'guessed', the rest
        with queue_log.open("a") as handle:
            handle.write("\n".join(lines[part]) + "\n")
        with cdr.open("a", newline="") as handle:
            writer = csv.writer(handle)
            for name, start, end, phone in calls[part.start // 2: part.stop and part.stop // 2]:
                writer.writerow(_cdr_row(src="1380000", dst="12365" if name == "unseen" else "12301",
                                         dcontext="hotline-queue", channel="PJSIP/carrier-1",
                                         dstchannel=f"PJSIP/{phone}-0000001", lastapp="Queue",
                                         start=at(start).strftime(fmt), answer=at(start).strftime(fmt),
                                         end=at(end).strftime(fmt), disposition="ANSWERED", uniqueid=ids[name]))
        if rotated and part.start == 0:
            rotate_file(queue_log, 5)
            rotate_file(cdr, 5)
    assert (tmp_path / "queue_log.1").exists() == rotated == (tmp_path / "Master.csv.1").exists()
    ami = Ami([{"Uniqueid": ids["live"], "Channel": "PJSIP/carrier-9", "Context": "hotline-queue",
                "BridgeId": "b-1", "Duration": "00:01:00"},
               {"Uniqueid": "agent-leg", "Channel": "PJSIP/8004-00000009", "Context": "from-phones",
                "BridgeId": "b-1"}])

    result = await reconcile(books_db, ami, cdr, queue_log, at(5), Log())

    async with books_db.session() as session:
        rows = {r.call_id: r for r in (await session.scalars(
            select(CallRecord).where(CallRecord.call_id.in_(list(ids.values()))))).all()}
    assert result["added"] >= 1 and result["repaired"] >= 4  # the session database may hold other tests' calls
    opened = rows[ids["open"]]
    assert opened.answered_at == at(20) and opened.ended_at == at(50) and opened.agent_id == agent.id
    assert opened.agent_extension == "8001" and opened.wait_seconds == 12 and opened.talk_seconds == 30
    assert opened.state == CallState.ENDED and not opened.abandoned and opened.source == "reconciled"
    guessed = rows[ids["guessed"]]
    assert guessed.answered_at == at(113) and not guessed.abandoned and guessed.wait_seconds == 5
    assert guessed.agent_id == agent.id and guessed.queue == "12301-general"
    assert abs(guessed.talk_seconds - 47.4) < 1e-6 and guessed.ended_at == at(160.4)  # the live end is kept
    unseen = rows[ids["unseen"]]
    assert unseen.queue == "12365-report" and unseen.queued_at == at(205) and unseen.answered_at == at(214)
    assert unseen.ended_at == at(240) and unseen.talk_seconds == 26 and unseen.agent_extension == "8003"
    assert unseen.hotline == "12365" and unseen.agent_id == agent.id and not unseen.abandoned
    live = rows[ids["live"]]
    assert live.state == CallState.TALKING and live.ended_at is None and live.answered_at == at(311)
    assert live.agent_extension == "8004" and live.agent_id == agent.id and live.wait_seconds == 5


async def test_each_node_is_reconciled_from_its_own_books_only(books_db, tmp_path: Path):
    """Node1's books know nothing of a call up on node2: reconciling node1 must not close it; node2's
    books (no such channel live, its CDR says when it ended) close it."""
    tag = uuid.uuid4().hex[:8]
    call_id = f"node2-1764590300.{tag}"
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    async with books_db.transaction() as session:
        session.add(CallRecord(call_id=call_id, node="node2", started_at=started, state=CallState.TALKING,
                               answered_at=started + timedelta(seconds=10)))
    node2_cdr = tmp_path / "node2-Master.csv"
    with node2_cdr.open("w", newline="") as out:
        fmt = "%Y-%m-%d %H:%M:%S"
        csv.writer(out).writerow(_cdr_row(src="1380000", dst="12301", dcontext="hotline-queue",
                                          channel="PJSIP/carrier-1", lastapp="Queue", start=started.strftime(fmt),
                                          answer=started.strftime(fmt),
                                          end=(started + timedelta(seconds=70)).strftime(fmt),
                                          disposition="ANSWERED", uniqueid=call_id))

    async def node_of_record():
        async with books_db.session() as session:
            return await session.scalar(select(CallRecord).where(CallRecord.call_id == call_id))

    await reconcile(books_db, Ami([]), tmp_path / "node1-Master.csv", tmp_path / "node1-queue_log",
                    started - timedelta(minutes=1), Log(), node="node1")
    assert (await node_of_record()).ended_at is None  # node1 has no such channel: not its call to close
    await reconcile(books_db, Ami([]), node2_cdr, tmp_path / "node2-queue_log", started - timedelta(minutes=1),
                    Log(), node="node2")
    closed = await node_of_record()
    assert closed.ended_at == started + timedelta(seconds=70) and closed.state == CallState.ENDED


async def test_a_call_whose_start_the_cti_missed_gets_its_caller_start_cause_and_recording(books_db, tmp_path: Path):
    """A restarted CTI (or one whose write of the call's start failed) saw only later events of two calls:
    their records were created by the queue join (no caller, no hotline, started at the join). A third
    call started and ended while nobody followed. Reconciliation completes all three from the CDR, the
    hang-up handler's line in queue_log (cause, hotline, recording, IVR findings: the CDR's dst is where the
    dialplan ended) and the live channel."""
    tag = uuid.uuid4().hex[:8]
    ids = {name: f"hl-{name}-{tag}" for name in ("ended", "live", "unseen")}
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)

    def at(seconds: float) -> datetime:
        return base + timedelta(seconds=seconds)

    async with books_db.transaction() as session:
        for name in ("ended", "live"):  # what on_QueueCallerJoin writes for a call it never saw start
            session.add(CallRecord(call_id=ids[name], started_at=at(9.5), queued_at=at(9.5), queue="12301-complaint",
                                   state=CallState.QUEUED, hotline="12301" if name == "live" else None))
    fmt = "%Y-%m-%d %H:%M:%S"
    cdr, queue_log = tmp_path / "Master.csv", tmp_path / "queue_log"
    with cdr.open("w", newline="") as out, queue_log.open("w") as book:
        for name, caller, end, cause in (("ended", "13900000001", 40, "16"), ("unseen", "13900000003", 30, "17")):
            csv.writer(out).writerow(_cdr_row(
                src=caller, dst="s", dcontext="hotline-queue", channel="PJSIP/carrier-1", lastapp="Queue",
                start=at(0).strftime(fmt), end=at(end).strftime(fmt), disposition="NO ANSWER", uniqueid=ids[name]))
            book.write(f"{int(at(end).timestamp())}|{ids[name]}|NONE|NONE|HOTLINEEND|cause={cause}&hotline=12301&"
                       f"recording=2026/12/01/{ids[name]}.raw&path=main>complaint&business=complaint&category=\n")
    channel = {"Uniqueid": ids["live"], "Channel": "PJSIP/carrier-2", "Context": "hotline-queue",
               "CallerIDNum": "13900000002", "Duration": f"00:00:{(datetime.now(UTC) - at(1)).seconds:02d}"}

    await reconcile(books_db, Ami([channel]), cdr, queue_log, at(5), Log())

    async with books_db.session() as session:
        rows = {r.call_id: r for r in (await session.scalars(
            select(CallRecord).where(CallRecord.call_id.in_(list(ids.values()))))).all()}
    for name, caller, cause in (("ended", "13900000001", "Normal Clearing"), ("unseen", "13900000003", "User busy")):
        row = rows[ids[name]]
        assert (row.caller_number, row.hotline, row.did, row.direction) == (caller, "12301", "12301", "inbound"), name
        assert row.started_at == at(0) and row.ended_at is not None and row.hangup_cause == cause, name
        assert row.recording_file == f"2026/12/01/{ids[name]}.raw", name
        assert (row.ivr_path, row.business, row.category) == ("main>complaint", "complaint", None), name
    live = rows[ids["live"]]
    assert live.caller_number == "13900000002" and live.ended_at is None and live.hotline == "12301"
    assert abs((live.started_at - at(1)).total_seconds()) <= 1.5

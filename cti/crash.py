"""Asterisk itself died: close the calls it took down, and put their citizens on the callback list.

When Asterisk is killed (a crash, SIGKILL, the machine losing power) no Hangup
event and no CDR row is ever written for the calls it had up, so their records
would stay open until reconciliation wrongly closed them as abandoned by the
citizen. After every AMI (re)connect the CTI asks Asterisk when it started
(``CoreStatus``): if that moment changed since the last connection, Asterisk
restarted, and every record still open whose call is neither live now nor
ended in the CDR was cut off by the restart. It is closed with its own cause,
``asterisk_restart``, and the citizen gets a callback request, which the
callback dispatcher hands to the next free agent of the call's queue.

Run before :func:`cti.reconcile.reconcile`, which would otherwise close these
records as ordinary hang-ups.

A node that does not come back (several nodes, one of them lost: killed, its machine gone) cannot be asked
anything. Once its AMI has been away for ``cti.service.NODE_LOST_SECONDS`` the CTI closes that node's open
records with the cause ``node_lost`` (:func:`close_lost_calls`), each citizen gets the number's callback
task of the day (cti.callbacks.lost_call_task), and its agents are freed (cti.agents). When the node comes
back, the closed records stay closed: the restart check above and reconciliation only touch open ones.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from core.calls import LOST_CAUSE, RESTART_CAUSE  # re-exported: the CTI writes them
from core.db import Database
from core.settings import DEFAULT_NODE
from cti.books import read_cdr_calls
from cti.callbacks import finish_attempt, lost_call_task, request_from_call
from cti.models import CallbackRequest, CallbackStatus, CallRecord, CallState
from cti.reconcile import live_call_ids, talk_seconds

ASTERISK_STARTED = "hotline:cti:asterisk_started"  # Redis: Asterisk's start moment at the last connection
CALLBACK_NOTE = "Asterisk 重启，通话中断，请回拨"


async def asterisk_started(ami) -> tuple[str, datetime | None]:
    """Asterisk's own start moment (CoreStatus) as it reports it, and as UTC when it can be read.

    Asterisk reports it in its local time; the runtime runs Asterisk on UTC (see core.asterisk_runtime),
    so it is read as UTC. The text is what restart detection compares, so the zone never matters there."""
    reply = await ami.action({"Action": "CoreStatus"}, timeout=10)
    date, clock = reply.get("CoreStartupDate") or "", reply.get("CoreStartupTime") or ""
    stamp = f"{date} {clock}".strip()
    try:
        return stamp, datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return stamp, None


class CrashRecovery:
    """Remembers one node's Asterisk start moment across connections (in Redis, so across CTI restarts too)."""

    def __init__(self, db: Database, redis, cdr_csv: Path, log, node: str = DEFAULT_NODE) -> None:
        self.db = db
        self.redis = redis
        self.cdr_csv = cdr_csv
        self.log = log
        self.node = node
        # The first node keeps the single-node key: an upgrade does not look like a restart.
        self.key = ASTERISK_STARTED if node == DEFAULT_NODE else f"{ASTERISK_STARTED}:{node}"
        self._known: str | None = None  # if Redis is unreachable, this process's own memory

    async def _previous(self) -> str | None:
        try:
            return await self.redis.get(self.key) or self._known
        except Exception:  # noqa: BLE001 - Redis down: detection still works within this process
            return self._known

    async def _remember(self, stamp: str) -> None:
        self._known = stamp
        try:
            await self.redis.set(self.key, stamp)
        except Exception:  # noqa: BLE001 - kept in memory; written at the next connection
            self.log.warning("asterisk_start_not_saved", started=stamp)

    async def after_connect(self, ami) -> int:
        """Called after every AMI login, before reconciliation; returns how many records were closed."""
        stamp, started = await asterisk_started(ami)
        previous = await self._previous()
        closed = 0
        if previous is None:
            # Nothing remembered (first start, or Redis lost it): any open record of a call that began
            # before Asterisk did cannot still be up.
            if started is not None:
                closed = await close_cut_calls(self.db, ami, self.cdr_csv, started, began_before=started,
                                               node=self.node)
        elif previous != stamp:
            closed = await close_cut_calls(self.db, ami, self.cdr_csv, started or datetime.now(UTC), node=self.node)
        if closed or (previous is not None and previous != stamp):
            self.log.warning("asterisk_restarted", node=self.node, previous=previous, started=stamp, closed=closed)
        await self._remember(stamp)
        return closed


async def close_cut_calls(db: Database, ami, cdr_csv: Path, restarted: datetime,
                          began_before: datetime | None = None, node: str = DEFAULT_NODE) -> int:
    """Close the open records of calls on ``node`` that its Asterisk's restart took down; each citizen gets a
    callback."""
    live: dict[str, Any] = await live_call_ids(ami)
    ended_normally = read_cdr_calls(cdr_csv, restarted - timedelta(days=1))
    now = datetime.now(UTC)
    closed = 0
    async with db.transaction() as session:
        query = select(CallRecord).where(CallRecord.ended_at.is_(None), CallRecord.node == node)
        if began_before is not None:
            query = query.where(CallRecord.started_at < began_before)
        for record in (await session.scalars(query)).all():
            if record.call_id in live or record.call_id in ended_normally:
                continue  # still up, or it ended before the crash: reconciliation's job
            # The crash moment is not in Asterisk's books; its restart is the latest it can have been.
            _cut_off(record, min(restarted, now), RESTART_CAUSE)
            if record.direction == "inbound" and not record.voicemail_file:
                await request_from_call(record, session, note=CALLBACK_NOTE)
            closed += 1
    return closed


def _cut_off(record: CallRecord, when: datetime, cause: str) -> None:
    """The platform dropped the call at ``when`` (the citizen did not give up)."""
    record.ended_at = max(record.started_at, when)
    record.state = CallState.ENDED
    record.hangup_cause = cause
    record.abandoned = False
    record.source = "reconciled"
    if record.answered_at is not None:
        record.talk_seconds = talk_seconds(record)
    elif record.queued_at is not None:
        record.wait_seconds = max(0.0, (record.ended_at - record.queued_at).total_seconds())


async def close_lost_calls(db: Database, node: str, lost_at: datetime, *, max_attempts: int,
                           zone: ZoneInfo, settings=None) -> list[CallRecord]:
    """Close every open record of a call on ``node``, lost at ``lost_at`` (its AMI went away then and did
    not come back); returns the records closed. Nothing can be asked of a lost node: whatever was still open
    when its connection went was cut off with it (the events before the loss were applied first)."""
    closed: list[CallRecord] = []
    async with db.transaction() as session:
        query = select(CallRecord).where(CallRecord.ended_at.is_(None), CallRecord.node == node)
        for record in (await session.scalars(query)).all():
            _cut_off(record, lost_at, LOST_CAUSE)
            await lost_call_task(record, session, max_attempts=max_attempts, zone=zone)
            closed.append(record)
        # A callback being dialled from the lost node: put back for another attempt, not left "dialling".
        dialling = {r.call_id for r in closed if r.direction == "outbound"}
        attempts = (await session.scalars(select(CallbackRequest.id).where(
            CallbackRequest.outbound_call_id.in_(dialling), CallbackRequest.status == CallbackStatus.DIALING))).all() \
            if dialling else []
    for request_id in attempts:
        await finish_attempt(db, str(request_id), LOST_CAUSE, settings)
    return closed

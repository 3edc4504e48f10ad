"""Reconcile call records with Asterisk's books after the CTI missed events.

Events are gone for any gap: an AMI outage, a CTI restart, or events the CTI received but could not
write (database or Redis failing under it). The gap runs from the last event actually handled (the
watermark, cti.service) to now, and Asterisk's own books cover it: live channels (CoreShowChannels),
queue_log (queue, answer, agent, wait, transfers, abandonment) and the CDR CSV (start, end, the agent
phone). Every record touched in the gap, live or ended, gets the facts it misses, and no call is
classified as abandoned while queue_log says an agent answered it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select

from core.db import Database
from core.models import User
from core.settings import DEFAULT_NODE
from cti.books import (
    CDR_COLUMNS,
    HOTLINE_CONTEXTS,
    CdrCall,
    QueueCall,
    phone_of,
    read_cdr_calls,
    read_queue_log,
)
from cti.models import CallbackRequest, CallRecord, CallState

# CDR_COLUMNS and HOTLINE_CONTEXTS are kept importable from here (the CDR format now lives in cti.books).
__all__ = ["CDR_COLUMNS", "HOTLINE_CONTEXTS", "apply_call_facts", "apply_queue_facts", "reconcile", "talk_seconds"]

# Asterisk's books have whole seconds; a little more than that either side of the watermark.
MARGIN = timedelta(seconds=5)
# How far before the gap queue_log is read for calls that were already up when it began.
LONGEST_CALL = timedelta(hours=6)
# A record's start later than Asterisk's by more than this came from a later event of the call.
START_SLACK = timedelta(seconds=2)


def _hms_seconds(value: str) -> int:
    total = 0
    for part in value.split(":"):
        total = total * 60 + int(part or 0)
    return total


async def live_call_ids(ami) -> dict[str, dict[str, Any]]:
    reply = await ami.action({"Action": "CoreShowChannels"}, as_list=True, timeout=10)
    live = {}
    for message in reply if isinstance(reply, list) else []:
        if message.get("Event") == "CoreShowChannel":
            live[message.get("Uniqueid")] = dict(message)
    return live


def bridged_phone(live: dict[str, dict[str, Any]], call_id: str) -> str | None:
    """The agent phone in the same bridge as the citizen's channel, if any."""
    bridge = (live.get(call_id) or {}).get("BridgeId")
    if not bridge:
        return None
    return next((phone_of(c.get("Channel")) for uid, c in live.items()
                 if uid != call_id and c.get("BridgeId") == bridge and phone_of(c.get("Channel"))), None)


async def user_ids(session, usernames: set[str]) -> dict[str, int]:
    if not usernames:
        return {}
    return dict((await session.execute(select(User.username, User.id).where(User.username.in_(usernames)))).all())


def apply_queue_facts(record: CallRecord, queue: QueueCall | None, agent_id: int | None,
                      agent_phone: str | None) -> bool:
    """Fill what the record misses from queue_log; True when something changed. Live-tracked values
    (event timestamps, finer than queue_log's seconds) are kept."""
    changed = False

    def put(name: str, value: Any) -> None:
        nonlocal changed
        if value is not None and getattr(record, name) is None:
            setattr(record, name, value)
            changed = True

    put("agent_extension", agent_phone)
    if queue is None:
        return changed
    put("queue", queue.queue)
    put("queued_at", queue.entered)
    if queue.connected is not None:
        if record.answered_at is None:
            # Answered while nobody was looking: whatever was believed before (abandoned, and the wait
            # measured up to the hang-up) gives way to Asterisk's account.
            record.answered_at = queue.connected
            record.wait_seconds = queue.holdtime
            record.abandoned = False
            changed = True
            if record.state != CallState.ENDED:
                record.state = CallState.TALKING
        put("agent_id", agent_id)
        put("wait_seconds", queue.holdtime)
    if queue.transfers and not record.transfers:
        record.transfers = list(queue.transfers)
        changed = True
    if record.ended_at is not None and record.answered_at is not None and record.talk_seconds is None:
        record.talk_seconds = talk_seconds(record)
        changed = True
    return changed


def apply_call_facts(record: CallRecord, cdr: CdrCall | None, queue: QueueCall | None,
                     channel: dict[str, Any] | None) -> bool:
    """Who called, on which hotline, since when, recorded where: what a record lacks when the CTI missed
    the call's start (a restart, a write that failed) and a later event of the call created it. Filled
    from the CDR, the hang-up handler's line in queue_log (``queue.facts``) or the live channel; True
    when something changed. Values the live tracker wrote are kept."""
    changed = False

    def put(name: str, value: Any) -> None:
        nonlocal changed
        if value and getattr(record, name) is None:
            setattr(record, name, value)
            changed = True

    inbound = record.direction in (None, "inbound")
    facts = queue.facts if queue else {}
    if inbound:
        put("caller_number", cdr.caller if cdr else (channel or {}).get("CallerIDNum"))
        # The CDR's dst is where the dialplan ended ("s" of the queue): the hotline is the handler's.
        put("hotline", facts.get("hotline") or (cdr.did if cdr else None))
        put("did", record.hotline)
    put("recording_file", facts.get("recording"))
    put("ivr_path", facts.get("path"))
    put("business", facts.get("business"))
    put("category", facts.get("category"))
    start = cdr.start if cdr else None
    if start is None and channel is not None:
        start = datetime.now(UTC) - timedelta(seconds=_hms_seconds(channel.get("Duration") or "0"))
    # A start taken from a later event (the queue join, the answer) is later than the channel's by more
    # than the books' whole second: Asterisk's is the call's start.
    if start is not None and record.started_at is not None and record.started_at - start > START_SLACK:
        record.started_at = start
        changed = True
    return changed


def talk_seconds(record: CallRecord) -> float:
    # Measured end to end, as the live tracker does: one figure across transfers and holds; up to the
    # survey when the agent hung up first (the citizen rating the call is not talking to anyone).
    end = record.survey_started_at or record.ended_at
    return max(0.0, (end - record.answered_at).total_seconds() - (record.hold_seconds or 0))


async def close_from_books(session, record: CallRecord, cdr: CdrCall | None, queue: QueueCall | None) -> None:
    """The call is over (not live any more): end it where Asterisk says it ended."""
    record.ended_at = cdr.end if cdr else queue.ended if queue and queue.ended else datetime.now(UTC)
    record.state = CallState.ENDED
    record.source = "reconciled"
    if record.hangup_cause is None and queue is not None:
        record.hangup_cause = queue.hangup_cause
    if record.answered_at is not None:
        record.talk_seconds = talk_seconds(record)
    elif record.queued_at is not None and not record.voicemail_file:
        callback = await session.scalar(select(CallbackRequest.id).where(CallbackRequest.call_id == record.call_id))
        if callback is None:
            record.abandoned = True
            waited = queue.abandoned_wait if queue else None
            record.wait_seconds = waited if waited is not None else \
                (record.ended_at - record.queued_at).total_seconds()


async def reconcile(db: Database, ami, cdr_csv: Path, queue_log: Path, since: datetime, log,
                    node: str = DEFAULT_NODE) -> dict[str, int]:
    """Bring every record of a call on ``node`` that was up or ended since ``since`` in line with that
    node's books (``ami``, ``cdr_csv`` and ``queue_log`` are the node's): close records whose calls ended,
    fill missed answers/agents/waits/transfers, add unseen calls. Other nodes' records are not touched."""
    live = await live_call_ids(ami)
    since = since - MARGIN
    cdr_calls = read_cdr_calls(cdr_csv, since)
    closed = added = repaired = 0
    async with db.transaction() as session:
        records = {r.call_id: r for r in (await session.scalars(select(CallRecord).where(
            CallRecord.node == node, or_(CallRecord.ended_at.is_(None), CallRecord.ended_at >= since)))).all()}
        others = sorted((set(cdr_calls) | set(live)) - set(records))
        for start in range(0, len(others), 500):  # a long gap can name more calls than SQL takes at once
            chunk = others[start:start + 500]
            records.update((r.call_id, r) for r in (await session.scalars(
                select(CallRecord).where(CallRecord.call_id.in_(chunk)))).all())
        oldest = min([since, *(r.started_at for r in records.values()), *(c.start for c in cdr_calls.values())])
        queue_calls = read_queue_log(queue_log, max(oldest - MARGIN, since - LONGEST_CALL))
        agents = await user_ids(session, {q.username for q in queue_calls.values() if q.username})
        for uid, cdr in cdr_calls.items():
            if uid in records or uid in live or uid.startswith("cz-"):
                continue  # cz-: the test citizen's own half of a Local channel
            record = CallRecord(call_id=uid, caller_number=cdr.caller, did=cdr.did, hotline=cdr.did,
                                started_at=cdr.start, state=CallState.ENDED, source="reconciled",
                                direction="inbound", node=node)
            session.add(record)
            records[uid] = record
            added += 1
        # Calls still up that started while away: open a record so they are followed from now on.
        for uid, channel in live.items():
            if uid in records or not (channel.get("Context") or "").startswith("hotline"):
                continue
            seconds = _hms_seconds(channel.get("Duration") or "0")
            record = CallRecord(call_id=uid, caller_number=channel.get("CallerIDNum"),
                                started_at=datetime.now(UTC) - timedelta(seconds=seconds),
                                state=CallState.IVR, source="reconciled", node=node)
            session.add(record)
            records[uid] = record
            added += 1
        for uid, record in records.items():
            queue = queue_calls.get(uid)
            cdr = cdr_calls.get(uid)
            phone = None
            if queue and queue.connected:
                phone = bridged_phone(live, uid) or (cdr.agent_phone if cdr else None)
            agent_id = agents.get(queue.username) if queue and queue.username else None
            if apply_queue_facts(record, queue, agent_id, phone) | apply_call_facts(record, cdr, queue, live.get(uid)):
                repaired += 1
                if record.source == "ami":
                    record.source = "reconciled"
            if record.ended_at is None and uid not in live:
                await close_from_books(session, record, cdr, queue)
                closed += 1
    log.info("reconciled", node=node, since=since.isoformat(), closed=closed, added=added, repaired=repaired, live=len(live))
    return {"closed": closed, "added": added, "repaired": repaired, "live": len(live)}

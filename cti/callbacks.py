"""Callbacks that keep the caller's place in line.

A caller who chose a callback in the queue hangs up; the request keeps the
moment they joined the queue. When no caller who joined earlier is still
waiting and an agent of that queue is ready, the request is claimed (one
atomic update, so it is dialled once, never twice), the agent's phone rings
and then the citizen is dialled. Unanswered attempts are retried a few times,
and a request expires if its turn never comes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from core.ami import AmiError, AmiNodes, on_node
from core.db import Database
from core.telephony import AGENT_NOT_REACHED
from core.vocabulary import AgentState, PauseReason
from cti.control import (
    AGENT_SESSIONS,
    agent_commands,
    agent_session,
    call_citizen,
    live_channels,
    set_agent_state,
)
from cti.models import CallbackRequest, CallbackStatus, CallRecord
from cti.protocol import Refused
from tickets import clock, return_visits

QUEUE_CALLBACK_EXPIRY = timedelta(hours=2)
RETRY_AFTER = timedelta(minutes=2)
# The agent's phone did not take a callback: the citizen was not dialled, so another free agent may try soon.
AGENT_RETRY_AFTER = timedelta(seconds=10)
# A "dialling" request whose outbound call never started, or ended, this long ago without its result reaching the
# CTI (it was away when the attempt ended): settled from the call's record.
RESULT_MISSED_AFTER = timedelta(seconds=90)


async def request_from_call(record: CallRecord, session, note: str = "排队回拨") -> None:
    """Called by the tracker when a caller who chose a callback hangs up, and by cti.crash for calls an
    Asterisk restart cut off (one request per call)."""
    exists = await session.scalar(select(CallbackRequest.id).where(CallbackRequest.call_id == record.call_id))
    if exists or not record.caller_number:
        return
    now = datetime.now(UTC)
    session.add(CallbackRequest(
        call_id=record.call_id, number=record.caller_number, hotline=record.hotline,
        queue=record.queue or (f"{record.hotline}-general" if record.hotline else None), source="queue",
        position_at=record.queued_at or record.started_at, expires_at=now + QUEUE_CALLBACK_EXPIRY,
        note=note,
    ))


MISSED_NOTE = "漏接回拨"


def callable_number(number: str | None) -> bool:
    """A caller id we can dial back (digits only, long enough to be a real number; ivr.flow's rule)."""
    return bool(number) and number.isdigit() and len(number) >= 5


def missed(record: CallRecord, min_seconds: float) -> bool:
    """A call abandoned in the queue or the IVR (国办函〔2025〕66号 漏接电话): inbound, never answered, no voice
    message or callback request, not served by the IVR's status read-back, and at least ``min_seconds`` long
    (shorter ones are misdials)."""
    if record.direction != "inbound" or record.answered_at is not None or record.ended_at is None:
        return False
    if record.voicemail_file or record.lookup_ticket or not callable_number(record.caller_number):
        return False
    return (record.ended_at - record.started_at).total_seconds() >= min_seconds


def _local_day(record: CallRecord, zone: ZoneInfo) -> str:
    return record.started_at.astimezone(zone).date().isoformat()


async def _day_task(session, record: CallRecord, day: str) -> CallbackRequest | None:
    """The number's callback task of that local day (漏接回拨 or 节点故障: one per number and day)."""
    return await session.scalar(select(CallbackRequest).where(
        CallbackRequest.number == record.caller_number, CallbackRequest.missed_day == day))


async def _add_day_task(session, record: CallRecord, *, source: str, day: str, max_attempts: int,
                        note: str) -> None:
    try:
        # Calls of one number may end side by side (the tracker applies different calls concurrently): the
        # unique index keeps one task, and the loser's savepoint goes, not the call record's transaction.
        async with session.begin_nested():
            session.add(CallbackRequest(
                call_id=record.call_id, number=record.caller_number, hotline=record.hotline,
                queue=record.queue or (f"{record.hotline}-general" if record.hotline else None),
                source=source, position_at=record.started_at, missed_day=day, max_attempts=max_attempts,
                note=note))
    except IntegrityError:
        pass


async def missed_call_task(record: CallRecord, session, *, min_seconds: float, max_attempts: int,
                           zone: ZoneInfo) -> None:
    """Called by the tracker as a call ends: a missed call becomes a callback task for the desk, one per
    number and local day (a second missed call that day adds to the first task's note); an answered
    call ends that day's open task of the number, since the citizen got through."""
    day = _local_day(record, zone)
    task = await _day_task(session, record, day)
    if record.answered_at is not None and record.direction == "inbound":
        if task is not None and task.status == CallbackStatus.PENDING:
            task.status = CallbackStatus.DONE
            task.note = f"{task.note or ''} 再次来电已接通".strip()[:255]
        return
    if not missed(record, min_seconds):
        return
    if task is not None:
        if task.status == CallbackStatus.PENDING:
            task.note = f"{task.note or ''} 再次漏接".strip()[:255]
        return
    where = "排队中放弃" if record.queued_at is not None else "语音导航中挂机"
    await _add_day_task(session, record, source="missed", day=day, max_attempts=max_attempts,
                        note=f"{MISSED_NOTE}（{where}）")


LOST_SOURCE = "node_lost"  # the desk shows it as 节点故障
LOST_NOTE = "节点故障，通话中断，请回拨"


async def lost_call_task(record: CallRecord, session, *, max_attempts: int, zone: ZoneInfo) -> None:
    """A citizen's call cut off by the loss of its Asterisk node (cti.crash.close_lost_calls), answered or
    not: the number's one callback task of the day (the missed-call tasks' rule), made now or, if the
    number already has one, noted on it and reopened if it was closed (the citizen got through earlier
    and was then cut off)."""
    if record.direction != "inbound" or record.voicemail_file or not callable_number(record.caller_number):
        return
    day = _local_day(record, zone)
    task = await _day_task(session, record, day)
    if task is None:
        await _add_day_task(session, record, source=LOST_SOURCE, day=day, max_attempts=max_attempts,
                            note=LOST_NOTE)
        return
    if task.status in (CallbackStatus.DONE, CallbackStatus.EXPIRED):
        task.status, task.next_attempt_at = CallbackStatus.PENDING, None
    task.note = f"{task.note or ''} {LOST_NOTE}".strip()[:255]


async def oldest_waiting(ami) -> dict[str, float]:
    """Per queue, when its longest-waiting caller joined (epoch seconds); on every node for a pool."""
    replies = [await node.action({"Action": "QueueStatus"}, as_list=True, timeout=10)
               for node in (ami if isinstance(ami, AmiNodes) else [ami])]
    now = datetime.now(UTC).timestamp()
    oldest: dict[str, float] = {}
    for message in (m for reply in replies if isinstance(reply, list) for m in reply):
        if message.get("Event") == "QueueEntry":
            joined = now - float(message.get("Wait") or 0)
            queue = message.get("Queue")
            oldest[queue] = min(oldest.get(queue, joined), joined)
    return oldest


async def ready_agents(redis) -> list[dict[str, Any]]:
    sessions = await redis.hgetall(AGENT_SESSIONS)
    ready = []
    for agent_id, raw in sessions.items():
        data = json.loads(raw)
        if data.get("state") == AgentState.READY and data.get("phone"):
            ready.append({"agent_id": int(agent_id), **data})
    return sorted(ready, key=lambda a: a.get("since", 0))  # longest idle first


class CallbackDispatcher:
    def __init__(self, db: Database, redis, ami, log, settings=None) -> None:
        self.db = db
        self.redis = redis
        self.ami = ami
        self.log = log
        self.settings = settings

    async def expire(self, now: datetime) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(CallbackRequest)
                .where(CallbackRequest.status == CallbackStatus.PENDING, CallbackRequest.expires_at < now)
                .values(status=CallbackStatus.EXPIRED, updated_at=now))

    async def run_once(self) -> int:
        now = datetime.now(UTC)
        await self.expire(now)
        await settle_missed_results(self.db, self.ami, now, self.settings)
        async with self.db.session() as session:
            due = list((await session.scalars(
                select(CallbackRequest).where(
                    CallbackRequest.status == CallbackStatus.PENDING, CallbackRequest.source == "queue",
                    (CallbackRequest.next_attempt_at.is_(None)) | (CallbackRequest.next_attempt_at <= now),
                ).order_by(CallbackRequest.position_at).limit(10))).all())
        if not due:
            return 0
        waiting = await oldest_waiting(self.ami)
        agents = await ready_agents(self.redis)
        started = 0
        for request in due:
            if waiting.get(request.queue, float("inf")) < request.position_at.timestamp():
                continue  # someone who called earlier is still waiting: not this request's turn yet
            agent = next((a for a in agents if request.queue in a.get("queues", [])), None)
            if agent is None:
                continue
            if not await claim(self.db, request.id, agent["agent_id"]):
                continue  # another dispatcher (or a previous round) took it: never dial twice
            agents.remove(agent)
            try:
                # Under the agent's command lock: the cluster's router never moves an agent being rung here.
                async with agent_commands(agent["agent_id"]):
                    # Read again under the lock: the cluster's router may have moved the agent to another node
                    # (rung from the old one, they would also be rung by the new one's queue) or a queue call
                    # may have reached them meanwhile.
                    current = await agent_session(self.redis, agent["agent_id"])
                    if (current or {}).get("state") != AgentState.READY:
                        await agent_not_reached(self.db, str(request.id), "坐席已接其他来电")
                        continue
                    await set_agent_state(self.redis, agent["agent_id"], AgentState.RINGING, PauseReason.CALLBACK)
                    await dial_claimed(self.db, on_node(self.ami, current.get("node")), request, agent["agent_id"],
                                       agent["phone"])
            except AmiError as exc:
                self.log.warning("callback_originate_failed", request_id=request.id, error=str(exc))
                await set_agent_state(self.redis, agent["agent_id"], AgentState.READY)
                continue
            started += 1
            self.log.info("callback_started", request_id=request.id, agent_id=agent["agent_id"])
        return started

    async def finish_attempt(self, callback_id: str | None, dial_status: str | None, call_id: str | None) -> None:
        if dial_status == AGENT_NOT_REACHED:
            await agent_not_reached(self.db, callback_id, "坐席话机未接通")
        else:
            await finish_attempt(self.db, callback_id, dial_status, self.settings)
        self.log.info("callback_attempt", request_id=callback_id, dial_status=dial_status, call_id=call_id)
        if callback_id and callback_id.isdigit():
            # The agent was marked ringing for the callback; no queue event will move them on.
            async with self.db.session() as session:
                row = await session.get(CallbackRequest, int(callback_id))
            session_state = await agent_session(self.redis, row.agent_id) if row and row.agent_id else None
            if (session_state and session_state.get("state") == AgentState.RINGING
                    and session_state.get("reason") == PauseReason.CALLBACK):
                await set_agent_state(self.redis, row.agent_id, AgentState.READY)


async def claim(db: Database, request_id: int, agent_id: int, now: datetime | None = None) -> bool:
    """Take a pending request for one agent in one atomic update: whoever wins dials, nobody else.
    With ``now``, only a request whose next attempt is due by then (a 回访 waits for its working day)."""
    due = (CallbackRequest.next_attempt_at.is_(None) | (CallbackRequest.next_attempt_at <= now)) if now else True
    async with db.transaction() as session:
        result = await session.execute(
            update(CallbackRequest)
            .where(CallbackRequest.id == request_id, CallbackRequest.status == CallbackStatus.PENDING, due)
            .values(status=CallbackStatus.DIALING, agent_id=agent_id,
                    attempts=CallbackRequest.attempts + 1, updated_at=datetime.now(UTC)))
        return result.rowcount == 1


async def call_back_by_agent(db: Database, ami, agent_id: int, phone: str, callback_id: int,
                             now: datetime | None = None) -> str:
    """An agent calls back a request from their inbox (or makes a 回访 from the task list): claimed first, so
    two agents never both call the citizen; returns the outbound call id. ``now`` is the platform's clock
    (tickets.clock): a 回访 whose citizen was unreachable waits for the working day of its next attempt."""
    async with db.session() as session:
        pending = await session.get(CallbackRequest, callback_id)
    if pending is None:
        raise Refused("回拨任务不存在", 404, "callback_id")
    visit = pending.source == return_visits.SOURCE
    if visit and pending.status == CallbackStatus.PENDING and pending.next_attempt_at and now \
            and pending.next_attempt_at > now:
        raise Refused("来电人上次未接通，该回访安排在下一个工作日再拨", 409, "callback_id")
    if not await claim(db, callback_id, agent_id, now if visit else None):
        raise Refused("该回拨已由其他坐席处理或已结束", 409, "callback_id")
    return await dial_claimed(db, ami, pending, agent_id, phone)


async def dial_claimed(db: Database, ami, request: CallbackRequest, agent_id: int, phone: str) -> str:
    """Ring the agent, then the citizen, for a request this agent claimed; returns the outbound call id.
    If Asterisk refuses the call it is not known to have dialled: the attempt is put back, not retried now."""
    try:
        outbound = await call_citizen(ami, agent_id, phone, request.number, callback_id=request.id,
                                      hotline=request.hotline or "")
    except AmiError as exc:
        await agent_not_reached(db, str(request.id), str(exc))
        raise
    async with db.transaction() as session:
        row = await session.get(CallbackRequest, request.id)
        row.outbound_call_id = outbound
    return outbound


async def finish_attempt(db: Database, callback_id: str | None, dial_status: str | None,
                         settings=None) -> None:
    """The outbound call ended: done if the citizen answered, else retry or give up. A 回访 is retried on
    a later working day (tickets.return_visits), and one given up on says so on its ticket."""
    if not callback_id or not callback_id.isdigit():
        return
    async with db.transaction() as session:
        row = await session.get(CallbackRequest, int(callback_id))
        if row is None or row.status not in (CallbackStatus.DIALING, CallbackStatus.PENDING):
            return
        visit = row.source == return_visits.SOURCE and settings is not None
        now = clock.now(settings) if visit else datetime.now(UTC)
        if dial_status == "ANSWER":
            row.status = CallbackStatus.DONE
        elif row.attempts >= row.max_attempts:
            row.status = CallbackStatus.FAILED
            if visit:
                await return_visits.unreachable(session, row, now)
        else:
            row.status = CallbackStatus.PENDING
            row.next_attempt_at = return_visits.next_try(settings, now) if visit else now + RETRY_AFTER
        row.note = f"{row.note or ''} 第{row.attempts}次：{dial_status}".strip()[:255]


async def agent_not_reached(db: Database, callback_id: str | None, why: str) -> None:
    """The attempt never reached the citizen (Asterisk refused the call, or the agent's phone did not take it):
    it is given back, not counted against the citizen's attempts, and the request waits a moment for a free
    agent (the agent may be the same one, whose phone may be back by then)."""
    if not callback_id or not callback_id.isdigit():
        return
    async with db.transaction() as session:
        row = await session.get(CallbackRequest, int(callback_id))
        if row is None or row.status != CallbackStatus.DIALING:
            return
        row.status = CallbackStatus.PENDING
        row.attempts = max(0, row.attempts - 1)
        row.next_attempt_at = datetime.now(UTC) + AGENT_RETRY_AFTER
        row.note = f"{row.note or ''} {why}".strip()[:255]


async def settle_missed_results(db: Database, ami, now: datetime, settings=None) -> None:
    """Requests left "dialling" because the CTI missed how their attempt ended: a call no node has and no
    record knows is given back (it never started), one that ended is settled by whether the citizen answered.
    A request with no outbound call id is left alone: its Originate may have been sent, and a citizen is
    never dialled twice."""
    stale = now - RESULT_MISSED_AFTER
    async with db.session() as session:
        rows = (await session.execute(
            select(CallbackRequest.id, CallbackRequest.outbound_call_id, CallRecord.call_id, CallRecord.ended_at,
                   CallRecord.answered_at)
            .outerjoin(CallRecord, CallRecord.call_id == CallbackRequest.outbound_call_id)
            .where(CallbackRequest.status == CallbackStatus.DIALING, CallbackRequest.updated_at < stale,
                   CallbackRequest.outbound_call_id.is_not(None)))).all()
    for request_id, call_id, recorded, ended_at, answered_at in rows:
        if recorded is None:
            if await _live_anywhere(ami, call_id):
                continue  # up, but its start was not seen: its hangup handler or the record will tell
            await agent_not_reached(db, str(request_id), "未收到拨号结果")
        elif ended_at is not None and ended_at < stale:
            await finish_attempt(db, str(request_id), "ANSWER" if answered_at else "NOANSWER", settings)


async def _live_anywhere(ami, call_id: str) -> bool:
    """Whether any node has a channel of ``call_id`` up; True when a node cannot be asked (never guess gone)."""
    for client in (ami if isinstance(ami, AmiNodes) else [ami]):
        try:
            if any(c.get("Uniqueid") == call_id for c in await live_channels(client)):
                return True
        except AmiError:
            return True
    return False


_OPEN_REQUEST = (CallbackRequest.status.in_((CallbackStatus.PENDING, CallbackStatus.FAILED)),
                 CallbackRequest.source != return_visits.SOURCE)  # 回访 have their own list (tickets.return_visits)


async def open_requests(session, limit: int = 30) -> list[CallbackRequest]:
    """Callback requests still to do or given up on, oldest place in line first (the desk's inbox)."""
    return list((await session.scalars(select(CallbackRequest).where(*_OPEN_REQUEST)
                                       .order_by(CallbackRequest.position_at).limit(limit))).all())


async def count_open_requests(session) -> int:
    """How many requests :func:`open_requests` would list without its limit (the inbox says so)."""
    return await session.scalar(select(func.count()).select_from(CallbackRequest).where(*_OPEN_REQUEST)) or 0


async def missed_tasks_between(session, start: datetime, end: datetime) -> dict[str, CallbackRequest]:
    """The 漏接回拨 tasks made for calls in [start, end), by call id (the wallboard's abandoned list)."""
    return {t.call_id: t for t in (await session.scalars(select(CallbackRequest).where(
        CallbackRequest.source == "missed", CallbackRequest.position_at >= start,
        CallbackRequest.position_at < end))).all()}

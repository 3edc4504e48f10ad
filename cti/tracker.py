"""Follow every citizen call through AMI events and keep its call record up to date.

A call is identified by CALL_ID, the uniqueid of the citizen's leg, which the
dialplan puts on every channel of the call (manager.conf channelvars). Each
milestone is written to the database at once, so a CTI crash mid-call leaves a
partial record that :mod:`cti.reconcile` completes from Asterisk's own CDRs.
The writes of calls handled side by side are committed together (core.db.GroupWriter):
a handler publishes its live events only after its own write is committed, except the
screen pop, which leaves while its ring is being written (built from the call's record as
last committed and the event itself): the agent's phone is ringing already.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from core import events as ev
from core.db import Database, GroupWriter
from core.metrics import Counters
from core.satisfaction import GRADES, UNRATED
from core.settings import DEFAULT_NODE
from core.telephony import AGENT_NOT_REACHED, ChanVar, call_id_of, callback_of_action, chan_var
from cti.books import QueueCall, member_username, phone_of
from cti.models import CallRecord, CallState
from cti.reconcile import apply_queue_facts, talk_seconds, user_ids
from tickets.drafts import draft_from_call
from tickets.satisfaction import grade_linked_tickets

Publish = Callable[[ev.Event], Awaitable[Any]]
AgentLookup = Callable[[str], Awaitable[int | None]]
HistoryLookup = Callable[[str | None], Awaitable[dict[str, Any]]]
# queue_log's account of one call since a moment (cti.books.read_queue_log), read when a call is about
# to be classified as abandoned: the answer may have come while the CTI was not following.
QueueBooks = Callable[[str, datetime, str], QueueCall | None]  # call id, since, node


def event_time(event: Any) -> datetime:
    stamp = event.get("Timestamp")
    return datetime.fromtimestamp(float(stamp) if stamp else time.time(), UTC)


# The CTI tags every AMI event with the node whose connection delivered it (cti.service): the node of
# the call it is about, whatever the call id looks like (test and desk calls set their own ids).
NODE_KEY = "HotlineNode"
RECEIVED_KEY = "HotlineReceived"  # when the CTI read the event off the AMI socket (time.time())


def event_node(event: Any) -> str:
    return event.get(NODE_KEY) or DEFAULT_NODE


def call_key(event: Any) -> str:
    """The call an AMI event belongs to (its CALL_ID, a transfer's parties', else its channel's uniqueid):
    the CTI applies the events of one call in order, and those of different calls side by side."""
    return (chan_var(event, ChanVar.CALL_ID) or chan_var(event, ChanVar.CALL_ID, "TransfereeChanVariable")
            or chan_var(event, ChanVar.CALL_ID, "TransfererChanVariable") or event.get("Uniqueid") or "")


class Gate:
    """Event handlers side by side, or one repair alone: reconciliation rewrites records from Asterisk's
    books and must not race a handler writing the same record. A waiting repair lets no new handler in."""

    def __init__(self) -> None:
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()
        self._open.set()
        self._repair = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        # Checked again after waking: a repair that ends and another that begins at once (crash recovery,
        # then reconciliation) set and clear the gate in one go, and a handler woken by the set must not
        # run alongside the second repair.
        while not self._open.is_set():
            await self._open.wait()
        self._active += 1  # no await between the check and this: nothing slips past a closing gate
        self._idle.clear()
        try:
            yield
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._repair:
            self._open.clear()
            try:
                await self._idle.wait()
                yield
            finally:
                self._open.set()


class LookupUnavailable(Exception):
    """The agent on a phone could not be looked up (Redis away or refusing); not the same as "nobody"."""


@dataclass
class LiveCall:
    call_id: str
    record_id: int | None = None
    started: datetime | None = None
    queued: datetime | None = None
    ringing_agents: dict[str, int | None] = field(default_factory=dict)
    answered: bool = False
    hold_started: datetime | None = None
    caller: str | None = None  # the record's caller_number, as written at the call's start
    # The call's record as last committed by this CTI (its pop fields: caller, hotline, IVR choices, ref):
    # a screen pop is built from it and leaves before the ring's own write is committed.
    record: CallRecord | None = None
    # The caller's history, asked for when the call joins the queue: ready when an agent's phone rings.
    history: asyncio.Task | None = None


class CallTracker:
    """AMI event handlers -> call records (database) + live events (Redis stream)."""

    def __init__(self, db: Database, publish: Publish, agent_for_phone: AgentLookup,
                 history: HistoryLookup, log, queue_books: QueueBooks | None = None,
                 counters: Counters | None = None) -> None:
        self.db = db
        self.counters = counters or Counters("cti")
        self.publish = publish
        self.agent_for_phone = agent_for_phone
        self.history = history
        self.log = log
        self.queue_books = queue_books
        self.calls: dict[str, LiveCall] = {}
        self.on_callback_result: Callable[[str | None, str | None, str], Awaitable[None]] | None = None
        self.on_callback_request: Callable[[CallRecord, Any], Awaitable[None]] | None = None
        # Events of different calls are applied side by side (cti.consumer keeps each call's in order);
        # reconciliation closes the gate, so no event is applied to a record while it is being repaired.
        self.gate = Gate()
        # Every record write goes through one writer that commits what is waiting together: SQLite has one
        # writer at a time, and a transaction per event taking turns made a burst of events wait seconds.
        self.writes = GroupWriter(db, prefetch=_prefetch_records)
        # Every other call as it ends, in the same transaction (missed calls become callback tasks).
        self.on_call_ended: Callable[[CallRecord, Any], Awaitable[None]] | None = None
        self._agent_ids: dict[str, int] = {}

    # -- persistence ------------------------------------------------------
    async def _update(self, call_id: str, **values: Any) -> CallRecord:
        async def work(session) -> CallRecord:
            record = await _record(session, call_id)
            if record is None:
                record = _add_record(session, CallRecord(
                    call_id=call_id, started_at=values.get("started_at") or datetime.now(UTC),
                    node=values.get("node") or DEFAULT_NODE))
            for key, value in values.items():
                if key == "agents_rung":
                    record.agents_rung = [*record.agents_rung, value]
                elif key == "transfers":
                    record.transfers = [*record.transfers, value]
                elif value is not None:
                    setattr(record, key, value)
            return record  # flushed with the batch (the caller reads it once committed)

        record = await self.writes.write(work, call_id)
        call = self.calls.get(call_id)
        if call is not None:
            call.record = record
        return record

    def _ivr_values(self, event: Any) -> dict[str, Any]:
        return {
            "hotline": chan_var(event, ChanVar.HOTLINE),
            "ivr_path": chan_var(event, ChanVar.IVR_PATH),
            "business": chan_var(event, ChanVar.BUSINESS),
            "category": chan_var(event, ChanVar.CATEGORY),
            "lookup_ticket": chan_var(event, ChanVar.LOOKUP_TICKET),
            "recording_file": chan_var(event, ChanVar.RECORDING_FILE),
            "voicemail_file": chan_var(event, ChanVar.VOICEMAIL_FILE),
        }

    # -- event handlers -----------------------------------------------------
    async def handle(self, event: Any) -> bool:
        """Apply one event; False when it failed (its effect is then repaired from Asterisk's books)."""
        name = event.get("Event")
        handler = getattr(self, f"on_{name}", None)
        if handler is None:
            return True
        async with self.gate.shared():
            try:
                await handler(event)
            except Exception:  # noqa: BLE001 - one bad event must not stop the tracker
                self.log.exception("event_failed", ami_event=name, call_id=call_id_of(event))
                self.counters.add("record_write_failed")
                return False
        return True

    async def _agent_id(self, event: Any, phone: str | None) -> int | None:
        return (await self._find_agent(event, phone))[0]

    async def _find_agent(self, event: Any, phone: str | None) -> tuple[int | None, bool]:
        """(the agent on ``phone``, whether the Redis look-up failed): Redis (set at log-in), else the
        queue member's name ("Display(username)"), which Asterisk puts on the event: an answer is never
        anonymous because Redis is away."""
        failed = False
        try:
            agent_id = await self.agent_for_phone(phone) if phone else None
        except LookupUnavailable as exc:
            self.log.warning("agent_lookup_failed", call_id=call_id_of(event), phone=phone, error=str(exc),
                             ami_event=event.get("Event"))
            self.counters.add("agent_lookup_failed")
            agent_id, failed = None, True
        username = member_username(event.get("MemberName"))
        if agent_id is not None or username is None:
            return agent_id, failed
        if username not in self._agent_ids:
            async with self.db.session() as session:
                found = await user_ids(session, {username})
            if username not in found:
                return None, failed
            self._agent_ids[username] = found[username]
        return self._agent_ids[username], failed

    async def _queued_at(self, call_id: str) -> datetime | None:
        call = self.calls.get(call_id)
        if call and call.queued:
            return call.queued
        async with self.db.session() as session:
            return await session.scalar(select(CallRecord.queued_at).where(CallRecord.call_id == call_id))

    async def _waited(self, event: Any, call_id: str) -> float:
        """From the queue join to this event, on Asterisk's event timestamps (HoldTime is whole seconds)."""
        queued = await self._queued_at(call_id)
        if queued is None or not event.get("Timestamp"):
            return float(event.get("HoldTime") or 0)
        return max(0.0, (event_time(event) - queued).total_seconds())

    async def on_UserEvent(self, event: Any) -> None:
        kind = event.get("UserEvent")
        call_id = call_id_of(event)
        if kind == "HotlineCallStart":
            started = event_time(event)
            caller = event.get("Caller") or event.get("CallerIDNum")
            self.calls[call_id] = LiveCall(call_id, started=started, caller=caller)
            outbound = event.get("Direction") == "outbound"
            agent = event.get("Agent")
            await self._update(
                call_id, node=event_node(event), started_at=started, hotline=event.get("Hotline") or None,
                did=None if outbound else event.get("Hotline"),
                caller_number=caller,
                linkedid=event.get("Linkedid"), state=CallState.TALKING if outbound else CallState.IVR,
                direction="outbound" if outbound else "inbound",
                agent_id=int(agent) if agent and agent.isdigit() else None,
            )
            await self.publish(ev.CallStarted(call_id=call_id, hotline=event.get("Hotline"),
                                              caller_number=event.get("Caller"), node=event_node(event)))
        elif kind == "HotlineRecording":
            await self._update(call_id, node=event_node(event), recording_file=event.get("File"))
        elif kind == "HotlineCallbackResult" and self.on_callback_result is not None:
            await self.on_callback_result(event.get("CallbackId"), event.get("DialStatus"), call_id)
        elif kind == "HotlineSurveyStart":
            await self._update(call_id, survey_started_at=event_time(event))
        elif kind == "HotlineSurvey" and event.get("Result") in GRADES:
            await self._grade(call_id, event.get("Result"), event_time(event))

    async def on_OriginateResponse(self, event: Any) -> None:
        """A callback Asterisk could not start: the agent's phone was not reached, no dialplan ran, and so no
        hangup handler will say how the attempt ended (the request would stay "dialling" for ever)."""
        callback_id = callback_of_action(event.get("ActionID"))
        if event.get("Response") == "Failure" and callback_id and self.on_callback_result is not None:
            await self.on_callback_result(callback_id, AGENT_NOT_REACHED, None)

    async def _grade(self, call_id: str, grade: str, when: datetime) -> None:
        """一次一评 on the call record and on every ticket the call is linked to that has no grade yet."""
        async def work(session) -> None:
            record = await _record(session, call_id)
            if record is None or record.satisfaction not in (None, UNRATED):
                return
            record.satisfaction, record.satisfaction_at = grade, when
            await grade_linked_tickets(session, call_id, grade)

        await self.writes.write(work, call_id)

    async def on_QueueCallerJoin(self, event: Any) -> None:
        call_id = call_id_of(event)
        when = event_time(event)
        call = self.calls.setdefault(call_id, LiveCall(call_id))
        call.queued = when
        if call.caller and call.history is None:  # a read, side by side with the write below
            call.history = asyncio.create_task(self.history(call.caller))
        await self._update(call_id, node=event_node(event), queued_at=when, queue=event.get("Queue"), state=CallState.QUEUED,
                           **self._ivr_values(event))
        await self.publish(ev.CallQueued(call_id=call_id, queue=event.get("Queue"),
                                         caller_number=event.get("CallerIDNum"),
                                         hotline=chan_var(event, ChanVar.HOTLINE), node=event_node(event)))

    async def on_AgentCalled(self, event: Any) -> None:
        call_id = call_id_of(event)
        phone = phone_of(event.get("Interface") or event.get("DestChannel"))
        agent_id, lookup_failed = await self._find_agent(event, phone)
        call = self.calls.setdefault(call_id, LiveCall(call_id))
        call.ringing_agents[phone or "?"] = agent_id
        now = event_time(event)
        values = {"node": event_node(event), **self._ivr_values(event)}
        write = asyncio.ensure_future(self._update(
            call_id, state=CallState.RINGING, agents_rung={"phone": phone, "agent_id": agent_id, "at": now.isoformat()},
            **values))
        history: asyncio.Future | None = None
        try:
            if agent_id is None:
                if lookup_failed:  # nobody to show it to, for want of Redis: said and counted, never silent
                    self.log.error("pop_lost", call_id=call_id, phone=phone, reason="agent look-up failed")
                    self.counters.add("pop_lost")
                await write
                return
            history, call.history = call.history, None  # a later ring asks afresh
            if call.record is None or call.record.caller_number != call.caller:
                # Its start unseen (a CTI restart) or its caller changed: the pop shows what the write stored.
                if history is not None:
                    history.cancel()
                record = await write
                history = None
            else:
                # The pop leaves now, built from the record as committed and this event's IVR variables (the
                # values the write is storing): the agent's phone is ringing and the commit can follow.
                record = _pop_view(call.record, values)
            if history is None:
                history = asyncio.ensure_future(self.history(record.caller_number))
            await self._pop(event, agent_id, record, now, await history)
            await write
        except BaseException:
            # The ring's write goes on (a failed pop must not lose it from the record); only the reads stop.
            for task in (history, call.history):
                if task is not None and not task.done():
                    task.cancel()
            raise

    async def _pop(self, event: Any, agent_id: int, record: CallRecord, now: datetime,
                   history: dict[str, Any]) -> None:
        waited = (now - (record.queued_at or record.started_at)).total_seconds()
        await self.publish(ev.ScreenPop(
            agent_id=agent_id, call_id=record.call_id, caller_number=record.caller_number, hotline=record.hotline,
            queue=event.get("Queue"), ivr_path=record.ivr_path, business=record.business,
            category=record.category, lookup_ticket=record.lookup_ticket,
            waited_seconds=round(waited, 1), history=history, draft=draft_from_call(record),
            agent_called_ts=float(event.get("Timestamp") or time.time()), call_ref=record.ref,
            node=record.node,
        ))

    async def on_AgentConnect(self, event: Any) -> None:
        call_id = call_id_of(event)
        phone = phone_of(event.get("Interface") or event.get("DestChannel"))
        agent_id = await self._agent_id(event, phone)
        when = event_time(event)
        wait = await self._waited(event, call_id)
        self.calls.setdefault(call_id, LiveCall(call_id)).answered = True
        await self._update(call_id, node=event_node(event), answered_at=when, state=CallState.TALKING, agent_extension=phone,
                           agent_id=agent_id, wait_seconds=wait, queue=event.get("Queue"))
        await self.publish(ev.CallAnswered(call_id=call_id, agent_id=agent_id, agent_extension=phone,
                                           queue=event.get("Queue"), waited_seconds=wait,
                                           node=event_node(event)))

    async def on_DialEnd(self, event: Any) -> None:
        """Outbound (desk) calls: the citizen answered."""
        call_id = chan_var(event, ChanVar.CALL_ID)
        if not call_id or call_id != event.get("Uniqueid") or event.get("DialStatus") != "ANSWER":
            return
        async def work(session) -> None:
            record = await _record(session, call_id)
            # Only the first answer of an outbound call: a citizen blind-transferred to a colleague's
            # phone is dialled from their own leg too, and that is not when the call was answered.
            if record is None or record.direction != "outbound" or record.answered_at is not None:
                return
            record.answered_at = event_time(event)
            record.state = CallState.TALKING
            record.agent_extension = phone_of(event.get("Channel")) or record.agent_extension

        await self.writes.write(work, call_id)

    async def on_QueueCallerLeave(self, event: Any) -> None:
        """A caller out of the queue without an agent (max wait reached, a key pressed for a voice
        message) is back in the dialplan: no longer counted as waiting by the wallboard and the alerts.
        The same event also comes when an agent answers, so a call an agent has is never touched."""
        call_id = call_id_of(event)
        call = self.calls.get(call_id)
        if call is not None and call.answered:
            return
        async def work(session) -> None:
            record = await _record(session, call_id)
            if record is not None and record.answered_at is None and record.ended_at is None \
                    and record.state in (CallState.QUEUED, CallState.RINGING):
                record.state = CallState.IVR

        await self.writes.write(work, call_id)

    async def on_QueueCallerAbandon(self, event: Any) -> None:
        call_id = call_id_of(event)
        await self._update(call_id, node=event_node(event), abandoned=True, wait_seconds=await self._waited(event, call_id))

    # Hold is measured where the citizen hears it: music on hold on the citizen's own leg after an
    # agent answered (a phone's hold key and the desk's hold both end up there; queue music before
    # the answer is waiting, not hold).
    async def on_MusicOnHoldStart(self, event: Any) -> None:
        call_id = chan_var(event, ChanVar.CALL_ID)
        call = self.calls.get(call_id or "")
        if call and event.get("Uniqueid") == call_id and call.answered:
            call.hold_started = event_time(event)

    async def on_MusicOnHoldStop(self, event: Any) -> None:
        call_id = chan_var(event, ChanVar.CALL_ID)
        call = self.calls.get(call_id or "")
        if call and event.get("Uniqueid") == call_id and call.hold_started:
            held = (event_time(event) - call.hold_started).total_seconds()
            call.hold_started = None

            async def work(session) -> None:
                record = await _record(session, call_id)
                if record:
                    record.hold_seconds = (record.hold_seconds or 0) + held

            await self.writes.write(work, call_id)

    async def on_BlindTransfer(self, event: Any) -> None:
        await self._transfer(event, "blind")

    async def on_AttendedTransfer(self, event: Any) -> None:
        await self._transfer(event, "attended")

    async def _transfer(self, event: Any, kind: str) -> None:
        call_id = (chan_var(event, ChanVar.CALL_ID, "TransfereeChanVariable")
                   or chan_var(event, ChanVar.CALL_ID, "TransfererChanVariable"))
        if not call_id:
            return
        await self._update(call_id, node=event_node(event), transfers={
            "kind": kind, "at": event_time(event).isoformat(), "result": event.get("Result"),
            "to": event.get("Extension") or event.get("SecondTransfererExten"),
        })

    async def on_Hangup(self, event: Any) -> None:
        uniqueid = event.get("Uniqueid")
        call_id = chan_var(event, ChanVar.CALL_ID)
        if not call_id or uniqueid != call_id:
            return  # only the citizen's own leg ends the call
        when = event_time(event)
        # queue_log is read before the write, not in it: a file read in the batch would hold up every call's.
        books = await self._books_before_hangup(call_id, event_node(event))
        call = self.calls.pop(call_id, None)
        if call is not None and call.history is not None:
            call.history.cancel()  # never rung: nobody shows it

        async def work(session) -> tuple[int | None, bool]:
            record = await _record(session, call_id)
            if record is None:
                record = _add_record(session, CallRecord(
                    call_id=call_id, started_at=call.started if call and call.started else when,
                    caller_number=event.get("CallerIDNum"), node=event_node(event)))
            for key, value in self._ivr_values(event).items():
                if value:
                    setattr(record, key, value)
            if record.direction == "inbound" and record.did is None:
                record.did = record.hotline  # its start unseen (a CTI restart): an inbound call's number dialled
            record.ended_at = when
            record.state = CallState.ENDED
            record.hangup_cause = event.get("Cause-txt") or event.get("Cause")
            left_message = record.voicemail_file or chan_var(event, ChanVar.CALLBACK_NUMBER)
            if record.answered_at is None and record.queued_at is not None and books is not None:
                await self._answer_from_books(session, record, books)
            if record.answered_at is None and record.queued_at is not None and not left_message:
                record.abandoned = True
                record.wait_seconds = (when - record.queued_at).total_seconds()
            if record.answered_at is not None and record.direction == "inbound" and record.satisfaction is None:
                record.satisfaction = UNRATED  # the citizen hung up first, or keyed no grade: 未评价
            if record.answered_at is not None:
                # Measured end to end rather than summed from AgentComplete: one figure across
                # transfers and holds, never inflated by a second agent leg.
                record.talk_seconds = talk_seconds(record)
            if chan_var(event, ChanVar.CALLBACK_NUMBER) and self.on_callback_request is not None:
                await self.on_callback_request(record, session)
            elif self.on_call_ended is not None:
                await self.on_call_ended(record, session)
            return record.agent_id, record.abandoned

        agent_id, abandoned = await self.writes.write(work, call_id)
        await self.publish(ev.CallEnded(call_id=call_id, abandoned=abandoned, agent_id=agent_id,
                                        node=event_node(event)))

    async def _books_before_hangup(self, call_id: str, node: str) -> QueueCall | None:
        """queue_log's account of a queued call nobody is known to have answered: before a queued call is
        called abandoned, did an agent answer it while we were not looking?"""
        call = self.calls.get(call_id)
        if self.queue_books is None or (call is not None and call.answered):
            return None
        queued = await self._queued_at(call_id)  # a read: readers never wait for the writer (WAL)
        if queued is None:
            return None
        try:
            return await asyncio.to_thread(self.queue_books, call_id, queued, node)
        except OSError:
            self.log.exception("queue_log_unreadable", call_id=call_id)
            return None

    async def _answer_from_books(self, session, record: CallRecord, queue: QueueCall) -> None:
        if queue.connected is None:
            return
        agents = await user_ids(session, {queue.username}) if queue.username else {}
        apply_queue_facts(record, queue, agents.get(queue.username or ""), None)
        record.source = "reconciled"
        self.log.info("answer_from_queue_log", call_id=record.call_id, member=queue.member)


RECORDS = "call_records"  # session.info: the batch's records by call id (None: looked up, none yet)


async def _prefetch_records(session, call_ids: list[str]) -> None:
    """The records of every call in a batch of writes, in one query."""
    found = {record.call_id: record for record in (await session.scalars(
        select(CallRecord).where(CallRecord.call_id.in_(call_ids)))).all()}
    session.info[RECORDS] = {call_id: found.get(call_id) for call_id in call_ids}


async def _record(session, call_id: str) -> CallRecord | None:
    known = session.info.get(RECORDS, {})
    if call_id in known:
        return known[call_id]
    return await session.scalar(select(CallRecord).where(CallRecord.call_id == call_id))


_POP_FIELDS = ("call_id", "ref", "node", "caller_number", "hotline", "ivr_path", "business", "category",
               "lookup_ticket", "started_at", "queued_at")


def _pop_view(record: CallRecord, values: dict[str, Any]) -> CallRecord:
    """A copy (never added to a session) of ``record``'s pop fields with ``values`` written over them as
    _update writes them: a value None leaves the stored one."""
    view = CallRecord(**{name: getattr(record, name) for name in _POP_FIELDS})
    for key, value in values.items():
        if value is not None:
            setattr(view, key, value)
    return view


def _add_record(session, record: CallRecord) -> CallRecord:
    session.add(record)
    session.info.setdefault(RECORDS, {})[record.call_id] = record
    return record

"""Call facts: the call record (one row per citizen call, the basis of every KPI) and callback requests.

The CTI writes them; tickets, recordings and the reports read them from here, so none of them needs the
CTI's internals (import-linter contract "tickets does not import cti internals").
"""

from __future__ import annotations

import enum
import secrets
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Boolean, Date, Enum, Float, Index, String, delete, event, inspect, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.db import Base, UTCDateTime, utcnow
from core.settings import DEFAULT_NODE


class CallState(enum.StrEnum):
    IVR = "ivr"
    QUEUED = "queued"
    RINGING = "ringing"
    TALKING = "talking"
    ENDED = "ended"


def new_call_ref() -> str:
    """A call's public reference (about 96 random bits).

    Asterisk's uniqueids are sequential (epoch.counter), so knowing one call's id gives away its
    neighbours; people only ever see and type this reference, the uniqueid stays internal.
    """
    return secrets.token_urlsafe(12)


class CallRecord(Base):
    __tablename__ = "call_records"
    __table_args__ = (
        Index("ix_call_records_caller_started", "caller_number", "started_at"),
        Index("ix_call_records_hotline_started", "hotline", "started_at"),
        # Today's calls of every hotline (wallboard, the alert watcher every 2 s): a range, not a table scan.
        Index("ix_call_records_started", "started_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[str] = mapped_column(String(64), unique=True)  # Asterisk uniqueid of the citizen leg
    # The Asterisk node the call is on; its uniqueids carry the node's name, so call_id is unique across nodes.
    node: Mapped[str] = mapped_column(String(16), default=DEFAULT_NODE, server_default=DEFAULT_NODE)
    ref: Mapped[str] = mapped_column(String(24), unique=True, default=new_call_ref)  # what people see and type
    linkedid: Mapped[str | None] = mapped_column(String(64), index=True)
    direction: Mapped[str] = mapped_column(String(8), default="inbound")
    hotline: Mapped[str | None] = mapped_column(String(8))
    did: Mapped[str | None] = mapped_column(String(32))
    caller_number: Mapped[str | None] = mapped_column(String(32))
    state: Mapped[CallState] = mapped_column(Enum(CallState, native_enum=False, length=16), default=CallState.IVR)

    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    ivr_path: Mapped[str | None] = mapped_column(String(255))
    business: Mapped[str | None] = mapped_column(String(16))    # consult / complaint / report / progress
    category: Mapped[str | None] = mapped_column(String(64))    # complaint object chosen in the IVR
    lookup_ticket: Mapped[str | None] = mapped_column(String(32))
    queue: Mapped[str | None] = mapped_column(String(64))
    agents_rung: Mapped[list] = mapped_column(JSON, default=list)
    agent_id: Mapped[int | None] = mapped_column(index=True)
    agent_extension: Mapped[str | None] = mapped_column(String(16))
    transfers: Mapped[list] = mapped_column(JSON, default=list)

    wait_seconds: Mapped[float | None] = mapped_column(Float)
    talk_seconds: Mapped[float | None] = mapped_column(Float)
    hold_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    abandoned: Mapped[bool] = mapped_column(Boolean, default=False)
    hangup_cause: Mapped[str | None] = mapped_column(String(64))
    recording_file: Mapped[str | None] = mapped_column(String(255))
    voicemail_file: Mapped[str | None] = mapped_column(String(255))
    # "ami" when followed live, "reconciled" when rebuilt from Asterisk's CDR after an outage.
    source: Mapped[str] = mapped_column(String(16), default="ami")
    # 一次一评 (core.satisfaction): the grade keyed after the agent hung up first, or "unrated" (未评价) for
    # an answered call whose citizen hung up first or keyed nothing; NULL when no agent answered.
    satisfaction: Mapped[str | None] = mapped_column(String(16))
    satisfaction_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When the agent left and the survey began (the agent hung up first); talk time ends here.
    survey_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The two waits the service-quality report sums for every call (quality.kpi_sql), derived from the
    # timestamps above at every write of the row (derive_waits, run by the ORM's flush for any writer: the
    # CTI tracker, reconciliation, the tests' fixtures). Computed while reading they cost SQLite four
    # timestamp parses per call: half the report's time at 100 000 calls a month (bench section "report").
    arrival_wait: Mapped[float | None] = mapped_column(Float)  # arrival -> answered (004 §3.8); NULL unanswered
    answer_wait: Mapped[float | None] = mapped_column(Float)   # queue entry -> answered, else wait_seconds


def span(start: datetime | None, end: datetime | None) -> float | None:
    """``end - start`` in seconds, never negative (clock skew between the CTI's events); None if either is."""
    return None if start is None or end is None else max(0.0, (end - start).total_seconds())


def call_waits(started_at: datetime | None, queued_at: datetime | None, answered_at: datetime | None,
               wait_seconds: float | None) -> tuple[float | None, float | None]:
    """(arrival -> answer, queue entry -> answer or else the CTI's measured wait): the report's two waits,
    exactly as ``quality.kpi.CallFact`` derives them from the same timestamps."""
    answer_wait = span(queued_at, answered_at)
    return span(started_at, answered_at), wait_seconds if answer_wait is None else answer_wait


@event.listens_for(CallRecord, "before_insert")
@event.listens_for(CallRecord, "before_update")
def derive_waits(_mapper: Any, _connection: Any, record: CallRecord) -> None:
    """Every ORM write of a call record keeps its derived waits in step with its timestamps (a correction by
    reconciliation of an old call's answer or start included)."""
    if record.started_at is None:  # the column default, applied here so that the wait counts from it
        record.started_at = utcnow()
    record.arrival_wait, record.answer_wait = call_waits(record.started_at, record.queued_at, record.answered_at,
                                                         record.wait_seconds)


class DaySummary(Base):
    """A finished local day's rows of the service-quality report's GROUP BY (quality.kpi_sql), per hotline
    ('' = all) and per variant (the grouping's version and the settings the rows depend on)."""

    __abstract__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    hotline: Mapped[str] = mapped_column(String(16))
    variant: Mapped[str] = mapped_column(String(64))
    day: Mapped[date] = mapped_column(Date)
    lo: Mapped[datetime] = mapped_column(UTCDateTime)  # the local day's bounds as UTC instants (the zone's)
    hi: Mapped[datetime] = mapped_column(UTCDateTime)
    groups: Mapped[list] = mapped_column(JSON)
    # Unique per stored row (never reused as SQLite may reuse a deleted row's id): a process keeps the rows it
    # read by stamp (quality.kpi_sql).
    stamp: Mapped[str] = mapped_column(String(32), index=True, unique=True)


class CallDaySummary(DaySummary):
    """A finished local day's call tally for the service-quality report (quality.kpi_sql), per hotline
    ('' = all) and per variant (the settings the tally depends on): the report's GROUP BY rows for that day.

    One writer, the report itself (quality.kpi_sql.tally): it stores the days that ended at least
    SUMMARY_GRACE ago, computed under a lock that waits for in-flight changes. Every change of a call that
    started before now - SUMMARY_GRACE, and every queue callback (it changes its call's outcome), deletes the
    summaries whose day holds that call's start, in the same transaction (:func:`forget_call_days`, run by the
    ORM's flush for any writer, as derive_waits): a reconciled old call or a late survey digit is in the next
    report. Calls of the last SUMMARY_GRACE (the CTI's live writes) cannot be in a summary: no statement."""

    __tablename__ = "report_call_days"
    __table_args__ = (Index("uq_report_call_days_key", "hotline", "variant", "lo", "hi", unique=True),
                      Index("ix_report_call_days_lo", "lo"))


class CallWaitSummary(DaySummary):
    """A finished local day's arrival waits of its answered calls (``groups``: [[day, [waits]]]), from which
    the report finds its 90th percentile without sorting the month's calls; stored and forgotten exactly as
    CallDaySummary (its own table: the two are read and counted apart)."""

    __tablename__ = "report_call_waits"
    __table_args__ = (Index("uq_report_call_waits_key", "hotline", "variant", "lo", "hi", unique=True),
                      Index("ix_report_call_waits_lo", "lo"))


# Hang-up causes of a call the platform cut off, not the citizen: written by the CTI's crash handling
# (cti.crash), read by the report, which counts such a call as 系统故障中断 rather than as an abandon.
RESTART_CAUSE = "asterisk_restart"  # Asterisk restarted under the call
LOST_CAUSE = "node_lost"            # the call's node was lost (cluster mode)
CUT_OFF_CAUSES = (RESTART_CAUSE, LOST_CAUSE)


# A day is summarised only once it ended this long ago, so the CTI's writes of live calls never touch the
# summaries (and clocks of several nodes may differ by less than this).
SUMMARY_GRACE = timedelta(hours=1)


@event.listens_for(Session, "after_flush")
def forget_call_days(session: Session, _context: Any) -> None:
    """Deletes the call-day summaries a flush's changes of old calls (or queue callbacks) make stale."""
    horizon = utcnow() - SUMMARY_GRACE
    moments: set[datetime] = set()
    callbacks: set[str] = set()
    for record in (*session.new, *session.dirty, *session.deleted):
        if isinstance(record, CallRecord):
            history = inspect(record).attrs.started_at.history  # the old start too, if corrected
            moments.update(m for m in (*history.added, *history.unchanged, *history.deleted)
                           if m is not None and m < horizon)
        elif (isinstance(record, CallbackRequest) and record not in session.dirty and record.source in ("queue", None)
              and record.call_id):  # made or removed; a status change leaves the call's outcome as it was
            callbacks.add(record.call_id)
    if not moments and not callbacks:
        return
    for model in (CallDaySummary, CallWaitSummary):
        covers = [(model.lo <= m) & (model.hi > m) for m in moments]
        if callbacks:
            covers.append(select(1).where(CallRecord.call_id.in_(callbacks), model.lo <= CallRecord.started_at,
                                          model.hi > CallRecord.started_at).exists())
        session.connection().execute(delete(model).where(or_(*covers)))


class CallbackStatus(enum.StrEnum):
    PENDING = "pending"      # waiting for its turn (queue callback) or the next working period (voicemail)
    DIALING = "dialing"      # an agent is being connected to the citizen
    DONE = "done"
    FAILED = "failed"        # retries used up
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class CallbackRequest(Base):
    """A citizen to be called back: from a queue (keeps their place in line), a voice message, a missed call,
    or a closed case's 回访 (``ticket_number``; tickets.return_visits)."""

    __tablename__ = "callback_requests"
    __table_args__ = (
        Index("ix_callback_requests_status_position", "status", "position_at"),
        # 漏接回拨: one task per number and local day, whatever the number of missed calls.
        Index("uq_callback_requests_missed_day", "number", "missed_day", unique=True),
        Index("ix_callback_requests_ticket_number", "ticket_number"),  # a ticket's 回访 task (the report)
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[str] = mapped_column(String(64), unique=True)  # one request per call, never two
    number: Mapped[str] = mapped_column(String(32))
    hotline: Mapped[str | None] = mapped_column(String(8))
    queue: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16), default="queue")  # queue | voicemail | missed | visit
    missed_day: Mapped[str | None] = mapped_column(String(10))  # local date of a missed call (source missed)
    # The moment the citizen joined the queue: their place in line among waiting callers.
    position_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[CallbackStatus] = mapped_column(
        Enum(CallbackStatus, native_enum=False, length=16), default=CallbackStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    agent_id: Mapped[int | None] = mapped_column()
    outbound_call_id: Mapped[str | None] = mapped_column(String(64))
    ticket_number: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

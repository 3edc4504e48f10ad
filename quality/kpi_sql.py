"""The service-quality report computed by the database: GROUP BY / SUM(CASE …) over the period's rows.

:func:`quality.kpi.load_facts` loads one row per call and per ticket and lets Python count them; at a
busy hotline's month (100 000 calls, tens of thousands of tickets) that took seconds. Here the calls become
one :class:`~quality.kpi.CallTally` from a few aggregate queries, and the tickets become one row per
distinct (kind, state, outcome, 投诉对象, local days of registration, 受理, closing, 移交, arrival), which is
all the working-day indicators need. The indicators themselves are the same functions of ``quality.kpi``;
``tests/tickets/test_kpi.py`` checks this path and the row-by-row one against the same hand computation.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from datetime import date, datetime, tzinfo
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    String,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.ext.asyncio import AsyncSession

from core import satisfaction as grades
from core.calls import CallbackRequest, CallRecord
from quality.kpi import (
    GBT_ANSWER_SECONDS,
    RATED,
    WAIT_BINS,
    WAIT_LIMIT_SECONDS,
    AgentRow,
    CallTally,
    DayRow,
    Facts,
    KpiSettings,
    Outcome,
    Report,
    TicketFact,
    compute,
    first_handover,
    local_bounds,
    previous_calls,
)
from tickets.models import Ticket


def _seconds(dialect: str, start: Any, end: Any) -> Any:
    """``end - start`` in seconds, never negative (clock skew between the CTI's events); NULL if either is."""
    if dialect == "postgresql":
        span = cast(func.extract("epoch", end - start), Float)
        return case((span < 0, 0.0), else_=span)
    # SQLite's own date functions keep milliseconds only; the stored text has microseconds
    # ("YYYY-MM-DD HH:MM:SS.ffffff"): whole seconds from strftime('%s') of the text cut at the seconds
    # (given ".9996" it rounds up to the next second), the fraction from the text. SQLite's two-argument
    # max() is the larger value (NULL if either is): the span is parsed once, not again for a CASE.
    return func.max(func.round(_sqlite_epoch(end) - _sqlite_epoch(start), 6), 0.0)


def _sqlite_epoch(moment: Any) -> Any:
    return cast(func.strftime("%s", func.substr(moment, 1, 19)), Integer) + cast(func.substr(moment, 20), Float)


def _local_day(dialect: str, moment: Any, zone: tzinfo, at: datetime) -> Any:
    """The local calendar day of a UTC timestamp column."""
    name = getattr(zone, "key", None)
    if dialect == "postgresql" and name:
        return func.date(func.timezone(cast(literal(name), String), moment))
    # A zone without a name, and SQLite (no time zones): the zone's offset at the period's start (China keeps
    # one offset all year).
    offset = int(zone.utcoffset(at.replace(tzinfo=None)).total_seconds())
    if dialect == "postgresql":
        return func.date(func.timezone(literal_column(f"INTERVAL '{offset} seconds'"), moment))
    return func.date(moment, f"{offset:+d} seconds")


def _day(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


# Aggregates with FILTER (both databases): a row that fails the condition skips the aggregate step, where
# SUM(CASE …) added a zero for it (SQLite: 15 % of the month's tally).
def _count(condition: Any) -> Any:
    return func.count().filter(condition)


def _sum(condition: Any, value: Any) -> Any:
    return func.coalesce(func.sum(value).filter(condition), 0.0)


def _calls_base(dialect: str, lo: datetime, hi: datetime, zone: tzinfo, hotline: str, s: KpiSettings) -> Any:
    """One row per inbound call of the period with what the indicators ask of it, derived in SQL."""
    queued = CallRecord.queued_at.is_not(None)
    answered = CallRecord.answered_at.is_not(None)
    voicemail = func.coalesce(CallRecord.voicemail_file, "") != ""
    # A look-up only for the calls the outcome's CASE gets that far with (unanswered, no voice message), not
    # a join probed for every call of the month.
    callback = (select(CallbackRequest.id)
                .where(CallbackRequest.call_id == CallRecord.call_id, CallbackRequest.source == "queue").exists())
    duration = case((CallRecord.ended_at.is_not(None), _seconds(dialect, CallRecord.started_at, CallRecord.ended_at)))
    outcome = case(
        (answered, Outcome.ANSWERED.value),
        (voicemail, Outcome.VOICEMAIL.value),
        (callback, Outcome.CALLBACK.value),
        (and_(CallRecord.ended_at.is_(None), func.coalesce(CallRecord.abandoned, false()).is_(False)),
         Outcome.IN_PROGRESS.value),
        (queued, Outcome.ABANDONED_QUEUE.value),
        (func.coalesce(CallRecord.ivr_path, "").like("after-hours%"), Outcome.AFTER_HOURS.value),
        (func.coalesce(CallRecord.lookup_ticket, "") != "", Outcome.SELF_SERVICE.value),
        else_=Outcome.ABANDONED_IVR.value)
    limit = s.short_abandon_seconds
    counted = (or_(answered, voicemail, callback, CallRecord.ended_at.is_(None), duration >= limit)
               if limit > 0 else true())
    query = (select(
        queued.label("queued"), answered.label("answered"), outcome.label("outcome"),
        case((counted, 1), else_=0).label("counted"),
        # The waits as stored by the call record's writers (core.calls.derive_waits): parsing the four
        # timestamps here was half of SQLite's time for the month.
        case((answered, CallRecord.arrival_wait)).label("arrival_wait"), CallRecord.answer_wait.label("answer_wait"),
        CallRecord.wait_seconds.label("queue_wait"),
        (func.coalesce(CallRecord.talk_seconds, 0.0) + func.coalesce(CallRecord.hold_seconds, 0.0)).label("talk_hold"),
        CallRecord.agent_id, CallRecord.satisfaction,
        _local_day(dialect, CallRecord.started_at, zone, lo).label("day"))
        .where(CallRecord.direction == "inbound", CallRecord.started_at >= lo, CallRecord.started_at < hi))
    if hotline:
        query = query.where(CallRecord.hotline == hotline)
    # OFFSET 0 (SQLite: LIMIT -1 OFFSET 0) keeps the subquery from being merged into the outer query: merged,
    # both databases evaluate each expression once for every aggregate that reads it (arrival_wait some twenty
    # times per call), this way once per call, as the rows stream by (SQLite's co-routine, no temporary table).
    return query.offset(0).subquery("calls")


async def tally(session: AsyncSession, lo: datetime, hi: datetime, zone: tzinfo, hotline: str,
                s: KpiSettings) -> CallTally:
    """The calls of the period as one :class:`~quality.kpi.CallTally`: one pass over the calls, grouped by
    outcome, counted or not, local day and answering agent (a few thousand groups a month), summed up here
    into the totals, the days and the agents; and the nearest-rank 90th percentile of the waits."""
    dialect = session.bind.dialect.name
    c = _calls_base(dialect, lo, hi, zone, hotline, s).c
    is_answered = c.answered.is_(True)
    is_queued = c.queued.is_(True)
    rated = c.satisfaction.in_(RATED)
    satisfied = c.satisfaction.in_((grades.SATISFIED, grades.BASIC))
    abandoned_queue = c.outcome == Outcome.ABANDONED_QUEUE.value
    agent = case((is_answered, c.agent_id))
    main = select(
        c.outcome, c.counted, c.day, agent, func.count(),
        _count(is_answered), _sum(is_answered, c.arrival_wait),
        _count(c.arrival_wait <= GBT_ANSWER_SECONDS), _count(is_queued), _count(and_(is_queued, is_answered)),
        _count(and_(is_queued, c.arrival_wait <= WAIT_LIMIT_SECONDS)),
        _count(and_(is_queued, is_answered, func.coalesce(c.answer_wait, 0.0) <= s.service_level_seconds)),
        _sum(and_(is_queued, is_answered), func.coalesce(c.answer_wait, 0.0)),
        _sum(abandoned_queue, func.coalesce(c.queue_wait, 0.0)),
        _sum(is_answered, c.talk_hold), _count(and_(is_answered, c.satisfaction.is_not(None))),
        _count(and_(is_answered, rated)), _count(and_(is_answered, satisfied)),
        *(_count(and_(c.arrival_wait >= low, c.arrival_wait < high)) if math.isfinite(high)
          else _count(c.arrival_wait >= low) for low, high, _label in WAIT_BINS),
    ).group_by(c.outcome, c.counted, c.day, agent)
    t = CallTally(s)
    days: dict[date | None, DayRow] = {}
    for (outcome, in_count, day, agent_id, n, answered, wait_sum, within_15, offered, offered_answered,
         within_minute, level, asa_sum, abandon_wait, talk_hold, surveyed, n_rated, n_satisfied, *bins
         ) in (await session.execute(main)):
        t.calls += n
        t.outcomes[Outcome(outcome)] += n
        t.answered += answered
        t.talk_hold_sum += talk_hold
        t.surveyed += surveyed
        t.rated += n_rated
        t.satisfied += n_satisfied
        if agent_id is not None:
            row = t.agents.setdefault(agent_id, AgentRow(agent_id, ""))
            row.calls += answered
            row.handling_seconds += talk_hold + s.wrapup_seconds * answered
            row.rated += n_rated
            row.satisfied += n_satisfied
        if not in_count:
            continue
        abandoned = n if outcome == Outcome.ABANDONED_QUEUE.value else 0
        d = days.setdefault(_day(day), DayRow(_day(day)))
        d.calls += n
        d.offered += offered
        d.answered += answered
        d.abandoned += abandoned
        t.counted += n
        t.counted_answered += answered
        t.counted_wait_sum += wait_sum
        t.within_15 += within_15
        t.ivr_abandoned += n if outcome == Outcome.ABANDONED_IVR.value else 0
        t.offered += offered
        t.offered_answered += offered_answered
        t.within_minute += within_minute
        t.service_level += level
        t.asa_sum += asa_sum
        t.abandoned_queue += abandoned
        t.abandon_wait_sum += abandon_wait if abandoned else 0.0
        t.histogram = [a + b for a, b in zip(t.histogram, bins, strict=True)]
    t.days = [days[day] for day in sorted(days)]
    t.agents = dict(sorted(t.agents.items()))
    if t.counted_answered:
        t.wait_p90 = await _wait_p90(session, lo, hi, hotline, t)
    return t


async def _wait_p90(session: AsyncSession, lo: datetime, hi: datetime, hotline: str, t: CallTally) -> float | None:
    """The nearest-rank 90th percentile of the answered calls' arrival waits (answered calls are always
    counted: short abandons are unanswered). The wait histogram already says which bin holds that rank, so
    only that bin's waits are sorted, not the whole month's (the same value: the same order within it)."""
    rank = min(t.counted_answered - 1, max(0, math.ceil(0.9 * t.counted_answered) - 1))
    wait = CallRecord.arrival_wait
    query = select(wait).where(CallRecord.direction == "inbound", CallRecord.started_at >= lo,
                               CallRecord.started_at < hi, CallRecord.answered_at.is_not(None))
    if hotline:
        query = query.where(CallRecord.hotline == hotline)
    if sum(t.histogram) == t.counted_answered:  # every answered call has its wait (else: sort them all)
        below = 0
        for (low, high, _label), n in zip(WAIT_BINS, t.histogram, strict=True):
            if rank < below + n:
                query = query.where(wait >= low, *((wait < high,) if math.isfinite(high) else ()))
                rank -= below
                break
            below += n
    return await session.scalar(query.order_by(wait).limit(1).offset(rank))


async def ticket_groups(session: AsyncSession, lo: datetime, hi: datetime, zone: tzinfo,
                        hotline: str) -> list[TicketFact]:
    """Tickets registered in the period, one row per distinct set of facts and local days, with its count.

    Each day is given as local noon, so :meth:`Facts.local_date` of it is that day again.
    """
    dialect = session.bind.dialect.name

    def day(column: Any, label: str) -> Any:
        return _local_day(dialect, column, zone, lo).label(label)

    visit = (CallbackRequest.ticket_number == Ticket.number) & (CallbackRequest.source == "visit")
    base = (select(Ticket.kind, Ticket.state, Ticket.review_outcome, Ticket.complaint_object,
                   day(Ticket.created_at, "created"), day(Ticket.accepted_at, "accepted"),
                   day(Ticket.closed_at, "closed"), day(first_handover(Ticket.id), "handed"),
                   day(Ticket.transferred_at, "transferred"),
                   case((CallbackRequest.id.is_not(None), 1), else_=0).label("visit_due"),
                   Ticket.visit_satisfaction)
            .outerjoin(CallbackRequest, visit)
            .where(Ticket.created_at >= lo, Ticket.created_at < hi))
    if hotline:
        base = base.where(Ticket.hotline == hotline)
    # OFFSET 0 as in _calls_base: merged into the GROUP BY, each day (and the first-移交 look-up) was
    # evaluated twice per ticket, for the grouping and again for the output.
    b = base.offset(0).subquery("t").c
    columns = (b.kind, b.state, b.review_outcome, b.complaint_object, b.created, b.accepted, b.closed, b.handed,
               b.transferred, b.visit_due, b.visit_satisfaction)
    noon = dt.time(12)
    moments: dict[Any, datetime | None] = {None: None}  # a few hundred distinct days for tens of thousands

    def at(value: Any) -> datetime | None:
        if value not in moments:
            moments[value] = datetime.combine(_day(value), noon, zone)
        return moments[value]

    rows = await session.execute(select(*columns, func.count()).group_by(*columns))
    return [TicketFact(str(kind), str(state), at(created), at(accepted), at(closed), at(handed_at), at(transferred),
                       None if review is None else str(review), obj, hotline or None, bool(visit_due), grade, count=n)
            for kind, state, review, obj, created, accepted, closed, handed_at, transferred, visit_due, grade, n
            in rows]


async def load_report(session: AsyncSession, start: date, end: date, zone: tzinfo, hotline: str = "",
                      today: date | None = None, settings: KpiSettings | None = None,
                      agent_names: dict[int, str] | None = None) -> Report:
    """The report of :func:`quality.kpi.compute` for [start, end] (local days), aggregated in SQL."""
    settings = settings or KpiSettings()
    lo, hi = local_bounds(start, end, zone)
    await _no_jit(session)
    # The tickets are read on a connection of their own (``session`` is one of core.db.Database's, bound to
    # its engine) while the calls are read on this one: two independent scans on two cores (SQLite's WAL and
    # PostgreSQL both let readers run side by side). Each statement already saw its own snapshot (autocommit
    # reads on SQLite, READ COMMITTED on PostgreSQL), so the figures are what one connection gave.
    async with AsyncSession(session.bind) as beside:
        await _no_jit(beside)
        tickets, call_tally = await asyncio.gather(ticket_groups(beside, lo, hi, zone, hotline),
                                                   tally(session, lo, hi, zone, hotline, settings))
    facts = Facts(start, end, zone, tickets=tickets, previous_calls=await previous_calls(session, start, end, zone, hotline),
                  as_of=min(end, today) if today else end, agent_names=agent_names or {}, call_tally=call_tally)
    return compute(facts, settings)


async def _no_jit(session: AsyncSession) -> None:
    """PostgreSQL's JIT compiles the report's few dozen expressions when the estimated cost is high (the
    per-ticket first-移交 look-up makes it so): 7.5 s of compiling for queries that run in a fraction of a
    second (EXPLAIN ANALYZE at 1 000 000 tickets). For the session's transaction only."""
    if session.bind.dialect.name == "postgresql":
        await session.execute(text("SET LOCAL jit = off"))

"""The service-quality report computed by the database: GROUP BY / SUM(CASE …) over the period's rows.

:func:`quality.kpi.load_facts` loads one row per call and per ticket and lets Python count them; at a
busy hotline's month (100 000 calls, tens of thousands of tickets) that took seconds. Here the calls become
one :class:`~quality.kpi.CallTally` from a few aggregate queries, and the tickets become one row per
distinct (kind, state, outcome, 投诉对象, local days of registration, 受理, closing, 移交, arrival), which is
all the working-day indicators need. Finished days' rows of both are stored (report_call_days,
report_ticket_days) and read back; a change of a call or ticket deletes its day's. The indicators themselves are the same functions of ``quality.kpi``;
``tests/tickets/test_kpi.py`` checks this path and the row-by-row one against the same hand computation.
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import math
import secrets
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    String,
    and_,
    case,
    cast,
    delete,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    true,
    type_coerce,
)
from sqlalchemy.ext.asyncio import AsyncSession

from core import satisfaction as grades
from core.calls import (
    CUT_OFF_CAUSES,
    SUMMARY_GRACE,
    CallbackRequest,
    CallDaySummary,
    CallRecord,
    CallWaitSummary,
    DaySummary,
)
from core.db import utcnow
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
from tickets.models import Ticket, TicketDaySummary


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


def _calls_base(dialect: str, runs: list[tuple[datetime, datetime]], zone: tzinfo, hotline: str,
                s: KpiSettings) -> Any:
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
        (CallRecord.hangup_cause.in_(CUT_OFF_CAUSES), Outcome.CUT_OFF.value),
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
        _local_day(dialect, CallRecord.started_at, zone, runs[0][0]).label("day"))
        .where(CallRecord.direction == "inbound",
               or_(*(and_(CallRecord.started_at >= lo, CallRecord.started_at < hi) for lo, hi in runs))))
    if hotline:
        query = query.where(CallRecord.hotline == hotline)
    # OFFSET 0 (SQLite: LIMIT -1 OFFSET 0) keeps the subquery from being merged into the outer query: merged,
    # both databases evaluate each expression once for every aggregate that reads it (arrival_wait some twenty
    # times per call), this way once per call, as the rows stream by (SQLite's co-routine, no temporary table).
    return query.offset(0).subquery("calls")


def _call_groups_query(dialect: str, runs: list[tuple[datetime, datetime]], zone: tzinfo, hotline: str,
                       s: KpiSettings) -> Any:
    """The GROUP BY over the calls that started in ``runs`` (UTC ranges)."""
    c = _calls_base(dialect, runs, zone, hotline, s).c
    is_answered = c.answered.is_(True)
    is_queued = c.queued.is_(True)
    rated = c.satisfaction.in_(RATED)
    satisfied = c.satisfaction.in_((grades.SATISFIED, grades.BASIC))
    abandoned_queue = c.outcome == Outcome.ABANDONED_QUEUE.value
    agent = case((is_answered, c.agent_id))
    return select(
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


# The grouping's version, part of every stored day's key: a day stored by a grouping that counted differently
# (before CUT_OFF, an abandon) is not read, and is stored again the new way at the next report.
GROUPING = "g2"


def _variant(s: KpiSettings) -> str:
    """The settings the call groups depend on (short abandons, the service level's Y); the rest is applied
    afterwards."""
    return f"{GROUPING}/{s.short_abandon_seconds!r}/{s.service_level_seconds!r}"


def _runs(days: list[tuple[date, datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Adjacent days' bounds merged into ranges (one index range each)."""
    runs: list[tuple[datetime, datetime]] = []
    for _, lo, hi in days:
        if runs and runs[-1][1] == lo:
            runs[-1] = (runs[-1][0], hi)
        else:
            runs.append((lo, hi))
    return runs


async def _live_groups(session: AsyncSession, days: list[tuple[date, datetime, datetime]], zone: tzinfo,
                       hotline: str, s: KpiSettings) -> list[list[Any]]:
    query = _call_groups_query(session.bind.dialect.name, _runs(days), zone, hotline, s)
    return [[*row[:2], _day(row[2]), *row[3:]] for row in await session.execute(query)]


def _local_days(lo: datetime, hi: datetime, zone: tzinfo) -> list[tuple[date, datetime, datetime]]:
    """The local days of [lo, hi), each with its bounds as UTC instants (cut to [lo, hi))."""
    days = []
    day = lo.astimezone(zone).date()
    while True:
        day_lo, day_hi = local_bounds(day, day, zone)
        if day_lo >= hi:
            return days
        days.append((day, max(day_lo, lo), min(day_hi, hi)))
        day += dt.timedelta(days=1)


Days = list[tuple[date, datetime, datetime]]
Rows = list[list[Any]]


@dataclass(frozen=True)
class _DayRows:
    """How one kind of the report's GROUP BY rows is kept per finished day: the table, the rows' version and
    settings (``variant``), how the rows of some days are computed now, which day a row belongs to, the row
    as stored (JSON), and a day's rows (as computed or as stored) made into what the report reads."""

    model: type[DaySummary]
    variant: str
    compute: Callable[[AsyncSession, Days], Awaitable[Rows]]
    day_of: Callable[[list[Any]], date | None]
    encode: Callable[[list[Any]], list[Any]]
    final: Callable[[Rows], list[Any]]


# Stored days as the report reads them, by table and stamp (a stored day's rows never change: a change
# deletes the row, and the day is stored again under a new stamp). Decoding a month's JSON and making its
# ticket facts again was most of the report's time once the days were stored (0.35 s of 0.7 s at 1 000 000
# tickets); a stored day whose stamp is gone is never asked for again and leaves by age. A busy month's
# tickets are some 18 000 facts: the bound keeps a few years of days.
_READ_DAYS: OrderedDict[tuple[str, str, str], list[Any]] = OrderedDict()
READ_DAYS_KEPT = 2000


def forget_read_days() -> None:
    """Drops the stored days read so far (the next report reads them from the database again)."""
    _READ_DAYS.clear()


def _remember(key: tuple[str, str, str], value: list[Any]) -> None:
    _READ_DAYS[key] = value
    while len(_READ_DAYS) > READ_DAYS_KEPT:
        _READ_DAYS.popitem(last=False)


async def _day_rows(session: AsyncSession, kind: _DayRows, lo: datetime, hi: datetime, zone: tzinfo,
                    hotline: str) -> list[Any]:
    """The rows of [lo, hi): finished days from ``kind.model``, the others (today, and days a late change made
    stale) computed now; finished days computed now are stored for the next report. Stored days already read
    by this process come from memory: only their stamps are read."""
    days = _local_days(lo, hi, zone)
    model = kind.model
    stamps = {(a, b): stamp for a, b, stamp in await session.execute(
        select(model.lo, model.hi, model.stamp).where(
            model.hotline == hotline, model.variant == kind.variant, model.lo >= lo, model.hi <= hi))}
    zone_key = str(zone)

    def key(stamp: str) -> tuple[str, str, str]:
        return model.__tablename__, stamp, zone_key

    unread = [stamp for stamp in stamps.values() if key(stamp) not in _READ_DAYS]
    for first in range(0, len(unread), 500):
        for stamp, groups in await session.execute(
                select(model.stamp, model.groups).where(model.stamp.in_(unread[first:first + 500]))):
            _remember(key(stamp), kind.final(groups))
    rows: list[Any] = []
    missing = []
    for d in days:
        read = _READ_DAYS.get(key(stamps[d[1:]])) if d[1:] in stamps else None
        if read is None:  # not stored, or deleted by a change since its stamp was read
            missing.append(d)
        else:
            _READ_DAYS.move_to_end(key(stamps[d[1:]]))
            rows += read
    if not missing:
        return rows
    horizon = utcnow() - SUMMARY_GRACE
    finished = [d for d in missing if d[2] <= horizon and d[1:] == local_bounds(d[0], d[0], zone)]
    unfinished = [d for d in missing if d not in finished]
    if unfinished:
        rows += kind.final(await kind.compute(session, unfinished))
    for first in range(0, len(finished), STORE_DAYS):
        rows += await _store_days(session, kind, finished[first:first + STORE_DAYS], hotline, zone_key)
    return rows


# Finished days are computed and stored a few at a time: the lock below holds off writers of old calls or
# tickets (on SQLite: every writer) for one such batch only, some 10 000 calls at a busy hotline.
STORE_DAYS = 3


async def _store_days(session: AsyncSession, kind: _DayRows, days: Days, hotline: str, zone_key: str) -> list[Any]:
    """The rows of ``days`` (finished), computed now and stored.

    Under a lock that waits for every transaction that changed an old call (ticket) and has not committed
    yet, and holds off new ones until these days are in (their forget_call_days / forget_ticket_days then
    deletes them again): a change is either in the rows computed here or deletes what is stored. PostgreSQL:
    a table lock against the forgetting DELETE; SQLite: the database's write lock, taken by the first DELETE."""
    model = kind.model
    async with AsyncSession(session.bind) as writer, writer.begin():
        if writer.bind.dialect.name == "postgresql":
            await writer.execute(text(f"LOCK TABLE {model.__tablename__} IN SHARE ROW EXCLUSIVE MODE"))
        await writer.execute(delete(model).where(
            model.hotline == hotline, model.variant == kind.variant,
            or_(*(and_(model.lo == a, model.hi == b) for _day, a, b in days))))
        await _no_jit(writer)
        computed = await kind.compute(writer, days)
        by_day: dict[date, Rows] = {d: [] for d, _a, _b in days}  # a day without rows: []
        placed = [(kind.day_of(g), g) for g in computed]
        if any(day not in by_day for day, _g in placed):
            # SQLite's fixed offset put a row into a neighbouring day (a zone with summer time): not stored
            return kind.final(computed)
        for day, g in placed:
            by_day[day].append(kind.encode(g))
        made = [(secrets.token_hex(16), by_day[d]) for d, _a, _b in days]
        writer.add_all(model(hotline=hotline, variant=kind.variant, day=d, lo=a, hi=b, groups=groups, stamp=stamp)
                       for (d, a, b), (stamp, groups) in zip(days, made, strict=True))
    read = []
    for stamp, groups in made:  # committed: as a later report reads them back
        rows = kind.final(groups)
        _remember((model.__tablename__, stamp, zone_key), rows)
        read += rows
    return read


def _call_rows(zone: tzinfo, hotline: str, s: KpiSettings) -> _DayRows:
    """The call groups, per finished day in ``report_call_days``.

    Why the calls were stored first: their GROUP BY with its twenty aggregates was the longest of the
    report's parts at 100 000 calls a month (SQLite's sort of every call, then every FILTER per call), and a
    call is final once it ended, but for rare late facts (reconciliation, a survey digit, a queue callback)
    which core.calls.forget_call_days turns into a recomputation of that day."""
    return _DayRows(CallDaySummary, _variant(s), lambda session, days: _live_groups(session, days, zone, hotline, s),
                    lambda g: g[2], lambda g: [*g[:2], g[2].isoformat(), *g[3:]],
                    lambda rows: [[*g[:2], _day(g[2]), *g[3:]] for g in rows])


async def tally(session: AsyncSession, lo: datetime, hi: datetime, zone: tzinfo, hotline: str,
                s: KpiSettings) -> CallTally:
    """The calls of the period as one :class:`~quality.kpi.CallTally`: the calls grouped by outcome, counted
    or not, local day and answering agent (a few thousand groups a month), from the stored summaries of
    finished days and one pass over the calls of the other days, summed up here into the totals, the days
    and the agents; and the nearest-rank 90th percentile of the waits."""
    groups = await _day_rows(session, _call_rows(zone, hotline, s), lo, hi, zone, hotline)
    # One order whichever day came from where (and whatever order PostgreSQL's hash grouping gave): the
    # float sums below are added in the same order every time.
    groups.sort(key=lambda g: (g[0], g[1], g[2], g[3] is not None, g[3] or 0))
    t = CallTally(s)
    days: dict[date | None, DayRow] = {}
    for (outcome, in_count, day, agent_id, n, answered, wait_sum, within_15, offered, offered_answered,
         within_minute, level, asa_sum, abandon_wait, talk_hold, surveyed, n_rated, n_satisfied, *bins
         ) in groups:
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
        t.wait_p90 = await _wait_p90(session, lo, hi, zone, hotline, t)
    return t


# The answered calls' arrival waits, per finished day, sorted (report_call_waits, forgotten with the day's
# call groups): the 90th percentile's place is then found here.
WAITS = "w1"


def _wait_rows(zone: tzinfo, hotline: str) -> _DayRows:
    """[day, the waits of its answered calls] per day; read back as each day's waits, sorted."""

    async def compute(session: AsyncSession, days: Days) -> Rows:
        runs = _runs(days)
        day = _local_day(session.bind.dialect.name, CallRecord.started_at, zone, runs[0][0])
        query = select(day, CallRecord.arrival_wait).where(
            CallRecord.direction == "inbound", CallRecord.answered_at.is_not(None),
            CallRecord.arrival_wait.is_not(None),
            or_(*(and_(CallRecord.started_at >= lo, CallRecord.started_at < hi) for lo, hi in runs)))
        if hotline:
            query = query.where(CallRecord.hotline == hotline)
        by_day: dict[date | None, list[float]] = {}
        for value, wait in await session.execute(query):
            by_day.setdefault(_day(value), []).append(wait)
        return [[d, waits] for d, waits in by_day.items()]

    return _DayRows(CallWaitSummary, WAITS, compute, lambda row: row[0],
                    lambda row: [row[0].isoformat(), row[1]], lambda rows: [sorted(row[1]) for row in rows])


async def _wait_p90(session: AsyncSession, lo: datetime, hi: datetime, zone: tzinfo, hotline: str,
                    t: CallTally) -> float | None:
    """The nearest-rank 90th percentile of the answered calls' arrival waits (answered calls are always
    counted: short abandons are unanswered). The wait histogram already says which bin holds that rank, so
    only that bin's waits are sorted, not the whole month's (the same value: the same order within it): from
    the days' stored waits, or by the database when they do not add up to the histogram's bin (a change
    between the two reads; answered calls without their wait, which the database sorts in its own place)."""
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
                days = await _day_rows(session, _wait_rows(zone, hotline), lo, hi, zone, hotline)
                chosen = [w for waits in days for w in waits[bisect.bisect_left(waits, low):(
                    bisect.bisect_left(waits, high) if math.isfinite(high) else len(waits))]]
                if len(chosen) == n:
                    return sorted(chosen)[rank - below]
                query = query.where(wait >= low, *((wait < high,) if math.isfinite(high) else ()))
                rank -= below
                break
            below += n
    return await session.scalar(query.order_by(wait).limit(1).offset(rank))


# The ticket rows' version, part of every stored day's key (as GROUPING for the calls).
TICKET_GROUPING = "t1"


async def ticket_groups(session: AsyncSession, lo: datetime, hi: datetime, zone: tzinfo,
                        hotline: str) -> list[TicketFact]:
    """Tickets registered in [lo, hi), one row per distinct set of facts and local days, with its count:
    finished days' rows from ``report_ticket_days`` (tickets.models.TicketDaySummary), the other days'
    grouped now (and stored, if finished).

    Each day is given as local noon, so :meth:`Facts.local_date` of it is that day again.
    """
    return await _day_rows(session, _DayRows(
        TicketDaySummary, TICKET_GROUPING, lambda session, days: _live_ticket_rows(session, _runs(days), zone, hotline),
        lambda row: _day(row[4]), _stored_ticket_row, lambda rows: _ticket_facts(rows, zone, hotline)),
        lo, hi, zone, hotline)


def _ticket_facts(rows: Rows, zone: tzinfo, hotline: str) -> list[TicketFact]:
    """Ticket rows (as the database gives them, or as stored: ISO text days) as the report's facts. A few
    dozen distinct days among the rows: each becomes its local noon once, then a dict look-up."""
    noon = dt.time(12)
    at: dict[Any, datetime | None] = {value: None if value is None else datetime.combine(_day(value), noon, zone)
                                      for value in {value for row in rows for value in row[4:9]}}
    return [TicketFact(kind, state, at[created], at[accepted], at[closed], at[handed_at], at[transferred],
                       review, obj, hotline or None, bool(visit_due), grade, count=n)
            for kind, state, review, obj, created, accepted, closed, handed_at, transferred, visit_due, grade, n
            in rows]


def _stored_ticket_row(row: list[Any]) -> list[Any]:
    """A ticket row as JSON: its five days as ISO text (PostgreSQL gives dates, SQLite text already)."""
    return [*row[:4], *(None if value is None else str(value) for value in row[4:9]), *row[9:]]


async def _live_ticket_rows(session: AsyncSession, runs: list[tuple[datetime, datetime]], zone: tzinfo,
                            hotline: str) -> Rows:
    """The GROUP BY over the tickets registered in ``runs`` (UTC ranges); the days as the database gives them."""
    dialect = session.bind.dialect.name

    def day(column: Any, label: str) -> Any:
        return type_coerce(_local_day(dialect, column, zone, runs[0][0]), String).label(label)

    visit = (CallbackRequest.ticket_number == Ticket.number) & (CallbackRequest.source == "visit")
    # The stored strings as they are (type_coerce: no Enum member made per row only to be turned back into its
    # value), and the days as the database gives them (_day in ticket_groups, once per distinct value).
    base = (select(type_coerce(Ticket.kind, String), type_coerce(Ticket.state, String),
                   type_coerce(Ticket.review_outcome, String), Ticket.complaint_object,
                   day(Ticket.created_at, "created"), day(Ticket.accepted_at, "accepted"),
                   day(Ticket.closed_at, "closed"), day(first_handover(Ticket.id), "handed"),
                   day(Ticket.transferred_at, "transferred"),
                   case((CallbackRequest.id.is_not(None), 1), else_=0).label("visit_due"),
                   Ticket.visit_satisfaction)
            .outerjoin(CallbackRequest, visit)
            .where(or_(*(and_(Ticket.created_at >= lo, Ticket.created_at < hi) for lo, hi in runs))))
    if hotline:
        base = base.where(Ticket.hotline == hotline)
    # OFFSET 0 as in _calls_base: merged into the GROUP BY, each day (and the first-移交 look-up) was
    # evaluated twice per ticket, for the grouping and again for the output.
    b = base.offset(0).subquery("t").c
    columns = (b.kind, b.state, b.review_outcome, b.complaint_object, b.created, b.accepted, b.closed, b.handed,
               b.transferred, b.visit_due, b.visit_satisfaction)
    # Core rows from the session's connection: the ORM's result loading cost more than the query's grouping
    # (some 18 000 groups a month at 1 000 000 tickets).
    connection = await session.connection()
    return [list(row) for row in await connection.execute(select(*columns, func.count()).group_by(*columns))]


# A report holds up to four of the pool's connections at once (``session``'s, the tickets', a day store's
# writer for each). Reports started side by side each holding some and waiting for the rest emptied the
# pool (core.db: 5 + 10 overflow) and every one of them failed after the pool's 30 s: at most this many are
# computed at once in a process, the others wait their turn without holding any.
REPORTS_AT_ONCE = 2
_report_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


async def load_report(session: AsyncSession, start: date, end: date, zone: tzinfo, hotline: str = "",
                      today: date | None = None, settings: KpiSettings | None = None,
                      agent_names: dict[int, str] | None = None) -> Report:
    """The report of :func:`quality.kpi.compute` for [start, end] (local days), aggregated in SQL."""
    loop = asyncio.get_running_loop()
    turns = _report_turns.setdefault(loop, asyncio.Semaphore(REPORTS_AT_ONCE))
    async with turns:
        return await _load_report(session, start, end, zone, hotline, today, settings, agent_names)


async def _load_report(session: AsyncSession, start: date, end: date, zone: tzinfo, hotline: str,
                       today: date | None, settings: KpiSettings | None, agent_names: dict[int, str] | None) -> Report:
    settings = settings or KpiSettings()
    lo, hi = local_bounds(start, end, zone)
    await _no_jit(session)
    # The tickets are read on a connection of their own (``session`` is one of core.db.Database's, bound to
    # its engine) while the calls are read on this one: both are mostly stored finished days, but today's
    # (and a day a change made stale) are grouped now, and that is what the two cores share (SQLite's WAL and
    # PostgreSQL both let readers run side by side). Each statement already saw its own snapshot (autocommit
    # reads on SQLite, READ COMMITTED on PostgreSQL), so the figures are what one connection gave.
    async with AsyncSession(session.bind) as other:
        await _no_jit(other)
        tickets, call_tally = await asyncio.gather(ticket_groups(other, lo, hi, zone, hotline),
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

"""Section "report": time to compute a month's service-quality report (quality.kpi) on a full database.

100 000 call records in one month (outcomes mixed as a busy hotline's: answered, abandoned in the queue and in
the IVR, voice messages, after hours) and 1 000 000 tickets over two years (``tickets.perf.fill``: one a
minute from 2024-01-01, so the month holds about 43 000 of them), on SQLite and a throwaway PostgreSQL
(fsync on). Timed: what ``GET /report`` does (``quality.kpi_sql.load_report``: the month's calls and
tickets aggregated by the database, every indicator), p50/p95. Comparison points in the same run: a bare
``COUNT(*)`` of the month's call records and tickets (the least any report must read), and the same report
computed row by row in Python (``kpi.load_facts`` + ``kpi.compute``, what the page did before).
``HOTLINE_BENCH_REPORT=calls,tickets`` (e.g. ``2000,20000``) sets the sizes while developing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import tempfile
import time
from zoneinfo import ZoneInfo

from sqlalchemy import func, insert, select, text

from bench.report import Report, percentile
from cli.postgres import throwaway_postgresql
from cli.stack import migrate_url
from core.db import Database
from cti.models import CallRecord, new_call_ref
from quality import kpi, kpi_sql
from tickets import perf
from tickets.models import Ticket

ZONE = ZoneInfo("Asia/Shanghai")
MONTH = (dt.date(2024, 6, 1), dt.date(2024, 6, 30))


def _call_rows(count: int, first: int = 0) -> list[dict]:
    rng = random.Random(count)
    start = dt.datetime.combine(MONTH[0], dt.time(), ZONE).astimezone(dt.UTC)
    span = (MONTH[1] - MONTH[0]).days * 86400 + 86399
    rows = []
    for i in range(first, first + count):
        began = start + dt.timedelta(seconds=rng.uniform(0, span))
        kind = rng.random()
        row = {"call_id": f"bench-{i}", "ref": new_call_ref(), "direction": "inbound", "hotline": "12301",
               "did": "12301", "caller_number": f"139{rng.randrange(10**8):08d}", "state": "ended",
               "started_at": began, "ended_at": began + dt.timedelta(seconds=rng.uniform(20, 600)),
               "agents_rung": [], "transfers": [], "hold_seconds": 0.0, "abandoned": False, "source": "ami"}
        if kind < 0.85:  # asked for an agent
            queued = began + dt.timedelta(seconds=rng.uniform(5, 30))
            row.update(queued_at=queued, queue="12301-complaint")
            if kind < 0.75:
                wait = rng.expovariate(1 / 20)
                row.update(answered_at=queued + dt.timedelta(seconds=wait), wait_seconds=wait,
                           talk_seconds=rng.uniform(30, 500), agent_id=rng.randrange(1, 50),
                           satisfaction=rng.choice(("satisfied", "basic", "dissatisfied", "unrated")))
            elif kind < 0.81:
                row.update(abandoned=True, wait_seconds=rng.uniform(1, 120))
            else:
                row.update(voicemail_file=f"bench-{i}.wav")
        elif kind < 0.95:
            row.update(ivr_path="main:no-choice")
        else:
            row.update(ivr_path="after-hours", voicemail_file=f"bench-{i}.wav")
        rows.append(row)
    return rows


SEED_TICKETS = 20_000


async def _fill(db: Database, calls: int, tickets: int) -> None:
    for offset in range(0, calls, 20_000):
        async with db.transaction() as session:
            await session.execute(insert(CallRecord), _call_rows(min(20_000, calls - offset), offset))
    await perf.fill(db, min(tickets, SEED_TICKETS))
    await _grow_tickets(db, min(tickets, SEED_TICKETS), tickets)
    await perf.analyze(db)


def _copy_expressions(dialect: str) -> dict[str, str]:
    """How a copied ticket differs from its original ``have`` tickets later: its number and its times."""
    if dialect == "postgresql":
        shifted = "(created_at + :have * interval '1 minute')"
        return {"number": "'P' || lpad((CAST(substr(number, 2) AS BIGINT) + :have)::text, 12, '0')",
                "created_at": shifted,
                "handling_due": f"(({shifted} AT TIME ZONE 'UTC') + interval '60 days')::date"}
    minutes = "'+' || :have || ' minutes'"
    return {"number": "'P' || printf('%012d', CAST(substr(number, 2) AS INTEGER) + :have)",
            # the text form SQLAlchemy stores (microseconds), so range comparisons stay exact
            "created_at": f"strftime('%Y-%m-%d %H:%M:%f000', created_at, {minutes})",
            "handling_due": f"date(created_at, {minutes}, '+60 days')"}


async def _grow_tickets(db: Database, have: int, count: int) -> None:
    """Doubles the synthetic tickets inside the database (INSERT … SELECT) up to ``count``: one ticket a
    minute goes on, as ``tickets.perf.fill`` would have made them, without a million rows through Python."""
    columns = [c.name for c in Ticket.__table__.columns if c.name != "id"]
    while have < count:
        n = min(have, count - have)
        async with db.transaction() as session:
            shift = _copy_expressions(session.bind.dialect.name)
            values = ", ".join(shift.get(c, c) for c in columns)
            await session.execute(text(
                f"INSERT INTO tickets ({', '.join(columns)}) SELECT {values} FROM tickets "
                "WHERE id IN (SELECT id FROM tickets ORDER BY id LIMIT :n)"), {"have": have, "n": n})
        have += n


async def sql_report(db: Database) -> kpi.Report:
    async with db.session() as session:
        return await kpi_sql.load_report(session, *MONTH, ZONE, "12301")


async def row_report(db: Database) -> kpi.Report:
    """The same report row by row: every call and ticket of the month loaded, counted in Python."""
    async with db.session() as session:
        facts = await kpi.load_facts(session, *MONTH, ZONE, "12301")
    return kpi.compute(facts)


async def bare_count(db: Database) -> tuple[int, int]:
    """The comparison point: COUNT(*) of the month's calls and tickets, through the same indexes."""
    lo, hi = kpi.local_bounds(*MONTH, ZONE)
    async with db.session() as session:
        calls = await session.scalar(select(func.count()).select_from(CallRecord).where(
            CallRecord.direction == "inbound", CallRecord.hotline == "12301",
            CallRecord.started_at >= lo, CallRecord.started_at < hi))
        tickets = await session.scalar(select(func.count()).select_from(Ticket).where(
            Ticket.hotline == "12301", Ticket.created_at >= lo, Ticket.created_at < hi))
    return calls, tickets


async def _timed(run, runs: int) -> list[float]:
    await run()  # warm the caches once, as a page already visited
    timings = []
    for _ in range(runs):
        began = time.perf_counter()
        await run()
        timings.append((time.perf_counter() - began) * 1000)
    return timings


async def _measure(url: str, calls: int, tickets: int, runs: int) -> tuple[list[float], list[float], list[float], int]:
    migrate_url(url)
    db = Database(url)
    try:
        began = time.monotonic()
        await _fill(db, calls, tickets)
        print(f"   {db.engine.dialect.name}: {calls} calls, {tickets} tickets ready "
              f"({time.monotonic() - began:.0f} s)", flush=True)
        by_rows = await row_report(db)
        by_sql = await sql_report(db)
        _agree(by_rows, by_sql)  # the two paths agree figure for figure before either is timed
        month = (await bare_count(db))[1]
        new = await _timed(lambda: sql_report(db), runs)
        count = await _timed(lambda: bare_count(db), runs)
        rows = await _timed(lambda: row_report(db), max(3, runs // 10))
    finally:
        await db.close()
    return new, count, rows, month


def _agree(by_rows: kpi.Report, by_sql: kpi.Report) -> None:
    """Rates: the same numerator and denominator; times: within a millisecond (float sums in another order)."""
    for row, sql in zip(by_rows.figures, by_sql.figures, strict=True):
        if row.definition.unit == "%" or row.value is None or sql.value is None:
            assert (row.numerator, row.denominator, row.value) == (sql.numerator, sql.denominator, sql.value), (
                row.definition.key, row, sql)
        else:
            assert abs(row.value - sql.value) <= 1e-3, (row.definition.key, row.value, sql.value)


def _ms(timings: list[float]) -> str:
    return f"p50 {percentile(timings, 50):.0f} ms, p95 {percentile(timings, 95):.0f} ms"


def report(result: Report, quick: bool) -> None:
    calls, tickets = (100_000, 1_000_000)
    if os.environ.get("HOTLINE_BENCH_REPORT"):
        calls, tickets = (int(n) for n in os.environ["HOTLINE_BENCH_REPORT"].split(","))
    runs = 10 if quick else 30
    with tempfile.TemporaryDirectory(prefix="hotline-bench-report-") as tmp:
        sqlite = asyncio.run(_measure(f"sqlite+aiosqlite:///{tmp}/report.db", calls, tickets, runs))
    with throwaway_postgresql(prefix="hotline-bench-pg-", durable=True) as url:
        postgres = asyncio.run(_measure(url, calls, tickets, runs))
    for name, (new, count, rows, month) in (("SQLite", sqlite), ("PostgreSQL", postgres)):
        result.add("report", f"{name}: a month's report, {calls:,} calls and {tickets:,} tickets "
                   f"({month:,} of them in the month)", _ms(new),
                   f"bare COUNT(*) of the month's calls and tickets: {_ms(count)}; the same report row by row in "
                   f"Python (load_facts + compute, before): {_ms(rows)}",
                   f"kpi_sql.load_report (SQL aggregates) + every indicator for June 2024, {runs} runs after one "
                   f"warm-up, figures checked equal to the row-by-row report; host load {os.getloadavg()[0]:.1f}")

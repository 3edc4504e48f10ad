"""Section "report": time to compute a month's service-quality report (quality.kpi) on a full database.

100 000 call records in one month (outcomes mixed as a busy hotline's: answered, abandoned in the queue and in
the IVR, voice messages, after hours) and 1 000 000 tickets over two years (``tickets.perf.fill``: one a
minute from 2024-01-01, so the month holds about 43 000 of them), on SQLite and a throwaway PostgreSQL
(fsync on). Timed: what ``GET /report`` does (``quality.kpi_sql.load_report``: the month's calls and
tickets aggregated by the database, every indicator), p50/p95, after the first report of the month, which
computes the finished days' call groups, answered calls' waits and ticket rows and stores them
(report_call_days, report_call_waits, report_ticket_days; its own time is given beside); the timed runs read
those days (the ones this process read already from memory) and compute every indicator. The first report
in a fresh process (the stored days read from the database, not from memory) is timed too. Comparison points in the same run: a bare
``COUNT(*)`` of the month's call records and tickets (the least any report must read), and the same report
computed row by row in Python (``kpi.load_facts`` + ``kpi.compute``, what the page did before).
The tickets carry what handling leaves (受理 and closing times, a 登记 step each and a 移交 for one in twenty in
the tracking log), since the report reads them. The fill (:func:`_fill`) drops the secondary indexes, bulk-
inserts in one transaction and builds the indexes again: a few minutes at full size on the 2-core machine
(the row-at-a-time fill through the indexes took 1356 s for SQLite alone under load).
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

from sqlalchemy import event, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from bench.report import Report, percentile
from cli.postgres import throwaway_postgresql
from cli.stack import migrate_url
from core.calls import call_waits
from core.db import Database
from cti.models import CallRecord, new_call_ref
from quality import kpi, kpi_sql
from tickets import perf
from tickets.models import State, Ticket

ZONE = ZoneInfo("Asia/Shanghai")
MONTH = (dt.date(2024, 6, 1), dt.date(2024, 6, 30))


def _call_rows(count: int, first: int = 0, total: int | None = None) -> list[dict]:
    """Calls ``first`` to ``first + count`` of ``total`` spread over the month in arrival order, as the CTI
    writes them (rows in random order would make every read of the month a random page read)."""
    rng = random.Random(first + 1)
    start = dt.datetime.combine(MONTH[0], dt.time(), ZONE).astimezone(dt.UTC)
    span = (MONTH[1] - MONTH[0]).days * 86400 + 86399
    total = total or first + count
    rows = []
    for i in range(first, first + count):
        began = start + dt.timedelta(seconds=span * (i + rng.random()) / total)
        kind = rng.random()
        row = {"call_id": f"bench-{i}", "ref": new_call_ref(), "direction": "inbound", "hotline": "12301",
               "did": "12301", "caller_number": f"139{rng.randrange(10**8):08d}", "state": "ended",
               "started_at": began, "ended_at": began + dt.timedelta(seconds=rng.uniform(20, 600)),
               "agents_rung": [], "transfers": [], "hold_seconds": 0.0, "abandoned": False, "source": "ami",
               # every row names the same columns: one executemany statement for all of them
               **dict.fromkeys(("queued_at", "queue", "answered_at", "wait_seconds", "talk_seconds", "agent_id",
                                "satisfaction", "voicemail_file", "ivr_path"))}
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
        # what the ORM's flush hook (core.calls.derive_waits) stores; this fill bypasses the ORM
        row["arrival_wait"], row["answer_wait"] = call_waits(row["started_at"], row["queued_at"], row["answered_at"],
                                                             row["wait_seconds"])
        rows.append(row)
    return rows


SEED_TICKETS = 20_000
FILL_TABLES = ("call_records", "tickets", "ticket_actions")  # secondary indexes built once, after the rows
# For the fill's own connection only (never the timed one): no WAL copy of every page, no fsync, a cache and
# sort space in memory so that building each index is one in-memory sort instead of a million random B-tree
# inserts, and no foreign key look-up per row (the rows are consistent: every ticket's unit and every step's
# ticket exist).
SQLITE_FILL_PRAGMAS = ("PRAGMA journal_mode=MEMORY", "PRAGMA synchronous=OFF", "PRAGMA cache_size=-262144",
                       "PRAGMA temp_store=MEMORY", "PRAGMA foreign_keys=OFF")
# PostgreSQL: index builds with memory to sort in; "replica" skips the foreign-key triggers (one look-up per row).
POSTGRES_FILL_SETTINGS = ("SET LOCAL maintenance_work_mem = '256MB'", "SET LOCAL session_replication_role = replica")


def _fill_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 (DB-API connection)
    cur = dbapi_conn.cursor()
    for pragma in SQLITE_FILL_PRAGMAS:
        cur.execute(pragma)
    cur.close()


async def _secondary_indexes(session: AsyncSession, table: str) -> list[tuple[str, str]]:
    """(name, CREATE INDEX statement) of ``table``'s indexes that back no constraint (primary key, UNIQUE)."""
    if session.bind.dialect.name == "postgresql":
        query = ("SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
                 "JOIN pg_class t ON t.oid = x.indrelid WHERE t.relname = :t AND NOT EXISTS "
                 "(SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)")
    else:  # UNIQUE constraints' own indexes (sqlite_autoindex_*) have no statement and stay
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = :t AND sql IS NOT NULL"
    return [(name, ddl) for name, ddl in await session.execute(text(query), {"t": table})]


async def _fill(url: str, calls: int, tickets: int) -> dict[str, float]:
    """Calls and tickets into the migrated, empty database at ``url``, in one transaction.

    A million rows through 16 indexes of random keys (telephone numbers, categories) was the slow part:
    1356 s for SQLite under load. The secondary indexes are dropped, the rows go in (calls through the
    driver's executemany, tickets doubled inside the database), and each index is then built by one sort;
    the timed queries run afterwards on the same indexes the migrations made, on a connection of its own.
    """
    db = Database(url)
    sqlite = db.engine.dialect.name == "sqlite"
    if sqlite:
        event.listen(db.engine.sync_engine, "connect", _fill_pragmas)
    steps: dict[str, float] = {}
    clock = time.monotonic()

    def done(step: str) -> None:
        nonlocal clock
        steps[step], clock = time.monotonic() - clock, time.monotonic()

    try:
        async with db.transaction() as session:
            for setting in () if sqlite else POSTGRES_FILL_SETTINGS:
                await session.execute(text(setting))
            indexes = [index for table in FILL_TABLES for index in await _secondary_indexes(session, table)]
            for name, _ddl in indexes:
                await session.execute(text(f'DROP INDEX "{name}"'))
            for offset in range(0, calls, 20_000):
                await session.execute(insert(CallRecord.__table__),
                                      _call_rows(min(20_000, calls - offset), offset, calls))
            done("calls")
            await perf.fill_rows(session, min(tickets, SEED_TICKETS))
            await _grow_tickets(session, min(tickets, SEED_TICKETS), tickets)
            done("tickets")
            await _ticket_history(session)
            done("history")
            for _name, ddl in indexes:
                await session.execute(text(ddl))
            done("indexes")
        await perf.analyze(db, *FILL_TABLES)
        done("analyze")
    finally:
        await db.close()
    return steps


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


async def _grow_tickets(session: AsyncSession, have: int, count: int) -> None:
    """Doubles the synthetic tickets inside the database (INSERT … SELECT) up to ``count``: one ticket a
    minute goes on, as ``tickets.perf.fill`` would have made them, without a million rows through Python."""
    columns = [c.name for c in Ticket.__table__.columns if c.name != "id"]
    shift = _copy_expressions(session.bind.dialect.name)
    values = ", ".join(shift.get(c, c) for c in columns)
    while have < count:
        n = min(have, count - have)
        await session.execute(text(
            f"INSERT INTO tickets ({', '.join(columns)}) SELECT {values} FROM tickets "
            "WHERE id IN (SELECT id FROM tickets ORDER BY id LIMIT :n)"), {"have": have, "n": n})
        have += n


def _plus_days(dialect: str, column: str, days: str) -> str:
    if dialect == "postgresql":
        return f"({column} + ({days}) * interval '1 day')"
    return f"strftime('%Y-%m-%d %H:%M:%f000', {column}, '+' || ({days}) || ' days')"


async def _ticket_history(session: AsyncSession) -> None:
    """What handling leaves on the tickets the report reads: 受理 and closing times by state, and the tracking
    log (工单跟踪) with a 登记 step for every ticket and a 移交 for one in twenty, which the report's first-移交
    subquery (004 Table 1 item 15) aggregates over the whole table."""
    dialect = session.bind.dialect.name
    opened = (State.ACCEPTED.value, State.MEDIATED.value, State.SETTLED.value)
    closed = (State.MEDIATED.value, State.SETTLED.value)
    states = ", ".join(f"'{s}'" for s in opened)
    await session.execute(text(
        f"UPDATE tickets SET accepted_at = {_plus_days(dialect, 'created_at', 'id % 7')} WHERE state IN ({states})"))
    states = ", ".join(f"'{s}'" for s in closed)
    await session.execute(text(
        f"UPDATE tickets SET closed_at = {_plus_days(dialect, 'created_at', '7 + id % 60')} WHERE state IN ({states})"))
    log = "INSERT INTO ticket_actions (ticket_id, action, operator_name, at, state, remark, inputs) "
    await session.execute(text(log + f"SELECT id, '登记', '测试', created_at, '{State.PENDING.value}', '', '{{}}' "
                                     "FROM tickets"))
    await session.execute(text(log + f"SELECT id, '移交', '测试', {_plus_days(dialect, 'created_at', 'id % 4')}, "
                                     f"'{State.HANDED_OVER.value}', '', '{{}}' FROM tickets WHERE id % 20 = 0"))


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


async def _measure(url: str, calls: int, tickets: int,
                   runs: int) -> tuple[list[float], list[float], list[float], int, float, float]:
    migrate_url(url)
    began = time.monotonic()
    steps = await _fill(url, calls, tickets)
    db = Database(url)
    try:
        print(f"   {db.engine.dialect.name}: {calls} calls, {tickets} tickets ready "
              f"({time.monotonic() - began:.0f} s: " + ", ".join(f"{k} {v:.0f} s" for k, v in steps.items()) + ")",
              flush=True)
        by_rows = await row_report(db)
        began = time.perf_counter()
        by_sql = await sql_report(db)  # the first: computes the month's call days and stores them
        first = (time.perf_counter() - began) * 1000
        _agree(by_rows, by_sql)  # the two paths agree figure for figure before either is timed
        month = (await bare_count(db))[1]
        kpi_sql.forget_read_days()  # as a fresh process: the stored days read from the database
        began = time.perf_counter()
        _agree(by_rows, await sql_report(db))
        cold = (time.perf_counter() - began) * 1000
        new = await _timed(lambda: sql_report(db), runs)
        _agree(by_rows, await sql_report(db))  # and so does the report from the stored days
        count = await _timed(lambda: bare_count(db), runs)
        rows = await _timed(lambda: row_report(db), max(3, runs // 10))
    finally:
        await db.close()
    return new, count, rows, month, first, cold


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
    for name, (new, count, rows, month, first, cold) in (("SQLite", sqlite), ("PostgreSQL", postgres)):
        result.add("report", f"{name}: a month's report, {calls:,} calls and {tickets:,} tickets "
                   f"({month:,} of them in the month)", _ms(new),
                   f"bare COUNT(*) of the month's calls and tickets: {_ms(count)}; the same report row by row in "
                   f"Python (load_facts + compute, before): {_ms(rows)}",
                   f"kpi_sql.load_report (the finished days' call groups, waits and ticket rows stored by the "
                   f"first report of the month in {first:.0f} ms; read back from the database by a fresh process's "
                   f"first report in {cold:.0f} ms, then from memory) + every indicator "
                   f"for June 2024, {runs} runs after one warm-up, figures checked equal to the row-by-row report "
                   f"before and after; host load {os.getloadavg()[0]:.1f}")

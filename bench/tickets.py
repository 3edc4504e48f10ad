"""Ticket lists, home counters and registration at 100 000 and 1 000 000 tickets, SQLite and PostgreSQL.

The data and the query statements come from ``tickets/perf.py`` (synthetic tickets, one a minute, over the
16 handling units; 60 % open, 2 % supervised). What is timed is the real code path: ``list_tickets``
(the count plus the first page of 20, newest first, with the handling unit loaded, i.e. the work of
``GET /api/tickets``) for each list filter of the 12301 manual (000 §3.2), ``home_counters`` and
``register_ticket``, as the province unit 12301-GD (5 of 16 units, about 31 % of the tickets) sees them.

Comparison points measured in the same run: the same calls with the tickets table's indexes unavailable
(SQLite ``NOT INDEXED``, PostgreSQL with index and bitmap scans switched off: full scans), and in full
mode the 100 000 figure beside the 1 000 000 one. The query plans (PostgreSQL: EXPLAIN ANALYZE) are
written to ``bench/plans.md``.

PostgreSQL is a throwaway cluster (``cli.postgres``, the tests' helper) with the default durability
settings, so registration commits are fsync'ed as in production; SQLite is a file in WAL mode as the
platform configures it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import event, select, text

from bench.report import Report, percentile
from cli.postgres import throwaway_postgresql
from cli.stack import migrate_url
from core.db import Database
from core.models import Role, Unit, User
from tickets import perf
from tickets.queries import TicketFilter, count_statement, counter_statements, home_counters, list_tickets
from tickets.workflow import register_ticket

PLANS = Path(__file__).parent / "plans.md"
SCOPE_UNIT = "12301-GD"
AGENT_LEVELS = (1, 10)  # concurrent agents registering through one desk process
FILTER_LABELS = {
    "no filter": "no filter (default list)",
    "phone": "phone number (手机号)",
    "number": "ticket number (工单号)",
    "location": "case location 广东省/广州市/天河区 (案发地)",
    "expiry 0-9": "days to expiry 0–9 (过期日期)",
    "expiry 10-29": "days to expiry 10–29",
    "expiry 30-59": "days to expiry 30–59",
    "complaint object": "complaint object (投诉对象)",
    "event category": "event category (事件类别)",
    "state": "state 受理中 (工单状态)",
    "supervised": "supervised (督办)",
    "combination": "combination: city + object + category + state",
}
INDEX_SWITCHES = ("SET enable_indexscan = off", "SET enable_bitmapscan = off", "SET enable_indexonlyscan = off")


@dataclass
class Latency:
    timings: list[float]  # milliseconds
    rows: int | None = None

    @property
    def p50(self) -> float:
        return percentile(self.timings, 50)

    @property
    def p95(self) -> float:
        return percentile(self.timings, 95)

    def text(self) -> str:
        return f"p50 {_ms(self.p50)}, p95 {_ms(self.p95)}"


@dataclass
class Throughput:
    agents: int
    done: int
    failed: int
    seconds: float
    latency: Latency

    @property
    def per_second(self) -> float:
        return self.done / self.seconds if self.seconds else float("nan")

    def text(self) -> str:
        failed = f", {self.failed} failed" if self.failed else ""
        return (f"{self.per_second:.0f} tickets/s (each p50 {_ms(self.latency.p50)}, p95 {_ms(self.latency.p95)}"
                f"{failed})")


@dataclass
class Level:
    """One database at one size."""

    database: str
    size: int
    lists: dict[str, Latency] = field(default_factory=dict)
    lists_off: dict[str, Latency] = field(default_factory=dict)
    counters: Latency | None = None
    counters_off: Latency | None = None
    registration: dict[int, Throughput] = field(default_factory=dict)
    plans: list[str] = field(default_factory=list)  # markdown
    load: list[str] = field(default_factory=list)


def _ms(value: float) -> str:
    if value != value:  # nan
        return "–"
    return f"{value:.2f} ms" if value < 10 else f"{value:.0f} ms"


def _size(n: int) -> str:
    return f"{n:,}".replace(",", " ")


def _beside() -> str:
    """What else ran on the host (other engineers' test stacks share this machine)."""
    asterisks = pytests = 0
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            comm = (proc / "comm").read_text().strip()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        asterisks += comm == "asterisk"
        pytests += b"pytest" in cmdline and b"python" in cmdline
    load = os.getloadavg()[0]
    return f"load {load:.1f}" + (f", {asterisks} Asterisk" if asterisks else "") + \
        (f", {pytests} pytest" if pytests else "")


def without_indexes(url: str) -> Database:
    """A Database whose queries cannot use the tickets table's indexes (full scans; rowid order stays)."""
    database = Database(url)
    if database.engine.dialect.name == "sqlite":
        @event.listens_for(database.engine.sync_engine, "before_cursor_execute", retval=True)
        def _not_indexed(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
            return re.sub(r"\bFROM tickets\b", "FROM tickets NOT INDEXED", statement), parameters
    else:
        @event.listens_for(database.engine.sync_engine, "connect")
        def _no_index_scans(dbapi_conn, _record):  # noqa: ANN001
            autocommit, dbapi_conn.autocommit = dbapi_conn.autocommit, True  # else rolled back with the pool's reset
            cursor = dbapi_conn.cursor()
            for switch in INDEX_SWITCHES:
                cursor.execute(switch)
            cursor.close()
            dbapi_conn.autocommit = autocommit
    return database


async def _timed(call: Callable[[], Awaitable[Any]], runs: int) -> Latency:
    result = await call()  # warm-up: plan cache, pages in memory
    timings = []
    for _ in range(runs):
        began = time.perf_counter()
        result = await call()
        timings.append((time.perf_counter() - began) * 1000)
    return Latency(timings, result if isinstance(result, int) else None)


async def _agents(db: Database, count: int) -> list[User]:
    async with db.transaction() as session:
        centre = await session.scalar(select(Unit).where(Unit.code == "callcentre"))
        users = []
        for i in range(count):
            name = f"bench_agent{i + 1}"
            user = await session.scalar(select(User).where(User.username == name))
            if user is None:
                user = User(username=name, display_name=f"坐席{i + 1}", password_hash="-", role=Role.AGENT,
                            unit_id=centre.id)
                session.add(user)
            users.append(user)
        await session.flush()
    return users


def _complaint(agent: int, seq: int) -> dict[str, Any]:
    return {
        "kind": "complaint", "hotline": "12301", "complainant_name": "测试", "complainant_phone":
        f"137{agent:02d}{seq:06d}", "respondent_name": "某旅行社", "complaint_object": "旅行社及导游领队",
        "event_category": "不合理低价", "province": "广东省", "city": "广州市", "county": "天河区",
        "amount": "1200", "description": "报名低价团后被要求加钱，否则不能上车。",
    }


async def _register(db: Database, agents: list[User], per_agent: int) -> Throughput:
    timings: list[float] = []
    failed = 0

    async def agent(index: int, user: User) -> None:
        nonlocal failed
        for seq in range(per_agent):
            began = time.perf_counter()
            try:
                async with db.transaction() as session:
                    await register_ticket(session, _complaint(index, seq), user)
            except Exception:  # noqa: BLE001 - counted and reported, never hidden
                failed += 1
                continue
            timings.append((time.perf_counter() - began) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(agent(i, u) for i, u in enumerate(agents)))
    return Throughput(len(agents), len(timings), failed, time.perf_counter() - began, Latency(timings))


def _where(sql: str) -> str:
    match = re.search(r"\bWHERE (.*?)(?: GROUP BY| ORDER BY| LIMIT|\)\s+AS anon_1|$)", sql, re.S)
    return " ".join(match.group(1).split()) if match else ""


async def _plans(db: Database, slow: Database, user: User, filters: dict[str, TicketFilter],
                 today: dt.date) -> list[str]:
    out = []
    async with db.session() as session:
        for name, flt in filters.items():
            page = perf.list_statement(user, flt, today)
            where = _where(perf.literal_sql(session, page))
            out += [f"### {FILTER_LABELS[name]}", "", f"`WHERE {where}`", "",
                    "page (first 20, newest first):", "```", await perf.explain(session, page, analyze=True), "```",
                    "count:", "```", await perf.explain(session, count_statement(perf.filtered(user, flt, today)),
                                                        analyze=True), "```", ""]
        for name, statement in counter_statements(user, today).items():
            out += [f"### home counter: {name}", "", "```", await perf.explain(session, statement, analyze=True),
                    "```", ""]
    async with slow.session() as session:  # the same query; SQLite: NOT INDEXED, PostgreSQL: index scans off
        out += ["### comparison point: phone number with the indexes unavailable", "", "```",
                await perf.explain(session, perf.list_statement(user, filters["phone"], today), analyze=True),
                "```", ""]
    return out


async def _size_on_disk(db: Database) -> str:
    async with db.session() as session:
        if db.engine.dialect.name == "postgresql":
            size = await session.scalar(text("SELECT pg_total_relation_size('tickets')"))
            return f"tickets table with its indexes {size / 2**20:.0f} MiB"
        pages = await session.scalar(text("PRAGMA page_count"))
        page_size = await session.scalar(text("PRAGMA page_size"))
        return f"database file {pages * page_size / 2**20:.0f} MiB"


async def measure(url: str, database: str, size: int, filled: int, quick: bool, plans: bool) -> Level:
    """Top the database up to ``size`` synthetic tickets and measure it."""
    level = Level(database, size)
    level.load.append(_beside())
    db, slow = Database(url), without_indexes(url)
    runs, slow_runs = (20, 3) if quick else (50, 5)
    try:
        if slow.engine.dialect.name == "postgresql":  # the comparison point must really be without indexes
            async with slow.session() as session:
                if await session.scalar(text("SHOW enable_indexscan")) != "off":
                    raise RuntimeError("the indexes-off comparison connection still has index scans on")
        began = time.monotonic()
        await perf.fill(db, size - filled, first=filled)
        await perf.analyze(db)
        print(f"   {database}: {_size(size)} tickets ready ({time.monotonic() - began:.0f} s)", flush=True)
        async with db.session() as session:
            user = await perf.scope_user(session, SCOPE_UNIT)
            filters = await perf.sample_filters(session, user, size // 2)
        today = perf.data_today(size)

        for name, flt in filters.items():
            def call(d: Database = db, f: TicketFilter = flt) -> Awaitable[int]:
                async def run() -> int:
                    async with d.session() as session:
                        return (await list_tickets(session, user, f, today)).total
                return run()
            level.lists[name] = await _timed(call, runs)
            level.lists_off[name] = await _timed(lambda c=call: c(slow), slow_runs)
            print(f"   {database} {_size(size)} {name}: {level.lists[name].text()}, "
                  f"{level.lists[name].rows} rows; indexes off p50 {_ms(level.lists_off[name].p50)}", flush=True)

        def counters(d: Database = db) -> Awaitable[None]:
            async def run() -> None:
                async with d.session() as session:
                    await home_counters(session, user, today)
            return run()
        level.counters = await _timed(counters, runs)
        level.counters_off = await _timed(lambda: counters(slow), slow_runs)
        level.load.append(_beside())

        if plans:
            level.plans = [f"## {database}, {_size(size)} tickets", "",
                           f"{await _size_on_disk(db)}; \"today\" = {today}, scope {SCOPE_UNIT} "
                           f"(`{user.unit.path}`).", "", *await _plans(db, slow, user, filters, today)]

        agents = await _agents(db, max(AGENT_LEVELS))
        per_agent = 20 if quick else 100
        for count in AGENT_LEVELS:
            level.registration[count] = await _register(db, agents[:count], per_agent * (max(AGENT_LEVELS) // count))
            print(f"   {database} {_size(size)} registration, {count} agents: "
                  f"{level.registration[count].text()}", flush=True)
        level.load.append(_beside())
    finally:
        await db.close()
        await slow.close()
    return level


def _run_database(url: str, database: str, sizes: list[int], quick: bool) -> list[Level]:
    migrate_url(url)
    levels, filled = [], 0
    for size in sizes:
        levels.append(asyncio.run(measure(url, database, size, filled, quick, plans=size == sizes[-1])))
        filled = size
    return levels


def _rows(report: Report, levels: list[Level]) -> None:
    main, smaller = levels[-1], (levels[0] if len(levels) > 1 else None)
    label = f"{main.database}, {_size(main.size)} tickets"
    load = "host while measuring: " + " → ".join(main.load) + (
        " (" + " → ".join(smaller.load) + f" at {_size(smaller.size)})" if smaller else "")
    for name, latency in main.lists.items():
        off = main.lists_off[name]
        comparison = f"indexes off: p50 {_ms(off.p50)} ({len(off.timings)} runs)"
        if smaller:
            comparison += f"; {_size(smaller.size)} tickets: {smaller.lists[name].text()}"
        report.add("tickets", f"{label}: list by {FILTER_LABELS[name]}", latency.text(), comparison,
                   f"{latency.rows} matching; count + first page of 20 as GET /api/tickets; plans in "
                   "bench/plans.md")
    comparison = f"indexes off: p50 {_ms(main.counters_off.p50)} ({len(main.counters_off.timings)} runs)"
    if smaller:
        comparison += f"; {_size(smaller.size)} tickets: {smaller.counters.text()}"
    report.add("tickets", f"{label}: home counters (per state, supervised, expiring, overdue, closing rate)",
               main.counters.text(), comparison, "5 queries as GET /api/tickets/counters; plans in bench/plans.md")
    many, one = main.registration[max(AGENT_LEVELS)], main.registration[min(AGENT_LEVELS)]
    comparison = f"{one.agents} agent: {one.text()}"
    if smaller:
        comparison += f"; {_size(smaller.size)} tickets, {many.agents} agents: " \
                      f"{smaller.registration[many.agents].text()}"
    durability = "fsync on" if main.database == "PostgreSQL" else "WAL, synchronous=NORMAL"
    report.add("tickets", f"{label}: registration throughput, {many.agents} agents at once", many.text(),
               comparison, f"{many.done} registrations (numbering, dispatch, risk, deadlines, log) in one process; "
               f"{durability}; {load}")


def tickets(report: Report, quick: bool) -> None:
    sizes = [100_000] if quick else [100_000, 1_000_000]
    if os.environ.get("HOTLINE_BENCH_TICKETS"):  # e.g. "2000,10000" while developing
        sizes = sorted(int(n) for n in os.environ["HOTLINE_BENCH_TICKETS"].split(","))
    with tempfile.TemporaryDirectory(prefix="hotline-bench-tickets-") as tmp:
        sqlite = _run_database(f"sqlite+aiosqlite:///{tmp}/tickets.db", "SQLite", sizes, quick)
    with throwaway_postgresql(prefix="hotline-bench-pg-", durable=True) as url:
        postgres = _run_database(url, "PostgreSQL", sizes, quick)
    for levels in (sqlite, postgres):
        _rows(report, levels)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    stamp = f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {'quick' if quick else 'full'}, {commit}"
    PLANS.write_text("\n".join([
        "# Query plans of the ticket lists", "",
        f"Written by `./hotline bench --only tickets` ({stamp}) for the largest size measured. Each list",
        "filter as `GET /api/tickets` runs it (first page of 20, newest first, and the count), scoped to",
        f"the province unit {SCOPE_UNIT} and below; then the home counters. SQLite: EXPLAIN QUERY PLAN;",
        "PostgreSQL: EXPLAIN (ANALYZE, BUFFERS). Synthetic data from `tickets/perf.py`: one ticket a minute",
        "from 2024-01-01 over the 16 handling units, 60 % open, 2 % supervised; \"today\" is the last",
        "ticket's day so every days-to-expiry bucket is populated.", "",
        *sqlite[-1].plans, *postgres[-1].plans,
    ]) + "\n")
    print(f"   plans written to {PLANS}", flush=True)

"""Section "report": time to compute a month's service-quality report (agent_desk.kpi) on a full database.

100 000 call records in one month (outcomes mixed as a busy hotline's: answered, abandoned in the queue and in
the IVR, voice messages, after hours) and 1 000 000 tickets over two years (``tickets.perf.fill``: one a
minute from 2024-01-01, so the month holds about 43 000 of them), on SQLite and a throwaway PostgreSQL
(fsync on). Timed: what ``GET /report`` does (load the month's facts, compute every indicator), p50/p95.
Comparison point in the same run: the report as it was before (every call record of the period loaded as a
full ORM object, tickets as (kind, state, accepted) rows, the old queue-based figures only).
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

from sqlalchemy import insert, select

from agent_desk import kpi
from bench.report import Report, percentile
from cli.postgres import throwaway_postgresql
from cli.stack import migrate_url
from core.db import Database
from cti.models import CallRecord, new_call_ref
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


async def _fill(db: Database, calls: int, tickets: int) -> None:
    for offset in range(0, calls, 20_000):
        async with db.transaction() as session:
            await session.execute(insert(CallRecord), _call_rows(min(20_000, calls - offset), offset))
    await perf.fill(db, tickets)
    await perf.analyze(db)


async def new_report(db: Database) -> int:
    async with db.session() as session:
        facts = await kpi.load_facts(session, *MONTH, ZONE, "12301")
    return len(kpi.compute(facts).figures)


async def old_report(db: Database) -> int:
    """The report before the indicator module: full ORM call records, queue-based figures."""
    lo, hi = kpi.local_bounds(*MONTH, ZONE)
    async with db.session() as session:
        calls = (await session.scalars(select(CallRecord).where(
            CallRecord.started_at >= lo, CallRecord.started_at < hi, CallRecord.hotline == "12301"))).all()
        tickets = (await session.execute(select(Ticket.kind, Ticket.state, Ticket.accepted_at).where(
            Ticket.created_at >= lo, Ticket.created_at < hi, Ticket.hotline == "12301"))).all()
    offered = [c for c in calls if c.queued_at is not None]
    answered = sum(c.answered_at is not None for c in offered)
    return answered + len(tickets)


async def _timed(run, runs: int) -> list[float]:
    await run()  # warm the caches once, as a page already visited
    timings = []
    for _ in range(runs):
        began = time.perf_counter()
        await run()
        timings.append((time.perf_counter() - began) * 1000)
    return timings


async def _measure(url: str, calls: int, tickets: int, runs: int) -> tuple[list[float], list[float], int]:
    migrate_url(url)
    db = Database(url)
    try:
        began = time.monotonic()
        await _fill(db, calls, tickets)
        print(f"   {db.engine.dialect.name}: {calls} calls, {tickets} tickets ready "
              f"({time.monotonic() - began:.0f} s)", flush=True)
        async with db.session() as session:
            month = len((await kpi.load_facts(session, *MONTH, ZONE, "12301")).tickets)
        new = await _timed(lambda: new_report(db), runs)
        old = await _timed(lambda: old_report(db), runs)
    finally:
        await db.close()
    return new, old, month


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
    for name, (new, old, month) in (("SQLite", sqlite), ("PostgreSQL", postgres)):
        result.add("report", f"{name}: a month's report, {calls:,} calls and {tickets:,} tickets "
                   f"({month:,} in the month)", _ms(new),
                   f"the old queue-based report (ORM call records, 3 figures): {_ms(old)}",
                   f"load_facts + every indicator of agent_desk/kpi.py for June 2024, {runs} runs after one warm-up; "
                   f"host load {os.getloadavg()[0]:.1f}")

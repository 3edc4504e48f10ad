"""Retention and integrity of stored recordings.

Recordings are kept at least 365 days (12365 standard); the purge never
deletes one under legal hold or linked to a ticket that is still open, logs
each deletion, and can be dry-run. The integrity check reports missing or
damaged files before a user finds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from core.db import Database
from recordings.models import Recording
from recordings.spool import UnfiledFile, stale_spool_files, unfiled
from recordings.storage import verify
from tickets.models import OPEN_STATES, Ticket, TicketCall

MINIMUM_RETENTION_DAYS = 365


@dataclass
class PurgeReport:
    deleted: list[str] = field(default_factory=list)
    kept_legal_hold: list[str] = field(default_factory=list)
    kept_open_ticket: list[str] = field(default_factory=list)
    dry_run: bool = False


async def open_ticket_numbers(session, numbers: set[str]) -> set[str]:
    if not numbers:
        return set()
    rows = await session.scalars(select(Ticket.number).where(Ticket.number.in_(numbers),
                                                             Ticket.state.in_(list(OPEN_STATES))))
    return set(rows.all())


async def linked_ticket_numbers(session, call_ids: list[str]) -> dict[str, set[str]]:
    """Ticket numbers per call id (from the ticket's call links and the recording row itself)."""
    links: dict[str, set[str]] = {}
    rows = await session.execute(select(TicketCall.call_id, Ticket.number).join(Ticket, Ticket.id == TicketCall.ticket_id)
                                 .where(TicketCall.call_id.in_(call_ids)))
    for call_id, number in rows.all():
        links.setdefault(call_id, set()).add(number)
    return links


async def purge(db: Database, storage: Path, retention_days: int, dry_run: bool, log,
                now: datetime | None = None) -> PurgeReport:
    if retention_days < MINIMUM_RETENTION_DAYS:
        raise ValueError(f"保存期限不得少于 {MINIMUM_RETENTION_DAYS} 天（当前配置 {retention_days} 天）")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    report = PurgeReport(dry_run=dry_run)
    async with db.transaction() as session:
        old = list((await session.scalars(select(Recording).where(Recording.started_at < cutoff))).all())
        links = await linked_ticket_numbers(session, [r.call_id for r in old])
        numbers = {n for ns in links.values() for n in ns} | {r.ticket_number for r in old if r.ticket_number}
        still_open = await open_ticket_numbers(session, numbers)
        for row in old:
            tickets = links.get(row.call_id, set()) | ({row.ticket_number} if row.ticket_number else set())
            if row.legal_hold:
                report.kept_legal_hold.append(row.path)
            elif tickets & still_open:
                report.kept_open_ticket.append(row.path)
            else:
                report.deleted.append(row.path)
                if not dry_run:
                    (storage / row.path).unlink(missing_ok=True)
                    await session.delete(row)
                log.info("recording_purged" if not dry_run else "recording_would_purge", path=row.path,
                         call_id=row.call_id, started_at=row.started_at.isoformat())
    return report


async def integrity_report(db: Database, storage: Path) -> list[tuple[Recording, str]]:
    """Every stored recording whose file is missing, damaged or undecodable."""
    problems = []
    async with db.session() as session:
        rows = (await session.scalars(select(Recording).where(Recording.format != "none"))).all()
    for row in rows:
        issue = "录音文件缺失" if row.format == "missing" else verify(storage / row.path, row.sha256)
        if issue:
            problems.append((row, issue))
    return problems


async def spool_report(db: Database, spool: Path, grace_seconds: float,
                       now: datetime | None = None) -> list[tuple[UnfiledFile, str]]:
    """Every spool file idle for longer than the grace period that has no filed recording."""
    now = now or datetime.now(UTC)
    return [(item, item.problem(now)) for item in await unfiled(db, stale_spool_files(spool, grace_seconds, now))]

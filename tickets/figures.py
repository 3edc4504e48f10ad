"""The scheduler's figures for its metrics endpoint (core.metrics): the notice outbox by state, the
steps written to tickets' tracking logs, and the disk figures of core.disk."""

from __future__ import annotations

from sqlalchemy import func, select

from core import metrics
from core.db import Database
from core.disk import disk_space
from core.settings import Settings
from tickets.models import TicketAction
from tickets.notify_models import Notice, NoticeState


async def notice_figures(db: Database) -> None:
    async with db.session() as session:
        rows = (await session.execute(select(Notice.channel, Notice.state, func.count())
                                      .group_by(Notice.channel, Notice.state))).all()
    values = {(channel, state.value): 0.0 for channel in ("sms", "email") for state in NoticeState}
    values.update({(channel, str(getattr(state, "value", state))): float(n) for channel, state, n in rows})
    metrics.set_gauge(metrics.NOTICES, values)


class TicketActionCounter:
    """Counts new rows of ``ticket_actions`` (only ever inserted) by action, from the highest id seen:
    every process that writes a step (desk, scheduler, recordings worker) is counted in one place, and
    each scrape reads only the rows added since the last one."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.last_id: int | None = None

    async def __call__(self) -> None:
        async with self.db.session() as session:
            if self.last_id is None:  # a counter starts at 0 with its process, as Prometheus expects
                self.last_id = await session.scalar(select(func.max(TicketAction.id))) or 0
                return
            rows = (await session.execute(select(TicketAction.action, func.count(), func.max(TicketAction.id))
                                          .where(TicketAction.id > self.last_id)
                                          .group_by(TicketAction.action))).all()
        for action, n, top in rows:
            metrics.TICKET_ACTIONS.labels(action).inc(n)
            self.last_id = max(self.last_id, top)


async def disk_figures(settings: Settings) -> None:
    disks = disk_space(settings)
    metrics.set_gauge(metrics.DISK_FREE, {(d.what,): d.free_mb * 2.0**20 for d in disks})
    metrics.set_gauge(metrics.DISK_TOTAL, {(d.what,): d.total_mb * 2.0**20 for d in disks})
    metrics.set_gauge(metrics.DISK_LOW, {(d.what,): float(d.low) for d in disks})

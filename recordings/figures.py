"""The recordings worker's figures, read at scrape time: what waits in each node's spool, recordings that
went missing, the transcription backlog (core.metrics)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from core import metrics
from core.asterisk_runtime import AsteriskRuntime
from core.db import Database
from recordings.models import Recording
from recordings.spool import SPOOL_KINDS, stale_spool_files


def spool_counts(spools: dict[str, object], grace_seconds: float) -> dict[tuple[str, str, str], float]:
    """Files per node, kind and age (fresh: still recording or just ended; stale: past the grace period,
    so filing it keeps failing or nobody closed its call)."""
    cutoff = datetime.now(UTC) - timedelta(seconds=grace_seconds)
    counts: Counter[tuple[str, str, str]] = Counter()
    for node, spool in spools.items():
        for kind in SPOOL_KINDS:
            counts[(node, kind, "fresh")] += 0
            counts[(node, kind, "stale")] += 0
        for item in stale_spool_files(spool, 0):  # grace 0: every file now in the spool
            counts[(node, item.kind, "stale" if item.modified < cutoff else "fresh")] += 1
    return {key: float(n) for key, n in counts.items()}


async def recordings_figures(db: Database, runtimes: dict[str, AsteriskRuntime], grace_seconds: float) -> None:
    spools = {node: runtime.host_path(runtime.inside("spool")) for node, runtime in runtimes.items()}
    metrics.set_gauge(metrics.SPOOL_FILES, await asyncio.to_thread(spool_counts, spools, grace_seconds))
    async with db.session() as session:
        missing = await session.scalar(select(func.count()).select_from(Recording)
                                       .where(Recording.format == "missing"))
        by_status = (await session.execute(select(Recording.transcript_status, func.count())
                                           .group_by(Recording.transcript_status))).all()
    metrics.RECORDINGS_MISSING.set(missing or 0)
    # pending and failed are always shown (0 too): the backlog and the failures a dashboard watches.
    metrics.set_gauge(metrics.TRANSCRIPTIONS, {("pending",): 0.0, ("failed",): 0.0,
                                               **{(status,): float(n) for status, n in by_status}})

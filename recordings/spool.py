"""Files left in Asterisk's spool without a filed recording.

MixMonitor writes ``spool/monitor/<Y/m/d>/<call id>.raw`` and the voice-message
Record() ``spool/voicemail-in/<call id>.wav``; the recordings worker files them
once the CTI has closed the call record. When the worker was down, or the CTI
lost the call, a file can stay there unnoticed: the integrity check lists every
one that nobody has written to for ``[recordings] spool_grace_seconds`` (so a
call still being recorded, or a file being compressed, is not reported) and
that has no filed recording, and the worker files such call recordings itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from core.calls import CallRecord
from core.db import Database
from recordings.models import Recording

SPOOL_KINDS = {"call": ("monitor", "*.raw"), "voicemail": ("voicemail-in", "*.wav")}


@dataclass(frozen=True)
class SpoolFile:
    kind: str  # call | voicemail
    path: Path
    name: str  # relative to its spool folder, as the call record holds it
    call_id: str
    modified: datetime


@dataclass(frozen=True)
class UnfiledFile:
    file: SpoolFile
    call: CallRecord | None

    def problem(self, now: datetime) -> str:
        idle = (now - self.file.modified).total_seconds() / 60
        if self.call is None:
            why = "没有通话记录"
        elif self.call.ended_at is None:
            why = "通话记录未结束"
        else:
            why = f"通话已于 {(now - self.call.ended_at).total_seconds() / 60:.0f} 分钟前结束"
        return f"暂存区文件未归档（{why}，{idle:.0f} 分钟未写入）"


def stale_spool_files(spool: Path, grace_seconds: float, now: datetime | None = None) -> list[SpoolFile]:
    """Spool files of calls and voice messages that nobody has written to for ``grace_seconds``."""
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=grace_seconds)
    found = []
    for kind, (folder, pattern) in SPOOL_KINDS.items():
        base = spool / folder
        for path in sorted(base.rglob(pattern)) if base.is_dir() else ():
            try:
                modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            except FileNotFoundError:  # filed (and removed) while we looked
                continue
            if modified < cutoff:
                found.append(SpoolFile(kind, path, str(path.relative_to(base)), path.stem, modified))
    return found


async def unfiled(db: Database, files: Iterable[SpoolFile]) -> list[UnfiledFile]:
    """The spool files whose call has no filed recording of their kind, with the call record if any."""
    files = list(files)
    if not files:
        return []
    ids = sorted({f.call_id for f in files})
    async with db.session() as session:
        filed = set((await session.execute(
            select(Recording.call_id, Recording.kind).where(Recording.call_id.in_(ids)))).all())
        calls = {c.call_id: c for c in (await session.scalars(
            select(CallRecord).where(CallRecord.call_id.in_(ids)))).all()}
    # A file can vanish between the scan and now: the worker filed it meanwhile.
    return [UnfiledFile(f, calls.get(f.call_id)) for f in files
            if (f.call_id, f.kind) not in filed and f.path.exists()]

"""Issue 13, fault suite: the recordings worker killed (SIGKILL) while it compresses call recordings.

Whatever the moment, after the supervisor restarts it every recording is filed exactly once, the raw
file is removed only once a verified copy is in place, and no partial or duplicate Opus file is left.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from sqlalchemy import func, select

from cli.democall import citizen_speech, originate_citizen
from cli.stack import supervisorctl
from core.filemodes import private_umask
from cti.models import CallRecord
from recordings.models import Recording
from recordings.opus import stream_layout
from recordings.storage import compress_raw_stereo, dated_path, sha256_of

pytestmark = pytest.mark.stack

KILLS = 3


async def _calls_ended(db, waiter, call_ids: list[str]) -> list[CallRecord]:
    async def ended():
        async with db.session() as session:
            rows = (await session.scalars(select(CallRecord).where(CallRecord.call_id.in_(call_ids)))).all()
        return rows if len(rows) == len(call_ids) and all(r.ended_at for r in rows) else None

    return list(await waiter(ended, timeout=120, what="the calls to end"))


async def _recorded_calls(stack, ami, db, waiter, callers: list[str], hold_seconds: int) -> list[CallRecord]:
    speech = citizen_speech(stack.settings, "demo-complaint")
    calls = [await originate_citizen(ami, "12301", keys="1", caller=caller, hold_seconds=hold_seconds,
                                     speech_path=speech, delay_seconds=9) for caller in callers]
    return await _calls_ended(db, waiter, [c.call_id for c in calls])


def _worker_pid(stack) -> int | None:
    out = supervisorctl(stack.settings, "pid", "recordings").stdout.strip()
    return int(out) if out.isdigit() and int(out) > 0 else None


async def _restarted(stack, dead: int) -> bool:
    return _worker_pid(stack) not in (None, dead)


async def _rows(db, call_ids: list[str]) -> dict[str, int]:
    async with db.session() as session:
        counts = await session.execute(select(Recording.call_id, func.count()).where(
            Recording.call_id.in_(call_ids), Recording.kind == "call").group_by(Recording.call_id))
    return dict(counts.all())


async def test_worker_killed_while_compressing_files_every_recording_exactly_once(stack, ami, db, waiter,
                                                                                   no_agents):
    store = stack.settings.recordings_dir
    supervisorctl(stack.settings, "stop", "recordings")
    try:
        records = await _recorded_calls(stack, ami, db, waiter, [f"1398888000{i}" for i in range(3)], 20)
    finally:
        supervisorctl(stack.settings, "start", "recordings")
    ids = [r.call_id for r in records]
    raws = {r.call_id: stack.recording_path(r.recording_file) for r in records}
    targets = {r.call_id: store / dated_path("calls", r.started_at, f"{r.call_id}.opus") for r in records}
    assert all(path.exists() for path in raws.values())

    killed_mid_compression = 0
    for _ in range(KILLS):
        async def compressing():
            parts = list(store.rglob("*.opus.part"))
            return (parts, _worker_pid(stack)) if parts else None

        try:
            parts, pid = await waiter(compressing, timeout=30, interval=0.01, what="the worker to compress a file")
        except AssertionError:
            break  # everything was filed before another kill could land
        if pid is None:
            continue
        os.kill(pid, signal.SIGKILL)
        if any(part.exists() for part in parts):
            killed_mid_compression += 1  # the dead worker's half-written copy is still there
        # At any moment a recording is either still raw in the spool or verified in place.
        assert all(raws[i].exists() or targets[i].exists() for i in ids)
        await waiter(lambda dead=pid: _restarted(stack, dead), timeout=30,
                     what="the supervisor to restart the worker")
    assert killed_mid_compression >= 1

    async def all_filed():
        rows = await _rows(db, ids)
        return rows if len(rows) == len(ids) else None

    await waiter(all_filed, timeout=120, what="every recording to be filed after the kills")
    await asyncio.sleep(3)  # a few more worker rounds: nothing may be filed twice
    assert await _rows(db, ids) == dict.fromkeys(ids, 1)
    async with db.session() as session:
        rows = (await session.scalars(select(Recording).where(Recording.call_id.in_(ids)))).all()
    for row in rows:
        path = store / row.path
        assert path == targets[row.call_id]
        assert row.format == "opus" and row.size_bytes == path.stat().st_size and row.sha256 == sha256_of(path)
        assert row.duration_seconds and row.duration_seconds > 10
        assert stream_layout(path) == (2, 1, 2, 0)
        assert not raws[row.call_id].exists()
    assert list(store.rglob("*.part")) == []
    assert sorted(p.name for p in store.rglob("*.opus") if p.stem in ids) == sorted(f"{i}.opus" for i in ids)


async def test_a_copy_filed_by_a_worker_killed_before_it_noted_it_is_noted_once(stack, ami, db, waiter, no_agents):
    supervisorctl(stack.settings, "stop", "recordings")
    try:
        (record,) = await _recorded_calls(stack, ami, db, waiter, ["13988881000"], 6)
        relative = dated_path("calls", record.started_at, f"{record.call_id}.opus")
        # What a worker killed between removing the raw file and writing the row leaves: a verified copy
        # in place, no raw file, no row.
        with private_umask():  # as the worker runs (#12.9)
            stored = compress_raw_stereo(stack.recording_path(record.recording_file),
                                         stack.settings.recordings_dir, relative)
    finally:
        supervisorctl(stack.settings, "start", "recordings")

    async def noted():
        async with db.session() as session:
            return await session.scalar(select(Recording).where(Recording.call_id == record.call_id))

    row = await waiter(noted, timeout=60, what="the worker to note the copy")
    assert (row.path, row.format, row.size_bytes, row.sha256) == (relative, "opus", stored.size_bytes, stored.sha256)
    assert abs(row.duration_seconds - stored.duration_seconds) < 0.1
    await asyncio.sleep(3)
    assert await _rows(db, [record.call_id]) == {record.call_id: 1}

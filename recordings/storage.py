"""Recording files: compress Asterisk's raw stereo stream to Ogg Opus, verify, file by date.

8 kHz 16-bit WAV costs 57.6 MB per hour and channel. A call is stored as Ogg
Opus with one independent 8 kbit/s mono stream per channel (recordings/opus.py:
a coupled stereo stream at this rate collapses to mono), under 8 MB per hour
for both channels, and every browser plays it. The compressed file is checked
before it is put in place (checksum, decoded length, and that each channel and
the difference between them survived coding, measured against the original);
the original is removed only after that.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from recordings.opus import OpusEncodeError, encode_independent_channels

SAMPLE_RATE = 8000
RAW_BYTES_PER_SECOND = SAMPLE_RATE * 2 * 2  # 16-bit, two channels (caller, far side)
OPUS_BITRATE_KBPS = 16  # voice messages (mono); calls: CALL_BITRATE_BPS for both channels together
CALL_BITRATE_BPS = 16000  # 8 kbit/s per channel
# Channel check at filing: a channel (or the left-right difference) present in the original must come
# back from the decoded file within LEVEL_LOSS_DB; below SILENT_DB there is nothing to keep.
SILENT_DB = -60.0
LEVEL_LOSS_DB = 6.0
SAME_CHANNELS_DB = 30.0  # difference this far below the louder channel: the original itself is mono


class StorageError(RuntimeError):
    """A recording could not be compressed or verified; the original is kept."""


@dataclass(frozen=True)
class StoredFile:
    relative_path: str
    size_bytes: int
    sha256: str
    duration_seconds: float
    format: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def raw_duration(path: Path) -> float:
    return path.stat().st_size / RAW_BYTES_PER_SECOND


def dated_path(kind: str, started: datetime, name: str) -> str:
    return f"{kind}/{started:%Y/%m/%d}/{name}"


def decode_opus(path: Path, channels: int = 2) -> bytes:
    """Decoded s16le 8 kHz PCM (also what transcription reads)."""
    args = ["opusdec", "--quiet", "--rate", str(SAMPLE_RATE)]
    if channels == 2:
        args.append("--force-stereo")
    proc = subprocess.run([*args, str(path), "-"], capture_output=True)
    if proc.returncode != 0:
        raise StorageError(f"cannot decode {path}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def opus_duration(path: Path) -> float:
    """Duration as decoded back (catches truncated or damaged output)."""
    return len(decode_opus(path)) / RAW_BYTES_PER_SECOND


def _encode(source: Path, storage_root: Path, relative: str, input_args: list[str]) -> tuple[Path, str]:
    """opusenc into a .part file, then into place; returns the target and the checksum written."""
    target = storage_root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    proc = subprocess.run(
        ["opusenc", "--quiet", *input_args, "--bitrate", str(OPUS_BITRATE_KBPS), "--comp", "10",
         str(source), str(partial)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise StorageError(f"opusenc failed for {source}: {proc.stderr.strip()}")
    checksum = sha256_of(partial)
    partial.replace(target)
    return target, checksum


@dataclass(frozen=True)
class Levels:
    """RMS levels (dBFS) of left, right and their difference, and the length, of 8 kHz stereo audio."""

    seconds: float
    left_db: float
    right_db: float
    difference_db: float


def _sox_levels(source: str, stdin=None) -> Levels:
    # Half volume on each part so that left minus right cannot clip; the same scale for original and copy.
    proc = subprocess.run(
        ["sox", "-t", "raw", "-r", str(SAMPLE_RATE), "-e", "signed", "-b", "16", "-c", "2", source, "-n",
         "remix", "-m", "1v0.5", "2v0.5", "1v0.5,2v-0.5", "stats"],
        stdin=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        raise StorageError(f"cannot measure levels: {proc.stderr.strip()[-300:]}")
    fields = {line[:13].strip(): line[13:].split() for line in proc.stderr.splitlines() if len(line) > 13}
    try:
        left, right, difference = (float(v) for v in fields["RMS lev dB"][1:4])
        seconds = float(fields["Length s"][0])
    except (KeyError, ValueError, IndexError) as exc:
        raise StorageError(f"cannot read levels from sox: {proc.stderr.strip()[-300:]}") from exc
    return Levels(seconds, left, right, difference)


def raw_levels(raw: Path) -> Levels:
    return _sox_levels(str(raw))


def opus_levels(path: Path) -> Levels:
    """Levels of the file as decoded back (streamed: an hour of audio is never held in memory)."""
    decoder = subprocess.Popen(["opusdec", "--quiet", "--rate", str(SAMPLE_RATE), "--force-stereo", str(path), "-"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        levels = _sox_levels("-", stdin=decoder.stdout)
    finally:
        decoder.stdout.close()
        error = decoder.stderr.read().decode(errors="replace").strip()
        decoder.wait()
    if decoder.returncode != 0:
        raise StorageError(f"cannot decode {path}: {error}")
    return levels


def channels_problem(original: Levels, stored: Levels) -> str | None:
    """What the copy lost of the original's two channels, or None when both are kept apart."""
    for name, before, after in (("左声道（来电人）", original.left_db, stored.left_db),
                                ("右声道（坐席/语音导航）", original.right_db, stored.right_db)):
        if before > SILENT_DB and not after > before - LEVEL_LOSS_DB:
            return f"{name}电平由 {before:.1f} dB 降至 {after:.1f} dB"
    louder = max(original.left_db, original.right_db)
    if original.difference_db > max(SILENT_DB, louder - SAME_CHANNELS_DB) \
            and not stored.difference_db > original.difference_db - LEVEL_LOSS_DB:
        return (f"左右声道未分离：差信号由 {original.difference_db:.1f} dB 降至 {stored.difference_db:.1f} dB"
                "（两声道被合成单声道）")
    return None


def compress_raw_stereo(raw: Path, storage_root: Path, relative: str) -> StoredFile:
    """raw (s16le, 8 kHz, 2 ch) -> Ogg Opus under storage_root/relative; removes raw when verified.

    The copy is written and verified as ``.part`` and only then moved into place, so a file under its
    final name is always a verified one (a worker killed at any point leaves the raw file, a ``.part``
    that the next attempt overwrites, or a verified copy)."""
    original = raw_levels(raw)
    target = storage_root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        encode_independent_channels(raw, partial, SAMPLE_RATE, 2, CALL_BITRATE_BPS,
                                    {"DESCRIPTION": "left: caller; right: what the caller heard (IVR, agent)"})
        checksum = sha256_of(partial)
        stored = opus_levels(partial)
        if abs(stored.seconds - original.seconds) > 0.5:
            raise StorageError(f"{raw}: decoded {stored.seconds:.2f}s of {original.seconds:.2f}s")
        problem = channels_problem(original, stored)
        if problem:
            raise StorageError(f"{raw}: {problem}")
        if sha256_of(partial) != checksum:
            raise StorageError(f"{raw}: the written file changed while it was checked")
    except StorageError:
        partial.unlink(missing_ok=True)
        raise
    except (OpusEncodeError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise StorageError(str(exc)) from exc
    partial.replace(target)
    raw.unlink()
    return StoredFile(relative, target.stat().st_size, checksum, round(original.seconds, 2), "opus")


def stored_file(storage_root: Path, relative: str) -> StoredFile:
    """The record of a copy already in place (filed by a worker that died before noting it)."""
    target = storage_root / relative
    levels = opus_levels(target)
    return StoredFile(relative, target.stat().st_size, sha256_of(target), round(levels.seconds, 2), "opus")


def store_wav(source: Path, storage_root: Path, relative: str) -> StoredFile:
    """Voice messages (mono WAV as recorded) are compressed like calls; the caller removes the source."""
    target, checksum = _encode(source, storage_root, relative, [])
    return StoredFile(relative, target.stat().st_size, checksum, round(opus_duration(target), 2), "opus")


def verify(path: Path, sha256: str | None) -> str | None:
    """None when the file is intact, else what is wrong (for the integrity report)."""
    if not path.exists():
        return "文件缺失"
    if sha256 and sha256_of(path) != sha256:
        return "校验和不符（文件已损坏）"
    try:
        opus_duration(path)
    except StorageError:
        return "无法解码"
    return None

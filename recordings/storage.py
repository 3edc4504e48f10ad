"""Recording files: compress Asterisk's raw stereo stream to Ogg Opus, verify, file by date.

8 kHz 16-bit WAV costs 57.6 MB per hour and channel; Opus at 16 kbit/s keeps
speech intelligible at about 7 MB per hour for both channels, and every
browser plays it. The original is removed only after the compressed file has
been written, re-read and checked against its checksum and duration.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

SAMPLE_RATE = 8000
RAW_BYTES_PER_SECOND = SAMPLE_RATE * 2 * 2  # 16-bit, two channels (caller, far side)
OPUS_BITRATE_KBPS = 16


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


def compress_raw_stereo(raw: Path, storage_root: Path, relative: str) -> StoredFile:
    """raw (s16le, 8 kHz, 2 ch) -> Ogg Opus under storage_root/relative; removes raw when verified."""
    expected = raw_duration(raw)
    target, checksum = _encode(raw, storage_root, relative, [
        "--raw", "--raw-bits", "16", "--raw-rate", str(SAMPLE_RATE), "--raw-chan", "2"])
    decoded = opus_duration(target)
    if sha256_of(target) != checksum or abs(decoded - expected) > 0.5:
        raise StorageError(f"{target}: verification failed (decoded {decoded:.2f}s of {expected:.2f}s)")
    raw.unlink()
    return StoredFile(relative, target.stat().st_size, checksum, round(expected, 2), "opus")


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

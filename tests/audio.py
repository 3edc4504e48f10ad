"""Reading recorded audio in tests: per-channel energy of Asterisk's raw stereo recordings."""

from __future__ import annotations

import array
import math
from pathlib import Path

SAMPLE_RATE = 8000


def raw_stereo_channels(path: Path) -> tuple[array.array, array.array]:
    """MixMonitor's D option: interleaved signed 16-bit little-endian, 8 kHz, left = caller."""
    samples = array.array("h")
    samples.frombytes(path.read_bytes()[: (path.stat().st_size // 4) * 4])
    return samples[0::2], samples[1::2]


def rms(samples: array.array) -> float:
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def duration_seconds(channel: array.array) -> float:
    return len(channel) / SAMPLE_RATE

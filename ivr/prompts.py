"""Mandarin prompts: text -> speech (pyttsx3 on espeak-ng's Mandarin voice) -> Asterisk 8 kHz WAV.

Prompts are cached by content: the file name carries a hash of the text and
voice settings, so an unchanged prompt is never synthesized twice. A recorded
human prompt dropped into ``config/prompts/<name>.wav`` replaces the synthetic
one of the same name.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from core.settings import CONFIG_DIR

VOICE = "sit/cmn"
RATE = 190  # words per minute: brisk but clear, keeps the main menu under 20 s
HUMAN_PROMPTS = CONFIG_DIR / "prompts"

_engine_lock = threading.Lock()


class PromptError(RuntimeError):
    """A prompt could not be produced (TTS or sox failed)."""


def _content_key(text: str) -> str:
    return hashlib.sha256(f"{VOICE}|{RATE}|{text}".encode()).hexdigest()[:16]


def _synthesize(text: str, target: Path) -> None:
    import pyttsx3  # imported lazily: only prompt generation needs the TTS engine

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "tts.wav"
        with _engine_lock:
            engine = pyttsx3.init("espeak")
            engine.setProperty("voice", VOICE)
            engine.setProperty("rate", RATE)
            engine.save_to_file(text, str(raw))
            engine.runAndWait()
        if not raw.exists() or raw.stat().st_size < 100:
            raise PromptError(f"TTS produced no audio for {text!r}")
        convert_to_asterisk_wav(raw, target)


def convert_to_asterisk_wav(source: Path, target: Path) -> None:
    """8 kHz, mono, 16-bit PCM: what Asterisk plays without transcoding."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part.wav")
    proc = subprocess.run(
        ["sox", str(source), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", str(tmp)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise PromptError(f"sox could not convert {source}: {proc.stderr.strip()}")
    tmp.replace(target)


class PromptStore:
    """Prompt files in one folder that Asterisk reads (``<dir>/<name>.wav``)."""

    def __init__(self, directory: Path, asterisk_directory: str) -> None:
        self.directory = directory
        self.asterisk_directory = asterisk_directory
        self.cache_dir = directory / ".cache"

    def ensure(self, name: str, text: str) -> str:
        """Make ``name`` say ``text``; return the path Asterisk plays (no extension)."""
        target = self.directory / f"{name}.wav"
        human = HUMAN_PROMPTS / f"{name}.wav"
        if human.exists():
            convert_to_asterisk_wav(human, target)
        else:
            cached = self.cache_dir / f"{_content_key(text)}.wav"
            if not cached.exists():
                _synthesize(text, cached)
            if not target.exists() or target.read_bytes() != cached.read_bytes():
                shutil.copyfile(cached, target)
        target.chmod(0o644)
        return f"{self.asterisk_directory}/{name}"

    def dynamic(self, text: str) -> str:
        """A prompt with live data (ticket status, days left), synthesized on first use and cached."""
        name = f"dyn-{_content_key(text)}"
        if not (self.directory / f"{name}.wav").exists():
            self.ensure(name, text)
        return f"{self.asterisk_directory}/{name}"

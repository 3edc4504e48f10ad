"""Mandarin prompts: text -> speech (espeak-ng's Mandarin voice) -> Asterisk 8 kHz WAV.

Prompts are cached by content: the file name carries a hash of the text and
voice settings, so an unchanged prompt is never synthesized twice. A recorded
human prompt dropped into ``config/prompts/<name>.wav`` replaces the synthetic
one of the same name.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from core.settings import CONFIG_DIR

VOICE = "sit/cmn"  # pyttsx3 voice id of espeak-ng's Mandarin
ESPEAK_VOICE = "cmn"
RATE = 240  # espeak words per minute: brisk but clear, keeps greeting + main menu under 20 s
# Trim espeak's lead-in and end pause: every tenth of a second counts in a menu.
TRIM_SILENCE = ["silence", "1", "0.05", "0.5%", "reverse", "silence", "1", "0.05", "0.5%", "reverse"]
HUMAN_PROMPTS = CONFIG_DIR / "prompts"


class PromptError(RuntimeError):
    """A prompt could not be produced (TTS or sox failed)."""


def _content_key(text: str) -> str:
    return hashlib.sha256(f"espeak-ng|{VOICE}|{RATE}|trim|{text}".encode()).hexdigest()[:16]


def _synthesize(text: str, target: Path) -> None:
    """espeak-ng's Mandarin voice -> 8 kHz WAV.

    pyttsx3 2.99's espeak driver (the design card's TTS wrapper) is not used for
    files: verified here, it silently writes nothing for a long utterance (the
    42-character main menu) and keeps the previous utterance's state between
    calls. We drive the same engine, voice and rate through the espeak-ng
    command line instead, which is also safe to run from several threads.
    """
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "tts.wav"
        proc = subprocess.run(
            ["espeak-ng", "-v", ESPEAK_VOICE, "-s", str(RATE), "-w", str(raw), "--", text],
            capture_output=True, text=True,
        )
        if proc.returncode != 0 or not raw.exists() or raw.stat().st_size < 100:
            raise PromptError(f"espeak-ng produced no audio for {text!r}: {proc.stderr.strip()}")
        convert_to_asterisk_wav(raw, target, TRIM_SILENCE)


def convert_to_asterisk_wav(source: Path, target: Path, effects: list[str] | None = None) -> None:
    """8 kHz, mono, 16-bit PCM: what Asterisk plays without transcoding."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part.wav")
    proc = subprocess.run(
        ["sox", str(source), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", str(tmp), *(effects or [])],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise PromptError(f"sox could not convert {source}: {proc.stderr.strip()}")
    tmp.replace(target)


class PromptStore:
    """Prompt files in one folder that Asterisk reads (``<dir>/<name>.wav``)."""

    def __init__(self, directory: Path, asterisk_directory: str, cache_dir: Path | None = None) -> None:
        self.directory = directory
        self.asterisk_directory = asterisk_directory
        self.cache_dir = cache_dir or directory / ".cache"

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
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(cached, target)
        target.chmod(0o644)
        return f"{self.asterisk_directory}/{name}"

    def dynamic(self, text: str) -> str:
        """A prompt with live data (ticket status, days left), synthesized on first use and cached."""
        name = f"dyn-{_content_key(text)}"
        if not (self.directory / f"{name}.wav").exists():
            self.ensure(name, text)
        return f"{self.asterisk_directory}/{name}"


class AsteriskPrompts:
    """The flow's view of a :class:`PromptStore`: static paths, and live readbacks made off the event loop."""

    def __init__(self, store: PromptStore) -> None:
        self.store = store
        self._pending: dict[str, asyncio.Future[str]] = {}

    def path(self, name: str) -> str:
        return f"{self.store.asterisk_directory}/{name}"

    async def dynamic(self, text: str) -> str:
        """Synthesize ``text`` in a worker thread (cached on disk); concurrent callers share one job."""
        if text not in self._pending:
            loop = asyncio.get_running_loop()
            self._pending[text] = loop.run_in_executor(None, self.store.dynamic, text)
        try:
            return await asyncio.shield(self._pending[text])
        finally:
            if self._pending.get(text) is not None and self._pending[text].done():
                self._pending.pop(text, None)

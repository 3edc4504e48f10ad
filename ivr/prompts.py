"""Mandarin prompts: text -> speech (pyttsx3 on espeak-ng's Mandarin voice) -> Asterisk 8 kHz WAV.

Prompts are cached by content: the file name carries a hash of the text and
voice settings, so an unchanged prompt is never synthesized twice. A recorded
human prompt dropped into ``config/prompts/<name>.wav`` replaces the synthetic
one of the same name.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from core.settings import CONFIG_DIR

VOICE = "sit/cmn"  # pyttsx3 voice id of espeak-ng's Mandarin
ESPEAK_VOICE = "cmn"
RATE = 240  # espeak words per minute: brisk but clear, keeps greeting + main menu under 20 s
# Trim espeak's lead-in and end pause: every tenth of a second counts in a menu.
TRIM_SILENCE = ["silence", "1", "0.05", "0.5%", "reverse", "silence", "1", "0.05", "0.5%", "reverse"]
HUMAN_PROMPTS = CONFIG_DIR / "prompts"
log = logging.getLogger(__name__)


class PromptError(RuntimeError):
    """A prompt could not be produced (TTS or sox failed)."""


def _content_key(text: str) -> str:
    return hashlib.sha256(f"pyttsx3|{VOICE}|{RATE}|clauses|trim|{text}".encode()).hexdigest()[:16]


CLAUSE_END = re.compile(r"(?<=[。，；！？、,;!?])")
_engine_lock = threading.Lock()


def clauses(text: str) -> list[str]:
    """Split at Chinese and Latin punctuation; each clause keeps its mark (and so its pause)."""
    return [part for part in (p.strip() for p in CLAUSE_END.split(text)) if part]


def _pyttsx3_clause(text: str, target: Path) -> bool:
    """One clause through pyttsx3 (espeak-ng's Mandarin voice); False when it wrote no audio.

    pyttsx3 2.99's espeak driver reuses one engine per process and then loses
    utterances after a multi-sentence text (seen here: nothing written for the
    main menu). A fresh engine for each single clause is reliable, so we make one.
    """
    import pyttsx3  # lazily: only prompt generation needs the TTS engine

    with _engine_lock:
        pyttsx3._activeEngines.clear()
        engine = pyttsx3.init("espeak")
        engine.setProperty("voice", VOICE)
        engine.setProperty("rate", RATE)
        with contextlib.redirect_stdout(io.StringIO()):  # the driver prints "Audio saved to ..."
            engine.save_to_file(text, str(target))
            engine.runAndWait()
        engine.stop()
    return target.exists() and target.stat().st_size > 1000


def _espeak_clause(text: str, target: Path) -> None:
    """The same voice through the espeak-ng command line: the fallback for a clause pyttsx3 dropped."""
    proc = subprocess.run(["espeak-ng", "-v", ESPEAK_VOICE, "-s", str(RATE), "-w", str(target), "--", text],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not target.exists() or target.stat().st_size < 100:
        raise PromptError(f"espeak-ng produced no audio for {text!r}: {proc.stderr.strip()}")


def _synthesize(text: str, target: Path) -> None:
    """Text -> pyttsx3 clause by clause -> one 8 kHz WAV with espeak's lead-in and tail trimmed."""
    with tempfile.TemporaryDirectory() as tmp:
        parts = []
        for index, clause in enumerate(clauses(text) or [text]):
            part = Path(tmp) / f"{index:03d}.wav"
            if not _pyttsx3_clause(clause, part):
                log.warning("pyttsx3 wrote no audio for %r; using espeak-ng directly", clause)
                _espeak_clause(clause, part)
            parts.append(part)
        joined = Path(tmp) / "joined.wav"
        if len(parts) == 1:
            joined = parts[0]
        else:
            proc = subprocess.run(["sox", *map(str, parts), str(joined)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise PromptError(f"sox could not join the clauses of {text!r}: {proc.stderr.strip()}")
        convert_to_asterisk_wav(joined, target, TRIM_SILENCE)


def convert_to_asterisk_wav(source: Path, target: Path, effects: list[str] | None = None) -> None:
    """8 kHz, mono, 16-bit PCM: what Asterisk plays without transcoding."""
    target.parent.mkdir(mode=0o750, parents=True, exist_ok=True)  # whatever the caller's umask
    tmp = target.with_suffix(".part.wav")
    proc = subprocess.run(
        ["sox", str(source), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", str(tmp), *(effects or [])],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise PromptError(f"sox could not convert {source}: {proc.stderr.strip()}")
    tmp.chmod(0o600)  # the store gives Asterisk's group read access where it plays the file
    tmp.replace(target)


def share_with_asterisk(path: Path) -> None:
    """Readable by Asterisk through the folder's group (asterisk), by no other user: read-backs carry
    citizens' ticket details."""
    os.chown(path, -1, path.parent.stat().st_gid)
    path.chmod(0o640)


def synthesized(text: str, cache_dir: Path) -> Path:
    """``text`` spoken by the IVR's voice, as the 8 kHz WAV Asterisk plays, made once per text in ``cache_dir``."""
    cached = cache_dir / f"{_content_key(text)}.wav"
    if not cached.exists():
        _synthesize(text, cached)
    return cached


def human_recording(name: str) -> Path | None:
    """A menu's ``audio:`` recording under config/prompts/, or None when no such file is there."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    path = HUMAN_PROMPTS / name
    return path if path.is_file() else None


class PromptStore:
    """Prompt files in one folder that Asterisk reads (``<dir>/<name>.wav``)."""

    def __init__(self, directory: Path, asterisk_directory: str, cache_dir: Path | None = None,
                 private: bool = True) -> None:
        self.private = private  # an instance's prompts (read-backs); False: Asterisk's shared zh sounds
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
            cached = synthesized(text, self.cache_dir)
            if not target.exists() or target.read_bytes() != cached.read_bytes():
                target.parent.mkdir(parents=True, exist_ok=True)
                # Replaced, not rewritten: a call playing the old prompt keeps its file, the next one reads
                # the whole new file (an admin's edit reaches the IVR while calls are in the menu).
                partial = target.with_suffix(".copy.wav")
                shutil.copyfile(cached, partial)
                partial.replace(target)
        if self.private:
            share_with_asterisk(target)
        else:
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

    def seconds(self, path: str) -> float | None:
        """How long the prompt at Asterisk ``path`` (from :meth:`path` or :meth:`dynamic`) plays: the store
        writes 8 kHz 16-bit mono WAV, 16 000 bytes a second after the 44-byte header. None if not found."""
        prefix = f"{self.store.asterisk_directory}/"
        if not path.startswith(prefix):
            return None
        try:
            size = (self.store.directory / f"{path[len(prefix):]}.wav").stat().st_size
        except OSError:
            return None
        return max(0, size - 44) / 16000

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

"""Edited content: the instance's own copies of policy files, layered over the shipped ``config/``.

An administrator edits menus, the knowledge base, service phrases, risk rules, deadline policies and the
holiday calendar in the admin area. The shipped file in ``config/`` is never written: a saved edit becomes
``var/content/<same relative path>`` (e.g. ``var/content/menus/12301.yaml``), which every loader reads
instead of the shipped one (:func:`config_path`, :func:`config_glob`). So an upgrade of the repository
never overwrites a centre's edits, ``git status`` stays clean, and ``./hotline backup`` keeps them (area
``content``). A centre that wants the shipped default back deletes its copy (:func:`revert`).

*Validate, then publish.* :func:`save` writes the candidate into a scratch copy of the content folder and
runs every editable file's loader against it (:func:`validate`): an edit of the knowledge base that drops
an answer a menu still uses is refused as firmly as a YAML syntax error, with the file, line and reason
in Chinese (``core.policy.PolicyError``), and nothing changes. Only then is the file replaced
(atomically: a reader sees the old or the new file, never half of one), its revision appended to
``.history/<path>.jsonl`` (who, from where, when, the full text) and the folder's version bumped.

*How services pick it up.* Each process asks :func:`refresh` whether the version changed (one small file
read: the IVR before each call and once a second, the desk at each request, the scheduler at each
tick); when it did, every owner's cached copy is dropped (``reset`` of :func:`register`) and the next
use loads the new file. A file rather than a Redis pub/sub notice: a notice missed while a service
restarts or Redis is away would leave that service on old content without anyone knowing, a version
read cannot be missed, and it costs no connection.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import fnmatch
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from core.admin_audit import record_change
from core.db import Database
from core.models import User
from core.policy import PolicyError, PolicyErrors
from core.settings import CONFIG_DIR, ConfigError

T = TypeVar("T")
FOLDER = "content"  # under the var folder
HISTORY = ".history"
VERSION_FILE = ".version"
LOCK_FILE = ".lock"
MAX_BYTES = 256 * 1024  # far above any policy file: a paste of something else is refused, not stored

_root: Path | None = None  # this process's content folder (use())
_candidate: ContextVar[Path | None] = ContextVar("content_candidate", default=None)
_seen_version = 0


@dataclass(frozen=True)
class Editable:
    """A kind of editable file: ``pattern`` relative to config/ (fnmatch), its loader and its cache."""

    pattern: str
    title: str  # for people, Chinese
    entity: str  # its entity in the admin audit log (core.admin_audit.ENTITY_LABELS)
    validate: Callable[[], object]  # loads through config_path (so it sees a candidate); raises ConfigError
    reset: Callable[[], None] | None = None  # drops this process's cached copy
    # Brings the database in line with the candidate (e.g. units.yaml -> the units table), in the change's
    # transaction; raises ConfigError to refuse it (publish only).
    apply: Callable[[AsyncSession], Awaitable[None]] | None = None


_EDITABLES: dict[str, Editable] = {}


def register(pattern: str, title: str, entity: str, validate: Callable[[], object],
             reset: Callable[[], None] | None = None,
             apply: Callable[[AsyncSession], Awaitable[None]] | None = None) -> None:
    """Declare an editable kind of file (by the module that reads it)."""
    _EDITABLES[pattern] = Editable(pattern, title, entity, validate, reset, apply)


def editables() -> list[Editable]:
    return list(_EDITABLES.values())


def kind_of(relative: str) -> Editable | None:
    return next((e for e in _EDITABLES.values() if fnmatch.fnmatchcase(relative, e.pattern)), None)


# --- where files are read from -------------------------------------------------------------------

def use(var_dir: Path | None) -> None:
    """Read this instance's edits from ``<var_dir>/content`` (None: shipped files only)."""
    global _root, _seen_version
    _root = Path(var_dir) / FOLDER if var_dir is not None else None
    _seen_version = version()
    for editable in _EDITABLES.values():
        if editable.reset:
            editable.reset()


def root() -> Path | None:
    return _candidate.get() or _root


def config_path(relative: str) -> Path:
    """The file a loader reads for ``config/<relative>``: the instance's edited copy, else the shipped one."""
    folder = root()
    if folder is not None and (folder / relative).is_file():
        return folder / relative
    return CONFIG_DIR / relative


def config_glob(folder: str, pattern: str = "*.yaml") -> list[Path]:
    """The files of ``config/<folder>/`` matching ``pattern``, each as :func:`config_path` resolves it."""
    names = {p.name for p in (CONFIG_DIR / folder).glob(pattern)}
    edited = root()
    if edited is not None and (edited / folder).is_dir():
        names |= {p.name for p in (edited / folder).glob(pattern)}
    return [config_path(f"{folder}/{name}") for name in sorted(names)]


def edited_files() -> list[str]:
    """Relative paths of the files this instance has edited."""
    folder = root()
    if folder is None or not folder.is_dir():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and not p.relative_to(folder).as_posix().startswith("."))


def files() -> list[str]:
    """Every editable file (shipped or edited), relative to config/."""
    shipped = {p.relative_to(CONFIG_DIR).as_posix() for p in CONFIG_DIR.rglob("*.yaml")}
    return sorted(name for name in shipped | set(edited_files()) if kind_of(name))


def checked_name(relative: str) -> str:
    """``relative`` if it names an editable file, else a ConfigError in Chinese (no path outside config/)."""
    parts = Path(relative).parts
    if not relative or Path(relative).is_absolute() or ".." in parts or any(p.startswith(".") for p in parts) \
            or kind_of(relative) is None:
        raise ConfigError(f"不能编辑的文件：{relative}")
    if not config_path(relative).is_file():
        raise ConfigError(f"文件不存在：{relative}")
    return relative


def text_of(relative: str) -> str:
    return config_path(checked_name(relative)).read_text(encoding="utf-8")


def is_edited(relative: str) -> bool:
    folder = root()
    return folder is not None and (folder / relative).is_file()


# --- validation and publishing -------------------------------------------------------------------

@contextlib.contextmanager
def _candidate_folder(relative: str, text: str | None) -> Iterator[Path]:
    """A scratch copy of the content folder with ``relative`` replaced by ``text`` (None: removed)."""
    with tempfile.TemporaryDirectory(prefix="hotline-content-") as scratch:
        copy = Path(scratch) / FOLDER
        if _root is not None and _root.is_dir():
            shutil.copytree(_root, copy, ignore=shutil.ignore_patterns(".*"))
        copy.mkdir(exist_ok=True)
        target = copy / relative
        if text is None:
            target.unlink(missing_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        token = _candidate.set(copy)
        try:
            yield copy
        finally:
            _candidate.reset(token)


def _validate_all() -> None:
    errors: dict[str, ConfigError] = {}
    for editable in _EDITABLES.values():
        try:
            editable.validate()
        except PolicyErrors as exc:
            errors.update((str(e), e) for e in exc.errors)
        except ConfigError as exc:
            errors[str(exc)] = exc
    if len(errors) == 1:
        raise next(iter(errors.values()))  # one problem: its own file, line and reason
    if errors:
        raise PolicyErrors(list(errors.values()))


def _shown_in_place(exc: ConfigError, copy: Path) -> ConfigError:
    """Errors name ``config/<path>`` (what the admin edits), not the scratch folder."""
    if isinstance(exc, PolicyErrors):
        return PolicyErrors([_shown_in_place(e, copy) for e in exc.errors])
    if isinstance(exc, PolicyError):
        try:
            relative = exc.path.relative_to(copy)
        except ValueError:
            return exc
        return PolicyError(CONFIG_DIR / relative, exc.line, exc.reason)
    return exc


def validate(relative: str, text: str | None, then: Callable[[], T] | None = None) -> T | None:
    """Would the platform load with ``relative`` set to ``text``? Raises PolicyError(s) naming line and reason.

    ``then`` runs with the candidate in place (a preview: e.g. the prompts the edited menu would say)."""
    if text is not None:
        if len(text.encode("utf-8")) > MAX_BYTES:
            raise ConfigError(f"{relative}：内容过长（超过 {MAX_BYTES // 1024} KB）")
        if "\x00" in text:
            raise ConfigError(f"{relative}：内容含有不可见的控制字符")
    with _candidate_folder(relative, text) as copy:
        try:
            _validate_all()
            return then() if then is not None else None
        except ConfigError as exc:
            raise _shown_in_place(exc, copy) from None


@dataclass(frozen=True)
class Revision:
    """One saved version of a file: who, from where, when, and the whole text (None: back to the shipped file)."""

    path: str
    version: int
    at: dt.datetime
    user: str
    address: str
    text: str | None
    note: str = ""

    @property
    def sha(self) -> str:
        return hashlib.sha256((self.text or "").encode()).hexdigest()[:12]


@contextlib.contextmanager
def _locked() -> Iterator[Path]:
    if _root is None:
        raise ConfigError("本进程未设置内容目录（content.use）")
    _root.mkdir(mode=0o750, parents=True, exist_ok=True)
    with open(_root / LOCK_FILE, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one writer at a time, across processes
        yield _root


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(relative: str, text: str | None, user: str, address: str = "", note: str = "") -> Revision:
    """Validate ``text`` for ``relative`` against everything else, then publish it (None: back to the shipped
    file). Raises ConfigError (file, line, reason in Chinese) and changes nothing when it would not load."""
    checked_name(relative)
    if text is not None:
        text = text.replace("\r\n", "\n")
    with _locked() as folder:
        validate(relative, text)
        target = folder / relative
        if text is None:
            target.unlink(missing_ok=True)
        else:
            _write_atomically(target, text)
        number = version() + 1
        revision = Revision(relative, number, dt.datetime.now(dt.UTC), user, address, text, note)
        log = folder / HISTORY / f"{relative}.jsonl"
        log.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as out:
            out.write(json.dumps({"version": number, "at": revision.at.isoformat(), "user": user, "address": address,
                                  "text": text, "note": note}, ensure_ascii=False) + "\n")
        _write_atomically(folder / VERSION_FILE, f"{number}\n")  # last: services reload only a complete change
    return revision


async def publish(db: Database, actor: User | None, address: str | None, relative: str,
                  text: str | None) -> Revision:
    """:func:`save` with its row in the admin audit log (who, from where, before/after, when).

    The row is committed right after the file is in place: a refused change leaves no row, and a change
    goes without one only if the database fails in that moment (the file's own history still has it)."""
    async with db.transaction() as session:
        return await publish_in(session, actor, address, relative, text)


async def publish_in(session: AsyncSession, actor: User | None, address: str | None, relative: str,
                     text: str | None) -> Revision:
    """:func:`publish` inside the caller's transaction (the bulk import of units writes its own audit rows
    in the same one)."""
    checked_name(relative)
    kind = kind_of(relative)
    before = {"file": relative, "version": version(), "edited": is_edited(relative), "text": text_of(relative)}
    if kind is not None and kind.apply is not None:
        validate(relative, text)
        with _candidate_folder(relative, text):
            await kind.apply(session)  # refused: the transaction is rolled back, no file is written
    revision = save(relative, text, actor.username if actor else "系统", address or "",
                    note="恢复为随平台发布的版本" if text is None else "")
    after = {"file": relative, "version": revision.version, "edited": text is not None,
             "text": text_of(relative)}
    record_change(session, actor, address, kind.entity if kind else "policy", relative,
                  "update" if text is not None else "reload", before, after)
    return revision


def revert(relative: str, user: str, address: str = "") -> Revision:
    """Back to the shipped file (validated like any edit)."""
    return save(relative, None, user, address, note="恢复为随平台发布的版本")


def history(relative: str) -> list[Revision]:
    """Every saved revision of ``relative``, oldest first."""
    folder = root()
    log = folder / HISTORY / f"{relative}.jsonl" if folder is not None else None
    if log is None or not log.is_file():
        return []
    out = []
    for line in log.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        out.append(Revision(relative, row["version"], dt.datetime.fromisoformat(row["at"]), row["user"],
                            row.get("address", ""), row["text"], row.get("note", "")))
    return out


def version() -> int:
    """The content folder's version: 0 before any edit; each saved change adds one."""
    if _root is None:
        return 0
    try:
        return int((_root / VERSION_FILE).read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def refresh() -> bool:
    """Drop every cached policy if the content changed since this process last looked; True if it did."""
    global _seen_version
    current = version()
    if current == _seen_version:
        return False
    _seen_version = current
    for editable in _EDITABLES.values():
        if editable.reset:
            editable.reset()
    return True

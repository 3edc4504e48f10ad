"""./hotline backup DEST and ./hotline restore SRC: snapshots that can be taken during calls and that restore.

A backup folder DEST holds one sub-folder per snapshot (``hotline-YYYYmmddTHHMMSSZ``) and a content-addressed
store (``store/``) shared by them: a recording or evidence file is copied once and hard-linked into every later
snapshot that still holds it, so a nightly backup only copies what is new. Each snapshot has a ``manifest.json``
with the sha256 and size of every file it holds (database, recordings, evidence, secrets, configuration), and
``manifest.sha256`` for the manifest itself. The database is copied first (SQLite's online backup API or
``pg_dump``, both consistent while the platform writes), the files after it: a recording filed in between is in
the snapshot without its row, never a row without its file.

Secrets (var/secrets.toml) and the configuration are included, so the snapshot is sensitive as a whole: folders
are 0700, files 0600, and SENSITIVE.txt says so to whoever finds the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core import content
from core.settings import CONFIG_DIR, Settings
from recordings.storage import sha256_of

FORMAT = 1
PREFIX = "hotline-"
STORE = "store"
DB_SQLITE, DB_PGDUMP = "hotline.db", "hotline.pgdump"
SENSITIVE_NOTE = """敏感数据 / SENSITIVE DATA

本备份含有平台的全部密钥（AMI、SIP、Redis、数据库口令、会话密钥）、配置、来电记录、工单和通话录音。
仅限值班运维人员访问；请勿复制到共享盘或发送给他人。
This backup holds every secret of the platform (AMI, SIP, Redis and database passwords, the cookie key),
its configuration, call records, tickets and call recordings. Keep it readable by operations staff only.
"""


class BackupError(RuntimeError):
    """A backup or restore cannot go on; the message is for the person on call (Chinese, then English)."""


@dataclass(frozen=True)
class Entry:
    area: str  # "database" | "recordings" | "evidence" | "secrets" | "config"
    path: str  # relative to the area's root
    sha256: str
    size: int
    sensitive: bool


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def _db_kind(url: str) -> str:
    if url.startswith("sqlite"):
        return "sqlite"
    if url.startswith("postgresql"):
        return "postgresql"
    raise BackupError(f"不支持的数据库 / unsupported database URL: {url.split(':', 1)[0]}")


def _libpq_url(url: str) -> str:
    """SQLAlchemy's ``postgresql+asyncpg://`` as the plain URL pg_dump and pg_restore understand."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def _sqlite_path(url: str) -> Path:
    return Path(url.split(":///", 1)[1])


def _pg_bin(name: str) -> str:
    from cli.postgres import PG_BIN

    found = PG_BIN / name
    return str(found) if found.exists() else name


def _dump_database(settings: Settings, target_dir: Path) -> Path:
    url = settings.database_url
    if _db_kind(url) == "sqlite":
        target = target_dir / DB_SQLITE
        source = sqlite3.connect(f"file:{_sqlite_path(url)}?mode=ro", uri=True)
        copy = sqlite3.connect(target)
        try:
            # The online backup API copies a consistent image while the services keep writing.
            source.backup(copy, pages=1024)
        finally:
            copy.close()
            source.close()
    else:
        target = target_dir / DB_PGDUMP
        result = subprocess.run([_pg_bin("pg_dump"), "--format=custom", "--no-owner", f"--file={target}",
                                 _libpq_url(url)], capture_output=True, text=True)
        if result.returncode != 0:
            raise BackupError(f"pg_dump 失败 / pg_dump failed: {result.stderr.strip()}")
    target.chmod(0o600)
    return target


def _area_roots(settings: Settings) -> dict[str, Path]:
    # content: the policy files edited in the admin area (core.content), with their history
    return {"recordings": settings.recordings_dir, "evidence": settings.var_dir / "evidence",
            "content": settings.var_dir / content.FOLDER}


def _walk(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()) if root.is_dir() else []


def _store_file(source: Path, store: Path, known: dict[tuple[str, int, int], str]) -> tuple[str, int]:
    """Put ``source`` into the content-addressed store (unless it is there) and return (sha256, size)."""
    stat = source.stat()
    sha = known.get((str(source), stat.st_size, stat.st_mtime_ns))
    if sha and (store / sha[:2] / sha).exists():  # unchanged since the last snapshot: not read again
        return sha, stat.st_size
    _private_dir(store / "tmp")
    fd, tmp_name = tempfile.mkstemp(dir=store / "tmp")
    digest, size = hashlib.sha256(), 0
    with os.fdopen(fd, "wb") as out, source.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            out.write(block)
            size += len(block)
        out.flush()
        os.fsync(out.fileno())
    sha = digest.hexdigest()
    final = _private_dir(store / sha[:2]) / sha
    if final.exists():
        os.unlink(tmp_name)
    else:
        os.chmod(tmp_name, 0o600)
        os.replace(tmp_name, final)
    return sha, size


def _previous_sizes(dest: Path, roots: dict[str, Path]) -> dict[tuple[str, int, int], str]:
    """(path, size, mtime) → sha256 from the newest snapshot, so unchanged files are not hashed again."""
    snapshots = list_snapshots(dest)
    if not snapshots:
        return {}
    try:
        manifest = json.loads((snapshots[-1] / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    known = {}
    for item in manifest.get("files", []):
        root = roots.get(item["area"])
        if root is not None and "mtime_ns" in item:
            known[(str(root / item["path"]), item["size"], item["mtime_ns"])] = item["sha256"]
    return known


def list_snapshots(dest: Path) -> list[Path]:
    """The snapshots in ``dest``, oldest first (their names sort by time)."""
    if not dest.is_dir():
        return []
    return sorted(p for p in dest.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
                  and (p / "manifest.json").exists())


def _schema_revision(settings: Settings) -> str | None:
    url = settings.database_url
    if _db_kind(url) != "sqlite" or not _sqlite_path(url).exists():
        return None
    with sqlite3.connect(f"file:{_sqlite_path(url)}?mode=ro", uri=True) as conn:
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.Error:
            return None
    return row[0] if row else None


def backup(settings: Settings, dest: Path, keep: int | None = None) -> Path:
    """Take one snapshot of the running platform into ``dest``; keep the newest ``keep`` snapshots."""
    dest = _private_dir(dest.resolve())
    keep = int(settings.backup.keep if keep is None else keep)
    if keep < 1:
        raise BackupError(f"保留份数至少为 1 / keep must be at least 1 (got {keep})")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    work = _private_dir(dest / f".partial-{stamp}")
    store = _private_dir(dest / STORE)
    roots = _area_roots(settings)
    known = _previous_sizes(dest, roots)
    files: list[dict[str, Any]] = []

    db_file = _dump_database(settings, work)  # first: see the module docstring
    files.append({"area": "database", "path": db_file.name, "sha256": sha256_of(db_file),
                  "size": db_file.stat().st_size, "sensitive": True})
    for area, root in roots.items():
        for source in _walk(root):
            mtime = source.stat().st_mtime_ns
            try:
                sha, size = _store_file(source, store, known)
            except FileNotFoundError:  # removed by retention while we walked: not part of this snapshot
                continue
            relative = source.relative_to(root).as_posix()
            target = work / area / relative
            _private_dir(target.parent)
            os.link(store / sha[:2] / sha, target)
            files.append({"area": area, "path": relative, "sha256": sha, "size": size, "mtime_ns": mtime,
                          "sensitive": False})
    for area, root, paths in (("secrets", settings.var_dir, [settings.var_dir / "secrets.toml"]),
                              ("config", CONFIG_DIR, _walk(CONFIG_DIR))):
        for source in paths:
            if not source.exists():
                continue
            relative = source.relative_to(root).as_posix()
            target = work / area / relative
            _private_dir(target.parent)
            shutil.copyfile(source, target)
            target.chmod(0o600)
            files.append({"area": area, "path": relative, "sha256": sha256_of(target), "size": target.stat().st_size,
                          "sensitive": True})
    (work / "SENSITIVE.txt").write_text(SENSITIVE_NOTE, encoding="utf-8")
    manifest = {"format": FORMAT, "created": datetime.now(UTC).isoformat(), "database": _db_kind(settings.database_url),
                "schema_revision": _schema_revision(settings), "sensitive": True, "files": files}
    body = json.dumps(manifest, ensure_ascii=False, indent=1).encode()
    (work / "manifest.json").write_bytes(body)
    (work / "manifest.sha256").write_text(hashlib.sha256(body).hexdigest() + "\n")
    for name in ("SENSITIVE.txt", "manifest.json", "manifest.sha256"):
        (work / name).chmod(0o600)
    snapshot = dest / f"{PREFIX}{stamp}"
    work.rename(snapshot)  # a snapshot exists only once it is complete
    _apply_retention(dest, keep)
    return snapshot


def _apply_retention(dest: Path, keep: int) -> None:
    for old in list_snapshots(dest)[:-keep]:
        shutil.rmtree(old)
    for partial in dest.glob(".partial-*"):  # left by a backup that was killed
        shutil.rmtree(partial, ignore_errors=True)
    # A stored file no snapshot links to any more has a link count of 1: nothing needs it.
    for stored in (dest / STORE).glob("??/*"):
        if stored.stat().st_nlink == 1:
            stored.unlink()


def _resolve_snapshot(src: Path) -> Path:
    if (src / "manifest.json").exists():
        return src
    snapshots = list_snapshots(src)
    if not snapshots:
        raise BackupError(f"{src} 中没有备份 / no backup found in {src}")
    return snapshots[-1]


def verify(src: Path) -> tuple[Path, dict[str, Any]]:
    """Check every file of a snapshot against its manifest; raise BackupError naming every problem."""
    snapshot = _resolve_snapshot(src.resolve())
    try:
        body = (snapshot / "manifest.json").read_bytes()
        expected = (snapshot / "manifest.sha256").read_text().strip()
    except OSError as exc:
        raise BackupError(f"备份清单缺失，未做任何恢复 / the manifest is missing, nothing was restored: {exc}") from exc
    if hashlib.sha256(body).hexdigest() != expected:
        raise BackupError("备份清单已被改动，未做任何恢复 / the manifest was changed, nothing was restored "
                          f"({snapshot / 'manifest.json'})")
    manifest = json.loads(body)
    problems = []
    for item in manifest["files"]:
        path = snapshot / item["area"] / item["path"] if item["area"] != "database" else snapshot / item["path"]
        if not path.is_file():
            problems.append(f"缺少 missing: {item['area']}/{item['path']}")
        elif path.stat().st_size != item["size"]:
            problems.append(f"大小不符（被截断？） size differs (truncated?): {item['area']}/{item['path']}")
        elif sha256_of(path) != item["sha256"]:
            problems.append(f"校验和不符 checksum differs: {item['area']}/{item['path']}")
    if problems:
        raise BackupError("备份已损坏，未做任何恢复 / the backup is damaged, nothing was restored "
                          f"({snapshot}):\n  " + "\n  ".join(problems))
    return snapshot, manifest


def _refuse_unless_fresh(settings: Settings) -> None:
    roots = _area_roots(settings)
    used = [str(p) for p in (settings.var_dir / DB_SQLITE,) if p.exists()]
    used += [str(root) for root in roots.values() if _walk(root)]
    if used:
        raise BackupError("目标实例不是空的，未做任何恢复 / the target instance is not empty, nothing was restored "
                          f"(restore into a fresh var folder, HOTLINE_VAR=…): {', '.join(used)}")


def restore(settings: Settings, src: Path) -> Path:
    """Verify the newest snapshot in ``src`` (or ``src`` itself), then restore it into this fresh instance."""
    snapshot, manifest = verify(src)
    if manifest["database"] != _db_kind(settings.database_url):
        raise BackupError(f"备份的数据库类型为 {manifest['database']}，本实例为 {_db_kind(settings.database_url)}"
                          f" / the backup's database is {manifest['database']}, this instance's is another")
    _refuse_unless_fresh(settings)
    var = _private_dir(settings.var_dir)
    roots = _area_roots(settings)
    config_copy = var / "config-from-backup"
    for item in manifest["files"]:
        area = item["area"]
        if area == "database":
            continue
        source = snapshot / area / item["path"]
        target = {"secrets": var, "config": config_copy}.get(area) or roots[area]
        target = target / item["path"]
        _private_dir(target.parent)
        shutil.copyfile(source, target)
        if item["sensitive"]:
            target.chmod(0o600)
    db_item = next(item for item in manifest["files"] if item["area"] == "database")
    if manifest["database"] == "sqlite":
        target = _sqlite_path(settings.database_url)
        tmp = target.with_suffix(".restoring")
        shutil.copyfile(snapshot / db_item["path"], tmp)
        tmp.chmod(0o600)
        tmp.replace(target)
    else:
        result = subprocess.run([_pg_bin("pg_restore"), "--clean", "--if-exists", "--no-owner", "--exit-on-error",
                                 f"--dbname={_libpq_url(settings.database_url)}", str(snapshot / db_item["path"])],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise BackupError(f"pg_restore 失败 / pg_restore failed: {result.stderr.strip()}")
    return snapshot


def config_differences(settings: Settings) -> list[str]:
    """Configuration files of the restored backup that differ from this clone's config/ (or are missing here)."""
    copy = settings.var_dir / "config-from-backup"
    return sorted(p.relative_to(copy).as_posix() for p in _walk(copy)
                  if not (CONFIG_DIR / p.relative_to(copy)).is_file()
                  or sha256_of(CONFIG_DIR / p.relative_to(copy)) != sha256_of(p))

"""./hotline backup during a call, ./hotline restore into a fresh instance, and a damaged backup refused.

The restore goes into a throwaway var folder whose database is opened and compared with the live one (a second
full platform would double the test's time and prove nothing more about the data).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

import agent_desk.knowledge  # noqa: F401 - registers phrases.yaml as editable content
from cli.democall import citizen_speech, originate_citizen
from core import content
from cti.models import CallRecord
from recordings.models import Recording

REPO = Path(__file__).resolve().parents[1]
TABLES = ("tickets", "call_records", "recordings", "users", "ticket_actions")


def hotline(*args: str, var: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **({"HOTLINE_VAR": str(var)} if var else {}))
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def rows(db_file: Path, table: str) -> dict:
    with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return {row["id"]: dict(row) for row in conn.execute(f"SELECT * FROM {table}")}  # noqa: S608 - fixed names


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


PHRASES = "phrases.yaml"
EDIT_MARK = "# 备份测试：管理员在管理区改过的服务用语"


@pytest.fixture
def edited_content(stack):
    """An admin's edit of the service phrases in the running instance (core.content, as the admin area saves
    it), put back to the shipped file afterwards so that later tests see the shipped phrases."""
    content.use(stack.settings.var_dir)
    content.save(PHRASES, content.text_of(PHRASES) + f"\n{EDIT_MARK}\n", user="admin", note="备份测试")
    yield stack.settings.var_dir / content.FOLDER
    content.use(stack.settings.var_dir)
    content.save(PHRASES, None, user="admin", note="备份测试结束")
    content.use(None)


def content_files(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha(p) for p in folder.rglob("*")
            if p.is_file() and p.name != content.LOCK_FILE}


async def test_backup_during_a_call_restores_identical_and_a_damaged_backup_is_refused(
        stack, ami, db, waiter, no_agents, edited_content, tmp_path):
    settings = stack.settings
    # A citizen leaves a voice message (nobody is logged in): a call record, a ticket and a recording.
    message = await originate_citizen(ami, "12365", keys="0wwwwwwww1", caller="13655556666", hold_seconds=3,
                                      speech_path=citizen_speech(settings, "demo-report"), delay_seconds=6,
                                      speech_delay_seconds=9)

    async def filed():
        async with db.session() as session:
            row = await session.scalar(select(Recording).where(Recording.call_id == message.call_id,
                                                               Recording.kind == "voicemail"))
        return row if row and row.ticket_number and (settings.recordings_dir / row.path).exists() else None

    voicemail = await waiter(filed, timeout=120, what="the voice message to be filed as a ticket")
    # A second citizen is still in the IVR while the backup runs.
    live_call = await originate_citizen(ami, "12301", keys="", caller="13677778888", hold_seconds=90)

    async def in_progress():
        async with db.session() as session:
            record = await session.scalar(select(CallRecord).where(CallRecord.call_id == live_call.call_id))
        return record if record and record.ended_at is None else None

    await waiter(in_progress, timeout=30, what="the second call to be up")
    (settings.var_dir / "evidence" / "t").mkdir(parents=True, exist_ok=True)
    (settings.var_dir / "evidence" / "t" / "photo.jpg").write_bytes(b"\xff\xd8evidence")  # a stored upload

    dest = tmp_path / "backups"
    made = hotline("backup", str(dest))
    assert made.returncode == 0, made.stderr
    assert await in_progress() is not None, "the backup must not disturb a call in progress"
    live_db = settings.var_dir / "hotline.db"
    live = {table: rows(live_db, table) for table in TABLES}
    first = next(dest.glob("hotline-*"))
    assert oct(first.stat().st_mode & 0o777) == "0o700" and (first / "SENSITIVE.txt").exists()
    assert oct((first / "secrets" / "secrets.toml").stat().st_mode & 0o777) == "0o600"

    target = tmp_path / "restored"
    restored = hotline("restore", str(dest), var=target)
    assert restored.returncode == 0, restored.stderr
    with sqlite3.connect(target / "hotline.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    for table in TABLES:
        again = rows(target / "hotline.db", table)
        if table == "call_records":  # the call that was up is in the backup as it was then: still open
            open_call = next(r for r in again.values() if r["call_id"] == live_call.call_id)
            assert open_call["ended_at"] is None
            again = {k: r for k, r in again.items() if r["call_id"] != live_call.call_id}
            live[table] = {k: r for k, r in live[table].items() if r["call_id"] != live_call.call_id}
        assert again == live[table], table
    assert voicemail.ticket_number in {r["number"] for r in rows(target / "hotline.db", "tickets").values()}
    recordings = rows(target / "hotline.db", "recordings").values()
    assert recordings and all(sha(target / "recordings" / r["path"]) == sha(settings.recordings_dir / r["path"])
                              for r in recordings if r["path"] and (settings.recordings_dir / r["path"]).exists())
    assert sha(target / "evidence" / "t" / "photo.jpg") == sha(settings.var_dir / "evidence" / "t" / "photo.jpg")
    assert (target / "secrets.toml").read_text() == (settings.var_dir / "secrets.toml").read_text()
    assert "identical to config/" in restored.stdout
    # The admin's content edit, its history and version come back, and the restored instance serves the edit.
    edits = content_files(edited_content)
    assert PHRASES in edits and any(name.startswith(".history/") for name in edits), edits
    assert content_files(target / content.FOLDER) == edits
    content.use(target)
    assert content.text_of(PHRASES).rstrip().endswith(EDIT_MARK) and content.is_edited(PHRASES)
    content.use(settings.var_dir)
    assert hotline("restore", str(dest), var=target).returncode == 1  # never over an instance with data

    # Incremental: the second backup links the unchanged recording; keep 1 removes the first snapshot.
    relative = Path("recordings") / voicemail.path
    inode = (first / relative).stat().st_ino
    assert hotline("backup", str(dest), "--keep", "1").returncode == 0
    (second,) = list(dest.glob("hotline-*"))
    assert second != first and (second / relative).stat().st_ino == inode

    # Damaged backups are refused before anything is written into the fresh instance.
    fresh = tmp_path / "fresh"
    original = (second / relative).read_bytes()
    (second / relative).write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    refused = hotline("restore", str(dest), var=fresh)
    assert refused.returncode == 1 and "备份已损坏" in refused.stderr and "damaged" in refused.stderr
    assert str(relative) in refused.stderr
    (second / relative).write_bytes(original)
    database = second / "hotline.db"
    database.write_bytes(database.read_bytes()[: database.stat().st_size // 2])
    refused = hotline("restore", str(dest), var=fresh)
    assert refused.returncode == 1 and "truncated" in refused.stderr and "database/hotline.db" in refused.stderr
    assert not (fresh / "hotline.db").exists() and not (fresh / "recordings").exists()

"""The chroot's asterisk user never shares a uid/gid with a host account (issue 12 item 8).

A cached chroot built before (asterisk = 101 = the host's postgres) is moved by the fix-up step of
``./hotline up``; these tests run that step on a small chroot-shaped folder with a host-shaped one beside it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core import asterisk_runtime
from core.asterisk_runtime import ASTERISK_ID_BASE, choose_asterisk_id, fix_asterisk_ids


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def old_chroot(tmp_path: Path) -> tuple[Path, Path]:
    host, root = tmp_path / "host", tmp_path / "chroot"
    _write(host / "etc/passwd", "root:x:0:0:root:/root:/bin/bash\npostgres:x:101:104::/var/lib/postgresql:/bin/bash\n")
    _write(host / "etc/group", "root:x:0:\n_ssh:x:101:\npostgres:x:104:\n")
    _write(root / "etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"
                                "asterisk:x:101:101:Asterisk PBX daemon:/var/lib/asterisk:/usr/sbin/nologin\n")
    _write(root / "etc/group", "root:x:0:\naudio:x:29:asterisk\nasterisk:x:101:\n")
    conf = _write(root / "srv/hotline/abc/etc/manager.conf", "secret = s3cret\n")
    spool = root / "var/spool/asterisk"
    spool.mkdir(parents=True)
    mine = _write(root / "etc/hostname", "sid\n")
    os.symlink("/nowhere", root / "var/spool/asterisk/link")
    for path in (conf, conf.parent, spool):
        os.chown(path, 101, 101)
    os.lchown(root / "var/spool/asterisk/link", 101, 101)
    os.chown(mine, 0, 0)
    return root, host


def test_an_old_chroots_asterisk_user_is_moved_off_the_hosts_postgres_uid_once(old_chroot):
    root, host = old_chroot
    said: list[str] = []
    assert fix_asterisk_ids(root, say=said.append, host=host) is True
    entry = next(line for line in (root / "etc/passwd").read_text().splitlines() if line.startswith("asterisk:"))
    uid, gid = int(entry.split(":")[2]), int(entry.split(":")[3])
    assert uid == gid == ASTERISK_ID_BASE
    assert "asterisk:x:64301:" in (root / "etc/group").read_text() and "audio:x:29:asterisk" in \
        (root / "etc/group").read_text()
    for path in ("srv/hotline/abc/etc/manager.conf", "srv/hotline/abc/etc", "var/spool/asterisk"):
        st = (root / path).stat()
        assert (st.st_uid, st.st_gid) == (uid, gid), path
    assert os.lstat(root / "var/spool/asterisk/link").st_uid == uid
    assert (root / "etc/hostname").stat().st_uid == 0  # root's files stay root's
    assert not list(root.rglob("*.hotline-tmp"))
    # Idempotent: nothing left to do the second time.
    assert fix_asterisk_ids(root, say=said.append, host=host) is False


def test_the_fix_up_waits_while_a_process_runs_in_that_runtime(old_chroot, monkeypatch):
    root, host = old_chroot
    monkeypatch.setattr(asterisk_runtime, "processes_in", lambda _root: [4242])
    said: list[str] = []
    assert fix_asterisk_ids(root, say=said.append, host=host) is False
    assert "asterisk:x:101:101" in (root / "etc/passwd").read_text()
    assert (root / "srv/hotline/abc/etc/manager.conf").stat().st_uid == 101
    assert "WARNING" in said[0] and "4242" in said[0]


def test_a_new_chroot_gets_the_first_id_free_on_the_host_and_inside(tmp_path):
    host, root = tmp_path / "host", tmp_path / "chroot"
    _write(host / "etc/passwd", f"someone:x:{ASTERISK_ID_BASE}:100::/:/bin/sh\n")
    _write(host / "etc/group", f"team:x:{ASTERISK_ID_BASE + 1}:\n")
    _write(root / "etc/passwd", f"other:x:{ASTERISK_ID_BASE + 2}:0::/:/bin/sh\n")
    _write(root / "etc/group", "")
    assert choose_asterisk_id(root, host) == ASTERISK_ID_BASE + 3
    assert choose_asterisk_id(root, host) == ASTERISK_ID_BASE + 3  # the same on every rebuild

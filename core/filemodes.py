"""File modes of the platform's data: nothing for other local users.

Citizens' data lives in the database, recordings, evidence, Redis's append-only file, Asterisk's CDR and
queue_log, read-back prompts and the logs. Every process the platform starts runs with :data:`UMASK`
(supervisord, and ``./hotline up`` while it prepares files), so new files are 0640 and folders 0750 at
most; :func:`tighten` brings files written before that (older installations) to the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

UMASK = 0o027          # owner rw(x), group r(x): the asterisk group reads what the services write for it
FORBIDDEN = 0o027      # group write, and anything for others


@contextmanager
def private_umask() -> Iterator[None]:
    previous = os.umask(UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def tighten(root: Path) -> int:
    """Remove group-write and other permissions below ``root`` (never following links); returns how many
    paths changed. Cheap when nothing is wrong: one stat per path."""
    changed = 0
    if not root.exists():
        return 0
    for folder, dirs, files in os.walk(root):
        for name in (".", *dirs, *files):
            path = os.path.join(folder, name)
            st = os.lstat(path)
            if os.path.islink(path) or not st.st_mode & FORBIDDEN:
                continue
            os.chmod(path, st.st_mode & 0o7777 & ~FORBIDDEN)
            changed += 1
    return changed

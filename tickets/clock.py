"""The time the scheduler and the deadline pages run on: the system clock, or a shifted one for tests.

``[notify] clock = "offset_file"`` (tests only) adds the number of seconds written in
``var/run/clock-offset`` to the system time, read on every call, so a test moves a running platform
60 working days ahead in seconds without touching the system clock. Production keeps ``"system"``:
the file is then never read.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from core.db import utcnow
from core.settings import Settings

OFFSET_FILE = "clock-offset"


def offset_path(settings: Settings) -> Path:
    return settings.run_dir / OFFSET_FILE


def now(settings: Settings | None) -> dt.datetime:
    """Current UTC time of the platform's rules."""
    real = utcnow()
    if settings is None or settings.notify.clock != "offset_file":
        return real
    try:
        offset = float(offset_path(settings).read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        offset = 0.0
    return real + dt.timedelta(seconds=offset)


def set_offset(settings: Settings, seconds: float) -> None:
    """Shift the rules' clock (tests): written atomically, picked up at the scheduler's next tick."""
    path = offset_path(settings)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)  # nothing in var/ for other users
    with os.fdopen(fd, "w") as out:
        out.write(f"{seconds}\n")
    tmp.replace(path)

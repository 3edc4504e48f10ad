"""Free space where the platform writes (recordings, database and logs), so a full disk is seen before it bites."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from core.settings import Settings


@dataclass(frozen=True)
class DiskSpace:
    what: str  # the folders on this file system, e.g. "recordings, var"
    path: Path
    free_mb: int
    total_mb: int
    low: bool

    @property
    def detail(self) -> str:
        percent = 100 * self.free_mb / self.total_mb if self.total_mb else 0
        state = "磁盘空间不足 / LOW" if self.low else "free"
        return f"{self.what}: {self.free_mb} MB ({percent:.0f}%) {state} on {self.path}"


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk_space(settings: Settings) -> list[DiskSpace]:
    """One entry per file system that holds recordings or var/ (database, logs, evidence)."""
    limits = settings.disk
    folders = {"recordings": settings.recordings_dir, "var": settings.var_dir}
    by_device: dict[int, tuple[list[str], Path]] = {}
    for name, folder in folders.items():
        path = _existing(folder)
        names, _ = by_device.setdefault(path.stat().st_dev, ([], path))
        names.append(name)
    result = []
    for names, path in by_device.values():
        usage = shutil.disk_usage(path)
        free_mb, total_mb = usage.free // 2**20, usage.total // 2**20
        low = free_mb < limits.min_free_mb or free_mb * 100 < limits.min_free_percent * total_mb
        result.append(DiskSpace(", ".join(names), path, free_mb, total_mb, low))
    return result

"""Rotation of Asterisk's own files: its ``messages`` log, ``queue_log`` and the CDR file ``Master.csv``.

The services' logs are rotated by supervisord; Asterisk writes its own files, which nothing rotated.
This small job (supervisor program ``logrotate``, ``python -m core.logrotate``) looks at each node's files
every ``[logs] rotate_check_seconds`` and renames a file over ``[logs] asterisk_max_mb`` to ``name.1``
(``name.1`` to ``name.2`` …, keeping ``asterisk_backups``), the scheme supervisord uses for ours. Then:

* ``messages`` and ``queue_log``: Asterisk keeps them open, so ``logger reload`` makes it close the
  renamed file and open a new one (nothing is lost: lines written in between are in ``name.1``).
* ``Master.csv``: cdr_csv opens, appends and closes the file for every record, so the next record
  simply starts a new file.

Why not Debian's logrotate: it needs cron (the platform runs under supervisord, no cron) and a state
file, and still needs ``logger reload`` run after it; why not ``logger rotate``: it renames every log
file at once whatever its size, has no limit on the number kept, and does not touch Master.csv. The
readers of the books (the CTI's reconciliation, crash recovery) read ``name.1`` … as well when the
period they look at began before the current file did (cti/books.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from core.asterisk_runtime import AsteriskRuntime, node_runtimes, resolve_runtime
from core.logs import setup_logging
from core.settings import Settings

MB = 1024 * 1024


def rotated(path: Path, generation: int) -> Path:
    """``path``'s rotated copy: ``name.1`` is the newest."""
    return path.with_name(f"{path.name}.{generation}")


def rotate_file(path: Path, backups: int) -> None:
    """``path`` becomes ``path.1``; older copies move up one, the one beyond ``backups`` is removed."""
    backups = max(1, backups)
    rotated(path, backups).unlink(missing_ok=True)
    for generation in range(backups - 1, 0, -1):
        if rotated(path, generation).exists():
            rotated(path, generation).rename(rotated(path, generation + 1))
    path.rename(rotated(path, 1))


def asterisk_books(runtime: AsteriskRuntime) -> dict[str, Path]:
    """One node's files, as seen from the host."""
    return {"messages": runtime.host_path(runtime.inside("log", "messages")),
            "queue_log": runtime.host_path(runtime.inside("log", "queue_log")),
            "cdr": runtime.host_path(runtime.inside("log", "cdr-csv", "Master.csv"))}


def rotate_asterisk_logs(settings: Settings, runtime: AsteriskRuntime, max_bytes: int | None = None,
                         backups: int | None = None) -> list[Path]:
    """Rotate every node's files that are over the limit; returns the files rotated."""
    limit = settings.logs.asterisk_max_mb * MB if max_bytes is None else max_bytes
    keep = settings.logs.asterisk_backups if backups is None else backups
    done = []
    for node in node_runtimes(settings, runtime).values():
        reopen = False
        for name, path in asterisk_books(node).items():
            if path.exists() and path.stat().st_size > limit:
                rotate_file(path, keep)
                done.append(path)
                reopen = reopen or name != "cdr"
        if reopen:
            node.rx("logger reload")  # messages and queue_log: closed and opened again under their names
    return done


async def main(settings: Settings, stop: asyncio.Event) -> None:
    # No Redis (and so no heartbeat): a new ACL user would not exist in a Redis an upgrade keeps running;
    # the supervisor restarts the job if it dies, and `./hotline status` shows its supervisor state.
    log = setup_logging("logrotate")
    runtime = resolve_runtime(settings)
    period = float(settings.logs.rotate_check_seconds)
    while not stop.is_set():
        try:
            for path in await asyncio.to_thread(rotate_asterisk_logs, settings, runtime):
                log.info("asterisk_log_rotated", file=str(path))
        except Exception as exc:  # noqa: BLE001 - Asterisk away or a file busy: the next pass retries
            log.warning("asterisk_log_rotation_failed", error=str(exc))
        try:
            await asyncio.wait_for(stop.wait(), period)
        except TimeoutError:
            pass


if __name__ == "__main__":
    from core.service import run_service

    run_service("logrotate", main)

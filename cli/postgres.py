"""A throwaway PostgreSQL 15 cluster for tests and benchmarks.

initdb in a temporary folder (owned by ``postgres`` when run as root), listening
on a free loopback port, stopped and removed afterwards. The binaries come from
Debian's postgresql-15 package or ``HOTLINE_PG_BIN``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG_BIN = Path(os.environ.get("HOTLINE_PG_BIN", "/usr/lib/postgresql/15/bin"))
# Tests trade durability for speed; a benchmark of writes asks for the defaults (durable=True).
UNSAFE_FAST = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


class PostgresError(RuntimeError):
    """The cluster could not be created or started; the message says what to install or read."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def throwaway_postgresql(prefix: str = "hotline-pg-", durable: bool = False,
                         database: str = "tickets") -> Iterator[str]:
    """Yield the asyncpg URL of an empty database in a fresh cluster (not migrated)."""
    missing = [b for b in ("initdb", "pg_ctl", "createdb") if not (PG_BIN / b).exists()]
    if missing:
        raise PostgresError(f"PostgreSQL binaries {missing} not found in {PG_BIN}: install postgresql-15 "
                            "(Debian package) or set HOTLINE_PG_BIN")
    as_root = os.geteuid() == 0
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    base = Path(tempfile.mkdtemp(prefix=prefix))
    if as_root:
        shutil.chown(base, "postgres", "postgres")
    data, port = base / "data", _free_port()

    def run(*args: str) -> None:
        result = subprocess.run([*run_as, *args], capture_output=True, text=True)
        if result.returncode != 0:
            raise PostgresError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")

    try:
        run(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-locale", "-E", "UTF8")
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1" + ("" if durable else f" {UNSAFE_FAST}")
        run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-o", options, "-w", "start")
        try:
            run(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database)
            yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{database}"
        finally:
            subprocess.run([*run_as, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)

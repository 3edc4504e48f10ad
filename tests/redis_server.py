"""A private redis-server for in-process tests, set up exactly like the platform's own (ACL users, no default)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from core.redis import server_command
from core.settings import Settings


@contextmanager
def private_redis(settings: Settings) -> Iterator[None]:
    """Run redis-server on ``settings``' Redis port until the block ends."""
    folder = settings.var_dir / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(server_command(settings, folder, persistent=False),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", settings.redis.port)) == 0:
                    break
            time.sleep(0.05)
        yield
    finally:
        server.terminate()
        server.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

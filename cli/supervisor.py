"""Talking to the platform's supervisord: supervisorctl for whole commands, XML-RPC for quick questions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from core.settings import Settings


def supervisorctl(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(settings.run_dir / "supervisord.conf"), *args],
        capture_output=True, text=True,
    )


def supervisor_rpc(settings: Settings) -> Any:
    """supervisord's XML-RPC interface on its unix socket: no supervisorctl process per question, which
    costs a second or more on a loaded machine while calls wait for the part being restarted."""
    from xmlrpc.client import ServerProxy

    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, f"unix://{settings.run_dir / 'supervisor.sock'}")
    return ServerProxy("http://127.0.0.1", transport=transport).supervisor


def program_pid(settings: Settings, program: str) -> int:
    """The pid supervisord runs ``program`` as (0 when it is not running)."""
    info = supervisor_rpc(settings).getProcessInfo(program)
    return int(info["pid"]) if info["statename"] == "RUNNING" else 0


def kill_and_keep_down(settings: Settings, program: str, timeout: float = 60) -> None:
    """SIGKILL ``program`` (a node's Asterisk: a crash, a lost machine), then keep the supervisor from
    bringing it back, which it does at once (the tests and the cluster benchmark lose a node this way)."""
    from xmlrpc.client import Fault

    os.kill(program_pid(settings, program), signal.SIGKILL)
    rpc = supervisor_rpc(settings)
    deadline = time.monotonic() + timeout
    # EXITED is not down: the supervisor starts it again on its next turn.
    while rpc.getProcessInfo(program)["statename"] != "STOPPED":
        if time.monotonic() > deadline:
            raise RuntimeError(f"{program} would not stay down")
        try:
            rpc.stopProcess(program, True)
        except Fault:  # not running at this instant (between the crash and the restart)
            time.sleep(0.05)

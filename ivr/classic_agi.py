"""Classic AGI entry (pyst2, stdin/stdout, one process per call) running the same flow as FastAGI.

The live dialplan uses FastAGI (ivr/server.py): one long-running asyncio
process, sub-millisecond round trips, no process start per call. This entry is
the per-call-process comparison point for the benchmarks and a documented
fallback when the FastAGI service cannot run:

    exten => ...,n,AGI(/path/to/venv/bin/python,-m,ivr.classic_agi,ivr)
    exten => ...,n,AGI(/path/to/venv/bin/python,-m,ivr.classic_agi,queue-timeout)

(With Asterisk in the sid chroot the interpreter must be reachable inside it.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

import structlog
from asterisk.agi import AGI, AGIAppError, AGIHangup, AGIUnknownError

from core.logs import setup_logging
from core.settings import load_settings
from ivr.flow import CallerHungUp
from ivr.server import AgiCommands, IvrService, build_service, caller_from_env

SCRIPTS = ("ivr", "queue-timeout")


class ClassicAgiChannel(AgiCommands):
    """The flow's channel over pyst2's blocking stdin/stdout AGI (fine: one call per process)."""

    def __init__(self, agi: AGI) -> None:
        self.agi = agi
        self.env = agi.env
        self.caller = caller_from_env(agi.env)

    async def command(self, line: str) -> dict[str, Any]:
        try:
            return self.agi.execute(line)
        except AGIHangup as exc:
            raise CallerHungUp(str(exc)) from exc
        except AGIAppError:
            return {"error": "AGIAppError", "result": ("-1", "")}
        except AGIUnknownError as exc:  # 511: command on a dead channel
            raise CallerHungUp(str(exc)) from exc


def _log_to_stderr() -> None:
    """stdout is the AGI protocol here: every log line must go to stderr (Asterisk's console)."""
    setup_logging("ivr-classic", level=logging.WARNING)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)


async def run(script: str, agi: AGI) -> None:
    service: IvrService
    service, db = build_service(load_settings())
    channel = ClassicAgiChannel(agi)
    try:
        if script == "queue-timeout":
            await service.run_queue_timeout(channel)
        elif script == "survey":
            await service.run_survey(channel)
        else:
            await service.run_ivr(channel)
    finally:
        await db.close()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    script = argv[0] if argv else "ivr"
    if script not in SCRIPTS:
        raise SystemExit(f"usage: python -m ivr.classic_agi [{'|'.join(SCRIPTS)}]")
    _log_to_stderr()
    with open(os.devnull, "w") as quiet:  # pyst2 traces every command on stderr
        agi = AGI(stdin=sys.stdin, stdout=sys.stdout, stderr=quiet)
        asyncio.run(run(script, agi))


if __name__ == "__main__":
    main()

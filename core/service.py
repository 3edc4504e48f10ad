"""Running a Python service under the supervisor: logging, heartbeat, clean shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis

from core import content
from core.logs import setup_logging
from core.metrics import start_metrics_server
from core.policy import validate_all
from core.settings import ConfigError, PrioritySettings, Settings, load_settings

HEARTBEAT_SECONDS = 2


def heartbeat_key(service: str) -> str:
    return f"hotline:health:{service}"


def problem_key(service: str) -> str:
    return f"hotline:health:{service}:problem"


async def heartbeat(redis: aioredis.Redis, service: str, healthy: Callable[[], bool] = lambda: True,
                    problem: Callable[[], str | None] = lambda: None) -> None:
    """Tell `./hotline status` this service is alive (and, via ``healthy``/``problem``, working).

    A ``problem`` (words for people) stops the heartbeat and is shown by the status at once."""
    log = setup_logging(service)
    while True:
        try:
            trouble = problem() or (None if healthy() else "unhealthy")
            if trouble is None:
                await redis.set(heartbeat_key(service), str(time.time()), ex=HEARTBEAT_SECONDS * 5)
                await redis.delete(problem_key(service))
            else:
                await redis.set(problem_key(service), trouble, ex=HEARTBEAT_SECONDS * 5)
                await redis.delete(heartbeat_key(service))
        except Exception as exc:  # noqa: BLE001 - Redis down: keep serving calls, say so in the log
            log.warning("heartbeat_failed", error=str(exc))
        await asyncio.sleep(HEARTBEAT_SECONDS)


def _take_priority(priority: PrioritySettings, service: str, log) -> None:
    """Run at the service's nice value ([priority]), or real-time (SCHED_RR) when ``realtime`` names it. On
    Linux both belong to each thread: set them on every thread the imports already started; threads and
    children started later (aiosqlite's connection threads, the recordings worker's encoders) inherit them
    from the main thread."""
    try:
        threads = [int(task.name) for task in Path("/proc/self/task").iterdir()]
    except OSError:
        threads = [0]  # no /proc: the calling thread
    nice = priority.of(service)
    try:
        for thread in threads:
            os.setpriority(os.PRIO_PROCESS, thread, nice)
    except PermissionError:  # raising priority needs root (CAP_SYS_NICE): run as it is, and say so
        log.warning("priority_not_taken", nice=nice, running_at=os.getpriority(os.PRIO_PROCESS, 0))
    if service not in priority.realtime:
        return
    try:
        # Round robin, not FIFO: the service's own threads (event loop, database threads) take turns.
        param = os.sched_param(priority.realtime_priority)
        for thread in threads:
            os.sched_setscheduler(thread, os.SCHED_RR, param)
    except (PermissionError, AttributeError) as exc:  # not root (CAP_SYS_NICE), or not Linux: stays at its nice
        log.warning("realtime_not_taken", priority=priority.realtime_priority, nice=nice, error=str(exc))


def run_service(name: str, main: Callable[[Settings, asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(settings, stop)`` until SIGTERM/SIGINT sets ``stop``."""
    settings = load_settings()
    log = setup_logging(name)
    content.use(settings.var_dir)  # the instance's edited policy files (var/content) over config/
    try:  # every policy this service imported (core.policy.register): a broken file never reaches a user
        validate_all(settings)
    except ConfigError as exc:
        log.error("policy_invalid", error=str(exc))
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None

    _take_priority(settings.priority, name, log)

    async def _runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("service_starting", var=str(settings.var_dir))
        metrics = await start_metrics_server(settings, name, log) if hasattr(settings.metrics, f"{name}_port") else None
        try:
            await main(settings, stop)
        finally:
            if metrics is not None:
                await metrics.cleanup()
        log.info("service_stopped")

    asyncio.run(_runner())

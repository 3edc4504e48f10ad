"""The CTI service: AMI events in, call records and live events out."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis

from core import events as ev
from core.ami import AmiClient
from core.asterisk_runtime import resolve_runtime
from core.db import Database
from core.logs import setup_logging
from core.metrics import LatencySamples
from core.service import heartbeat
from core.settings import Settings
from cti.agents import AgentTracker
from cti.callbacks import CallbackDispatcher, request_from_call
from cti.control import AGENT_BY_PHONE
from cti.history import caller_history
from cti.reconcile import reconcile
from cti.tracker import CallTracker

LAST_SEEN = "hotline:cti:last_seen"


async def main(settings: Settings, stop: asyncio.Event) -> None:
    log = setup_logging("cti")
    db = Database(settings.database_url)
    redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    ami = AmiClient(settings, events=settings["ami"]["cti_events"])
    timings = LatencySamples("cti")

    async def publish(event: ev.Event) -> None:
        try:
            await ev.publish(redis, event)
        except Exception as exc:  # noqa: BLE001 - the record is in the database; live view catches up
            log.warning("publish_failed", event_name=event.name, error=str(exc))

    async def agent_for_phone(phone: str) -> int | None:
        try:
            value = await redis.hget(AGENT_BY_PHONE, phone)
        except Exception:  # noqa: BLE001
            return None
        return int(value) if value else None

    tracker = CallTracker(db, publish, agent_for_phone, lambda phone: caller_history(db, phone), log)
    events: asyncio.Queue = asyncio.Queue()
    ami.on_event("*", lambda _m, event: events.put_nowait(event))

    async def consume() -> None:
        while True:
            event = await events.get()
            await tracker.handle(event)
            await agents.handle(event)
            stamp = event.get("Timestamp")
            if stamp:  # how far the books trail Asterisk (timestampevents = yes)
                timings.record("event_lag", (time.time() - float(stamp)) * 1000)

    agents = AgentTracker(redis, db, settings["queues"]["wrapup_seconds"], log)
    runtime = resolve_runtime(settings)
    cdr_csv = runtime.host_path(runtime.inside("log", "cdr-csv", "Master.csv"))

    async def resynchronise() -> None:
        """After every (re)connect: Asterisk is the truth for what happened while we were away."""
        try:
            seen = await redis.get(LAST_SEEN)
            since = datetime.fromtimestamp(float(seen), UTC) if seen else datetime.now(UTC) - timedelta(days=1)
            await reconcile(db, ami, cdr_csv, since, log)
            await agents.resync(ami)
        except Exception:  # noqa: BLE001 - retried on the next reconnect; live tracking goes on
            log.exception("resync_failed")

    async def remember_last_seen() -> None:
        while True:
            if ami.logged_in.is_set():
                try:
                    await redis.set(LAST_SEEN, str(time.time()))
                except Exception:  # noqa: BLE001
                    pass
            await asyncio.sleep(2)

    callbacks = CallbackDispatcher(db, redis, ami, log)
    tracker.on_callback_result = callbacks.finish_attempt
    tracker.on_callback_request = request_from_call

    async def dispatch_callbacks() -> None:
        while True:
            await asyncio.sleep(2)
            if ami.logged_in.is_set():
                try:
                    await callbacks.run_once()
                except Exception:  # noqa: BLE001 - next round retries
                    log.exception("callback_round_failed")

    ami.on_reconnect(resynchronise)
    await ami.connect(timeout=None)
    tasks = [
        asyncio.create_task(remember_last_seen()),
        asyncio.create_task(dispatch_callbacks()),
        asyncio.create_task(consume()),
        asyncio.create_task(heartbeat(redis, "cti", ami.logged_in.is_set)),
        asyncio.create_task(timings.run(redis, log)),
    ]
    await stop.wait()
    for task in tasks:
        task.cancel()
    await ami.close()
    await redis.aclose()
    await db.close()

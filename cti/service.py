"""The CTI service: AMI events in, call records and live events out."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from core import events as ev
from core.ami import AmiClient
from core.db import Database
from core.logs import setup_logging
from core.service import heartbeat
from core.settings import Settings
from cti.history import caller_history
from cti.tracker import CallTracker

from cti.control import AGENT_BY_PHONE


async def main(settings: Settings, stop: asyncio.Event) -> None:
    log = setup_logging("cti")
    db = Database(settings.database_url)
    redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    ami = AmiClient(settings)

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

    await ami.connect(timeout=None)
    tasks = [
        asyncio.create_task(consume()),
        asyncio.create_task(heartbeat(redis, "cti", ami.logged_in.is_set)),
    ]
    await stop.wait()
    for task in tasks:
        task.cancel()
    await ami.close()
    await redis.aclose()
    await db.close()

"""Recordings worker: off the call path, files finished recordings and voice messages."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from core.service import heartbeat
from core.settings import Settings


async def main(settings: Settings, stop: asyncio.Event) -> None:
    redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    beat = asyncio.create_task(heartbeat(redis, "recordings"))
    await stop.wait()
    beat.cancel()
    await redis.aclose()

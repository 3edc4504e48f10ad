"""Latency samples a service keeps about itself, shared through Redis for `status` and `bench/`.

The FastAGI server times each AGI command's round trip to Asterisk; the CTI
service times how far it trails Asterisk (an event's own timestamp to the end
of its handling). Recording a sample is an append to an in-process list; a
background task moves them to a capped Redis list every couple of seconds, so
the call path never waits on Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import Counter, deque
from typing import Any

KEEP = 20_000          # newest samples kept per metric in Redis
FLUSH_SECONDS = 2.0


def metric_key(service: str, metric: str) -> str:
    return f"hotline:metrics:{service}:{metric}"


class LatencySamples:
    """Milliseconds per named metric, buffered in memory and flushed to Redis lists."""

    def __init__(self, service: str, buffer: int = 50_000) -> None:
        self.service = service
        self._pending: deque[tuple[str, float]] = deque(maxlen=buffer)  # never grows without bound

    def record(self, metric: str, milliseconds: float) -> None:
        self._pending.append((metric, milliseconds))

    async def flush(self, redis: Any) -> int:
        batch: dict[str, list[str]] = {}
        while self._pending:
            metric, value = self._pending.popleft()
            batch.setdefault(metric, []).append(f"{value:.3f}")
        if batch:
            async with redis.pipeline(transaction=False) as pipe:
                for metric, values in batch.items():
                    key = metric_key(self.service, metric)
                    pipe.lpush(key, *values)
                    pipe.ltrim(key, 0, KEEP - 1)
                await pipe.execute()
        return sum(len(v) for v in batch.values())

    async def run(self, redis: Any, log: Any = None) -> None:
        """Flush forever (a service task); a Redis outage costs samples, never calls."""
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush(redis)
            except Exception as exc:  # noqa: BLE001 - metrics are best effort
                if log is not None:
                    log.warning("metrics_flush_failed", error=str(exc))


def counts_key(service: str) -> str:
    return metric_key(service, "counts")


class Counters:
    """Things a service counts about itself (a failed write, a screen pop it could not deliver), kept in
    memory and added to a Redis hash: a count made while Redis is away is added once it is back."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._pending: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        self._pending[name] += n

    async def flush(self, redis: Any) -> None:
        deltas = dict(self._pending)
        if not deltas:
            return
        async with redis.pipeline(transaction=False) as pipe:
            for name, n in deltas.items():
                pipe.hincrby(counts_key(self.service), name, n)
            await pipe.execute()
        self._pending.subtract(deltas)
        self._pending = +self._pending  # drop the names now at zero

    async def run(self, redis: Any, log: Any = None) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush(redis)
            except Exception as exc:  # noqa: BLE001 - kept in memory until Redis answers
                if log is not None:
                    log.warning("counters_flush_failed", error=str(exc))


async def read_counts(redis: Any, service: str) -> dict[str, int]:
    return {name: int(n) for name, n in (await redis.hgetall(counts_key(service))).items()}


async def read_samples(redis: Any, service: str, metric: str) -> list[float]:
    return [float(v) for v in await redis.lrange(metric_key(service, metric), 0, -1)]


async def clear_samples(redis: Any, service: str, metric: str) -> None:
    with contextlib.suppress(Exception):
        await redis.delete(metric_key(service, metric))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


async def live_summary(redis: Any) -> list[str]:
    """One line per live latency figure, for `./hotline status`."""
    lines = []
    for service, metric, label in (("ivr", "agi_rtt", "FastAGI round trip per command"),
                                   ("cti", "event_lag", "CTI lag behind Asterisk")):
        samples = await read_samples(redis, service, metric)
        if samples:
            lines.append(f"{label}: p50 {percentile(samples, 50):.1f} ms, p99 {percentile(samples, 99):.1f} ms "
                         f"(last {len(samples)})")
    counts = await read_counts(redis, "cti")
    lines.append("CTI event path, failed steps (each logged with its call id; records and states repaired): "
                 + (", ".join(f"{name} {n}" for name, n in sorted(counts.items())) if counts else "none"))
    return lines

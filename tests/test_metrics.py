"""Service latency samples: buffered in process, flushed to a real Redis, summarised for `status`."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest
import redis.asyncio as aioredis

from core.metrics import KEEP, LatencySamples, clear_samples, live_summary, percentile, read_samples


@pytest.fixture
def redis_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    server.terminate()
    server.wait(timeout=10)


async def test_samples_reach_redis_capped_and_are_summarised(redis_url):
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        samples = LatencySamples("ivr")
        for value in range(1, 101):
            samples.record("agi_rtt", float(value))
        samples.record("event_lag", 7.5)
        assert await samples.flush(redis) == 101
        assert await samples.flush(redis) == 0  # nothing sent twice
        stored = await read_samples(redis, "ivr", "agi_rtt")
        assert sorted(stored) == [float(v) for v in range(1, 101)]
        assert await read_samples(redis, "ivr", "event_lag") == [7.5]
        lines = await live_summary(redis)
        assert lines == ["FastAGI round trip per command: p50 50.0 ms, p99 99.0 ms (last 100)"]
        for _ in range(KEEP + 10):
            samples.record("agi_rtt", 1.0)
        await samples.flush(redis)
        assert len(await read_samples(redis, "ivr", "agi_rtt")) == KEEP  # the newest only
        await clear_samples(redis, "ivr", "agi_rtt")
        assert await read_samples(redis, "ivr", "agi_rtt") == []
    finally:
        await redis.aclose()


def test_nearest_rank_percentile():
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert percentile([], 50) != percentile([], 50)  # NaN: no figure rather than a made-up one

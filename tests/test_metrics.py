"""Service latency samples: buffered in process, flushed to a real Redis, summarised for `status`."""

from __future__ import annotations

import pytest

from core.metrics import KEEP, LatencySamples, clear_samples, live_summary, percentile, read_samples
from core.redis import connect
from core.settings import load_settings
from tests.redis_server import free_port, private_redis


@pytest.fixture
def redis_settings(tmp_path):
    settings = load_settings(var_dir=tmp_path, env={"HOTLINE_REDIS_PORT": str(free_port())})
    with private_redis(settings):
        yield settings


async def test_samples_reach_redis_capped_and_are_summarised(redis_settings):
    redis = connect(redis_settings, "tools")
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
        assert lines == ["FastAGI round trip per command: p50 50.0 ms, p99 99.0 ms (last 100)",
                         "CTI event path, failed steps (each logged with its call id; records and states repaired): "
                         "none"]
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

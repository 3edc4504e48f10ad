"""Service latency samples: buffered in process, flushed to a real Redis, summarised for `status`."""

from __future__ import annotations

import pytest

from core.metrics import (
    KEEP,
    LatencySamples,
    clear_samples,
    live_summary,
    parse_metrics,
    percentile,
    read_samples,
)
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


def test_samples_and_counts_feed_the_prometheus_endpoint_too():
    """One place records: what status reads from Redis is what the service's endpoint exports."""
    from core.metrics import AGI_ROUNDTRIP, CTI_FAILED_STEPS, Counters

    before = AGI_ROUNDTRIP._sum.get(), CTI_FAILED_STEPS.labels("pop_lost")._value.get()
    LatencySamples("ivr").record("agi_rtt", 2.0)
    Counters("cti").add("pop_lost", 2)
    assert AGI_ROUNDTRIP._sum.get() - before[0] == pytest.approx(0.002)
    assert CTI_FAILED_STEPS.labels("pop_lost")._value.get() - before[1] == 2


async def test_http_requests_are_counted_by_route_pattern_never_by_path():
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from core.metrics import HTTP_REQUESTS, http_metrics

    async def ticket(request):
        if request.match_info["number"] == "404404":
            raise web.HTTPNotFound()
        return web.Response(text="ok")

    app = web.Application(middlewares=[http_metrics])
    app.router.add_get(r"/t/{number:\d+}", ticket)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        for number in ("1001", "1002", "404404"):
            await client.get(f"/t/{number}")
        await client.get("/no/such/page")
    finally:
        await client.close()
    counted = {tuple(s.labels.values()): s.value for m in HTTP_REQUESTS.collect() for s in m.samples
               if s.name.endswith("_total")}
    assert counted[(r"/t/{number}", "GET", "200")] >= 2
    assert counted[(r"/t/{number}", "GET", "404")] >= 1
    assert counted[("unmatched", "GET", "404")] >= 1
    assert not any("1001" in labels[0] for labels in counted)


def test_scraped_counters_keep_the_name_they_were_sent_with():
    text = ('# TYPE asterisk_calls_sum counter\nasterisk_calls_sum{eid="x"} 3\n'
            '# TYPE hotline_calls counter\nhotline_calls_total{hotline="12301"} 2.0\n')
    assert parse_metrics(text) == {"asterisk_calls_sum": [({"eid": "x"}, 3.0)],
                                   "hotline_calls_total": [({"hotline": "12301"}, 2.0)]}

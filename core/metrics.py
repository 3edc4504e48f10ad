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
import gc
import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any

import prometheus_client
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families

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
        histogram = HISTOGRAMS.get((self.service, metric))
        if histogram is not None:  # the same sample, for the service's Prometheus endpoint
            histogram.observe(milliseconds / 1000)

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

    def watch_gc(self) -> None:
        """Every garbage collection's pause as ``gc_pause`` (ms): the loop does nothing else meanwhile."""
        began: list[float] = []

        def on_gc(phase: str, _info: dict) -> None:
            if phase == "start":
                began[:] = [time.perf_counter()]
            elif began:
                self.record("gc_pause", (time.perf_counter() - began.pop()) * 1000)

        gc.callbacks.append(on_gc)

    async def watch_loop(self, every: float = 0.05) -> None:
        """How late the event loop wakes a timer (``loop_delay``, ms): the wait any ready event has before
        it runs, from the process's scheduling and from callbacks that run long. A service task."""
        while True:
            due = time.perf_counter() + every
            await asyncio.sleep(every)
            self.record("loop_delay", (time.perf_counter() - due) * 1000)

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
        counter = COUNTERS.get(self.service)
        if counter is not None:  # the same count, for the service's Prometheus endpoint
            counter.labels(name).inc(n)

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
                                   ("cti", "event_lag", "CTI lag behind Asterisk"),
                                   ("cti", "event_own", "CTI's own share (AMI receipt -> handled)")):
        samples = await read_samples(redis, service, metric)
        if samples:
            lines.append(f"{label}: p50 {percentile(samples, 50):.1f} ms, p99 {percentile(samples, 99):.1f} ms "
                         f"(last {len(samples)})")
    counts = await read_counts(redis, "cti")
    lines.append("CTI event path, failed steps (each logged with its call id; records and states repaired): "
                 + (", ".join(f"{name} {n}" for name, n in sorted(counts.items())) if counts else "none"))
    return lines


# --- Prometheus endpoints ------------------------------------------------------------------------
# Every Python service serves its figures in the Prometheus text format on loopback, on its own port of
# [metrics] in config/hotline.toml. The figures are recorded where the service already counts and times
# (LatencySamples.record, Counters.add feed these as well as Redis), or read at scrape time from the
# owner of the state (open call records, Asterisk's queues, agent sessions, the notices outbox).
# Labels are bounded sets (hotline, queue, node, state, route pattern, action): never a phone number,
# a call id or a raw path.

prometheus_client.disable_created_metrics()  # no *_created series: they double every counter for nothing

MS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

AGI_ROUNDTRIP = Histogram("hotline_fastagi_roundtrip_seconds",
                          "FastAGI round trip of one quick AGI command (GET/SET VARIABLE, ANSWER ...)",
                          buckets=MS_BUCKETS, registry=None)
CTI_LAG = Histogram("hotline_cti_lag_seconds", "AMI event timestamp to the end of the CTI's handling of it",
                    buckets=MS_BUCKETS, registry=None)
CTI_OWN = Histogram("hotline_cti_own_seconds",
                    "The CTI's own share of its lag: the event read off the AMI socket to the end of its handling",
                    buckets=MS_BUCKETS, registry=None)
RING_TO_POP = Histogram("hotline_ring_to_pop_seconds",
                        "AgentCalled (the agent's phone starts ringing) to the screen pop published",
                        buckets=MS_BUCKETS, registry=None)
CTI_FAILED_STEPS = prometheus_client.Counter("hotline_cti_failed_steps", "Failed steps of the CTI's event path, by step "
                           "(event_lost and pop_lost: events and pops dropped)", ["step"], registry=None)
CALLS = prometheus_client.Counter("hotline_calls", "Calls the CTI saw start", ["hotline", "node"], registry=None)
CALLS_ENDED = prometheus_client.Counter("hotline_calls_ended", "Calls the CTI saw end", ["node", "abandoned"], registry=None)
SCREEN_POPS = prometheus_client.Counter("hotline_screen_pops", "Screen pops published to agents' desks", ["node"], registry=None)
CALLS_IN_PROGRESS = Gauge("hotline_calls_in_progress", "Calls not yet ended (open call records)",
                          ["hotline", "queue", "node", "state"], registry=None)
QUEUE_CALLERS = Gauge("hotline_queue_callers", "Callers waiting in a queue now (Asterisk's QueueStatus)",
                      ["queue", "node"], registry=None)
QUEUE_LONGEST_WAIT = Gauge("hotline_queue_longest_wait_seconds", "Longest wait of a caller in the queue now",
                           ["queue", "node"], registry=None)
AGENTS = Gauge("hotline_agents", "Agents by state (offline excluded)", ["state"], registry=None)
AMI_RECONNECTS = prometheus_client.Counter("hotline_ami_reconnects", "AMI logins after the first (each one follows a lost "
                         "connection)", ["node"], registry=None)
AMI_HALF_OPEN = prometheus_client.Counter("hotline_ami_half_open", "AMI connections dropped because Asterisk did not answer a "
                        "ping (half-open connection)", ["node"], registry=None)
AMI_CONNECTED = Gauge("hotline_ami_connected", "1 while the AMI connection to the node is logged in",
                      ["node"], registry=None)
HTTP_REQUESTS = prometheus_client.Counter("hotline_http_requests", "Requests to the desk by route pattern, method and status",
                        ["route", "method", "status"], registry=None)
HTTP_DURATION = Histogram("hotline_http_request_duration_seconds", "Time to the desk's response, by route pattern",
                          ["route"], registry=None)
SPOOL_FILES = Gauge("hotline_recordings_spool_files", "Recordings in Asterisk's spool waiting to be compressed "
                    "and filed (stale: older than [recordings] spool_grace_seconds, i.e. filing keeps failing)",
                    ["node", "kind", "age"], registry=None)
RECORDINGS_MISSING = Gauge("hotline_recordings_missing", "Recordings whose file was not found when filed",
                           registry=None)
FILING_FAILURES = prometheus_client.Counter("hotline_recordings_filing_failures", "Attempts to compress and file a "
                                            "recording that failed (retried with back-off)", ["kind"], registry=None)
RECORDINGS_RETRYING = Gauge("hotline_recordings_retrying", "Recordings whose filing failed, waiting for their "
                            "next attempt", registry=None)
TRANSCRIPTIONS = Gauge("hotline_transcriptions", "Recordings by transcription state (pending: the backlog)",
                       ["status"], registry=None)
NOTICES = Gauge("hotline_notices", "SMS and e-mail notices in the outbox by state", ["channel", "state"],
                registry=None)
TICKET_ACTIONS = prometheus_client.Counter("hotline_ticket_actions", "Steps written to tickets' tracking logs, by action "
                         "(counted since this scheduler started)", ["action"], registry=None)
DISK_FREE = Gauge("hotline_disk_free_bytes", "Free space on the file system", ["what"], registry=None)
DISK_TOTAL = Gauge("hotline_disk_total_bytes", "Size of the file system", ["what"], registry=None)
DISK_LOW = Gauge("hotline_disk_low", "1 when free space is below [disk] min_free_mb or min_free_percent",
                 ["what"], registry=None)

AMI_METRICS = (AMI_RECONNECTS, AMI_HALF_OPEN, AMI_CONNECTED)
SERVICE_METRICS: dict[str, tuple[Any, ...]] = {
    "ivr": (AGI_ROUNDTRIP,),
    "cti": (CTI_LAG, CTI_OWN, RING_TO_POP, CTI_FAILED_STEPS, CALLS, CALLS_ENDED, SCREEN_POPS, CALLS_IN_PROGRESS,
            QUEUE_CALLERS, QUEUE_LONGEST_WAIT, AGENTS, *AMI_METRICS),
    "agent_desk": (HTTP_REQUESTS, HTTP_DURATION),
    "recordings": (SPOOL_FILES, RECORDINGS_MISSING, FILING_FAILURES, RECORDINGS_RETRYING, TRANSCRIPTIONS),
    "scheduler": (NOTICES, TICKET_ACTIONS, DISK_FREE, DISK_TOTAL, DISK_LOW),
}
# Where LatencySamples and Counters also go: one place records, Redis (status, bench) and Prometheus read.
HISTOGRAMS = {("ivr", "agi_rtt"): AGI_ROUNDTRIP, ("cti", "event_lag"): CTI_LAG, ("cti", "event_own"): CTI_OWN}
COUNTERS = {"cti": CTI_FAILED_STEPS}

Scrape = Callable[[], Awaitable[None]]
_scrape_hooks: list[Scrape] = []


def on_scrape(hook: Scrape) -> None:
    """Run ``hook`` before each scrape: it sets the gauges read from the state's owner (a query, an AMI
    action). A hook that fails leaves its gauges as they were and is logged; the scrape still answers."""
    _scrape_hooks.append(hook)


def set_gauge(gauge: Gauge, values: dict[tuple[str, ...], float]) -> None:
    """Replace every child of a labelled gauge (a queue nobody waits in any more drops out)."""
    gauge.clear()
    for labels, value in values.items():
        gauge.labels(*labels).set(value)


def metrics_address(settings: Any, service: str) -> tuple[str, int]:
    cfg = settings.metrics
    return cfg.host, int(getattr(cfg, f"{service}_port"))


def service_registry(service: str) -> CollectorRegistry:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)  # CPU, memory, open files of the service's process
    for metric in SERVICE_METRICS.get(service, ()):
        registry.register(metric)
    return registry


async def start_metrics_server(settings: Any, service: str, log: Any = None) -> web.AppRunner | None:
    """Serve ``GET /metrics`` for ``service`` on its loopback port; None (logged) when the port is taken:
    the service keeps taking calls without its metrics, and `./hotline status` shows the endpoint down."""
    registry = service_registry(service)

    async def scrape(_request: web.Request) -> web.Response:
        for hook in list(_scrape_hooks):
            try:
                await asyncio.wait_for(hook(), SCRAPE_HOOK_SECONDS)
            except Exception as exc:  # noqa: BLE001 - stale gauges beat no scrape at all
                if log is not None:
                    log.warning("metrics_hook_failed", hook=getattr(hook, "__name__", "?"), error=repr(exc))
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    host, port = metrics_address(settings, service)
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        if log is not None:
            log.error("metrics_port_unavailable", host=host, port=port, error=str(exc))
        await runner.cleanup()
        return None
    return runner


SCRAPE_HOOK_SECONDS = 4.0


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples of a scrape by sample name (``hotline_calls_total``, ``..._bucket``): for status and tests."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if name.endswith("_total") and name not in text:
                name = name[: -len("_total")]  # the parser names every counter ..._total; keep the name sent
            samples.setdefault(name, []).append((dict(sample.labels), float(sample.value)))
    return samples


@web.middleware
async def http_metrics(request: web.Request, handler: Any) -> web.StreamResponse:
    """Counts each request of the desk by its route's pattern (``/tickets/{number}``, never the path sent,
    so the labels stay a bounded set), method and status; the outermost middleware, so refusals count."""
    began = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away first (nginx's number for it)
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        HTTP_REQUESTS.labels(route, request.method, str(status)).inc()
        HTTP_DURATION.labels(route).observe(time.perf_counter() - began)

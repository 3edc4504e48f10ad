"""The CTI service: AMI events in, call records and live events out."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from core import events as ev
from core.ami import AmiClient
from core.asterisk_runtime import resolve_runtime
from core.db import Database
from core.logs import setup_logging
from core.metrics import Counters, LatencySamples
from core.redis import CONNECTION_ERRORS
from core.redis import connect as redis_connect
from core.service import heartbeat
from core.settings import Settings
from cti.agents import AgentTracker
from cti.books import QueueCall, read_queue_log
from cti.callbacks import CallbackDispatcher, request_from_call
from cti.commands import CommandWorker
from cti.consumer import Breaker, Consumer, Handler, Watermark
from cti.control import AGENT_BY_PHONE
from cti.crash import CrashRecovery
from cti.history import caller_history
from cti.reconcile import MARGIN, reconcile
from cti.tracker import CallTracker, LookupUnavailable, event_call_id

UNSENT_LIMIT = 10_000  # live events kept while Redis is away, re-sent in order when it is back
REPAIR_EVERY = 2.0
CLOSE_SECONDS = 5.0
LOOKUP_RETRY_PAUSES = (0.05, 0.2)  # an agent look-up that failed is tried twice more


async def main(settings: Settings, stop: asyncio.Event) -> None:
    log = setup_logging("cti")
    db = Database(settings.database_url)
    redis = redis_connect(settings, "cti")
    ami = AmiClient(settings, "cti", events=settings["ami"]["cti_events"])
    timings = LatencySamples("cti")
    counters = Counters("cti")
    redis_away = Breaker()
    live = LiveEvents(redis, redis_away, counters, log)
    publish = live.publish
    unsent = live.unsent

    agent_for_phone = agent_lookup(redis, redis_away)

    runtime = resolve_runtime(settings)
    cdr_csv = runtime.host_path(runtime.inside("log", "cdr-csv", "Master.csv"))
    queue_log = runtime.host_path(runtime.inside("log", "queue_log"))
    crash = CrashRecovery(db, redis, cdr_csv, log)

    def queue_books(call_id: str, since: datetime) -> QueueCall | None:
        return read_queue_log(queue_log, since - MARGIN, {call_id}).get(call_id)

    tracker = CallTracker(db, publish, agent_for_phone, lambda phone: caller_history(db, phone), log,
                          queue_books=queue_books, counters=counters)
    agents = AgentTracker(redis, db, settings["queues"]["wrapup_seconds"], log)
    events: asyncio.Queue = asyncio.Queue()
    ami.on_event("*", lambda _m, event: events.put_nowait(event))

    async def lag(event) -> None:
        stamp = event.get("Timestamp")
        if stamp:  # how far the books trail Asterisk (timestampevents = yes)
            timings.record("event_lag", (time.time() - float(stamp)) * 1000)

    async def agent_states(event) -> bool:
        if event.get("Event") not in agents.EVENTS:
            return True
        if redis_away.tripped:
            # Not tried: resynced from QueueStatus once Redis answers.
            log.warning("agent_state_not_written", call_id=event_call_id(event), ami_event=event.get("Event"),
                        reason="Redis away")
            counters.add("agent_state_write_failed")
            return False
        try:
            await agents.handle(event)
        except Exception as exc:
            log.warning("agent_state_not_written", call_id=event_call_id(event), ami_event=event.get("Event"),
                        error=str(exc))
            counters.add("agent_state_write_failed")
            redis_away.failed()
            raise
        return True

    consumer = Consumer(events, [Handler("calls", tracker.handle, "records"),
                                 Handler("agents", agent_states, "agents"),
                                 Handler("lag", lag, "none")],
                        Watermark(settings.var_dir / "cti" / "watermark"), log)

    async def reconcile_records(since: datetime) -> None:
        # Holding the tracker's lock: events wait in the queue while their records are repaired.
        async with tracker.lock:
            await reconcile(db, ami, cdr_csv, queue_log, since, log)
            consumer.records_repaired()

    async def resync_agents() -> None:
        consumer.agents_failed = agents.needs_resync = False
        try:
            await agents.resync(ami)
        except Exception:
            consumer.agents_failed = True
            raise

    async def resynchronise() -> None:
        """After every (re)connect: Asterisk is the truth for what happened while we were away."""
        mark = consumer.mark() or consumer.watermark.load()
        since = datetime.fromtimestamp(mark, UTC) if mark else datetime.now(UTC) - timedelta(days=1)
        try:
            # First: calls an Asterisk restart cut off are not hang-ups, and reconciliation would close
            # them as such (abandoned by the citizen).
            async with tracker.lock:
                await crash.after_connect(ami)
        except Exception:  # noqa: BLE001 - retried on the next reconnect
            log.exception("crash_recovery_failed")
        try:
            await reconcile_records(since)
        except Exception:  # noqa: BLE001 - the repair loop retries from the same moment
            log.exception("reconcile_failed")
            consumer.records_failed_from = min(since.timestamp(), consumer.records_failed_from or since.timestamp())
        try:
            await resync_agents()
        except Exception:  # noqa: BLE001 - the repair loop retries
            log.exception("agent_resync_failed")

    async def repair() -> None:
        """Whatever failed while a part was away is put right once it answers again."""
        while True:
            await asyncio.sleep(REPAIR_EVERY)
            if not ami.logged_in.is_set():
                continue
            if consumer.records_failed_from is not None:
                try:
                    await reconcile_records(datetime.fromtimestamp(consumer.records_failed_from, UTC))
                except Exception as exc:  # noqa: BLE001 - the database is still away: next round
                    log.warning("repair_pending", part="records", error=str(exc),
                                since=consumer.records_failed_from)
            if consumer.agents_failed or agents.needs_resync or unsent or redis_away.tripped:
                try:
                    await redis.ping()
                    redis_away.succeeded()
                    if consumer.agents_failed or agents.needs_resync:
                        await resync_agents()
                    await live.resend()
                except Exception as exc:  # noqa: BLE001 - Redis is still away: next round
                    redis_away.failed()
                    log.warning("repair_pending", part="redis", error=str(exc), agents=consumer.agents_failed,
                                unsent=len(unsent))

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

    commands = CommandWorker(redis, ami, db, settings, log)

    def problem() -> str | None:
        if not ami.logged_in.is_set():
            return "AMI 未连接"
        return consumer.problem() or commands.problem()

    async def watchdog() -> str:
        while True:
            await asyncio.sleep(1)
            reason = consumer.must_exit()
            if reason:
                return reason

    ami.on_reconnect(resynchronise)
    await ami.connect(timeout=None)
    consumer.start()
    commands.start()
    tasks = [
        asyncio.create_task(repair()),
        asyncio.create_task(dispatch_callbacks()),
        asyncio.create_task(heartbeat(redis, "cti", problem=problem)),
        asyncio.create_task(timings.run(redis, log)),
        asyncio.create_task(counters.run(redis, log)),
    ]
    stopping = asyncio.create_task(stop.wait())
    guard = asyncio.create_task(watchdog())
    await asyncio.wait([stopping, guard], return_when=asyncio.FIRST_COMPLETED)
    for task in [*tasks, stopping, guard, consumer.task, commands.task]:
        task.cancel()
    consumer.persist(force=True)
    failed = guard.result() if guard.done() and not guard.cancelled() else None
    if failed:
        log.error("cti_exiting", reason=failed)
    for closing in (ami.close(), redis.aclose(), db.close()):
        try:  # bounded: the part that stalled the consumer may hang its close too
            await asyncio.wait_for(closing, CLOSE_SECONDS)
        except Exception as exc:  # noqa: BLE001 - leaving anyway
            log.warning("close_failed", error=repr(exc))
    if failed:
        # Exit non-zero: the supervisor starts a fresh CTI, which reconciles from the watermark.
        raise SystemExit(1)


def agent_lookup(redis, redis_away: Breaker) -> Callable[[str], Awaitable[int | None]]:
    """The tracker's look-up of the agent logged in on a phone (cti.control writes it at log-in)."""

    async def agent_for_phone(phone: str) -> int | None:
        """Who is logged in on ``phone``. A failure is retried briefly (a refused or half-restarted Redis);
        then the tracker falls back to the queue member's name and logs and counts what it could not do."""
        if redis_away.tripped:
            raise LookupUnavailable("Redis 暂不可用（跳过）")
        for pause in (*LOOKUP_RETRY_PAUSES, None):
            try:
                value = await redis.hget(AGENT_BY_PHONE, phone)
                return int(value) if value else None
            except Exception as exc:  # noqa: BLE001 - retried, then reported to the tracker
                # The client has already retried a lost connection for seconds; a refusal (e.g. the ACL, or
                # Redis still loading its file) is cheap to ask again.
                if pause is None or isinstance(exc, CONNECTION_ERRORS):
                    redis_away.failed()
                    raise LookupUnavailable(str(exc)) from exc
                await asyncio.sleep(pause)
        return None

    return agent_for_phone


class LiveEvents:
    """Publishes the CTI's live events; while Redis is away they wait in order and are re-sent once it is
    back. Nothing is dropped without a log line with its call id and a count in `./hotline status`."""

    def __init__(self, redis, redis_away: Breaker, counters: Counters, log, limit: int = UNSENT_LIMIT) -> None:
        self.redis = redis
        self.redis_away = redis_away
        self.counters = counters
        self.log = log
        self.limit = limit
        self.unsent: deque[ev.Event] = deque()

    async def publish(self, event: ev.Event) -> None:
        if self.redis_away.tripped:
            self._keep(event)
            return
        try:
            await self.resend()  # keep the order: nothing overtakes what is still waiting
            await ev.publish(self.redis, event)
        except Exception as exc:  # noqa: BLE001 - the record is in the database; sent when Redis is back
            self.log.warning("publish_failed", event_name=event.name, call_id=_call_of(event), error=str(exc))
            self.counters.add("event_publish_failed")
            self.redis_away.failed()
            self._keep(event)

    async def resend(self) -> None:
        """Send what waited, in order. A screen pop whose call ended meanwhile rings nothing any more: it is
        left out (said and counted); one for a call still going on arrives late but arrives."""
        ended = {e.call_id for e in self.unsent if isinstance(e, ev.CallEnded)}
        while self.unsent:
            event = self.unsent[0]
            if isinstance(event, ev.ScreenPop) and event.call_id in ended:
                self.log.warning("pop_lost", call_id=event.call_id, agent_id=event.agent_id,
                                 reason="the call ended while Redis was away")
                self.counters.add("pop_lost")
            else:
                await ev.publish(self.redis, event)
            self.unsent.popleft()

    def _keep(self, event: ev.Event) -> None:
        if len(self.unsent) >= self.limit:
            oldest = self.unsent.popleft()
            self.log.error("event_lost", event_name=oldest.name, call_id=_call_of(oldest),
                           reason=f"more than {self.limit} events waiting for Redis")
            self.counters.add("event_lost")
        self.unsent.append(event)


def _call_of(event: ev.Event) -> str | None:
    return getattr(event, "call_id", None)

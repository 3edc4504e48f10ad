"""The CTI service: AMI events in, call records and live events out."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from core import events as ev
from core.ami import AmiClient, AmiNodes, ami_clients
from core.asterisk_runtime import node_runtimes, resolve_runtime
from core.db import Database
from core.logs import setup_logging
from core.metrics import Counters, LatencySamples, on_scrape
from core.redis import CONNECTION_ERRORS
from core.redis import connect as redis_connect
from core.service import heartbeat
from core.settings import AsteriskNode, Settings
from core.telephony import call_id_of
from cti.agents import AgentTracker
from cti.books import QueueCall, read_queue_log
from cti.callbacks import CallbackDispatcher, missed_call_task, request_from_call
from cti.commands import CommandWorker
from cti.consumer import Breaker, Consumer, Handler, Watermark
from cti.control import AGENT_BY_PHONE
from cti.crash import CrashRecovery, close_lost_calls
from cti.figures import agents_by_state, calls_in_progress, count_event, pop_delivered, queue_callers
from cti.history import caller_history
from cti.reconcile import MARGIN, reconcile
from cti.routing import ClusterRouter
from cti.tracker import NODE_KEY, RECEIVED_KEY, CallTracker, LookupUnavailable, call_key
from tickets import return_visits

UNSENT_LIMIT = 10_000  # live events kept while Redis is away, re-sent in order when it is back
REPAIR_EVERY = 2.0
CLOSE_SECONDS = 5.0
LOOKUP_RETRY_PAUSES = (0.05, 0.2)  # an agent look-up that failed is tried twice more
# With several nodes, one whose AMI stays away this long is lost (killed, its machine gone), not restarting:
# its open calls are closed as node_lost (cti.crash.close_lost_calls). A restart is back within a few seconds
# (the supervisor starts it again at once) and is handled by the restart check at reconnect instead.
NODE_LOST_SECONDS = 10.0
DRAIN_SECONDS = 5.0  # at most this long for the events the node sent before it went to be applied first


@dataclass
class NodeLink:
    """What the CTI holds per Asterisk node: its AMI connection, its books, its consumer and watermark."""

    node: AsteriskNode
    ami: AmiClient
    cdr_csv: Path
    queue_log: Path
    crash: CrashRecovery
    consumer: Consumer
    lost_since: float | None = None  # the outage (AmiClient.down_since) whose calls were closed as lost


def watermark_path(settings: Settings, node: AsteriskNode) -> Path:
    # The first node keeps the single-node file: an upgrade reconciles from where it stopped.
    return settings.var_dir / "cti" / ("watermark" if node.first else f"watermark-{node.name}")


async def main(settings: Settings, stop: asyncio.Event) -> None:
    log = setup_logging("cti")
    return_visits.configure(settings)  # retries of 回访 follow [return_visits]; a wrong value stops the start
    db = Database(settings.database_url)
    redis = redis_connect(settings, "cti")
    amis = ami_clients(settings, "cti", events=settings.ami.cti_events)
    timings = LatencySamples("cti")
    timings.watch_gc()
    counters = Counters("cti")
    redis_away = Breaker()
    live = LiveEvents(redis, redis_away, counters, log, timings=timings)
    publish = live.publish
    unsent = live.unsent
    agent_for_phone = agent_lookup(redis, redis_away)

    runtimes = node_runtimes(settings, resolve_runtime(settings))
    links: dict[str, NodeLink] = {}

    def queue_books(call_id: str, since: datetime, node: str) -> QueueCall | None:
        link = links.get(node)
        return read_queue_log(link.queue_log, since - MARGIN, {call_id}).get(call_id) if link else None

    tracker = CallTracker(db, publish, agent_for_phone, lambda phone: caller_history(db, phone), log,
                          queue_books=queue_books, counters=counters)
    agents = AgentTracker(redis, db, settings.queues.wrapup_seconds, log)
    nodes = AmiNodes(amis)
    # Cluster mode: every node reaches every phone through Kamailio, and one ACD spans the nodes (agents
    # follow the oldest caller, cti.routing). Several nodes without Kamailio keep each phone on its node.
    router = ClusterRouter(nodes, redis, db, log) if settings.clustered and len(amis) > 1 else None
    if router is not None:
        nodes.acd = router
        agents.on_ready = router.kick

    async def lag(event) -> None:
        now = time.time()
        stamp = event.get("Timestamp")
        if stamp:  # how far the books trail Asterisk (timestampevents = yes)
            timings.record("event_lag", (now - float(stamp)) * 1000)
        # The CTI's own share: from the event's arrival on the AMI socket to the end of its handling. Under
        # load Asterisk itself delivers late; this is the part a faster CTI can still take away.
        received = event.get(RECEIVED_KEY)
        if received:
            timings.record("event_own", (now - received) * 1000)

    async def agent_states(event) -> bool:
        if event.get("Event") not in agents.EVENTS:
            return True
        if redis_away.tripped:
            # Not tried: resynced from QueueStatus once Redis answers.
            log.warning("agent_state_not_written", call_id=call_id_of(event), ami_event=event.get("Event"),
                        reason="Redis away")
            counters.add("agent_state_write_failed")
            return False
        try:
            await agents.handle(event)
        except Exception as exc:
            log.warning("agent_state_not_written", call_id=call_id_of(event), ami_event=event.get("Event"),
                        error=str(exc))
            counters.add("agent_state_write_failed")
            redis_away.failed()
            raise
        return True

    for node in settings.nodes:
        runtime = runtimes[node.name]
        cdr_csv = runtime.host_path(runtime.inside("log", "cdr-csv", "Master.csv"))
        events: asyncio.Queue = asyncio.Queue()
        ami = amis[node.name]
        ami.on_event("*", lambda _m, event, name=node.name, queue=events: queue.put_nowait(_tagged(event, name)))
        # Agent states follow the connection's order (an agent's calls follow each other); call records
        # and pops go by call, calls side by side. The lag sample is taken once the call's work is done.
        handlers = [Handler("calls", tracker.handle, "records"),
                    Handler("agents", agent_states, "agents", order="arrival"),
                    *([Handler("acd", router.handle, "agents", order="arrival")] if router else []),
                    Handler("lag", lag, "none")]
        consumer = Consumer(events, handlers,
                            Watermark(watermark_path(settings, node)), log, key=call_key)
        links[node.name] = NodeLink(node, ami, cdr_csv, runtime.host_path(runtime.inside("log", "queue_log")),
                                    CrashRecovery(db, redis, cdr_csv, log, node=node.name), consumer)

    async def reconcile_records(link: NodeLink, since: datetime) -> None:
        # The tracker's gate closed: events wait in their queues while the records are repaired.
        async with tracker.gate.exclusive():
            await reconcile(db, link.ami, link.cdr_csv, link.queue_log, since, log, node=link.node.name)
            link.consumer.records_repaired()

    async def resync_agents(link: NodeLink) -> None:
        link.consumer.agents_failed = agents.needs_resync = False
        try:
            await agents.resync(link.ami)
        except Exception:
            link.consumer.agents_failed = True
            raise

    async def resynchronise(link: NodeLink) -> None:
        """After every (re)connect to a node: its Asterisk is the truth for what happened there meanwhile."""
        consumer = link.consumer
        mark = consumer.mark() or consumer.watermark.load()
        since = datetime.fromtimestamp(mark, UTC) if mark else datetime.now(UTC) - timedelta(days=1)
        try:
            # First: calls an Asterisk restart cut off are not hang-ups, and reconciliation would close
            # them as such (abandoned by the citizen).
            async with tracker.gate.exclusive():
                await link.crash.after_connect(link.ami)
        except Exception:  # noqa: BLE001 - retried on the next reconnect
            log.exception("crash_recovery_failed", node=link.node.name)
        try:
            await reconcile_records(link, since)
        except Exception:  # noqa: BLE001 - the repair loop retries from the same moment
            log.exception("reconcile_failed", node=link.node.name)
            consumer.records_failed_from = min(since.timestamp(), consumer.records_failed_from or since.timestamp())
        if router is not None:  # first: it takes back members of agents who moved away meanwhile
            try:
                await router.resync(link.ami)
            except Exception:  # noqa: BLE001 - the node's next events and reconnect put it right
                log.exception("acd_resync_failed", node=link.node.name)
        try:
            await resync_agents(link)
        except Exception:  # noqa: BLE001 - the repair loop retries
            log.exception("agent_resync_failed", node=link.node.name)

    async def node_lost(link: NodeLink, since: float) -> None:
        """The node's AMI has been away for NODE_LOST_SECONDS: its calls are closed as node_lost, each citizen
        is put on the callback list, its agents come back on the desk."""
        deadline = time.monotonic() + DRAIN_SECONDS
        while not link.consumer.drained and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        async with tracker.gate.exclusive():
            closed = await close_lost_calls(db, link.node.name, datetime.fromtimestamp(since, UTC),
                                            max_attempts=missed_rules["max_attempts"], zone=missed_rules["zone"],
                                            settings=settings)
        log.warning("node_lost", node=link.node.name, away_seconds=round(time.time() - since, 1),
                    closed=len(closed), calls=[r.call_id for r in closed])
        for record in closed:
            tracker.calls.pop(record.call_id, None)
            await publish(ev.CallEnded(call_id=record.call_id, abandoned=False, agent_id=record.agent_id,
                                       node=link.node.name))
        try:
            await agents.node_lost(link.node.name, {r.agent_id for r in closed if r.agent_id is not None})
        except Exception:  # noqa: BLE001 - the calls are closed; the agents' states are put right by hand
            log.exception("agent_state_not_written", node=link.node.name, reason="node lost")
            counters.add("agent_state_write_failed")

    async def watch_nodes() -> None:
        """With several nodes: a node away for NODE_LOST_SECONDS is lost (its calls are gone with it)."""
        while True:
            await asyncio.sleep(1)
            for link in links.values():
                since = link.ami.down_since
                if since is None or since == link.lost_since or time.time() - since < NODE_LOST_SECONDS:
                    continue
                try:
                    await node_lost(link, since)
                    link.lost_since = since
                except Exception:  # noqa: BLE001 - the database is away: next round
                    log.exception("node_lost_failed", node=link.node.name)

    async def repair() -> None:
        """Whatever failed while a part was away is put right once it answers again."""
        while True:
            await asyncio.sleep(REPAIR_EVERY)
            for link in links.values():
                if link.ami.logged_in.is_set():
                    await repair_node(link)

    async def repair_node(link: NodeLink) -> None:
        consumer = link.consumer
        if consumer.records_failed_from is not None:
            try:
                await reconcile_records(link, datetime.fromtimestamp(consumer.records_failed_from, UTC))
            except Exception as exc:  # noqa: BLE001 - the database is still away: next round
                log.warning("repair_pending", part="records", node=link.node.name, error=str(exc),
                            since=consumer.records_failed_from)
        if consumer.agents_failed or agents.needs_resync or unsent or redis_away.tripped:
            try:
                await redis.ping()
                redis_away.succeeded()
                if consumer.agents_failed or agents.needs_resync:
                    await resync_agents(link)
                await live.resend()
            except Exception as exc:  # noqa: BLE001 - Redis is still away: next round
                redis_away.failed()
                log.warning("repair_pending", part="redis", node=link.node.name, error=str(exc),
                            agents=consumer.agents_failed, unsent=len(unsent))

    # The queue's callbacks are dialled from the first node (its phones); the desk's commands act on the
    # node of the agent's session (cti.control).
    first = links[settings.nodes[0].name]
    # Cluster mode: a callback rings its agent from the node the agent is a member on (cti.routing).
    callbacks = CallbackDispatcher(db, redis, nodes if router else first.ami, log, settings)
    commands = CommandWorker(redis, nodes, db, settings, log)
    tracker.on_callback_result = callbacks.finish_attempt
    tracker.on_callback_request = request_from_call
    missed_rules = {"min_seconds": float(settings.callbacks.missed_min_seconds),
                    "max_attempts": int(settings.callbacks.missed_max_attempts),
                    "zone": ZoneInfo(settings.timezone)}
    tracker.on_call_ended = lambda record, session: missed_call_task(record, session, **missed_rules)

    async def dispatch_callbacks() -> None:
        while True:
            await asyncio.sleep(2)
            if first.ami.logged_in.is_set():
                try:
                    await callbacks.run_once()
                except Exception:  # noqa: BLE001 - next round retries
                    log.exception("callback_round_failed")

    def problem() -> str | None:
        for link in links.values():
            if not link.ami.logged_in.is_set():
                if len(links) == 1:
                    return "AMI 未连接"
                lost = link.lost_since is not None and link.lost_since == link.ami.down_since
                return f"AMI 未连接（节点 {link.node.name}" + ("已失联，其通话已按节点故障结束并列入回拨）" if lost else "）")
        return next((p for p in (link.consumer.problem() for link in links.values()) if p), None) \
            or commands.problem()

    async def watchdog() -> str:
        while True:
            await asyncio.sleep(1)
            reason = next((r for r in (link.consumer.must_exit() for link in links.values()) if r), None)
            if reason:
                return reason

    on_scrape(lambda: calls_in_progress(db))
    on_scrape(lambda: queue_callers({name: link.ami for name, link in links.items()}))
    on_scrape(lambda: agents_by_state(redis))
    for link in links.values():
        link.ami.on_reconnect(lambda link=link: resynchronise(link))
        await link.ami.connect(timeout=None)
        link.consumer.start()
    commands.start()
    if router is not None:
        router.start()
    tasks = [
        asyncio.create_task(repair()),
        asyncio.create_task(dispatch_callbacks()),
        asyncio.create_task(heartbeat(redis, "cti", problem=problem)),
        asyncio.create_task(timings.run(redis, log)),
        asyncio.create_task(timings.watch_loop()),
        asyncio.create_task(counters.run(redis, log)),
    ]
    if len(links) > 1:  # a single node has no survivor: its restart is the crash check's (cti.crash)
        tasks.append(asyncio.create_task(watch_nodes()))
    stopping = asyncio.create_task(stop.wait())
    guard = asyncio.create_task(watchdog())
    await asyncio.wait([stopping, guard], return_when=asyncio.FIRST_COMPLETED)
    for task in [*tasks, stopping, guard, commands.task, *([router.task] if router else []), *(link.consumer.task for link in links.values())]:
        task.cancel()
    for link in links.values():
        link.consumer.persist(force=True)
    failed = guard.result() if guard.done() and not guard.cancelled() else None
    if failed:
        log.error("cti_exiting", reason=failed)
    for closing in (*(link.ami.close() for link in links.values()), redis.aclose(), db.close()):
        try:  # bounded: the part that stalled the consumer may hang its close too
            await asyncio.wait_for(closing, CLOSE_SECONDS)
        except Exception as exc:  # noqa: BLE001 - leaving anyway
            log.warning("close_failed", error=repr(exc))
    if failed:
        # Exit non-zero: the supervisor starts a fresh CTI, which reconciles from the watermark.
        raise SystemExit(1)


def _tagged(event, node: str):
    event[NODE_KEY] = node
    event[RECEIVED_KEY] = time.time()
    return event


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

    def __init__(self, redis, redis_away: Breaker, counters: Counters, log, limit: int = UNSENT_LIMIT,
                 timings: LatencySamples | None = None) -> None:
        self.timings = timings
        self.redis = redis
        self.redis_away = redis_away
        self.counters = counters
        self.log = log
        self.limit = limit
        self.unsent: deque[ev.Event] = deque()

    async def publish(self, event: ev.Event) -> None:
        count_event(event)
        if self.redis_away.tripped:
            self._keep(event)
            return
        try:
            await self.resend()  # keep the order: nothing overtakes what is still waiting
            await ev.publish(self.redis, event)
            self._delivered(event)
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
                self._delivered(event)
            self.unsent.popleft()

    def _delivered(self, event: ev.Event) -> None:
        now = time.time()
        pop_delivered(event, now)
        if self.timings is not None and isinstance(event, ev.ScreenPop) and event.agent_called_ts:
            # AgentCalled's timestamp -> the pop on the live-event stream: the CTI's part of ring-to-pop.
            self.timings.record("pop_lag", (now - event.agent_called_ts) * 1000)

    def _keep(self, event: ev.Event) -> None:
        if len(self.unsent) >= self.limit:
            oldest = self.unsent.popleft()
            self.log.error("event_lost", event_name=oldest.name, call_id=_call_of(oldest),
                           reason=f"more than {self.limit} events waiting for Redis")
            self.counters.add("event_lost")
        self.unsent.append(event)


def _call_of(event: ev.Event) -> str | None:
    return getattr(event, "call_id", None)

"""The CTI's figures read at scrape time from their owners: open call records (the database), callers in
Asterisk's queues (QueueStatus on each node) and agent sessions (Redis). Counted events (calls, pops,
failed steps) are recorded where they happen (cti.service, core.metrics)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import func, select

from core import events as ev
from core import metrics
from core.calls import CallRecord
from core.db import Database
from core.vocabulary import AgentState
from cti.read import agent_sessions


async def calls_in_progress(db: Database) -> None:
    columns = (CallRecord.hotline, CallRecord.queue, CallRecord.node, CallRecord.state)
    async with db.session() as session:
        rows = (await session.execute(select(*columns, func.count()).where(CallRecord.ended_at.is_(None))
                                      .group_by(*columns))).all()
    metrics.set_gauge(metrics.CALLS_IN_PROGRESS,
                      {(hotline or "", queue or "", node, str(getattr(state, "value", state))): n
                       for hotline, queue, node, state, n in rows})


async def queue_callers(amis: dict[str, Any]) -> None:
    """Callers waiting per queue and node, and the longest wait, as Asterisk counts them now."""
    callers: Counter[tuple[str, str]] = Counter()
    longest: dict[tuple[str, str], float] = {}
    for node, ami in amis.items():
        if not ami.logged_in.is_set():
            continue  # hotline_ami_connected says why this node's queues are missing
        reply = await ami.action({"Action": "QueueStatus"}, as_list=True, timeout=3)
        for item in reply if isinstance(reply, list) else []:
            if item.get("Event") == "QueueParams":
                key = (item.get("Queue") or "", node)
                callers[key] += 0  # every queue shows, with 0 when nobody waits
                longest.setdefault(key, 0.0)
            elif item.get("Event") == "QueueEntry":
                key = (item.get("Queue") or "", node)
                callers[key] += 1
                longest[key] = max(longest.get(key, 0.0), float(item.get("Wait") or 0))
    metrics.set_gauge(metrics.QUEUE_CALLERS, {key: float(n) for key, n in callers.items()})
    metrics.set_gauge(metrics.QUEUE_LONGEST_WAIT, longest)


async def agents_by_state(redis: Any) -> None:
    counts = Counter(session.state for session in (await agent_sessions(redis)).values())
    metrics.set_gauge(metrics.AGENTS, {(str(state.value),): float(counts.get(state, 0)) for state in AgentState})


def count_event(event: ev.Event) -> None:
    """Calls and pops as the CTI publishes them (every event passes here once)."""
    if isinstance(event, ev.CallStarted):
        metrics.CALLS.labels(event.hotline or "", event.node).inc()
    elif isinstance(event, ev.CallEnded):
        metrics.CALLS_ENDED.labels(event.node, "true" if event.abandoned else "false").inc()


def pop_delivered(event: ev.Event, now: float) -> None:
    """A screen pop reached the live-event stream: ring-to-pop is measured from the AgentCalled event."""
    if isinstance(event, ev.ScreenPop):
        metrics.SCREEN_POPS.labels(event.node).inc()
        if event.agent_called_ts:
            metrics.RING_TO_POP.observe(max(0.0, now - event.agent_called_ts))

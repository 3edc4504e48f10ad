"""Typed live events, published on a Redis Stream so a desk that reconnects can catch up.

Redis carries live events only; the database keeps every record. Each event
names who may see it: ``agent_id`` (that agent's desk), ``unit_id``, or
``audience`` ("leads" for wallboard-wide events).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

STREAM = "hotline:events"
STREAM_MAXLEN = 200_000


@dataclass
class Event:
    name: ClassVar[str] = "event"
    audience: ClassVar[str] = "leads"
    ts: float = field(default_factory=time.time, kw_only=True)
    # The Asterisk node the call is on (core.settings.AsteriskNode); empty for events of no call.
    node: str = field(default="", kw_only=True)

    def payload(self) -> dict[str, Any]:
        return asdict(self)

    def to_fields(self) -> dict[str, str]:
        data = self.payload()
        return {
            "name": self.name,
            "audience": self.audience,
            "agent_id": str(data.get("agent_id") or ""),
            "data": json.dumps(data, ensure_ascii=False, default=str),
        }


@dataclass
class CallStarted(Event):
    name: ClassVar[str] = "call_started"
    call_id: str
    hotline: str | None
    caller_number: str | None


@dataclass
class CallQueued(Event):
    name: ClassVar[str] = "call_queued"
    call_id: str
    queue: str
    caller_number: str | None
    hotline: str | None


@dataclass
class ScreenPop(Event):
    """Sent to one agent's desk the moment their phone starts ringing for a queue call."""

    name: ClassVar[str] = "screen_pop"
    audience: ClassVar[str] = "agent"
    agent_id: int
    call_id: str
    caller_number: str | None
    hotline: str | None
    queue: str | None
    ivr_path: str | None
    business: str | None
    category: str | None
    lookup_ticket: str | None
    waited_seconds: float
    history: dict[str, Any]
    draft: dict[str, Any]
    agent_called_ts: float
    # The call's public reference (cti.models.new_call_ref): what the desk shows and sends with the ticket.
    call_ref: str = ""


@dataclass
class CallAnswered(Event):
    name: ClassVar[str] = "call_answered"
    call_id: str
    agent_id: int | None
    agent_extension: str | None
    queue: str | None
    waited_seconds: float


@dataclass
class CallEnded(Event):
    name: ClassVar[str] = "call_ended"
    call_id: str
    abandoned: bool
    agent_id: int | None


@dataclass
class AgentStateChanged(Event):
    name: ClassVar[str] = "agent_state"
    agent_id: int
    state: str
    reason: str | None = None
    since: float = field(default_factory=time.time)


@dataclass
class QueueStats(Event):
    name: ClassVar[str] = "queue_stats"
    queues: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RiskAlert(Event):
    """A level I or II ticket: team leads are told at once."""

    name: ClassVar[str] = "risk_alert"
    ticket_number: str
    level: str
    reasons: list[str]


async def publish(redis, event: Event) -> str:
    """Append to the stream; returns the stream id (the desk's Last-Event-ID)."""
    return await redis.xadd(STREAM, event.to_fields(), maxlen=STREAM_MAXLEN, approximate=True)

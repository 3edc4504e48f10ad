"""The CTI's read API: agent sessions and queue callers as typed objects, for the desk and the wallboard.

The CTI owns agent state (cti.control writes it, in the CTI process only); other processes read it
through these functions and the live events (core.events.AgentStateChanged), never by decoding the
CTI's Redis hashes themselves. What only Asterisk knows (callers waiting in a queue) is asked of the
CTI over the command channel (cti.protocol).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from core.vocabulary import AgentState, reason_label, state_label
from cti import protocol

AGENT_BY_PHONE = "hotline:agents:by_phone"   # hash: phone -> user id
AGENT_SESSIONS = "hotline:agents:sessions"   # hash: user id -> JSON {phone, state, reason, since, queues}


@dataclass(frozen=True)
class AgentSession:
    agent_id: int
    state: str = AgentState.OFFLINE
    reason: str | None = None
    since: float | None = None
    phone: str | None = None
    queues: tuple[str, ...] = ()
    node: str | None = None  # the Asterisk node the phone is registered on (core.settings nodes)

    @property
    def logged_in(self) -> bool:
        return self.state != AgentState.OFFLINE and bool(self.phone)

    @property
    def state_label(self) -> str:
        return state_label(self.state)

    @property
    def reason_label(self) -> str:
        return reason_label(self.reason)

    def to_json(self) -> dict[str, Any]:
        """What the desk's state bar shows."""
        return {"state": self.state, "state_label": self.state_label, "reason": self.reason,
                "reason_label": self.reason_label, "since": self.since, "phone": self.phone,
                "queues": list(self.queues)}

    @classmethod
    def decode(cls, agent_id: int, raw: str | None) -> AgentSession:
        data = json.loads(raw) if raw else {}
        return cls(agent_id, data.get("state") or AgentState.OFFLINE, data.get("reason"), data.get("since"),
                   data.get("phone"), tuple(data.get("queues") or ()), data.get("node"))


async def agent_session(redis, agent_id: int) -> AgentSession:
    """The agent's session as the CTI last wrote it (offline when there is none)."""
    return AgentSession.decode(agent_id, await redis.hget(AGENT_SESSIONS, str(agent_id)))


async def agent_sessions(redis) -> dict[int, AgentSession]:
    return {int(agent_id): AgentSession.decode(int(agent_id), raw)
            for agent_id, raw in (await redis.hgetall(AGENT_SESSIONS)).items()}


@dataclass(frozen=True)
class WaitingCaller:
    queue: str
    caller: str | None
    wait: float


async def waiting_callers(redis) -> list[WaitingCaller] | None:
    """Callers in queue now, from Asterisk through the CTI; None when the CTI cannot tell (the caller then
    falls back to what the CTI wrote in the database)."""
    try:
        data = await protocol.send(redis, "queue_status", {}, pickup=1.0, execution=4.0)
    except (protocol.CtiUnavailable, protocol.Refused):
        return None
    return [WaitingCaller(w["queue"], w.get("caller"), float(w.get("wait") or 0)) for w in data["waiting"]]

"""Agent states from Asterisk's own view: ringing, on a call, wrap-up, paused, ready.

The desk sets login/pause/ready through cti.control; queue events move the
agent through ringing -> on_call -> wrapup -> ready. After a restart or an AMI
outage the registry is rebuilt from QueueStatus, since Asterisk is the source
of truth for queue membership (members are named "Display(username)").

Wrap-up (话后整理) lasts the wrap-up time of the queue the call came through (core.provisioning, the same
value Asterisk's own ``wrapuptime`` of that queue is rendered from, so the desk and app_queue agree on when
the agent is offered the next call); a call from no queue known to the database takes [queues]
wrapup_seconds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from core.db import Database
from core.models import User
from core.provisioning import get_queue
from core.vocabulary import AgentState, PauseReason
from cti.books import member_username, phone_of
from cti.control import AGENT_BY_PHONE, AGENT_SESSIONS, agent_session, set_agent_state

# cti.routing's pause reason between calls in cluster mode (here to keep agents free of the router).
ACD_HOLD = "acd"


class AgentTracker:
    def __init__(self, redis, db: Database, wrapup_seconds: float, log) -> None:
        self.redis = redis
        self.db = db
        self.wrapup_seconds = wrapup_seconds
        self.log = log
        self._wrapups: dict[int, asyncio.TimerHandle] = {}
        self.needs_resync = False  # a state change was lost (Redis away): resync from QueueStatus
        self.on_ready: Callable[[], None] | None = None  # cluster mode: the ACD places the agent (cti.routing)

    async def _agent(self, event: Any) -> int | None:
        phone = phone_of(event.get("Interface") or event.get("StateInterface") or event.get("DestChannel"))
        value = await self.redis.hget(AGENT_BY_PHONE, phone) if phone else None
        return int(value) if value else None

    # Hangup: a call the agent put on hold (Redirect out of the queue's bridge) and then blind-transferred
    # or hung up ends outside Queue(), which then sends no AgentComplete; the agent's own channel
    # hanging up still ends the agent's call (any phone: SIP desk phone or browser phone).
    EVENTS = ("AgentCalled", "AgentRingNoAnswer", "AgentConnect", "AgentComplete", "Hangup")

    async def handle(self, event: Any) -> None:
        name = event.get("Event")
        if name not in self.EVENTS:
            return
        if name == "Hangup":
            phone = phone_of(event.get("Channel"))
            value = await self.redis.hget(AGENT_BY_PHONE, phone) if phone else None
            session = await agent_session(self.redis, int(value)) if value else None
            if session and session.get("state") == AgentState.ON_CALL and session.get("phone") == phone:
                await self._wrapup(int(value), session.get("call_queue"))
            elif (session and session.get("state") == AgentState.RINGING and session.get("phone") == phone
                  and session.get("reason") != PauseReason.CALLBACK):
                # The citizen hung up while this phone rang: app_queue sends no AgentRingNoAnswer then,
                # only the phone's channel hanging up says the ringing is over.
                await self._back_to_idle(int(value))
            return
        agent_id = await self._agent(event)
        if agent_id is None:
            return
        if name == "AgentCalled":
            await set_agent_state(self.redis, agent_id, AgentState.RINGING)
        elif name == "AgentRingNoAnswer":
            await self._back_to_idle(agent_id)
        elif name == "AgentConnect":
            # The queue of the call: its wrap-up time applies when the call ends (by either event below).
            await set_agent_state(self.redis, agent_id, AgentState.ON_CALL, call_queue=event.get("Queue"))
        elif name == "AgentComplete":
            session = await agent_session(self.redis, agent_id) or {}
            if session.get("state") == AgentState.WRAPUP and agent_id in self._wrapups:
                return  # the agent's channel hung up first: wrap-up already runs
            await self._wrapup(agent_id, event.get("Queue") or session.get("call_queue"))

    async def wrapup_seconds_of(self, queue: str | None) -> float:
        """The wrap-up time of ``queue`` as the admin set it (read at each call's end: a change applies to
        the next call without a restart); the global one for a call from no known queue."""
        if queue and self.db is not None:
            try:
                view = await get_queue(self.db, queue)
            except Exception:  # noqa: BLE001 - database away: the agent still gets a wrap-up
                self.log.exception("wrapup_queue_read_failed", queue=queue)
                view = None
            if view is not None:
                return float(view.wrapup_seconds)
        return self.wrapup_seconds

    async def _wrapup(self, agent_id: int, queue: str | None = None) -> None:
        seconds = await self.wrapup_seconds_of(queue)
        await set_agent_state(self.redis, agent_id, AgentState.WRAPUP, wrapup_seconds=seconds)
        loop = asyncio.get_running_loop()
        if agent_id in self._wrapups:
            self._wrapups[agent_id].cancel()
        self._wrapups[agent_id] = loop.call_later(
            seconds, lambda: asyncio.ensure_future(self._end_wrapup(agent_id)))

    async def _end_wrapup(self, agent_id: int) -> None:
        self._wrapups.pop(agent_id, None)
        try:
            session = await agent_session(self.redis, agent_id)
            if session and session.get("state") == AgentState.WRAPUP:
                await self._back_to_idle(agent_id)
        except Exception:  # noqa: BLE001 - Redis away: the states are rebuilt from QueueStatus when it is back
            self.log.exception("wrapup_end_failed", agent_id=agent_id)
            self.needs_resync = True

    async def _back_to_idle(self, agent_id: int) -> None:
        session = await agent_session(self.redis, agent_id) or {}
        if session.get("state") in (AgentState.PAUSED, AgentState.OFFLINE):
            return
        await set_agent_state(self.redis, agent_id, AgentState.READY)
        if self.on_ready is not None:
            self.on_ready()

    async def node_lost(self, node: str, agent_ids: set[int]) -> list[int]:
        """An Asterisk node was lost (cti.service): its calls are gone, so the agents ringing or talking
        there (``agent_ids``: the agents of its closed calls, and whoever's session is on that node) come
        back: from a call to wrap-up (the call's queue's), from ringing to ready. Returns who was moved."""
        sessions = await self.redis.hgetall(AGENT_SESSIONS)
        moved = []
        for key, raw in sessions.items():
            agent_id, session = int(key), json.loads(raw)
            if agent_id not in agent_ids and session.get("node") != node:
                continue
            if session.get("state") == AgentState.ON_CALL:
                await self._wrapup(agent_id, session.get("call_queue"))
            elif session.get("state") == AgentState.RINGING:
                await self._back_to_idle(agent_id)
            else:
                continue
            moved.append(agent_id)
        self.log.warning("agents_freed_from_lost_node", node=node, agents=moved)
        return moved

    async def resync(self, ami) -> int:
        """Rebuild agent sessions from one node's QueueStatus (``ami``: that node's AmiClient); returns how
        many agents were found there."""
        reply = await ami.action({"Action": "QueueStatus"}, as_list=True, timeout=10)
        members: dict[str, dict[str, Any]] = {}
        for message in reply if isinstance(reply, list) else []:
            if message.get("Event") != "QueueMember":
                continue
            phone = phone_of(message.get("StateInterface") or message.get("Location"))
            username = member_username(message.get("Name") or message.get("MemberName"))
            if not phone or not username:
                continue
            entry = members.setdefault(phone, {"username": username, "queues": [], "paused": True,
                                               "reason": None, "in_call": False, "since": 0.0})
            entry["queues"].append(message.get("Queue"))
            entry["paused"] = entry["paused"] and message.get("Paused") == "1"
            entry["reason"] = message.get("PausedReason") or entry["reason"]
            entry["in_call"] = entry["in_call"] or message.get("InCall") == "1"
            # Asterisk's own clock for the state: last pause change, last call, or login.
            entry["since"] = max(entry["since"], *(_epoch(message.get(k)) for k in ("LastPause", "LastCall",
                                                                                      "LoginTime")))
        async with self.db.session() as session:
            users = {u.username: u for u in (await session.scalars(
                select(User).where(User.username.in_([m["username"] for m in members.values()])))).all()}
        for phone, member in members.items():
            user = users.get(member["username"])
            if user is None:
                continue
            await self.redis.hset(AGENT_BY_PHONE, phone, str(user.id))
            # Paused by the cluster's ACD between calls (cti.routing.ACD_HOLD): ready, for the router to place.
            paused = member["paused"] and member["reason"] != ACD_HOLD
            state = AgentState.ON_CALL if member["in_call"] else AgentState.PAUSED if paused else AgentState.READY
            await set_agent_state(self.redis, user.id, state, member["reason"] if paused else None,
                                  since=member["since"] or None, phone=phone, queues=member["queues"],
                                  node=ami.node.name)  # the node whose QueueStatus has the member
        # Sessions this node's Asterisk no longer knows (e.g. it restarted without persistent members); an
        # agent whose session is on another node is that node's to tell.
        known = {str(users[m["username"]].id) for m in members.values() if m["username"] in users}
        for agent_id in await self.redis.hkeys(AGENT_SESSIONS):
            if agent_id not in known:
                stale = await agent_session(self.redis, int(agent_id))
                if stale and stale.get("node") not in (None, ami.node.name):
                    continue
                if stale and stale.get("state") != AgentState.OFFLINE:
                    await set_agent_state(self.redis, int(agent_id), AgentState.OFFLINE, None, phone=None, queues=[])
        self.log.info("agents_resynced", node=ami.node.name, agents=len(members))
        return len(members)


def _epoch(value: Any) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0

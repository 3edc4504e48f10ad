"""Callbacks keeping their place in cluster mode (issue 19 item 3): the dispatcher looks at the callers
waiting on every node, and rings the agent from the node the agent is on at the moment it dials (the ACD
may have moved them since the ready agents were read). Pure logic: fake nodes, the real database."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from core.ami import AmiNodes
from core.db import Database
from core.vocabulary import AgentState
from cti import callbacks
from cti.models import CallbackRequest, CallbackStatus


class FakeNode:
    """A node whose QueueStatus lists callers waiting ``waits`` seconds; other actions are answered empty."""

    def __init__(self, name: str, waits: list[float]) -> None:
        self.name, self.waits = name, waits

    async def action(self, action, **_kwargs):
        if action["Action"] == "QueueStatus":
            return [{"Event": "QueueEntry", "Queue": "12301-general", "Wait": str(w)} for w in self.waits]
        return []




async def _pending(db: Database, number: str, asked_ago: float) -> int:
    now = datetime.now(UTC)
    async with db.transaction() as session:
        row = CallbackRequest(call_id=f"cb-{number}", number=number, hotline="12301", queue="12301-general",
                              source="queue", position_at=now - timedelta(seconds=asked_ago),
                              expires_at=now + timedelta(hours=2), note="排队回拨")
        session.add(row)
        await session.flush()
        return row.id


async def test_a_callback_waits_for_older_callers_of_any_node_and_rings_the_agent_where_they_are_now(
        callback_db, monkeypatch) -> None:
    db = callback_db
    nodes = AmiNodes({"node1": FakeNode("node1", [5]), "node2": FakeNode("node2", [600])})
    # Read as ready on node1; by the time the dispatcher holds the agent's lock the ACD has moved them to node2.
    sessions = {7: {"state": AgentState.READY, "node": "node1", "phone": "8007", "queues": ["12301-general"],
                    "since": time.time() - 30}}
    dialled, states = [], []

    async def ready_agents(_redis):
        return [{"agent_id": agent_id, **data} for agent_id, data in sessions.items()]

    async def agent_session(_redis, agent_id):
        return {**sessions[agent_id], "node": "node2"}

    async def set_agent_state(_redis, agent_id, state, reason=None, **_kw):
        states.append(state)

    async def dial_claimed(_db, ami, request, agent_id, phone):
        dialled.append((ami.name, request.number, agent_id, phone))
        return "out-1"

    for name, fake in (("ready_agents", ready_agents), ("agent_session", agent_session),
                       ("set_agent_state", set_agent_state), ("dial_claimed", dial_claimed)):
        monkeypatch.setattr(callbacks, name, fake)
    dispatcher = callbacks.CallbackDispatcher(db, None, nodes, _Log())

    request = await _pending(db, "13800000011", asked_ago=60)
    # A caller on node2 has waited 10 minutes, longer than the request: not its turn (node1's caller is newer).
    assert await dispatcher.run_once() == 0 and dialled == []
    nodes["node2"].waits = []
    assert await dispatcher.run_once() == 1
    assert dialled == [("node2", "13800000011", 7, "8007")], dialled  # from the node the agent is on now
    async with db.session() as session:
        assert (await session.get(CallbackRequest, request)).status == CallbackStatus.DIALING

    # Rung by a queue call in the meantime: the request is given back, not dialled on top of it.
    second = await _pending(db, "13800000012", asked_ago=30)
    monkeypatch.setattr(callbacks, "agent_session", lambda _r, agent_id: _async({**sessions[agent_id],
                                                                                "state": AgentState.RINGING}))
    assert await dispatcher.run_once() == 0 and len(dialled) == 1
    async with db.session() as session:
        row = await session.scalar(select(CallbackRequest).where(CallbackRequest.id == second))
    assert (row.status, row.attempts) == (CallbackStatus.PENDING, 0)


class _Log:
    def __getattr__(self, _name):
        return lambda *_a, **_k: None


async def _async(value):
    return value

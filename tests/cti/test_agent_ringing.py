"""Agent states the CTI derives from app_queue's events (cti/agents.py), with Redis faked.

Found by the upgrade test (tests/faults/test_upgrade.py): a citizen who hangs up while an agent's phone
rings for them left that agent "ringing" for good, although Asterisk had them ready again: app_queue
sends no AgentRingNoAnswer then, only the phone's channel hangs up.
"""

from __future__ import annotations

from typing import Any

from core.vocabulary import AgentState, PauseReason
from cti.agents import AgentTracker
from cti.control import AGENT_BY_PHONE, agent_session, set_agent_state


class FakeRedis:
    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, str]] = {}

    async def hget(self, key: str, field: str) -> str | None:
        return self.hashes.get(key, {}).get(field)

    async def hset(self, key: str, field: str, value: str) -> None:
        self.hashes.setdefault(key, {})[field] = value

    async def hgetall(self, key: str) -> dict[str, str]:
        return dict(self.hashes.get(key, {}))

    async def xadd(self, *_: Any, **__: Any) -> str:
        return "1-0"


class Log:
    def __getattr__(self, _name: str) -> Any:
        return lambda *_a, **_k: None


async def _tracker() -> tuple[AgentTracker, FakeRedis]:
    redis = FakeRedis()
    await redis.hset(AGENT_BY_PHONE, "8001", "7")
    await set_agent_state(redis, 7, AgentState.READY, phone="8001")
    return AgentTracker(redis, None, wrapup_seconds=5, log=Log()), redis


async def test_the_citizen_hanging_up_while_the_phone_rings_makes_the_agent_ready_again():
    tracker, redis = await _tracker()
    await tracker.handle({"Event": "AgentCalled", "Interface": "PJSIP/8001", "DestChannel": "PJSIP/8001-0000002a"})
    assert (await agent_session(redis, 7))["state"] == AgentState.RINGING
    # No AgentRingNoAnswer, no AgentConnect: the ringing phone's channel hangs up.
    await tracker.handle({"Event": "Hangup", "Channel": "PJSIP/8001-0000002a"})
    assert (await agent_session(redis, 7))["state"] == AgentState.READY


async def test_a_callback_ringing_is_left_to_the_callback_dispatcher():
    tracker, redis = await _tracker()
    await set_agent_state(redis, 7, AgentState.RINGING, PauseReason.CALLBACK)
    await tracker.handle({"Event": "Hangup", "Channel": "PJSIP/8001-0000002b"})
    assert (await agent_session(redis, 7))["state"] == AgentState.RINGING  # finish_attempt moves it on


async def test_a_lost_node_s_agents_come_back_and_the_other_nodes_agents_are_left_alone():
    """cti.service gives a node up (its AMI away too long): its calls are gone, so whoever rang or talked there
    comes back: talking to wrap-up, ringing to ready; an agent of one of its calls counts whatever their
    session's node says; a paused agent there and an agent on another node stay as they are."""
    tracker, redis = await _tracker()
    await set_agent_state(redis, 7, AgentState.ON_CALL, node="node1", call_queue="12301-general")
    await set_agent_state(redis, 8, AgentState.RINGING, node="node1")
    await set_agent_state(redis, 9, AgentState.ON_CALL, node="node2")   # on one of node1's closed calls
    await set_agent_state(redis, 10, AgentState.ON_CALL, node="node2")  # on a call of node2's
    await set_agent_state(redis, 11, AgentState.PAUSED, PauseReason.BREAK, node="node1")
    moved = await tracker.node_lost("node1", {9})
    assert sorted(moved) == [7, 8, 9]
    states = {agent: (await agent_session(redis, agent))["state"] for agent in (7, 8, 9, 10, 11)}
    assert states == {7: AgentState.WRAPUP, 8: AgentState.READY, 9: AgentState.WRAPUP, 10: AgentState.ON_CALL,
                      11: AgentState.PAUSED}
    assert (await agent_session(redis, 7))["wrapup_seconds"] == 5  # no database here: [queues] wrapup_seconds
    for handle in tracker._wrapups.values():
        handle.cancel()

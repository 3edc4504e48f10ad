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

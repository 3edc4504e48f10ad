"""Issue 14 item 7: a failed Redis step in the CTI's event path is retried, or logged with the call id and
counted for `./hotline status`; a screen pop is never dropped without a log line.

A private redis-server set up like the platform's (ACL users): the agent look-up is refused by Redis's own
ACL (a client of a user without HGET on the agent keys), the tracker writes to a migrated SQLite file.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.exceptions import NoPermissionError

from core import events as ev
from core.db import Database
from core.metrics import Counters, live_summary, read_counts
from core.models import Role, User
from core.redis import connect
from core.settings import Settings, load_settings
from cti.consumer import Breaker
from cti.read import AGENT_BY_PHONE
from cti.service import LiveEvents, agent_lookup
from cti.tracker import CallTracker
from tests.redis_server import free_port, private_redis


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def warning(self, event: str, **kw) -> None:
        self.lines.append((event, kw))

    exception = error = info = warning

    def named(self, event: str) -> list[dict]:
        return [kw for name, kw in self.lines if name == event]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    from cli.stack import migrate

    settings = load_settings(var_dir=tmp_path_factory.mktemp("cti-loss"), env={"HOTLINE_REDIS_PORT": str(free_port())})
    with private_redis(settings):
        migrate(settings)
        yield settings


async def _agent(db: Database) -> User:
    async with db.transaction() as session:
        user = User(username="loss_agent", display_name="坐席甲", password_hash="x", role=Role.AGENT,
                    skills={"12301-general": 0})
        session.add(user)
    return user


def _queued(call_id: str) -> dict:
    return {"Event": "QueueCallerJoin", "Uniqueid": call_id, "Queue": "12301-general", "CallerIDNum": "13800000001",
            "Timestamp": "1700000000.0", "ChanVariable": [f"CALL_ID={call_id}"]}


def _agent_called(call_id: str, member: str | None) -> dict:
    event = {"Event": "AgentCalled", "Uniqueid": call_id, "Interface": "PJSIP/8004", "Queue": "12301-general",
             "Timestamp": "1700000000.5", "ChanVariable": [f"CALL_ID={call_id}"]}
    if member:
        event["MemberName"] = member
    return event


class Flaky:
    """The CTI's own Redis client, refusing the first ``failures`` look-ups (as while an ACL is being reloaded)."""

    def __init__(self, redis, failures: int) -> None:
        self.redis, self.failures, self.calls = redis, failures, 0

    async def hget(self, *args):
        self.calls += 1
        if self.calls <= self.failures:
            raise NoPermissionError("NOPERM this user has no permissions to access one of the keys")
        return await self.redis.hget(*args)


async def test_a_refused_agent_lookup_is_retried_then_logged_with_the_call_and_counted(settings):
    db = Database(settings.database_url)
    cti, tools = connect(settings, "cti"), connect(settings, "tools")
    refused = connect(settings, "recordings")  # no HGET on hotline:agents:*: the ACL refuses every look-up
    try:
        user = await _agent(db)
        await tools.hset(AGENT_BY_PHONE, "8004", str(user.id))
        # Refused twice, then answered: the retry finds the agent.
        flaky = Flaky(cti, failures=2)
        assert await agent_lookup(flaky, Breaker())("8004") == user.id and flaky.calls == 3

        log, counters, pops = Log(), Counters("cti"), []

        async def publish(event: ev.Event) -> None:
            pops.append(event)

        async def history(_number):
            return {}

        tracker = CallTracker(db, publish, agent_lookup(refused, Breaker(pause=0)), history, log, counters=counters)
        # Refused for good: the member's name on the event still finds the agent, and the pop goes out.
        for call_id in ("loss-1", "loss-2"):
            assert await tracker.handle(_queued(call_id))
        assert await tracker.handle(_agent_called("loss-1", "坐席甲(loss_agent)"))
        assert [(p.call_id, p.agent_id) for p in pops if isinstance(p, ev.ScreenPop)] == [("loss-1", user.id)], log.lines
        # No name to fall back on: no pop, but never silently.
        assert await tracker.handle(_agent_called("loss-2", None))
        assert [p.call_id for p in pops if isinstance(p, ev.ScreenPop)] == ["loss-1"]
        assert [kw["call_id"] for kw in log.named("agent_lookup_failed")] == ["loss-1", "loss-2"]
        assert "permission" in log.named("agent_lookup_failed")[0]["error"].lower()  # the ACL's refusal
        assert [kw["call_id"] for kw in log.named("pop_lost")] == ["loss-2"]

        await counters.flush(cti)
        assert await read_counts(tools, "cti") == {"agent_lookup_failed": 2, "pop_lost": 1}
        summary = await live_summary(tools)
        assert any("agent_lookup_failed 2" in line and "pop_lost 1" in line for line in summary), summary
    finally:
        for client in (cti, tools, refused):
            await client.aclose()
        await db.close()


class Outage:
    """A Redis that is away until ``back`` (for the publisher; Redis's own stop is in tests/faults)."""

    def __init__(self) -> None:
        self.away = True
        self.stream: list[dict] = []

    async def xadd(self, _stream, fields, **_kw):
        if self.away:
            raise ConnectionError("Redis is away")
        self.stream.append(fields)
        return f"{len(self.stream)}-0"


def _pop(call_id: str) -> ev.ScreenPop:
    return ev.ScreenPop(agent_id=7, call_id=call_id, caller_number="13800000001", hotline="12301",
                        queue="12301-general", ivr_path=None, business=None, category=None, lookup_ticket=None,
                        waited_seconds=1.0, history={}, draft={}, agent_called_ts=0.0)


async def test_pops_published_while_redis_is_away_arrive_after_recovery_unless_their_call_ended(settings):
    redis, log, counters = Outage(), Log(), Counters("cti")
    live = LiveEvents(redis, Breaker(pause=0), counters, log)
    for event in (_pop("still-ringing"), _pop("gone"), ev.CallEnded(call_id="gone", abandoned=True, agent_id=None)):
        await live.publish(event)
    assert redis.stream == [] and len(live.unsent) == 3
    assert [kw["call_id"] for kw in log.named("publish_failed")] == ["still-ringing", "gone", "gone"]

    redis.away = False
    await live.publish(ev.CallEnded(call_id="still-ringing", abandoned=False, agent_id=7))
    sent = [(f["name"], f["data"].split('"call_id": "')[1].split('"')[0]) for f in redis.stream]
    assert sent == [("screen_pop", "still-ringing"), ("call_ended", "gone"), ("call_ended", "still-ringing")]
    assert [(kw["call_id"], kw["reason"]) for kw in log.named("pop_lost")] == [
        ("gone", "the call ended while Redis was away")]
    assert dict(counters._pending) == {"event_publish_failed": 3, "pop_lost": 1}

    # More waiting than the limit: the oldest goes, said and counted.
    small = LiveEvents(Outage(), Breaker(pause=60), counters, log, limit=2)
    for call_id in ("a", "b", "c"):
        await small.publish(ev.CallEnded(call_id=call_id, abandoned=False, agent_id=None))
    assert [e.call_id for e in small.unsent] == ["b", "c"]
    assert [kw["call_id"] for kw in log.named("event_lost")] == ["a"]

"""Live events: who sees which stream entry, catching up with Last-Event-ID, replaying an open pop."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from sqlalchemy import select

from agent_desk.live import open_pop, sse_message, visible_to
from core import events as ev
from core.models import Role, User
from core.web import DB_KEY, REDIS_KEY


def user(uid: int, role: Role, unit_id: int | None = None) -> SimpleNamespace:
    return SimpleNamespace(id=uid, role=role, unit_id=unit_id)


def pop_fields(agent_id: int, call_id: str = "c1") -> dict[str, str]:
    return ev.ScreenPop(agent_id=agent_id, call_id=call_id, caller_number="138", hotline="12301", queue="q",
                        ivr_path=None, business="complaint", category=None, lookup_ticket=None, waited_seconds=3,
                        history={}, draft={}, agent_called_ts=0).to_fields()


def test_an_agent_sees_only_their_own_pop_and_state():
    me, other, lead = user(7, Role.AGENT), user(8, Role.AGENT), user(1, Role.TEAM_LEAD)
    mine = pop_fields(7)
    assert visible_to(mine, me)
    assert not visible_to(mine, other)
    assert not visible_to(mine, lead)  # the pop carries the citizen's history: only for the agent it rings
    state = ev.AgentStateChanged(agent_id=7, state="ready").to_fields()
    assert visible_to(state, me) and visible_to(state, lead) and not visible_to(state, other)
    queued = ev.CallQueued(call_id="c1", queue="q", caller_number="138", hotline="12301").to_fields()
    assert visible_to(queued, lead) and not visible_to(queued, me)
    assert visible_to(queued, user(2, Role.ADMIN))
    assert not visible_to(queued, user(3, Role.UNIT_HANDLER, unit_id=4))


def test_unit_events_reach_only_that_unit():
    fields = {"name": "x", "audience": "unit", "agent_id": "", "data": json.dumps({"unit_id": 4})}
    assert visible_to(fields, user(3, Role.UNIT_HANDLER, unit_id=4))
    assert not visible_to(fields, user(5, Role.UNIT_HEAD, unit_id=5))


def test_sse_message_carries_the_stream_id_and_one_data_line():
    text = sse_message("17-0", {"name": "screen_pop", "data": '{"a":\n1}'}).decode()
    assert text == 'id: 17-0\nevent: screen_pop\ndata: {"a": 1}\n\n'


def test_open_pop_is_the_latest_pop_whose_call_has_not_ended():
    ended = ev.CallEnded(call_id="c1", abandoned=False, agent_id=7).to_fields()
    newest_first = [("3-0", ended), ("2-0", pop_fields(7, "c1")), ("1-0", pop_fields(7, "c0"))]
    assert open_pop(newest_first, 7) is None
    newest_first = [("4-0", pop_fields(8, "c9")), ("2-0", pop_fields(7, "c2")), ("1-0", pop_fields(7, "c0"))]
    assert open_pop(newest_first, 7)[0] == "2-0"


async def _read_events(response, count: int) -> list[tuple[str, str]]:
    """(event name, id) of the next ``count`` events of an SSE response, skipping comments."""
    found: list[tuple[str, str]] = []
    block: dict[str, str] = {}
    while len(found) < count:
        line = (await asyncio.wait_for(response.content.readline(), 20)).decode().rstrip("\n")
        if not line:
            if "event" in block:
                found.append((block["event"], block.get("id", "")))
            block = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            block[key] = value
    return found


async def test_a_reconnecting_desk_catches_up_from_last_event_id_without_other_agents_pops(desk):
    await desk.login("agent1")
    redis = desk.app[REDIS_KEY]
    async with desk.app[DB_KEY].session() as db:
        ids = dict((await db.execute(select(User.username, User.id))).all())
    before = await redis.xadd(ev.STREAM, {"name": "marker", "audience": "leads", "agent_id": "", "data": "{}"})
    await ev.publish(redis, ev.ScreenPop(**{**json.loads(pop_fields(ids["agent2"], "other")["data"]),
                                            "agent_id": ids["agent2"]}))
    mine = await ev.publish(redis, ev.ScreenPop(**{**json.loads(pop_fields(ids["agent1"], "mine")["data"]),
                                                   "agent_id": ids["agent1"]}))
    response = await desk.client.get("/events", headers={"Last-Event-ID": before})
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = await _read_events(response, 2)
    assert events == [("hello", ""), ("screen_pop", mine)]
    response.close()
    # A fresh page (no Last-Event-ID) gets the pop of its call still going on.
    response = await desk.client.get("/events")
    assert (await _read_events(response, 1)) == [("screen_pop", mine)]
    response.close()
    await ev.publish(redis, ev.CallEnded(call_id="mine", abandoned=False, agent_id=ids["agent1"]))


async def test_a_new_stream_over_the_per_user_cap_closes_the_oldest_and_the_newest_works(desk):
    await desk.login("agent3")
    redis = desk.app[REDIS_KEY]
    async with desk.app[DB_KEY].session() as db:
        agent3 = await db.scalar(select(User.id).where(User.username == "agent3"))
    cap = desk.settings.web.max_event_streams_per_user
    streams = []
    for _ in range(cap + 1):
        response = await desk.client.get("/events")
        assert (await _read_events(response, 1)) == [("hello", "")]
        streams.append(response)
    oldest, *kept = streams
    assert (await _read_events(oldest, 1)) == [("superseded", "")]
    assert await asyncio.wait_for(oldest.content.read(), 20) == b""  # and the server ended it
    state = await ev.publish(redis, ev.AgentStateChanged(agent_id=agent3, state="ready"))
    for response in kept:  # the newest and the others within the cap still follow the stream
        assert (await _read_events(response, 1)) == [("agent_state", state)]
        response.close()

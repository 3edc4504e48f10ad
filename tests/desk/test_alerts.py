"""Service-level alerts (issue 16 item 7) below the wallboard: the three figures against a hand computation,
which of them cross, and the thresholds' checks (settings at start-up, the team lead's for the shift)."""

from __future__ import annotations

import datetime as dt

import pytest

from agent_desk.alerts import AlertRules, ThresholdError, crossing, figures
from core.calls import CallRecord, CallState
from core.settings import ConfigError, Settings, load_settings

NOW = dt.datetime(2025, 6, 10, 2, 0, tzinfo=dt.UTC)


def ago(seconds: float) -> dt.datetime:
    return NOW - dt.timedelta(seconds=seconds)


def queued(n: int, at: float, answered_after: float | None = None, ended_after: float | None = None,
           abandoned: bool = False, direction: str = "inbound") -> CallRecord:
    q = ago(at)
    return CallRecord(call_id=f"c{n}", direction=direction, started_at=q - dt.timedelta(seconds=5), queued_at=q,
                      answered_at=None if answered_after is None else q + dt.timedelta(seconds=answered_after),
                      ended_at=None if ended_after is None else q + dt.timedelta(seconds=ended_after),
                      abandoned=abandoned)


CALLS = [
    queued(1, 600, answered_after=5, ended_after=100),     # in the window, answered in 5 s: met
    queued(2, 300, answered_after=40),                     # answered in 40 s (still talking): missed
    queued(3, 180, ended_after=30, abandoned=True),        # left the queue after 30 s: missed, abandoned
    queued(4, 2400, answered_after=100, ended_after=200),  # 40 minutes ago: outside the 30-minute window
    queued(5, 30),                                         # still waiting, 30 s > 20 s: already missed
    queued(6, 5),                                          # still waiting, 5 s: not decided yet
    queued(7, 60, answered_after=1, direction="outbound"),  # an outbound call is no queue call
    CallRecord(call_id="c8", direction="inbound", started_at=ago(100), ended_at=ago(90)),  # IVR only
]


def test_rolling_figures_and_which_cross_against_a_hand_computation():
    rules = AlertRules(service_level_below=0.8, service_level_seconds=20, longest_wait_seconds=20,
                       abandon_rate_above=0.1, window_minutes=30, min_calls=3)
    f = figures(rules, CALLS, [30.0, 5.0], NOW)
    # Service level: met 1 of 1, 2, 3, 5 -> 1 / 4. Ended or answered: 1, 2, 3; abandoned 3 -> 1 / 3.
    assert (f.service_level, f.offered, f.longest_wait, f.abandon_rate, f.ended) == (0.25, 4, 30.0, 1 / 3, 3)
    alerts = crossing(rules, f)
    assert [a.kind for a in alerts] == ["service_level", "longest_wait", "abandon_rate"]
    assert alerts[0].text == "服务水平 25.0%，低于 80.0%（近 30 分钟 4 通排队来电，20 秒内接通）"
    assert alerts[1].text == "最长等待 30 秒，超过 20 秒"
    assert alerts[2].text == "放弃率 33.3%，高于 10.0%（近 30 分钟 3 通）"
    # Too few calls for the rates to mean anything: only the longest wait.
    assert [a.kind for a in crossing(AlertRules(longest_wait_seconds=20, min_calls=5), f)] == ["longest_wait"]
    # Within every threshold: nothing.
    calm = AlertRules(service_level_below=0.25, longest_wait_seconds=30, abandon_rate_above=0.34, min_calls=1)
    assert crossing(calm, f) == []
    assert figures(rules, [], [], NOW).service_level is None


def test_thresholds_are_checked_at_start_up_and_for_the_shift(tmp_path):
    shipped = load_settings(tmp_path / "var").raw

    def load(alerts: dict) -> AlertRules:
        return AlertRules.from_settings(Settings(raw={**shipped, "alerts": {**shipped["alerts"], **alerts}},
                                                 var_dir=tmp_path))

    assert load({}) == AlertRules() and load({"min_calls": 3}).min_calls == 3
    for alerts, words in (({"service_level_below": 1.5}, "service_level_below = 1.5"),
                          ({"longest_wait_seconds": "60"}, "longest_wait_seconds = '60'"),
                          ({"window_minutes": 0}, "window_minutes = 0"),
                          ({"abandon_rate_above": True}, "abandon_rate_above = True"),
                          ({"longest_wait": 60}, "未知的配置项 longest_wait")):
        with pytest.raises(ConfigError, match=words):
            load(alerts)
    with pytest.raises(ThresholdError) as refused:
        AlertRules().with_values({"longest_wait_seconds": -1})
    assert refused.value.field == "longest_wait_seconds"
    assert AlertRules().with_values({"min_calls": 7}).min_calls == 7  # the team lead's, checked alike


async def test_one_message_per_episode_and_an_episode_ends_only_after_a_quiet_spell(desk_settings):
    """Real Redis (the desk's own user) and the migrated database with the demo users."""
    from sqlalchemy import func, select

    from agent_desk.alerts import ACTIVE_KEY, KIND, Alert, raise_and_clear
    from core.db import Database
    from core.models import Role, User
    from core.redis import connect
    from tickets import models  # noqa: F401 - messages.ticket_id refers to the tickets table
    from tickets.notify_models import Message

    db, redis = Database(desk_settings.database_url), connect(desk_settings, "agent_desk")
    try:
        await redis.delete(ACTIVE_KEY.format(kind="longest_wait"))

        async def messages() -> int:
            async with db.session() as session:
                return await session.scalar(select(func.count()).select_from(Message).where(Message.kind == KIND))

        async with db.session() as session:
            lead_units = len(set((await session.scalars(select(User.unit_id).where(
                User.role == Role.TEAM_LEAD, User.active.is_(True)))).all()))
        assert lead_units >= 1
        alert, before = Alert("longest_wait", "最长等待 30 秒，超过 20 秒"), await messages()

        async def at(seconds: float, crossing: bool) -> list[Alert]:
            return await raise_and_clear(db, redis, [alert] if crossing else [], NOW + dt.timedelta(seconds=seconds),
                                         clear_after_seconds=60)

        assert await at(0, True) == [alert]             # the episode starts: one message per team-lead unit
        assert await messages() == before + lead_units
        assert await at(3, True) == []                  # the next check, and a wallboard refresh: no more
        assert await at(10, False) == []                # back under for a moment ...
        assert await at(20, True) == []                 # ... and over again: the same episode
        assert await at(79, False) == []                # 59 s since last seen over: still the same episode
        assert await messages() == before + lead_units
        assert await at(81, False) == []                # 61 s quiet: the episode is over
        assert await at(90, True) == [alert]            # a new one: a new message
        assert await messages() == before + 2 * lead_units
        async with db.session() as session:
            texts = (await session.scalars(select(Message.text).where(Message.kind == KIND))).all()
        assert texts[-1] == "实时告警：最长等待 30 秒，超过 20 秒"
    finally:
        await redis.delete(ACTIVE_KEY.format(kind="longest_wait"))
        await redis.aclose()
        await db.close()


async def test_the_watcher_reads_the_rolling_window_and_the_waiting_callers_not_the_whole_day(db_url):
    """The alert watcher runs every 2 s at every centre: it reads the window's queued calls and the callers still
    waiting (through the started_at index), and its figures are those of the whole day's records."""
    from sqlalchemy import text

    from core.db import Database
    from cti.calls import calls_queued_since

    now = dt.datetime.now(dt.UTC)
    rules = AlertRules(window_minutes=30, min_calls=1)
    since = now - dt.timedelta(minutes=rules.window_minutes)
    tag = f"alertwin-{now.timestamp():.6f}-"

    def call(name: str, started: float, queued: float | None = None, answered: float | None = None,
             ended: float | None = None, abandoned: bool = False) -> CallRecord:
        at = {k: None if v is None else now - dt.timedelta(minutes=v)
              for k, v in (("started_at", started), ("queued_at", queued), ("answered_at", answered),
                           ("ended_at", ended))}
        state = CallState.ENDED if ended is not None else CallState.QUEUED if queued is not None else CallState.IVR
        return CallRecord(call_id=tag + name, direction="inbound", hotline="12301", did="12301", state=state,
                          abandoned=abandoned, **at)

    day = [call("answered-in-window", 10, 9, 8.5, 5), call("abandoned-in-window", 12, 11, None, 10, True),
           call("long-ivr-then-queued-in-window", 40, 20, 19, 15),
           call("waiting-longer-than-the-window", 50, 49),
           call("queued-before-the-window", 60, 59, 58, 50), call("never-queued", 5, None, None, 4),
           call("left-open-two-days-ago", 2 * 24 * 60, 2 * 24 * 60 - 1)]
    database = Database(db_url)
    try:
        async with database.transaction() as session:
            session.add_all(day)
        async with database.session() as session:
            read = [c for c in await calls_queued_since(session, since) if c.call_id.startswith(tag)]
            if database.engine.dialect.name == "sqlite":
                plan = " ".join(str(row[-1]) for row in await session.execute(text(
                    "EXPLAIN QUERY PLAN SELECT * FROM call_records WHERE started_at >= :lo"), {"lo": since}))
                assert "ix_call_records_started" in plan, plan  # a range of the index, not a table scan
    finally:
        await database.close()
    assert sorted(c.call_id.removeprefix(tag) for c in read) == [
        "abandoned-in-window", "answered-in-window", "long-ivr-then-queued-in-window",
        "waiting-longer-than-the-window"]
    waits = [(now - c.queued_at).total_seconds() for c in day if c.state == CallState.QUEUED
             and c.started_at > now - dt.timedelta(days=1)]
    assert figures(rules, read, waits, now) == figures(rules, day, waits, now)

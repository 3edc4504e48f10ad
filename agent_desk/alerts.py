"""Live service-level alerts (issue 16 item 7): the wallboard turns red and beeps, the team leads get a message.

Three figures are watched, each against a threshold of ``[alerts]`` in hotline.toml (checked at start-up):
the rolling service level (calls that entered a queue in the last ``window_minutes``, answered within
``service_level_seconds`` of queue entry; a caller still waiting longer than that already counts as missed),
the longest wait of a caller in queue now (Asterisk's QueueStatus through the CTI), and the rolling
abandonment rate (abandoned ÷ queued calls that ended in the window). The two rates need ``min_calls``
calls in the window, so one early abandon is not an alarm. A team lead may tighten or relax the
thresholds for the shift on the wallboard (kept in Redis until reset), validated like the settings.

An alert is one episode: from the moment a figure crosses its threshold until it has stayed back within it
for ``clear_after_seconds``. Its
start is claimed with one atomic ``SET NX`` in Redis, so the team leads' message is written once per
episode, whoever notices first: the desk's watcher (every ``check_seconds``, with or without a wallboard
open) or a wallboard refresh. The message goes to the message centre of every unit that has team leads
(role team_lead), and the scheduler delivers it live like every other message.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from aiohttp import web

from core.calls import CallRecord
from core.logs import setup_logging
from core.policy import register
from core.settings import ConfigError, Settings
from core.web import DB_KEY, REDIS_KEY
from tickets.message_centre import to_team_leads

KIND = "service_alert"  # messages.kind
ACTIVE_KEY = "hotline:desk:alert:{kind}"  # an episode under way (agent_desk may write hotline:desk:*)
OVERRIDE_KEY = "hotline:desk:alert-thresholds"
THRESHOLDS = ("service_level_below", "longest_wait_seconds", "abandon_rate_above")
LABELS = {"service_level": "服务水平", "longest_wait": "最长等待", "abandon_rate": "放弃率"}


class ThresholdError(ConfigError):
    """A threshold out of range: ``field`` names the key (the wallboard's form answers 400 with it)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class AlertRules:
    service_level_below: float = 0.8      # alert when the rolling service level is below this share
    service_level_seconds: float = 20.0   # ... of queued calls answered within this many seconds
    longest_wait_seconds: float = 60.0    # 004 Table 1 item 9: 来电者空等时间宜不超过1分钟
    abandon_rate_above: float = 0.1       # alert when the rolling abandonment rate is above this share
    window_minutes: float = 30.0
    min_calls: int = 10
    check_seconds: float = 2.0
    # An episode ends only after its figure stayed within the threshold this long: a figure hovering at the
    # threshold, or the watcher and a wallboard reading the queue a moment apart, make no second message.
    clear_after_seconds: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertRules:
        return cls().with_values(asdict(settings.alerts), "[alerts]")  # typed there, ranges here

    def with_values(self, values: dict[str, Any], where: str = "告警阈值") -> AlertRules:
        """These rules with ``values`` applied; ConfigError naming the key when one is out of range."""
        unknown = sorted(set(values) - set(asdict(self)))
        if unknown:
            raise ThresholdError(f"{where} 未知的设置项：{'、'.join(unknown)}", unknown[0])
        checked: dict[str, Any] = {}
        for key, value in values.items():
            low, high = RANGES[key]
            number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
            if number is None or not math.isfinite(number) or not low <= number <= high:
                raise ThresholdError(f"{where} {key} = {value!r}：应为 {low:g} 到 {high:g} 之间的数", key)
            checked[key] = int(number) if key == "min_calls" else float(number)
        return replace(self, **checked)


# Checked with every policy: by ./hotline up before anything starts (cli.policies), by the desk at its start.
register("hotline.toml [alerts]", lambda settings: AlertRules.from_settings(settings) if settings is not None else None)

RANGES: dict[str, tuple[float, float]] = {
    "service_level_below": (0, 1), "service_level_seconds": (1, 3600), "longest_wait_seconds": (1, 3600),
    "abandon_rate_above": (0, 1), "window_minutes": (1, 1440), "min_calls": (1, 100_000),
    "check_seconds": (0.5, 60), "clear_after_seconds": (0, 3600),
}


@dataclass(frozen=True)
class Figures:
    service_level: float | None
    offered: int
    longest_wait: float
    abandon_rate: float | None
    ended: int


def figures(rules: AlertRules, calls: list[CallRecord], waits: list[float], now: dt.datetime) -> Figures:
    """The three watched figures from today's call records and the waits of the callers in queue (pure)."""
    since = now - dt.timedelta(minutes=rules.window_minutes)
    window = [c for c in calls if c.direction == "inbound" and c.queued_at is not None and c.queued_at >= since]
    limit = rules.service_level_seconds
    met = missed = ended = abandoned = 0
    for call in window:
        if call.answered_at is not None:
            waited = (call.answered_at - call.queued_at).total_seconds()
            met, missed = met + (waited <= limit), missed + (waited > limit)
        elif call.ended_at is not None or (now - call.queued_at).total_seconds() > limit:
            missed += 1  # left, or still waiting past the limit: this call cannot meet it any more
        if call.ended_at is not None or call.answered_at is not None:
            ended += 1
            abandoned += bool(call.abandoned)
    offered = met + missed
    return Figures(met / offered if offered else None, offered, max(waits, default=0.0),
                   abandoned / ended if ended else None, ended)


@dataclass(frozen=True)
class Alert:
    kind: str     # service_level | longest_wait | abandon_rate
    text: str     # what the wallboard and the message say

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "label": LABELS[self.kind], "text": self.text}


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def crossing(rules: AlertRules, f: Figures) -> list[Alert]:
    """The figures past their thresholds now (pure)."""
    alerts = []
    if f.service_level is not None and f.offered >= rules.min_calls and f.service_level < rules.service_level_below:
        alerts.append(Alert("service_level", f"服务水平 {_pct(f.service_level)}，低于 {_pct(rules.service_level_below)}"
                                             f"（近 {rules.window_minutes:g} 分钟 {f.offered} 通排队来电，"
                                             f"{rules.service_level_seconds:g} 秒内接通）"))
    if f.longest_wait > rules.longest_wait_seconds:
        alerts.append(Alert("longest_wait", f"最长等待 {f.longest_wait:.0f} 秒，超过 {rules.longest_wait_seconds:g} 秒"))
    if f.abandon_rate is not None and f.ended >= rules.min_calls and f.abandon_rate > rules.abandon_rate_above:
        alerts.append(Alert("abandon_rate", f"放弃率 {_pct(f.abandon_rate)}，高于 {_pct(rules.abandon_rate_above)}"
                                            f"（近 {rules.window_minutes:g} 分钟 {f.ended} 通）"))
    return alerts


async def effective_rules(settings_rules: AlertRules, redis) -> AlertRules:
    """The settings' rules with the team lead's thresholds for the shift, if any."""
    raw = await redis.get(OVERRIDE_KEY)
    if not raw:
        return settings_rules
    try:
        return settings_rules.with_values(json.loads(raw))
    except ValueError:  # ConfigError is one
        return settings_rules  # written by us and validated; a damaged value falls back to the settings


async def set_thresholds(settings_rules: AlertRules, redis, values: dict[str, Any] | None) -> AlertRules:
    """Set (validated; ThresholdError with the key) or, with None, drop the team lead's thresholds."""
    if values is None:
        await redis.delete(OVERRIDE_KEY)
        return settings_rules
    wrong = sorted(set(values) - set(THRESHOLDS))
    if wrong:
        raise ThresholdError(f"只能调整 {'、'.join(THRESHOLDS)}", wrong[0])
    current = json.loads(await redis.get(OVERRIDE_KEY) or "{}")
    rules = settings_rules.with_values({**current, **values})
    await redis.set(OVERRIDE_KEY, json.dumps({**current, **values}))
    return rules


async def raise_and_clear(db, redis, alerts: list[Alert], now: dt.datetime,
                          clear_after_seconds: float = 0.0) -> list[Alert]:
    """Start an episode for each new alert (one message to the team leads), end those that have not crossed
    for ``clear_after_seconds``; returns the alerts that started now. The key holds when the figure was
    last seen crossing."""
    started = []
    current = {a.kind for a in alerts}
    for kind in LABELS:
        key = ACTIVE_KEY.format(kind=kind)
        if kind not in current and (seen := await redis.get(key)) is not None:
            if (now - dt.datetime.fromisoformat(seen)).total_seconds() >= clear_after_seconds:
                await redis.delete(key)
    for alert in alerts:
        key = ACTIVE_KEY.format(kind=alert.kind)
        if not await redis.set(key, now.isoformat(), nx=True):
            await redis.set(key, now.isoformat(), xx=True)  # an episode under way: already told, still on
            continue
        try:
            async with db.transaction() as session:
                await to_team_leads(session, KIND, f"实时告警：{alert.text}")
        except Exception:
            await redis.delete(ACTIVE_KEY.format(kind=alert.kind))  # not told: the next check tries again
            raise
        started.append(alert)
    return started


RULES_KEY = web.AppKey("alert_rules", AlertRules)


async def check(app, calls: list[CallRecord], waits: list[float]) -> tuple[Figures, list[Alert], AlertRules]:
    """Figures, the alerts crossing now, and the rules used; starts and ends episodes on the way."""
    rules = await effective_rules(app[RULES_KEY], app[REDIS_KEY])
    now = dt.datetime.now(dt.UTC)
    f = figures(rules, calls, waits, now)
    alerts = crossing(rules, f)
    await raise_and_clear(app[DB_KEY], app[REDIS_KEY], alerts, now, rules.clear_after_seconds)
    return f, alerts, rules


async def watch(app, live_data) -> None:
    """The desk's watcher: checks every ``check_seconds`` whether or not a wallboard is open."""
    log = setup_logging("agent_desk")
    while True:
        await asyncio.sleep(app[RULES_KEY].check_seconds)
        try:
            calls, waits = await live_data(app)
            await check(app, calls, waits)
        except Exception as exc:  # noqa: BLE001 - Redis, the CTI or the database away: the next round tries
            log.warning("alert_check_failed", error=str(exc))


def setup(app, settings: Settings, live_data) -> None:
    """Check ``[alerts]`` now (a wrong value stops the start-up) and run the watcher with the app."""
    app[RULES_KEY] = AlertRules.from_settings(settings)

    async def run(app) -> Any:
        task = asyncio.create_task(watch(app, live_data))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(run)

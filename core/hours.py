"""Staffed hours: working hours from settings [hours] plus China's public-holiday calendar.

Working days follow ``chinese_calendar`` (public holidays off, make-up working
weekends 调休 on), decided in the centre's time zone (settings ``timezone``),
never the host clock's zone. Years the calendar package does not cover fall
back to Monday-Friday, and say so in the log.

The centre's own changes are in ``config/calendar.yaml`` (edited in the admin area, core.content): a day
off or a working day the national calendar does not know (holiday overrides), and the staffed hours in
place of ``[hours] open/close``. They count before the national calendar, for the IVR and the deadlines.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import chinese_calendar

from core import content, policy
from core.policy import fail
from core.settings import ConfigError, Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hours:
    """The [hours] section, parsed and checked."""

    open: dt.time
    close: dt.time
    mode: str
    zone: ZoneInfo

    @classmethod
    def from_settings(cls, settings: Settings) -> Hours:
        section = settings.hours  # checked when the settings load (core.settings.HoursSettings)
        edits = calendar_edits()
        return cls(edits.open or section.opening, edits.close or section.closing, section.mode,
                   ZoneInfo(settings.timezone))


DAY_KINDS = {"holiday": False, "workday": True}


@dataclass(frozen=True)
class CalendarEdits:
    """The centre's changes to hours and calendar (config/calendar.yaml)."""

    open: dt.time | None = None
    close: dt.time | None = None
    days: dict[dt.date, bool] = field(default_factory=dict)  # day -> is a working day


def _day(raw: Any) -> dt.date | None:
    if isinstance(raw, dt.date) and not isinstance(raw, dt.datetime):
        return raw
    try:
        return dt.date.fromisoformat(str(raw))
    except ValueError:
        return None


def load_calendar(path: Path | None = None) -> CalendarEdits:
    """Read and check config/calendar.yaml (or the instance's copy); errors name the line and the reason."""
    raw = policy.read(path or content.config_path("calendar.yaml"))
    unknown = sorted(set(raw) - {"open", "close", "days"}, key=str)
    if unknown:
        raise fail(raw, f"未知的键 {unknown[0]!r}（可用：open、close、days）", unknown[0])
    times: dict[str, dt.time] = {}
    for key in ("open", "close"):
        if raw.get(key) is None:
            continue
        value = raw[key]
        if isinstance(value, int):  # YAML 1.1 reads 8:30 as a sexagesimal number (510)
            value = f"{value // 60}:{value % 60:02d}"
        try:
            times[key] = dt.datetime.strptime(str(value), "%H:%M").time()
        except ValueError:
            raise fail(raw, f"{key} 应为时刻，例如 \"8:30\"，实际为 {raw[key]!r}", key) from None
    if len(times) == 1:
        raise fail(raw, "open 与 close 应同时填写（或都省略，使用 [hours] 的值班时间）", next(iter(times)))
    if times and times["close"] <= times["open"]:
        raise fail(raw, f"close（{times['close']:%H:%M}）必须晚于 open（{times['open']:%H:%M}）", "close")
    days_raw = raw.get("days") or {}
    if not isinstance(days_raw, dict):
        raise fail(raw, "days 应为“日期: holiday 或 workday”的映射", "days")
    days: dict[dt.date, bool] = {}
    for key, kind in days_raw.items():
        day = _day(key)
        if day is None:
            raise fail(days_raw, f"日期 {key!r} 无效：应写成 \"2026-12-31\" 这样的年-月-日", key)
        if kind not in DAY_KINDS:
            raise fail(days_raw, f"{day} 应为 holiday（不上班）或 workday（上班），实际为 {kind!r}", key)
        days[day] = DAY_KINDS[kind]
    return CalendarEdits(times.get("open"), times.get("close"), days)


@cache
def calendar_edits() -> CalendarEdits:
    return load_calendar()


policy.register("值班时间与节假日调整 config/calendar.yaml", lambda _settings: calendar_edits())
content.register("calendar.yaml", "值班时间与节假日", "hours", load_calendar, calendar_edits.cache_clear)


def centre_day(day: dt.date) -> bool | None:
    """The centre's own decision for ``day`` (True working, False off), None when it follows the calendar."""
    return calendar_edits().days.get(day)


def is_working_day(day: dt.date) -> bool:
    """A working day of the Chinese calendar, including make-up working weekends, after the centre's changes."""
    own = centre_day(day)
    if own is not None:
        return own
    try:
        return chinese_calendar.is_workday(day)
    except NotImplementedError:
        log.warning("chinese_calendar has no data for %s; assuming Monday-Friday", day.year)
        return day.weekday() < 5


def _calendar_open(hours: Hours, local: dt.datetime) -> bool:
    return is_working_day(local.date()) and hours.open <= local.time() < hours.close


def is_open(settings: Settings, when: dt.datetime | None = None) -> bool:
    """Are agents on duty at ``when`` (aware; default now)?"""
    hours = Hours.from_settings(settings)
    if hours.mode != "calendar":
        return hours.mode == "always"
    return _calendar_open(hours, _aware(when).astimezone(hours.zone))


OVERRIDE_KEY = "hotline:hours:override"  # hash: hotline (or "*") -> "open" | "closed"
OVERRIDES = ("open", "closed")
OVERRIDE_WAIT_SECONDS = 0.3


async def staffed_now(settings: Settings, redis, hotline: str) -> bool:
    """Hours as configured, unless a team lead or admin closed or opened the line for now
    (emergency closure, training, a holiday rota): a live switch that needs no restart."""
    if redis is not None:
        async def override():
            return await redis.hget(OVERRIDE_KEY, hotline) or await redis.hget(OVERRIDE_KEY, "*")

        try:
            # A caller is on the line and keys ahead: a Redis that does not answer at once (down, and the
            # client retrying with backoff for seconds) counts as no override rather than a stalled menu.
            value = await asyncio.wait_for(override(), OVERRIDE_WAIT_SECONDS)
        except Exception:  # noqa: BLE001 - Redis down or slow: fall back to the configured hours
            value = None
        if isinstance(value, bytes):
            value = value.decode()
        if value in OVERRIDES:
            return value == "open"
    return is_open(settings)


async def set_override(redis, hotline: str, value: str | None) -> None:
    """``value`` open/closed sets the switch for ``hotline`` ("*" = both); None returns to the calendar."""
    if value is None:
        await redis.hdel(OVERRIDE_KEY, hotline)
    elif value in OVERRIDES:
        await redis.hset(OVERRIDE_KEY, hotline, value)
    else:
        raise ValueError(f"未知的值班状态：{value}")


def next_open_period(settings: Settings, when: dt.datetime | None = None) -> dt.datetime:
    """The first moment at or after ``when`` when the line is staffed (aware, centre's zone).

    Used to schedule callbacks. With mode ``never`` the calendar's hours are
    used anyway, so a callback still gets a sensible time.
    """
    hours = Hours.from_settings(settings)
    local = _aware(when).astimezone(hours.zone)
    if hours.mode == "always" or _calendar_open(hours, local):
        return local
    day = local.date()
    for _ in range(400):
        start = dt.datetime.combine(day, hours.open, tzinfo=hours.zone)
        if is_working_day(day) and start >= local:
            return start
        day += dt.timedelta(days=1)
    raise ConfigError("一年内没有工作日：请检查 [hours] 配置")


def staffed_hours(settings: Settings) -> dict[str, str]:
    """``{"open": "8点30分", "close": "17点30分"}`` for prompts said aloud."""
    hours = Hours.from_settings(settings)
    return {"open": _spoken(hours.open), "close": _spoken(hours.close)}


def _spoken(t: dt.time) -> str:
    return f"{t.hour}点" + (f"{t.minute}分" if t.minute else "")


def _aware(when: dt.datetime | None) -> dt.datetime:
    if when is None:
        return dt.datetime.now(dt.UTC)
    if when.tzinfo is None:
        raise ValueError("naive datetime: give the time with its zone")
    return when

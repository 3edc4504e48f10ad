"""Staffed hours: working hours from settings [hours] plus China's public-holiday calendar.

Working days follow ``chinese_calendar`` (public holidays off, make-up working
weekends 调休 on), decided in the centre's time zone (settings ``timezone``),
never the host clock's zone. Years the calendar package does not cover fall
back to Monday-Friday, and say so in the log.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import chinese_calendar

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
        return cls(section.opening, section.closing, section.mode, ZoneInfo(settings.timezone))


def is_working_day(day: dt.date) -> bool:
    """A working day of the Chinese calendar, including make-up working weekends."""
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

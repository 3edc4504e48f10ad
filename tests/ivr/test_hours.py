"""Staffed hours follow the Chinese calendar (holidays, make-up working days) in the centre's zone."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from core.hours import is_open, is_working_day, next_open_period, staffed_hours
from core.settings import ConfigError, load_settings

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def settings(tmp_path):
    def make(**hours: str):
        env = {f"HOTLINE_HOURS_{k.upper()}": v for k, v in hours.items()}
        return load_settings(var_dir=tmp_path, env={"HOTLINE_HOURS_MODE": "calendar", **env})
    return make


def at(day: str, time: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T{time}").replace(tzinfo=SHANGHAI)


def test_ordinary_weekday_inside_and_outside_hours(settings):
    s = settings()
    assert is_open(s, at("2024-09-10", "08:30"))
    assert is_open(s, at("2024-09-10", "17:29"))
    assert not is_open(s, at("2024-09-10", "17:30"))
    assert not is_open(s, at("2024-09-10", "08:29"))


def test_decided_in_the_centres_zone_not_utc(settings):
    # 01:00 UTC is 09:00 in Shanghai on a Tuesday
    assert is_open(settings(), dt.datetime(2024, 9, 10, 1, 0, tzinfo=dt.UTC))
    assert not is_open(settings(), dt.datetime(2024, 9, 10, 10, 0, tzinfo=dt.UTC))  # 18:00 local


def test_national_day_holiday_is_closed_and_the_make_up_saturday_is_open(settings):
    s = settings()
    assert not is_open(s, at("2024-10-01", "10:00"))  # Tuesday, National Day
    assert not is_open(s, at("2024-10-07", "10:00"))  # Monday, still holiday
    assert is_open(s, at("2024-10-12", "10:00"))      # Saturday, 调休 working day
    assert is_open(s, at("2024-09-29", "10:00"))      # Sunday, 调休 working day
    assert is_working_day(dt.date(2024, 10, 12)) and not is_working_day(dt.date(2024, 10, 3))


def test_spring_festival_2025(settings):
    s = settings()
    assert not is_open(s, at("2025-01-29", "10:00"))  # Wednesday, 春节
    assert is_open(s, at("2025-01-26", "10:00"))      # Sunday, 调休 working day
    assert is_open(s, at("2025-02-05", "10:00"))


def test_next_open_period_skips_the_holiday(settings):
    s = settings()
    assert next_open_period(s, at("2024-09-30", "18:00")) == at("2024-10-08", "08:30")
    assert next_open_period(s, at("2024-10-11", "20:00")) == at("2024-10-12", "08:30")  # make-up Saturday
    inside = at("2024-09-10", "10:00")
    assert next_open_period(s, inside) == inside


def test_modes_always_and_never(settings):
    assert is_open(settings(mode="always"), at("2024-10-01", "03:00"))
    assert not is_open(settings(mode="never"), at("2024-09-10", "10:00"))


def test_hours_are_said_in_chinese(settings):
    assert staffed_hours(settings()) == {"open": "8点30分", "close": "17点30分"}
    assert staffed_hours(settings(open="09:00", close="18:00")) == {"open": "9点", "close": "18点"}


@pytest.mark.parametrize("hours, message", [({"mode": "sometimes"}, "mode"), ({"open": "8h"}, "HH:MM"),
                                            ({"open": "18:00", "close": "09:00"}, "必须晚于")])
def test_bad_hours_configuration_is_refused(settings, hours, message):
    with pytest.raises(ConfigError, match=message):
        is_open(settings(**hours), at("2024-09-10", "10:00"))


async def test_a_redis_that_does_not_answer_at_once_means_the_configured_hours(settings):
    """Redis down and its client retrying for seconds must not hold a caller in silence (keys are lost)."""
    import asyncio
    import time

    from core.hours import staffed_now

    class SlowRedis:
        async def hget(self, *_args):
            await asyncio.sleep(10)
            return "closed"

    s = settings(mode="always")
    started = time.monotonic()
    assert await staffed_now(s, SlowRedis(), "12301") is True
    assert time.monotonic() - started < 2

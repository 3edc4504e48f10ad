"""Working days, deadline policies and countdowns.

Working days follow the Chinese public-holiday calendar with its make-up
working weekends (调休), from the ``chinese-calendar`` package. The package
covers one year at a time as the State Council publishes it (1.11.0: 2004-2026).

Uncovered years (e.g. a ticket registered on 28 Dec 2026 whose 5-working-day
acceptance limit ends in January 2027):

* :meth:`WorkCalendar.is_working_day` in strict mode raises
  :class:`CalendarNotCovered` with a Chinese message naming the year and the
  package version: nothing silently guesses.
* A deadline policy with ``uncovered_years: provisional`` (the shipped default)
  lets registration go on, because a hotline must never stop taking cases: for
  an uncovered year Monday-Friday count as working days, the ticket is flagged
  ``deadlines_provisional`` and :func:`recompute_provisional` recalculates the
  dates once the package is upgraded. ``uncovered_years: fail`` refuses instead.
* The 60-day complaint countdown is in calendar days and needs no calendar.

All dates are local dates in the policy's timezone (Asia/Shanghai).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import chinese_calendar
from chinese_calendar import constants as _cc_constants
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import content, policy
from core.hours import calendar_edits, centre_day
from core.policy import fail, shown
from core.settings import CONFIG_DIR, ConfigError
from tickets.models import OPEN_STATES, Kind, Reminder, State, Ticket

POLICY_DIR = CONFIG_DIR / "deadlines"
SHANGHAI = ZoneInfo("Asia/Shanghai")
UNITS = ("working", "calendar")
EVENTS = ("registered", "accepted")
LIMITS = ("acceptance", "handling")
LADDERS = ("own", "transferred")


class CalendarNotCovered(RuntimeError):
    """The holiday calendar has no data for the year asked about."""

    def __init__(self, year: int) -> None:
        first, last = calendar_coverage()
        super().__init__(
            f"节假日日历未覆盖 {year} 年（chinese-calendar {chinese_calendar.__version__} 仅含 "
            f"{first}–{last} 年），无法计算工作日，请升级 chinese-calendar"
        )
        self.year = year


@cache  # the installed package's tables do not change while the process runs
def calendar_coverage() -> tuple[int, int]:
    """First and last year the installed chinese-calendar covers."""
    years = [d.year for d in _cc_constants.holidays] + [d.year for d in _cc_constants.workdays]
    return min(years), max(years)


@dataclass(frozen=True)
class WorkCalendar:
    """Working days; ``provisional=True`` counts Mon-Fri in uncovered years instead of raising."""

    provisional: bool = False

    def is_working_day(self, day: dt.date) -> bool:
        own = centre_day(day)  # the centre's holiday override (config/calendar.yaml) comes first
        if own is not None:
            return own
        first, last = calendar_coverage()
        if first <= day.year <= last:
            return chinese_calendar.is_workday(day)
        if not self.provisional:
            raise CalendarNotCovered(day.year)
        return day.weekday() < 5

    def covers(self, day: dt.date) -> bool:
        first, last = calendar_coverage()
        return first <= day.year <= last

    def add_working_days(self, start: dt.date, days: int) -> dt.date:
        """The ``days``-th working day after ``start`` (``start`` itself not counted)."""
        day = start
        remaining = days
        while remaining > 0:
            day += dt.timedelta(days=1)
            if self.is_working_day(day):
                remaining -= 1
        return day

    def working_days_between(self, start: dt.date, end: dt.date) -> int:
        """Working days after ``start`` up to and including ``end`` (negative if end < start)."""
        if end < start:
            return -self.working_days_between(end, start)
        # From each year's running count (a report asks this for tens of thousands of ticket date pairs).
        total = self._year(end.year)[end.timetuple().tm_yday - 1] - self._year(start.year)[start.timetuple().tm_yday - 1]
        for year in range(start.year, end.year):
            total += self._year(year)[-1]
        return total

    def _year(self, year: int) -> list[int]:
        """Working days from 1 January of ``year`` up to and including each of its days (index: day - 1)."""
        global _running_edits
        edits = calendar_edits()
        if edits is not _running_edits:  # the centre changed its calendar: counts made before are wrong
            _running_counts.clear()
            _running_edits = edits
        key = (year, self.provisional)
        if key not in _running_counts:
            counts, day, n = [], dt.date(year, 1, 1), 0
            while day.year == year:
                n += self.is_working_day(day)
                counts.append(n)
                day += dt.timedelta(days=1)
            _running_counts[key] = counts
        return _running_counts[key]


# WorkCalendar._year's counts, made for the calendar edits they were made with.
_running_counts: dict[tuple[int, bool], list[int]] = {}
_running_edits: object = None


# --- policy ---------------------------------------------------------------

@dataclass(frozen=True)
class Limit:
    days: int
    unit: str
    start: str  # registered | accepted

    def due(self, calendar: WorkCalendar, start: dt.date) -> dt.date:
        if self.unit == "calendar":
            return start + dt.timedelta(days=self.days)
        return calendar.add_working_days(start, self.days)


@dataclass(frozen=True)
class ReminderStep:
    day: int
    who: str


@dataclass(frozen=True)
class HotlinePolicy:
    limits: dict[str, dict[str, Limit]]  # kind -> acceptance/handling -> Limit
    reminders: dict[str, tuple[ReminderStep, ...]]


@dataclass(frozen=True)
class DeadlinePolicy:
    name: str
    timezone: ZoneInfo
    calendar: WorkCalendar
    hotlines: dict[str, HotlinePolicy] = field(default_factory=dict)

    def for_ticket(self, hotline: str) -> HotlinePolicy:
        try:
            return self.hotlines[hotline]
        except KeyError:
            raise ConfigError(f"时限配置「{self.name}」没有热线 {hotline} 的规则") from None

    def local_date(self, moment: dt.datetime) -> dt.date:
        return moment.astimezone(self.timezone).date()


def _need(mapping: Any, key: str, where: str, parent: Any = None, parent_key: Any = None) -> Any:
    """``mapping[key]``; refused at the line of ``mapping`` (or of ``parent[parent_key]`` when it is no mapping)."""
    if not isinstance(mapping, dict):
        raise fail(parent, f"{where}: 应为映射（缺少 {key}）", parent_key)
    if key not in mapping:
        raise fail(mapping, f"{where}: 缺少 {key}")
    return mapping[key]


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _parse_limit(raw: Any, where: str, parent: Any, key: str) -> Limit:
    days = _need(raw, "days", where, parent, key)
    if not _positive_int(days):
        raise fail(raw, f"{where}.days: 应为正整数，实际为 {days!r}", "days")
    unit = _need(raw, "unit", where)
    if unit not in UNITS:
        raise fail(raw, f"{where}.unit: 应为 {' / '.join(UNITS)} 之一，实际为 {unit!r}", "unit")
    start = _need(raw, "from", where)
    if start not in EVENTS:
        raise fail(raw, f"{where}.from: 应为 {' / '.join(EVENTS)} 之一，实际为 {start!r}", "from")
    unknown = sorted(set(raw) - {"days", "unit", "from"})
    if unknown:
        raise fail(raw, f"{where}: 未知的键 {unknown[0]!r}", unknown[0])
    return Limit(days, unit, start)


def _parse_hotline(raw: Any, where: str, parent: Any, key: str) -> HotlinePolicy:
    if not isinstance(raw, dict):
        raise fail(parent, f"{where}: 应为映射", key)
    limits: dict[str, dict[str, Limit]] = {}
    for kind in Kind:
        if kind == Kind.UNCLASSIFIED:
            continue  # no deadlines until an agent classifies the message
        kind_raw = _need(raw, kind.value, where)
        limits[kind.value] = {
            name: _parse_limit(_need(kind_raw, name, f"{where}.{kind.value}", raw, kind.value),
                               f"{where}.{kind.value}.{name}", kind_raw, name)
            for name in LIMITS}
    reminders: dict[str, tuple[ReminderStep, ...]] = {}
    ladders = _need(raw, "reminders", where)
    for ladder in LADDERS:
        steps = _need(ladders, ladder, f"{where}.reminders", raw, "reminders")
        if not isinstance(steps, list):
            raise fail(ladders, f"{where}.reminders.{ladder}: 应为列表", ladder)
        parsed = []
        for i, step in enumerate(steps):
            spot = f"{where}.reminders.{ladder}[{i}]"
            day = _need(step, "day", spot, steps, i)
            if not _positive_int(day):
                raise fail(step, f"{spot}.day: 应为正整数，实际为 {day!r}", "day")
            parsed.append(ReminderStep(day, str(_need(step, "who", spot))))
        if [s.day for s in parsed] != sorted({s.day for s in parsed}):
            raise fail(ladders, f"{where}.reminders.{ladder}: 天数应严格递增", ladder)
        reminders[ladder] = tuple(parsed)
    unknown = sorted(set(raw) - {k.value for k in Kind} - {"reminders"})
    if unknown:
        raise fail(raw, f"{where}: 未知的键 {unknown[0]!r}", unknown[0])
    return HotlinePolicy(limits, reminders)


TOP_KEYS = ("name", "extends", "timezone", "uncovered_years", "hotlines")


def _policy_file(name: str, directory: Path | None) -> Path:
    """``<directory>/<name>.yaml``; without a directory the instance's copy (core.content) or the shipped one."""
    return directory / f"{name}.yaml" if directory is not None else content.config_path(f"deadlines/{name}.yaml")


def _read_raw(name: str, directory: Path | None, seen: tuple[str, ...] = ()) -> policy.Map:
    """The file ``<name>.yaml`` with the one it ``extends`` merged under it (hotline by hotline)."""
    path = _policy_file(name, directory)
    raw = policy.read(path)
    if name in seen:
        raise fail(raw, f"extends 形成循环 {' → '.join((*seen, name))}", "extends")
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise fail(raw, f"未知的键 {unknown[0]!r}（可用：{'、'.join(TOP_KEYS)}）", unknown[0])
    base = raw.get("extends")
    if base:
        if not _policy_file(str(base), directory).is_file():
            raise fail(raw, f"extends: 时限配置 {base!r} 不存在（{directory or POLICY_DIR}/{base}.yaml）", "extends")
        parent = _read_raw(str(base), directory, (*seen, name))
        own = raw.get("hotlines", {})
        if not isinstance(own, dict):
            raise fail(raw, "hotlines: 应为“热线号码: 时限”的映射", "hotlines")
        merged = policy.Map({**parent, **raw})
        merged.mark, merged.marks = raw.mark, {**parent.marks, **raw.marks}
        hotlines = policy.Map({**parent.get("hotlines", {}), **own})
        hotlines.mark = own.mark if isinstance(own, policy.Map) else raw.mark
        hotlines.marks = {**getattr(parent.get("hotlines"), "marks", {}), **getattr(own, "marks", {})}
        merged["hotlines"] = hotlines
        raw = merged
    return raw


def load_policy(name: str = "default", directory: Path | None = None) -> DeadlinePolicy:
    """Read and validate ``config/deadlines/<name>.yaml``; errors name the line and the key that is wrong."""
    raw = _read_raw(name, directory)
    tz_name = _need(raw, "timezone", "")
    try:
        tz = ZoneInfo(str(tz_name))
    except Exception:
        raise fail(raw, f"timezone: 未知时区 {tz_name!r}", "timezone") from None
    mode = raw.get("uncovered_years", "fail")
    if mode not in ("provisional", "fail"):
        raise fail(raw, f"uncovered_years: 应为 provisional 或 fail，实际为 {mode!r}", "uncovered_years")
    hotlines_raw = _need(raw, "hotlines", "")
    if not isinstance(hotlines_raw, dict) or not hotlines_raw:
        raise fail(raw, "hotlines: 至少配置一条热线", "hotlines")
    hotlines = {str(k): _parse_hotline(v, f"hotlines.{k}", hotlines_raw, k) for k, v in hotlines_raw.items()}
    return DeadlinePolicy(str(raw.get("name", name)), tz, WorkCalendar(provisional=mode == "provisional"), hotlines)


@cache
def active_policy(name: str = "default") -> DeadlinePolicy:
    """The policy a centre runs with (cached; the name comes from settings ``[tickets] deadline_policy``)."""
    return load_policy(name)


def policy_name(settings: Any | None) -> str:
    if settings is None:
        return "default"
    return settings.tickets.deadline_policy


def check_policy_files() -> None:
    """Every file of config/deadlines/ (edited copies included), each broken one named; nothing cached."""
    errors: list[ConfigError] = []
    for path in content.config_glob("deadlines"):
        try:
            load_policy(path.stem)
        except ConfigError as exc:
            errors.append(exc)
    if errors:
        raise policy.PolicyErrors(errors)


def check_policies(settings: Any | None) -> None:
    """Start-up check: every file of config/deadlines/ (a centre may switch to any of them) and the active one."""
    check_policy_files()
    name = policy_name(settings)
    if not _policy_file(name, None).is_file():
        raise ConfigError(f"[tickets] deadline_policy = {name!r}：{shown(POLICY_DIR)}/ 下没有 {name}.yaml")
    active_policy(name)


policy.register("办理时限 config/deadlines/*.yaml", check_policies)
content.register("deadlines/*.yaml", "办理时限", "policy", check_policy_files, active_policy.cache_clear)


# --- ticket deadlines -------------------------------------------------------

def _limit_start(ticket: Ticket, limit: Limit, policy: DeadlinePolicy) -> dt.date:
    moment = ticket.accepted_at if limit.start == "accepted" and ticket.accepted_at else ticket.created_at
    return policy.local_date(moment)


def _needs_estimate(policy: DeadlinePolicy, start: dt.date, due: dt.date) -> bool:
    cal = policy.calendar
    return not (cal.covers(start) and cal.covers(due))


def apply_deadlines(ticket: Ticket, policy: DeadlinePolicy) -> None:
    """Set ``acceptance_due`` and ``handling_due`` from the ticket's events (registration, acceptance)."""
    if ticket.kind == Kind.UNCLASSIFIED:
        ticket.acceptance_due = ticket.handling_due = None
        return
    limits = policy.for_ticket(ticket.hotline).limits[ticket.kind.value]
    provisional = False
    dues: dict[str, dt.date] = {}
    for name in LIMITS:
        limit = limits[name]
        start = _limit_start(ticket, limit, policy)
        dues[name] = limit.due(policy.calendar, start)
        provisional |= limit.unit == "working" and _needs_estimate(policy, start, dues[name])
    ticket.acceptance_due = dues["acceptance"]
    ticket.handling_due = dues["handling"]
    ticket.deadlines_provisional = provisional


async def recompute_provisional(session: AsyncSession, policy: DeadlinePolicy) -> int:
    """After upgrading chinese-calendar: recompute tickets whose deadlines were estimated."""
    tickets = (await session.scalars(select(Ticket).where(Ticket.deadlines_provisional.is_(True)))).all()
    for ticket in tickets:
        apply_deadlines(ticket, policy)
    return len(tickets)


def today_local(policy: DeadlinePolicy, now: dt.datetime | None = None) -> dt.date:
    return (now or dt.datetime.now(dt.UTC)).astimezone(policy.timezone).date()


def days_left(ticket: Ticket, today: dt.date) -> int | None:
    """Days until the handling deadline (the 60-day countdown); negative when overdue, None when closed."""
    if not ticket.is_open or ticket.handling_due is None:
        return None
    return (ticket.handling_due - today).days


def acceptance_overdue(ticket: Ticket, today: dt.date) -> bool:
    return (ticket.state in (State.PENDING, State.PENDING_TRANSFERRED)
            and ticket.acceptance_due is not None and today > ticket.acceptance_due)


def handover_overdue(ticket: Ticket, today: dt.date) -> bool:
    """A 移交 past its deadline (004 §6.3.5.1) with no result from the receiving authority yet."""
    return (ticket.state == State.HANDED_OVER and ticket.handover_result is None
            and ticket.handover_due is not None and today > ticket.handover_due)


def handling_overdue(ticket: Ticket, today: dt.date) -> bool:
    return ticket.is_open and ticket.handling_due is not None and today > ticket.handling_due


@dataclass(frozen=True)
class DueReminder:
    ladder: str
    day: int
    who: str
    due_on: dt.date


def reminders_due(ticket: Ticket, today: dt.date, policy: DeadlinePolicy) -> list[DueReminder]:
    """催办 steps reached by ``today``: own cases from acceptance, transferred ones from the transfer."""
    if ticket.state not in OPEN_STATES:
        return []
    if ticket.transfer_chain and ticket.transferred_at:
        ladder, start = "transferred", policy.local_date(ticket.transferred_at)
    elif ticket.accepted_at:
        ladder, start = "own", policy.local_date(ticket.accepted_at)
    else:
        return []
    steps = policy.for_ticket(ticket.hotline).reminders[ladder]
    result = []
    for step in steps:
        due_on = start + dt.timedelta(days=step.day)
        if today >= due_on:
            result.append(DueReminder(ladder, step.day, step.who, due_on))
    return result


async def issue_reminders(session: AsyncSession, today: dt.date, policy: DeadlinePolicy) -> list[Reminder]:
    """Record every 催办 step that has fallen due and was not recorded yet (run daily; idempotent)."""
    tickets = (await session.scalars(select(Ticket).where(
        Ticket.state.in_(OPEN_STATES), Ticket.accepted_at.is_not(None) | Ticket.transferred_at.is_not(None),
    ))).all()
    done = {(r.ticket_id, r.ladder, r.day) for r in (await session.scalars(
        select(Reminder).where(Reminder.ticket_id.in_([t.id for t in tickets]))
    )).all()} if tickets else set()
    created = []
    for ticket in tickets:
        for step in reminders_due(ticket, today, policy):
            if (ticket.id, step.ladder, step.day) not in done:
                reminder = Reminder(ticket_id=ticket.id, ladder=step.ladder, day=step.day,
                                    who=step.who, due_on=step.due_on)
                session.add(reminder)
                created.append(reminder)
    await session.flush()
    return created

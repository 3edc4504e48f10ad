"""Working-day deadlines across National Day and Spring Festival (real 2024-2026 calendars), policies, reminders."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from ticket_helpers import SHANGHAI, act, register

from core.settings import ConfigError
from tickets.deadlines import (
    CalendarNotCovered,
    WorkCalendar,
    acceptance_overdue,
    active_policy,
    calendar_coverage,
    days_left,
    handling_overdue,
    issue_reminders,
    load_policy,
    reminders_due,
)
from tickets.models import Kind, State, Ticket

STRICT = WorkCalendar()
D = dt.date


@pytest.mark.parametrize(("start", "days", "due"), [
    # National Day 2024: 1-7 Oct off, Sun 29 Sep and Sat 12 Oct worked.
    (D(2024, 9, 27), 5, D(2024, 10, 10)),
    (D(2024, 10, 10), 2, D(2024, 10, 12)),
    # National Day 2025: 1-8 Oct off, Sun 28 Sep and Sat 11 Oct worked.
    (D(2025, 9, 26), 5, D(2025, 10, 10)),
    (D(2025, 9, 26), 7, D(2025, 10, 13)),
    # National Day 2026 (with Mid-Autumn 25 Sep): Sun 20 Sep and Sat 10 Oct worked.
    (D(2026, 9, 24), 5, D(2026, 10, 9)),
    (D(2026, 9, 18), 1, D(2026, 9, 20)),
    # Spring Festival 2024: 10-17 Feb off, Sun 4 Feb and Sun 18 Feb worked.
    (D(2024, 2, 8), 5, D(2024, 2, 21)),
    # Spring Festival 2025: 28 Jan - 4 Feb off, Sun 26 Jan and Sat 8 Feb worked.
    (D(2025, 1, 24), 5, D(2025, 2, 7)),
    (D(2025, 1, 24), 3, D(2025, 2, 5)),
    # Spring Festival 2026: 15-23 Feb off, Sat 14 Feb and Sat 28 Feb worked.
    (D(2026, 2, 13), 5, D(2026, 2, 27)),
    (D(2026, 2, 27), 1, D(2026, 2, 28)),
])
def test_working_days_follow_holidays_and_make_up_days(start, days, due):
    assert STRICT.add_working_days(start, days) == due
    assert STRICT.working_days_between(start, due) == days


def test_working_days_between_counts_what_a_day_by_day_walk_counts():
    """The running per-year counts against the plain walk, across year ends and Spring Festivals, both ways."""
    calendar = WorkCalendar(provisional=True)
    for start in (D(2023, 12, 20), D(2024, 2, 1), D(2025, 1, 24), D(2025, 12, 31), D(2026, 2, 13)):
        for span in (0, 1, 7, 30, 45, 100, 400, 800):
            end = start + dt.timedelta(days=span)
            walked = sum(calendar.is_working_day(start + dt.timedelta(days=n)) for n in range(1, span + 1))
            assert calendar.working_days_between(start, end) == walked, (start, end)
            assert calendar.working_days_between(end, start) == -walked


async def test_complaint_accept_within_5_working_days_across_national_day(db, users):
    t = await register(db, users["agent"], now=dt.datetime(2025, 9, 26, 16, 0, tzinfo=SHANGHAI))
    assert t.number.startswith("20250926")
    assert t.acceptance_due == D(2025, 10, 10)
    assert acceptance_overdue(t, D(2025, 10, 10)) is False
    assert acceptance_overdue(t, D(2025, 10, 11)) is True


async def test_registration_date_is_the_shanghai_date(db, users):
    # 23:30 UTC on 30 Sep is 07:30 on 1 Oct in Shanghai.
    t = await register(db, users["agent"], now=dt.datetime(2025, 9, 30, 23, 30, tzinfo=dt.UTC))
    assert t.number.startswith("20251001")
    assert t.acceptance_due == D(2025, 10, 14)  # 9, 10, 11 (Saturday, worked), 13, 14 October


async def test_004_6_3_5_2_1_12365_handling_countdown_is_60_days_from_acceptance(db, users):
    # 12365 only: 12301 counts its 60 days from registration (000 §3.2, tests/tickets/test_rules.py).
    t = await register(db, users["agent"], now=dt.datetime(2025, 9, 26, 9, 0, tzinfo=SHANGHAI), hotline="12365",
                       complaint_object="生产企业", event_category="产品质量问题", province="浙江省",
                       city="杭州市", county="西湖区")
    t = await act(db, t.number, "受理", {"note": "受理"}, users["xh_handler"],
                  now=dt.datetime(2025, 9, 30, 9, 0, tzinfo=SHANGHAI))
    assert t.handling_due == D(2025, 11, 29)
    assert days_left(t, D(2025, 10, 10)) == 50
    assert days_left(t, D(2025, 12, 1)) == -2 and handling_overdue(t, D(2025, 12, 1))


async def test_report_gets_90_working_days_from_acceptance(db, users):
    t = await register(db, users["agent"], kind="report", hotline="12365", complaint_object="生产企业",
                       event_category="假冒伪劣", province="浙江省", city="杭州市", county="西湖区",
                       now=dt.datetime(2025, 1, 20, 9, 0, tzinfo=SHANGHAI))
    t = await act(db, t.number, "受理", {"note": "受理"}, users["xh_handler"],
                  now=dt.datetime(2025, 1, 24, 9, 0, tzinfo=SHANGHAI))
    assert t.handling_due == STRICT.add_working_days(D(2025, 1, 24), 90)
    assert STRICT.working_days_between(D(2025, 1, 24), t.handling_due) == 90
    assert (t.handling_due - D(2025, 1, 24)).days > 90 + 2 * 12  # weekends and Spring Festival skipped


async def test_consultation_forwarded_within_3_working_days(db, users):
    t = await register(db, users["agent"], kind="consult", now=dt.datetime(2025, 1, 24, 9, 0, tzinfo=SHANGHAI))
    assert t.acceptance_due == D(2025, 2, 5)


def test_12315_profile_changes_policy_without_code():
    policy = load_policy("12315-2019")
    complaint = policy.for_ticket("12365").limits[Kind.COMPLAINT.value]
    assert (complaint["acceptance"].days, complaint["acceptance"].unit) == (7, "working")
    assert (complaint["handling"].days, complaint["handling"].unit) == (45, "working")
    assert policy.for_ticket("12365").limits[Kind.REPORT.value]["handling"].days == 15
    assert policy.for_ticket("12301").limits[Kind.COMPLAINT.value]["handling"].days == 60  # inherited
    due = complaint["acceptance"].due(policy.calendar, D(2025, 9, 26))
    assert due == D(2025, 10, 13)


def test_calendar_fails_loudly_for_an_uncovered_year():
    first, last = calendar_coverage()
    assert first <= 2024 and last >= 2026
    with pytest.raises(CalendarNotCovered) as err:
        STRICT.is_working_day(D(last + 1, 1, 4))
    assert str(last + 1) in str(err.value) and "chinese-calendar" in str(err.value)


async def test_december_ticket_crossing_into_an_uncovered_year_is_provisional(db, users):
    _, last = calendar_coverage()
    if last != 2026:
        pytest.fail(f"update this test: chinese-calendar now covers up to {last}")
    t = await register(db, users["agent"], now=dt.datetime(2026, 12, 28, 10, 0, tzinfo=SHANGHAI))
    assert t.deadlines_provisional is True
    assert t.acceptance_due == D(2027, 1, 4)  # 29, 30, 31 Dec; Fri 1 Jan and Mon 4 Jan estimated as working
    assert t.handling_due == D(2027, 2, 26)   # calendar days need no holiday data
    ordinary = await register(db, users["agent"], now=dt.datetime(2026, 11, 2, 10, 0, tzinfo=SHANGHAI))
    assert ordinary.deadlines_provisional is False


def _write_policy(tmp_path: Path, name: str, data: dict) -> Path:
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return tmp_path


def _base() -> dict:
    return yaml.safe_load((Path(__file__).resolve().parents[2] / "config/deadlines/default.yaml").read_text())


def test_strict_policy_refuses_uncovered_years(tmp_path):
    data = _base() | {"uncovered_years": "fail"}
    policy = load_policy("strict", _write_policy(tmp_path, "strict", data))
    limit = policy.for_ticket("12301").limits["complaint"]["acceptance"]
    with pytest.raises(CalendarNotCovered):
        limit.due(policy.calendar, D(2026, 12, 28))


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["hotlines"]["12301"]["complaint"]["acceptance"].update(days=-5), "complaint.acceptance.days"),
    (lambda d: d["hotlines"]["12301"]["complaint"]["handling"].update(unit="weeks"), "handling.unit"),
    (lambda d: d["hotlines"]["12301"]["report"]["handling"].update({"from": "closed"}), "report.handling.from"),
    (lambda d: d["hotlines"]["12301"].pop("consult"), "缺少 consult"),
    (lambda d: d["hotlines"]["12301"]["reminders"]["own"].reverse(), "严格递增"),
    (lambda d: d.update(timezone="Mars/Base"), "timezone"),
    (lambda d: d.update(uncovered_years="maybe"), "uncovered_years"),
])
def test_policy_errors_are_precise(tmp_path, mutate, message):
    data = _base()
    data["hotlines"]["12365"] = yaml.safe_load(yaml.safe_dump(data["hotlines"]["12301"]))
    mutate(data)
    with pytest.raises(ConfigError) as err:
        load_policy("bad", _write_policy(tmp_path, "bad", data))
    assert message in str(err.value)


def _ticket(**kw) -> Ticket:
    base = dict(hotline="12301", kind=Kind.COMPLAINT, state=State.ACCEPTED, transfer_chain=[],
                created_at=dt.datetime(2025, 6, 1, 2, tzinfo=dt.UTC))
    return Ticket(**(base | kw))


def test_reminder_ladder_for_own_cases_20_30_45_days_after_acceptance():
    policy = active_policy()
    t = _ticket(accepted_at=dt.datetime(2025, 6, 10, 2, tzinfo=dt.UTC))
    assert reminders_due(t, D(2025, 6, 29), policy) == []
    assert [r.who for r in reminders_due(t, D(2025, 6, 30), policy)] == ["科室负责人催办"]
    steps = reminders_due(t, D(2025, 7, 25), policy)
    assert [(r.day, r.due_on) for r in steps] == [(20, D(2025, 6, 30)), (30, D(2025, 7, 10)), (45, D(2025, 7, 25))]


def test_reminder_ladder_for_transferred_cases_20_40_days_after_transfer():
    policy = active_policy()
    t = _ticket(state=State.PENDING_TRANSFERRED, transfer_chain=[1],
                transferred_at=dt.datetime(2025, 9, 26, 2, tzinfo=dt.UTC))
    steps = reminders_due(t, D(2025, 11, 5), policy)
    assert [(s.ladder, s.day, s.due_on) for s in steps] == [("transferred", 20, D(2025, 10, 16)),
                                                             ("transferred", 40, D(2025, 11, 5))]
    closed = _ticket(state=State.SETTLED, accepted_at=dt.datetime(2025, 6, 10, 2, tzinfo=dt.UTC))
    assert reminders_due(closed, D(2025, 12, 1), policy) == []


async def test_issue_reminders_is_idempotent(db, users):
    t = await register(db, users["agent"])
    await act(db, t.number, "受理", {"note": "受理"}, users["th_handler"])
    async with db.transaction() as session:
        first = await issue_reminders(session, D(2025, 7, 11), active_policy())
    async with db.transaction() as session:
        again = await issue_reminders(session, D(2025, 7, 11), active_policy())
    assert [r.day for r in first] == [20, 30] and again == []

"""回访 (issue 16 item 4) below the telephone: which closings make a visit task, the settings checked at
start-up, retries on later working days, the result on the ticket, and 回访率 / 回访满意率 against a hand
computation (SQLite and PostgreSQL). The call itself is tested through the real stack in
tests/cti/test_return_visits_e2e.py.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from core.calls import CallbackRequest, CallbackStatus
from core.inputs import InputError
from core.settings import ConfigError, Settings, load_settings
from cti.callbacks import call_back_by_agent, claim, finish_attempt
from cti.protocol import Refused
from quality import kpi, kpi_sql
from tests.tickets.ticket_helpers import NOW, act, register
from tickets import return_visits
from tickets.models import Kind, State, TicketAction
from tickets.queries import find_by_number

ZONE = dt.timezone(dt.timedelta(hours=8))


def settings(tmp_path, visits: dict | None = None, mode: str = "calendar") -> Settings:
    """The shipped settings (Shanghai, 08:30-17:30), the calendar's hours, the system clock, ``visits``."""
    shipped = load_settings(tmp_path / "var").raw
    raw = {**shipped, "hours": {**shipped["hours"], "open": "08:30", "close": "17:30", "mode": mode},
           "notify": {**shipped["notify"], "clock": "system"},
           "return_visits": {**shipped["return_visits"], **(visits or {})}}
    return Settings(raw=raw, var_dir=tmp_path)


def test_rules_default_to_handled_complaints_and_reports_and_refuse_nonsense(tmp_path):
    rules = return_visits.configure(settings(tmp_path))
    assert rules.kinds == {Kind.COMPLAINT, Kind.REPORT} and State.REJECTED not in rules.outcomes
    assert rules.outcomes == {State.SETTLED, State.MEDIATED, State.MEDIATION_FAILED, State.DEPOSIT_PAID,
                              State.CONCLUDED}
    assert (rules.max_attempts, rules.retry_working_days) == (3, 1)
    for visits, words in (({"kinds": ["complaint", "petition"]}, "petition 无效"),
                          ({"outcomes": ["pending"]}, "pending 无效"),
                          ({"outcomes": "settled"}, "列表"),
                          ({"max_attempts": 0}, "max_attempts = 0"),
                          ({"retry_working_days": "1"}, "retry_working_days = '1'"),
                          ({"max_attempt": 2}, "未知的配置项 max_attempt")):
        with pytest.raises(ConfigError, match=words):
            return_visits.VisitRules.from_settings(settings(tmp_path, visits))
    # The shipped hotline.toml states the defaults as data (the helper above starts from it).
    assert return_visits.VisitRules.from_settings(load_settings(tmp_path / "var")) == rules


def test_an_unreachable_citizen_is_tried_again_on_the_next_working_day_of_the_calendar(tmp_path):
    s = settings(tmp_path)
    one = return_visits.VisitRules(frozenset({Kind.COMPLAINT}), frozenset({State.SETTLED}), 3, 1)
    two = return_visits.VisitRules(frozenset({Kind.COMPLAINT}), frozenset({State.SETTLED}), 3, 2)

    def at(day: str, hour: int) -> dt.datetime:
        return dt.datetime.fromisoformat(f"{day}T{hour:02}:00").replace(tzinfo=ZONE)

    def local(moment: dt.datetime) -> str:
        return moment.astimezone(ZONE).strftime("%Y-%m-%d %H:%M")

    # Friday 26 September 2025: Saturday 27 is off, Sunday 28 is a make-up working day (调休).
    assert local(return_visits.next_try(s, at("2025-09-26", 15), one)) == "2025-09-28 08:30"
    # Two working days on: Sunday 28, then Monday 29.
    assert local(return_visits.next_try(s, at("2025-09-26", 15), two)) == "2025-09-29 08:30"
    # Tuesday 30 September: National Day holidays 1-8 October, next working day Thursday 9.
    assert local(return_visits.next_try(s, at("2025-09-30", 9), one)) == "2025-10-09 08:30"
    # Late at night still counts as that day: the next working day is tomorrow.
    assert local(return_visits.next_try(s, at("2025-06-10", 23), one)) == "2025-06-11 08:30"


async def _closed_complaint(db, users, phone: str = "13505456680"):
    t = await register(db, users["agent"], complainant_phone=phone)
    await act(db, t.number, "受理", {"note": "受理"}, users["th_handler"])
    await act(db, t.number, "调解成功", {"amount": "100", "closing_date": "2025-06-10", "remark": "和解"},
              users["th_handler"])
    return await act(db, t.number, "审核通过", {}, users["th_head"])


async def _task(db, number: str) -> CallbackRequest | None:
    async with db.session() as session:
        return await session.scalar(select(CallbackRequest).where(CallbackRequest.ticket_number == number))


async def test_closing_makes_one_visit_task_and_the_result_goes_on_the_ticket_with_a_log_step(db, users, tmp_path):
    return_visits.configure(settings(tmp_path, {"max_attempts": 2}))
    try:
        closed = await _closed_complaint(db, users)
        assert closed.state == State.MEDIATED
        task = await _task(db, closed.number)
        assert task.source == "visit" and task.status == CallbackStatus.PENDING and task.number == "13505456680"
        assert task.max_attempts == 2 and task.hotline == "12301" and task.note == "回访（调解成功）"
        # Not visited by default: a 不予受理, and a complaint without a number to call.
        rejected = await register(db, users["agent"])
        await act(db, rejected.number, "不予受理", {"clauses": ["超过旅游合同结束之日90天的"], "remark": "逾期"},
                  users["th_handler"])
        rejected = await act(db, rejected.number, "审核通过", {}, users["th_head"])
        assert rejected.state == State.REJECTED and await _task(db, rejected.number) is None

        agent = users["agent"]
        now = NOW + dt.timedelta(hours=3)
        async with db.session() as session:
            with pytest.raises(InputError, match="请先接通"):  # not dialled yet: nothing to record
                await return_visits.record_result(session, task.id, agent, {"result": "满意", "satisfaction":
                                                                            "satisfied"}, now)
        # First attempt: busy. The retry waits for the next working day (Wednesday 11 June, 08:30).
        assert await claim(db, task.id, agent.id, now)
        await finish_attempt(db, str(task.id), "BUSY", settings(tmp_path))
        retry = await _task(db, closed.number)
        assert retry.status == CallbackStatus.PENDING and retry.attempts == 1
        wanted = return_visits.next_try(settings(tmp_path), dt.datetime.now(dt.UTC))
        assert retry.next_attempt_at == wanted
        with pytest.raises(Refused, match="下一个工作日"):
            await call_back_by_agent(db, None, agent.id, "8001", task.id, wanted - dt.timedelta(minutes=1))
        assert not await claim(db, task.id, agent.id, wanted - dt.timedelta(minutes=1))  # the same, atomically
        assert await claim(db, task.id, agent.id, wanted)

        async with db.transaction() as session:
            for bad, field in (({"result": "", "satisfaction": "satisfied"}, "result"),
                               ({"result": "x" * 1001, "satisfaction": "satisfied"}, "result"),
                               ({"result": "好", "satisfaction": "unrated"}, "satisfaction")):
                with pytest.raises(InputError) as refused:
                    await return_visits.record_result(session, task.id, agent, bad, wanted)
                assert refused.value.field == field and refused.value.status == 400
            with pytest.raises(InputError, match="请先接通"):  # another agent's visit
                await return_visits.record_result(session, task.id, users["lead"],
                                                  {"result": "好", "satisfaction": "basic"}, wanted)
            await return_visits.record_result(session, task.id, agent, {"result": "已退款，对处理满意",
                                                                        "satisfaction": "dissatisfied"}, wanted)
        async with db.session() as session:
            ticket = await find_by_number(session, closed.number)
            step = await session.scalar(select(TicketAction).where(TicketAction.ticket_id == ticket.id)
                                        .order_by(TicketAction.id.desc()))
            with pytest.raises(InputError, match="已记录回访结果") as twice:
                await return_visits.record_result(session, task.id, agent, {"result": "再记", "satisfaction":
                                                                            "basic"}, wanted)
            assert twice.value.status == 409
        assert (ticket.visit_result, ticket.visit_satisfaction, ticket.visited_by_name) == (
            "已退款，对处理满意", "dissatisfied", agent.display_name)
        assert step.action == "回访" and step.remark == "回访结果：已退款，对处理满意；满意度：不满意"
        assert (await _task(db, closed.number)).status == CallbackStatus.DONE

        # Unreachable on every attempt: given up, and the ticket says so (by the system, no grade).
        other = await _closed_complaint(db, users, phone="13600000002")
        other_task = await _task(db, other.number)
        for _attempt in (1, 2):
            assert await claim(db, other_task.id, agent.id)
            await finish_attempt(db, str(other_task.id), "NOANSWER", settings(tmp_path))
        given_up = await _task(db, other.number)
        assert given_up.status == CallbackStatus.FAILED and given_up.attempts == 2
        async with db.session() as session:
            other = await find_by_number(session, other.number)
            listed = await return_visits.open_visits(session, wanted)
        assert other.visit_result == "回访未接通（共 2 次）" and other.visit_satisfaction is None
        assert other.visited_by_name == "系统"
        assert listed == []  # one done with its result, one given up: nothing left on the desk's list
    finally:
        return_visits.configure(settings(tmp_path))


async def test_return_visit_rate_and_satisfaction_against_a_hand_computation(db, users, tmp_path):
    """Five closed complaints with visit tasks: satisfied, basic, dissatisfied, unreachable, not yet called;
    one consultation without a task. 回访率 = 3 reached / 5 due; 回访满意率 = 2 (满意+基本满意) / 3 graded."""
    return_visits.configure(settings(tmp_path))
    numbers = []
    for n in range(5):
        numbers.append((await _closed_complaint(db, users, phone=f"1360000010{n}")).number)
    await register(db, users["agent"], kind="consult", answer="已答复", description="咨询")
    async with db.transaction() as session:
        for number, grade in zip(numbers[:3], ("satisfied", "basic", "dissatisfied"), strict=True):
            ticket = await find_by_number(session, number)
            ticket.visit_result, ticket.visit_satisfaction = "已回访", grade
        ticket = await find_by_number(session, numbers[3])
        ticket.visit_result = "回访未接通（共 3 次）"
    async with db.session() as session:
        facts = await kpi.load_facts(session, NOW.date(), NOW.date(), ZONE)
        unhappy = await return_visits.dissatisfied(session, *kpi.local_bounds(NOW.date(), NOW.date(), ZONE))
        by_sql = await kpi_sql.load_report(session, NOW.date(), NOW.date(), ZONE)  # what the report page uses
    for report in (kpi.compute(facts), by_sql):
        rate, happy = report["return_visit_rate"], report["visit_satisfaction_rate"]
        assert (rate.numerator, rate.denominator, rate.value) == (3, 5, 0.6)
        assert (happy.numerator, happy.denominator, happy.value) == (2, 3, 2 / 3)
    assert [t.number for t in unhappy] == [numbers[2]]
    assert "GB/T 33358" in rate.definition.source and "满意或基本满意" in happy.definition.numerator

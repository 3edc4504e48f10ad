"""The scheduler's rules on the real databases (SQLite and PostgreSQL), with injected time.

Sixty working days from 24 September 2026 run through the Mid-Autumn and National Day holidays
(25–27 September, 1–7 October; 10 October is a make-up working Saturday) in one test, one engine pass
(twice) per calendar day.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import func, select
from ticket_helpers import SHANGHAI, act, register

from core.settings import ConfigError
from tickets import notices
from tickets.deadlines import active_policy
from tickets.message_centre import list_messages, mark_read, unread_count
from tickets.models import TicketAction
from tickets.notify_models import Firing, Message, Notice
from tickets.queries import find_by_number, home_counters
from tickets.scheduler import run_rules
from tickets.workflow import PermissionDenied

D = dt.date
START = dt.datetime(2026, 9, 24, 10, 0, tzinfo=SHANGHAI)  # a Thursday, the day before the holidays


def at(day: dt.date, hour: int = 9) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), SHANGHAI)


async def _firings(db, ticket_id: int) -> dict[tuple[str, str], dt.date]:
    async with db.session() as session:
        rows = (await session.scalars(select(Firing).where(Firing.ticket_id == ticket_id))).all()
    return {(f.rule, f.step): f.fired_at.astimezone(SHANGHAI).date() for f in rows}


async def test_001_s5_ladders_and_004_s6_3_2_2_limits_fire_once_each_over_60_working_days(db, users):
    policy = active_policy()
    late = await register(db, users["agent"], START)                       # never accepted
    own = await register(db, users["agent"], START, complainant_phone="13600000002")
    other = await register(db, users["agent"], START, province="四川省", city="成都市", county="武侯区",
                           complainant_phone="13600000003")
    await act(db, own.number, "受理", {"note": "已联系投诉人"}, users["th_handler"], at(D(2026, 9, 28), 10))
    await act(db, own.number, "督办", {"note": "重点案件"}, users["lead"], at(D(2026, 10, 12), 10))
    day = START.date()
    while day <= D(2026, 12, 20):           # 60 working days and more
        for _ in range(2 if day.weekday() == 0 else 1):  # a second pass (a restart) fires nothing new
            async with db.transaction() as session:
                await run_rules(session, at(day, 1), policy)
        day += dt.timedelta(days=1)

    # 004 §6.3.2.2: 5 working days for acceptance: 28, 29, 30 Sep, 8, 9 Oct -> overdue from 10 Oct.
    # Not accepted, so the 60-day countdown runs from registration (000 §3.2): due 23 Nov.
    assert await _firings(db, late.id) == {("acceptance_overdue", "2026-10-09"): D(2026, 10, 10),
                                           ("expiring", "2026-11-23"): D(2026, 11, 14),
                                           ("handling_overdue", "2026-11-23"): D(2026, 11, 24)}
    # 001 §5.1 (20/30/45 days after acceptance on 28 Sep), 000 §3.1 expiring within 10 days of the
    # 60-day limit (counted from registration for 12301, 000 §3.2: 23 Nov), then overdue; the 督办 of 12 Oct followed up 5 days later.
    fired = await _firings(db, own.id)
    supervision = [k for k in fired if k[0] == "supervision_followup"]
    assert len(supervision) == 1 and fired[supervision[0]] == D(2026, 10, 17)
    assert {k: v for k, v in fired.items() if k[0] != "supervision_followup"} == {
        ("reminder:own", "20"): D(2026, 10, 18), ("reminder:own", "30"): D(2026, 10, 28),
        ("reminder:own", "45"): D(2026, 11, 12), ("expiring", "2026-11-23"): D(2026, 11, 14),
        ("handling_overdue", "2026-11-23"): D(2026, 11, 24)}
    assert (await _firings(db, other.id)).keys() == {("acceptance_overdue", "2026-10-09"),
                                                     ("expiring", "2026-11-23"), ("handling_overdue", "2026-11-23")}

    async with db.session() as session:
        trace = (await session.scalars(select(TicketAction.action).where(
            TicketAction.ticket_id == own.id, TicketAction.operator_name == "系统"))).all()
        assert sorted(trace) == sorted(["催办", "催办", "催办", "到期提醒", "超期提醒", "督办跟踪"])
        # Unit contacts get the reminders by SMS (config/notices.yaml: 天河区 13900000004).
        unit_sms = (await session.scalars(select(Notice.template).where(
            Notice.ticket_id == own.id, Notice.audience == "unit", Notice.recipient == "13900000004"))).all()
        assert sorted(unit_sms) == sorted(["supervised", "reminder", "reminder", "reminder", "expiring",
                                           "handling_overdue", "supervision_followup"])
        # Messages: 天河 sees its own tickets only, 武侯 (Sichuan) only the Sichuan one.
        th = [m["ticket_number"] for m in await list_messages(session, users["th_handler"], 200)]
        assert set(th) == {late.number, own.number}
        sc = await session.scalars(select(Message.ticket_number).where(Message.unit_id == other.unit_id))
        assert set(sc.all()) == {other.number}
        # The home page's overdue counter agrees with the engine on the same day.
        # The home page's overdue counter agrees with the engine: on 20 October one ticket is late for
        # acceptance (the 60-day limits are still ahead), and it is counted.
        for day, expected in ((D(2026, 10, 20), 1), (D(2026, 11, 28), 2)):
            counters = await home_counters(session, users["th_handler"], day)
            fired_overdue = await session.scalar(select(func.count(func.distinct(Firing.ticket_id))).where(
                Firing.rule.in_(("acceptance_overdue", "handling_overdue")), Firing.fired_at <= at(day, 2),
                Firing.ticket_id.in_([late.id, own.id])))
            assert counters["overdue"] == fired_overdue == expected


async def test_001_s3_citizen_notices_queued_with_the_action_and_message_centre_read_state(db, users):
    t = await register(db, users["agent"], START)
    await act(db, t.number, "受理", {"note": "受理"}, users["th_handler"], START + dt.timedelta(hours=2))
    await act(db, t.number, "调解成功", {"amount": "100", "closing_date": "2026-09-24", "remark": "和解"},
              users["th_handler"], START + dt.timedelta(hours=3))
    async with db.session() as session:
        head_unread = await unread_count(session, users["th_head"])
        handler_unread = await unread_count(session, users["th_handler"])
    assert head_unread == handler_unread + 1  # the closing review goes to the unit head only
    await act(db, t.number, "审核通过", {}, users["th_head"], START + dt.timedelta(hours=4))
    async with db.transaction() as session:
        rows = (await session.scalars(select(Notice).where(Notice.ticket_id == t.id, Notice.audience == "citizen")
                                      .order_by(Notice.id))).all()
        assert [(n.template, n.recipient) for n in rows] == [
            ("registered", "13505456680"), ("accepted", "13505456680"), ("closed", "13505456680")]
        assert t.number in rows[0].body and "020-12303" in rows[1].body and "调解成功" in rows[2].body
        ticket = await find_by_number(session, t.number)
        assert ticket.handling_due.isoformat() in rows[1].body
        assert await mark_read(session, users["th_head"]) == head_unread
    async with db.session() as session:
        assert await unread_count(session, users["th_head"]) == 0
        assert await unread_count(session, users["th_handler"]) == handler_unread


async def test_rejected_action_queues_nothing(db, users):
    t = await register(db, users["agent"], START)
    with pytest.raises(PermissionDenied):
        await act(db, t.number, "受理", {"note": "受理"}, users["sc_handler"])  # not this unit's ticket
    async with db.session() as session:
        templates = (await session.scalars(select(Notice.template).where(Notice.ticket_id == t.id))).all()
    assert list(templates) == ["registered"]


def test_notice_templates_are_checked_at_start_up(tmp_path: Path):
    good = notices.NOTICES_FILE.read_text(encoding="utf-8")
    bad = tmp_path / "notices.yaml"
    bad.write_text(good.replace("工单号{number}", "工单号{ticket_no}"), encoding="utf-8")
    with pytest.raises(ConfigError, match="ticket_no"):
        notices.load_notice_config(bad)
    bad.write_text(good.replace('"12301-GD-GZ-TH":', '"NO-SUCH-UNIT":'), encoding="utf-8")
    with pytest.raises(ConfigError, match="NO-SUCH-UNIT"):
        notices.load_notice_config(bad)
    assert notices.load_notice_config().citizen["registered"].startswith("【{hotline}】")

"""移交 (000 §3.2.1 3, 004 §6.3.5.1): an authority from the maintained list, a required note, its own
deadline, tracked until the receiving authority's result is recorded, then archivable."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from ticket_helpers import NOW, SHANGHAI, act, register

from tickets.archive import ArchiveError, archive_form
from tickets.deadlines import active_policy, handover_overdue
from tickets.models import State
from tickets.notify_models import Message, Notice
from tickets.queries import find_by_number, home_counters, tracking_log
from tickets.scheduler import run_rules
from tickets.workflow import WorkflowError, available_actions

AUTHORITY = "市场监督管理部门（12315）"


@pytest.mark.parametrize(("inputs", "field", "named"), [
    ({"authority": "随便写的单位", "remark": "x"}, "authority", "随便写的单位"),
    ({"authority": "住房和城乡建设主管部门", "remark": "x"}, "authority", "住房和城乡建设主管部门"),  # 12365's list
    ({"authority": AUTHORITY}, "remark", "移交说明"),
])
async def test_000_3_2_1_hand_over_needs_a_listed_authority_and_a_note(db, users, inputs, field, named):
    t = await register(db, users["agent"])
    with pytest.raises(WorkflowError) as err:
        await act(db, t.number, "移交", inputs, users["th_handler"])
    assert err.value.field == field and named in err.value.message


async def test_004_6_3_5_1_hand_over_is_tracked_to_its_result_then_archived(db, users):
    t = await register(db, users["agent"])  # Tuesday 10 June 2025
    t = await act(db, t.number, "移交", {"authority": AUTHORITY, "remark": "属商品质量问题，移送市场监管"},
                  users["th_handler"])
    assert t.state == State.HANDED_OVER and t.handover_authority == AUTHORITY
    assert t.handover_due == dt.date(2025, 6, 17)  # 5 working days after the decision
    assert not handover_overdue(t, dt.date(2025, 6, 17)) and handover_overdue(t, dt.date(2025, 6, 18))
    async with db.session() as session:
        stored = await find_by_number(session, t.number)
        with pytest.raises(ArchiveError) as err:
            archive_form(stored, await tracking_log(session, stored))
    assert "移交" in str(err.value)
    assert available_actions(t, users["th_handler"]) == ["移交结果", "补充凭证", "关联来电"]
    t = await act(db, t.number, "移交结果", {"result": "市场监管局已立案调查，责令商家退货"}, users["th_handler"],
                  NOW + dt.timedelta(days=9))
    assert t.handover_result == "市场监管局已立案调查，责令商家退货" and not handover_overdue(t, dt.date(2025, 6, 30))
    with pytest.raises(WorkflowError) as again:
        await act(db, t.number, "移交结果", {"result": "又一次"}, users["th_handler"])
    assert again.value.status == 409
    async with db.session() as session:
        stored = await find_by_number(session, t.number)
        log = await tracking_log(session, stored)
        form = archive_form(stored, log)
    assert [a.action for a in log] == ["移交结果", "移交", "登记"]
    assert "移送期限：2025-06-17" in log[1].remark and "移交说明：属商品质量问题" in log[1].remark
    assert dict(form.fields)["移送情况"] == f"{AUTHORITY}；处理结果：市场监管局已立案调查，责令商家退货"


async def test_004_6_3_5_1_hand_over_past_its_limit_is_reminded_once_and_counted_overdue(db, users):
    """The scheduler follows a 移交 until its result: once past the 5 working days, one reminder (message and
    the unit contact's SMS), the unit home counts it overdue; the result recorded, nothing more."""
    policy = active_policy()
    t = await register(db, users["agent"])  # Tuesday 10 June 2025: limit 17 June
    await act(db, t.number, "移交", {"authority": AUTHORITY, "remark": "移送市场监管"}, users["th_handler"])

    async def run(day: dt.date) -> tuple[list[str], int]:
        async with db.transaction() as session:
            fired = await run_rules(session, dt.datetime.combine(day, dt.time(9), SHANGHAI), policy)
            overdue = (await home_counters(session, users["th_handler"], day))["overdue"]
        return [f.rule for f in fired if f.ticket_id == t.id], overdue

    (none, before), (fired, after) = await run(dt.date(2025, 6, 17)), await run(dt.date(2025, 6, 18))
    assert none == [] and fired == ["handover_overdue"] and after == before + 1
    assert (await run(dt.date(2025, 6, 19)))[0] == []  # once
    async with db.session() as session:
        sms = (await session.scalars(select(Notice.body).where(Notice.ticket_id == t.id,
                                                               Notice.template == "handover_overdue"))).all()
        messages = (await session.scalars(select(Message.text).where(Message.ticket_id == t.id,
                                                                     Message.kind == "handover_overdue"))).all()
    assert len(sms) == 1 and "移交已超过时限（2025-06-17）" in sms[0]
    assert len(messages) == 1 and AUTHORITY in messages[0]
    await act(db, t.number, "移交结果", {"result": "已立案"}, users["th_handler"], NOW + dt.timedelta(days=9))
    fired, overdue = await run(dt.date(2025, 6, 20))
    assert fired == [] and overdue == before

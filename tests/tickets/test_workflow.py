"""The 12301 workflow (000 §3, domain.md table): every action, illegal transitions, missing inputs, review."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from ticket_helpers import NOW, act, complaint, register

from tickets.models import Evidence, ReviewStatus, State, TicketCall
from tickets.queries import find_by_number, tracking_log
from tickets.workflow import (
    ACTIONS,
    PermissionDenied,
    WorkflowError,
    can_view,
    perform_action,
    register_ticket,
)


async def test_registration_dispatches_to_the_county_of_the_case_location(db, users, units):
    ticket = await register(db, users["agent"])
    assert ticket.number.startswith("20250610") and len(ticket.number) == 13
    assert ticket.state == State.PENDING
    assert ticket.unit_id == units["12301-GD-GZ-TH"].id
    assert ticket.acceptance_due == dt.date(2025, 6, 17)  # 5 working days after Tue 10 June
    assert ticket.handling_due == dt.date(2025, 8, 9)     # 60-day countdown, from registration until accepted


async def test_registration_links_calls_and_refuses_unknown_ones(db, users):
    from cti.models import CallRecord

    call = CallRecord(call_id="1700000000.1", caller_number="13505456680", hotline="12301",
                      agent_id=users["agent"].id)
    async with db.transaction() as session:
        session.add(call)
    ticket = await register(db, users["agent"], call_ids=[call.ref])  # the public reference the pop shows
    async with db.session() as session:
        links = (await session.scalars(select(TicketCall).where(TicketCall.ticket_id == ticket.id))).all()
    assert [link.call_id for link in links] == ["1700000000.1"]
    with pytest.raises(WorkflowError) as err:
        await register(db, users["agent"], call_ids=["nope"])
    assert err.value.field == "call_ids"


@pytest.mark.parametrize(("missing", "label"), [
    ("complainant_phone", "诉求方电话"), ("description", "诉求内容"), ("respondent_name", "被诉方"),
    ("complaint_object", "投诉对象"), ("province", "案件归属地（省）"),
])
async def test_registration_names_the_missing_field(db, users, missing, label):
    data = complaint()
    data.pop(missing)
    async with db.transaction() as session:
        with pytest.raises(WorkflowError) as err:
            await register_ticket(session, data, users["agent"], NOW)
    assert err.value.field == missing
    assert label in err.value.message


async def test_only_call_centre_staff_register(db, users):
    with pytest.raises(PermissionDenied):
        await register(db, users["gd_handler"])


async def test_consultation_answered_at_once_is_closed_at_the_call_centre(db, users, units):
    async with db.transaction() as session:
        ticket = await register_ticket(session, {
            "kind": "consult", "hotline": "12365", "complainant_phone": "13800000001",
            "description": "电动自行车新国标什么时候实施？", "answer": "请参见知识库条目 GB 17761-2024。",
        }, users["agent"], NOW)
    assert ticket.state == State.ANSWERED and ticket.closed_at is not None
    assert ticket.unit_id == units["callcentre"].id
    assert ticket.risk_level is None


async def test_accept_then_mediation_success_waits_for_the_unit_head(db, users):
    t = await register(db, users["agent"])
    t = await act(db, t.number, "受理", {"note": "已联系诉求方"}, users["th_handler"])
    assert t.state == State.ACCEPTED and t.accepted_at is not None
    assert t.handling_due == dt.date(2025, 8, 9)  # 12301: still 60 days from registration (000 §3.2)
    t = await act(db, t.number, "调解成功", {"amount": "1500", "closing_date": "2025-06-10", "remark": "退还购物款"},
                  users["th_handler"])
    assert t.state == State.PENDING_REVIEW and t.review_outcome == State.MEDIATED
    assert t.closed_at is None
    with pytest.raises(PermissionDenied):
        await act(db, t.number, "审核通过", {}, users["th_handler"])
    t = await act(db, t.number, "审核通过", {"remark": "同意结案"}, users["th_head"])
    assert t.state == State.MEDIATED and t.review_status == ReviewStatus.APPROVED and t.closed_at is not None


async def test_unit_head_sends_a_closing_back(db, users):
    t = await register(db, users["agent"])
    await act(db, t.number, "受理", {"note": "受理"}, users["th_handler"])
    await act(db, t.number, "调解失败", {"closing_date": "2025-06-10", "remark": "双方未达成一致"}, users["th_handler"])
    t = await act(db, t.number, "审核退回", {"reason": "请补充调解记录"}, users["th_head"])
    assert t.state == State.ACCEPTED and t.review_status == ReviewStatus.SENT_BACK


@pytest.mark.parametrize(("action", "inputs", "outcome"), [
    ("自行和解", {"amount": "800", "closing_date": "2025-06-10", "remark": "双方自行和解"}, State.SETTLED),
    ("调解失败", {"closing_date": "2025-06-10", "remark": "未达成一致"}, State.MEDIATION_FAILED),
    ("启用质保金赔偿", {"amount": "5000", "closing_date": "2025-06-10", "facts": "旅行社已解散"}, State.DEPOSIT_PAID),
])
async def test_each_closing_outcome_after_review(db, users, action, inputs, outcome):
    t = await register(db, users["agent"])
    await act(db, t.number, "受理", {"note": "受理"}, users["th_handler"])
    await act(db, t.number, action, inputs, users["th_handler"])
    t = await act(db, t.number, "审核通过", {}, users["th_head"])
    assert t.state == outcome


@pytest.mark.parametrize(("action", "inputs", "field"), [
    ("受理", {}, "note"),
    ("转办", {"remark": "转"}, "target_unit_id"),
    ("移交", {}, "authority"),
    ("退回", {"reason": " "}, "reason"),
    ("不予受理", {"remark": "x"}, "clauses"),
    ("不予受理", {"clauses": ["随便写的"], "remark": "x"}, "clauses"),
])
async def test_pending_actions_name_the_missing_input(db, users, action, inputs, field):
    t = await register(db, users["agent"])
    with pytest.raises(WorkflowError) as err:
        await act(db, t.number, action, inputs, users["th_handler"])
    assert err.value.field == field


@pytest.mark.parametrize(("action", "inputs", "field"), [
    ("自行和解", {"closing_date": "2025-06-10", "remark": "x"}, "amount"),
    ("调解成功", {"amount": "abc", "closing_date": "2025-06-10", "remark": "x"}, "amount"),
    ("调解成功", {"amount": "-1", "closing_date": "2025-06-10", "remark": "x"}, "amount"),
    ("调解失败", {"closing_date": "18/06/2025", "remark": "x"}, "closing_date"),
    ("启用质保金赔偿", {"amount": "1", "closing_date": "2025-06-10"}, "facts"),
])
async def test_closing_actions_validate_inputs(db, users, action, inputs, field):
    t = await register(db, users["agent"])
    await act(db, t.number, "受理", {"note": "受理"}, users["th_handler"])
    with pytest.raises(WorkflowError) as err:
        await act(db, t.number, action, inputs, users["th_handler"])
    assert err.value.field == field


@pytest.mark.parametrize("action", ["自行和解", "调解成功", "调解失败", "启用质保金赔偿", "审核通过", "转办退回", "重新派单"])
async def test_illegal_transitions_from_pending_are_refused(db, users, action):
    t = await register(db, users["agent"])
    with pytest.raises(WorkflowError) as err:
        await act(db, t.number, action, {}, users["th_handler"])
    assert "不能执行" in err.value.message and err.value.status == 409


async def test_accepted_ticket_cannot_be_transferred_or_accepted_again(db, users, units):
    t = await register(db, users["agent"])
    await act(db, t.number, "受理", {"note": "受理"}, users["th_handler"])
    for action in ("受理", "转办", "退回", "不予受理", "移交"):
        with pytest.raises(WorkflowError):
            await act(db, t.number, action, {"note": "x", "reason": "x"}, users["th_handler"])


async def test_closed_ticket_accepts_evidence_but_no_supervision(db, users):
    t = await register(db, users["agent"])
    await act(db, t.number, "受理", {"note": "受理"}, users["th_handler"])
    await act(db, t.number, "调解失败", {"closing_date": "2025-06-10", "remark": "x"}, users["th_handler"])
    t = await act(db, t.number, "审核通过", {}, users["th_head"])
    with pytest.raises(WorkflowError):
        await act(db, t.number, "督办", {"note": "加快"}, users["gd_head"])
    async with db.transaction() as session:
        session.add(ev := Evidence(ticket_id=t.id, filename="发票.png", content_type="image/png", size_bytes=10,
                                   sha256="0" * 64, storage_path="x.png"))
    t = await act(db, t.number, "补充凭证", {"evidence_ids": [ev.id]}, users["th_handler"])
    assert t.state == State.MEDIATION_FAILED


async def test_transfer_down_and_transfer_back_up(db, users, units):
    # Dispatched to the province; the province transfers to Guangzhou, Guangzhou to Tianhe.
    t = await register(db, users["agent"], unit_id=units["12301-GD"].id)
    assert t.state == State.PENDING
    t = await act(db, t.number, "转办", {"target_unit_id": units["12301-GD-GZ"].id, "remark": "转广州"},
                  users["gd_handler"])
    assert t.state == State.PENDING_TRANSFERRED and t.unit_id == units["12301-GD-GZ"].id
    t = await act(db, t.number, "转办", {"target_unit_id": units["12301-GD-GZ-TH"].id, "remark": "转天河"},
                  users["gz_handler"])
    t = await act(db, t.number, "转办退回", {"reason": "不属本区管辖"}, users["th_handler"])
    assert t.unit_id == units["12301-GD-GZ"].id and t.state == State.PENDING_TRANSFERRED
    t = await act(db, t.number, "转办退回", {"reason": "应由省里处理"}, users["gz_handler"])
    assert t.unit_id == units["12301-GD"].id and t.state == State.PENDING and t.transfer_chain == []
    with pytest.raises(WorkflowError):  # 转办退回 only from 待受理(转)
        await act(db, t.number, "转办退回", {"reason": "x"}, users["gd_handler"])


@pytest.mark.parametrize("target", ["12301-NAT", "12301-GD", "12301-SC-CD", "12365-ZJ-HZ"])
async def test_transfer_only_goes_down_the_hierarchy(db, users, units, target):
    t = await register(db, users["agent"], unit_id=units["12301-GD"].id)
    with pytest.raises(WorkflowError) as err:
        await act(db, t.number, "转办", {"target_unit_id": units[target].id, "remark": "x"}, users["gd_handler"])
    assert err.value.field == "target_unit_id"


async def test_returned_ticket_goes_back_to_the_call_centre_for_redispatch(db, users, units):
    t = await register(db, users["agent"])
    t = await act(db, t.number, "退回", {"reason": "信息不全"}, users["th_handler"])
    assert t.state == State.RETURNED and t.unit_id == units["callcentre"].id
    assert not can_view(users["th_handler"], t) and can_view(users["agent"], t)
    t = await act(db, t.number, "重新派单", {"target_unit_id": units["12301-GD-GZ-YX"].id}, users["agent"])
    assert t.state == State.PENDING and t.unit_id == units["12301-GD-GZ-YX"].id
    with pytest.raises(WorkflowError):
        await act(db, t.number, "退回", {"reason": "x"}, users["agent"])  # not the call centre's ticket now


async def test_hand_over_and_reject(db, users):
    a = await register(db, users["agent"])
    a = await act(db, a.number, "移交", {"authority": "市场监督管理部门（12315）", "remark": "属商品质量纠纷"}, users["th_handler"])
    assert a.state == State.HANDED_OVER and not a.is_open
    b = await register(db, users["agent"])
    clause = "超过旅游合同结束之日90天的"
    b = await act(db, b.number, "不予受理", {"clauses": [clause], "remark": "行程结束已四个月"}, users["th_handler"])
    assert b.state == State.PENDING_REVIEW
    b = await act(db, b.number, "审核通过", {}, users["th_head"])
    assert b.state == State.REJECTED


async def test_supervision_keeps_state_and_flags(db, users):
    t = await register(db, users["agent"])
    with pytest.raises(PermissionDenied):
        await act(db, t.number, "督办", {"note": "x"}, users["th_handler"])
    with pytest.raises(PermissionDenied):  # another province's head cannot
        await act(db, t.number, "督办", {"note": "x"}, users["xh_head"])
    t = await act(db, t.number, "督办", {"note": "请三日内反馈"}, users["gd_head"])
    assert t.supervised and t.state == State.PENDING and t.supervision_note == "请三日内反馈"


async def test_report_concludes_after_review(db, users, units):
    t = await register(db, users["agent"], kind="report", hotline="12365", complaint_object="生产企业",
                       event_category="假冒伪劣", province="浙江省", city="杭州市", county="西湖区")
    assert t.unit_id == units["12365-ZJ-HZ-XH"].id
    await act(db, t.number, "受理", {"note": "受理"}, users["xh_handler"])
    with pytest.raises(WorkflowError):  # mediation is for complaints
        await act(db, t.number, "调解成功", {"amount": "1", "closing_date": "2025-06-10", "remark": "x"},
                  users["xh_handler"])
    t = await act(db, t.number, "办结", {"result": "已立案查处", "closing_date": "2025-06-10"}, users["xh_handler"])
    t = await act(db, t.number, "审核通过", {}, users["xh_head"])
    assert t.state == State.CONCLUDED


async def test_tracking_log_is_newest_first_with_operator_state_and_remark(db, users, units):
    t = await register(db, users["agent"], unit_id=units["12301-GD"].id)
    await act(db, t.number, "转办", {"target_unit_id": units["12301-GD-GZ"].id, "remark": "转给广州"},
              users["gd_handler"], NOW + dt.timedelta(hours=1))
    await act(db, t.number, "受理", {"note": "已受理"}, users["gz_handler"], NOW + dt.timedelta(hours=2))
    async with db.session() as session:
        ticket = await find_by_number(session, t.number)
        log = await tracking_log(session, ticket)
    assert [a.action for a in log] == ["受理", "转办", "登记"]
    assert [a.state for a in log] == [State.ACCEPTED, State.PENDING_TRANSFERRED, State.PENDING]
    assert log[1].operator_name == "广东省经办人" and log[1].operator_unit == "广东省文化和旅游厅质监所"
    assert "转办备注：转给广州" in log[1].remark and "转办地：广州市文化广电旅游局质监所" in log[1].remark
    assert log[0].at > log[1].at > log[2].at


async def test_failed_action_leaves_nothing_behind(db, users, units):
    t = await register(db, users["agent"], unit_id=units["12301-GD"].id)
    with pytest.raises(WorkflowError):
        async with db.transaction() as session:
            ticket = await find_by_number(session, t.number)
            await perform_action(session, ticket, "转办", {"target_unit_id": units["12365-ZJ"].id, "remark": "x"},
                                 users["gd_handler"])
    async with db.session() as session:
        ticket = await find_by_number(session, t.number)
        assert ticket.unit_id == units["12301-GD"].id
        assert [a.action for a in await tracking_log(session, ticket)] == ["登记"]


def test_every_action_of_the_manual_is_defined():
    manual = {"受理", "转办", "转办退回", "移交", "退回", "不予受理", "自行和解", "调解成功", "调解失败",
              "启用质保金赔偿", "督办", "补充凭证"}
    assert manual <= set(ACTIONS)

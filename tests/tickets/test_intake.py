"""Intake beyond the call centre's calls (issue 15 item 7): units register visits, letters and calls they
take (001 §1.1 1) (1), 004 §6.1.2); other platforms' transfers carry their reply deadline (001 §1.1 1) (2),
§6.2); a returned incomplete ticket is amended by the centre, every change in the tracking log."""

from __future__ import annotations

import datetime as dt

import pytest
from ticket_helpers import NOW, act, register

from tickets.models import Source, State
from tickets.queries import find_by_number, tracking_log
from tickets.workflow import PermissionDenied, WorkflowError


async def test_001_1_1_a_unit_registers_a_walk_in_complaint_and_keeps_it(db, users, units):
    t = await register(db, users["gz_handler"], source="walk_in")
    assert t.source == Source.WALK_IN and t.state == State.PENDING
    assert t.unit_id == units["12301-GD-GZ"].id and t.centre_unit_id == units["callcentre"].id
    assert t.acceptance_due == dt.date(2025, 6, 17)
    letter = await register(db, users["gz_handler"], source="letter", unit_id=units["12301-GD-GZ-TH"].id)
    assert letter.unit_id == units["12301-GD-GZ-TH"].id
    async with db.session() as session:
        log = await tracking_log(session, await find_by_number(session, t.number))
    assert log[0].operator_name == "广州市经办人" and "来源：来访" in log[0].remark
    await act(db, t.number, "受理", {"note": "来访人当面陈述"}, users["gz_handler"])


@pytest.mark.parametrize(("user", "overrides", "field"), [
    ("gz_handler", {}, None),                                          # a unit registers no hotline call
    ("gz_handler", {"source": "platform", "external_platform": "12345", "external_reply_due": "2025-06-20"}, None),
    ("gz_handler", {"source": "walk_in", "unit_id": "12301-GD-SZ"}, "unit_id"),  # not below 广州
    ("gz_handler", {"source": "walk_in", "hotline": "12365", "complaint_object": "生产企业",
                    "event_category": "产品质量问题"}, "hotline"),
    ("agent", {"source": "unit_phone"}, "source"),
    ("agent", {"source": "platform", "external_platform": "12345"}, "external_reply_due"),
    ("agent", {"source": "platform", "external_reply_due": "2025-06-20"}, "external_platform"),
    ("agent", {"source": "platform", "external_platform": "12345", "external_reply_due": "2025-06-01"},
     "external_reply_due"),
    ("agent", {"external_platform": "12345"}, "external_platform"),
])
async def test_001_1_1_who_registers_what(db, users, units, user, overrides, field):
    overrides = dict(overrides)  # the parameters are shared by both databases' runs
    if overrides.get("unit_id"):
        overrides["unit_id"] = units[overrides["unit_id"]].id
    error = PermissionDenied if field is None else WorkflowError
    with pytest.raises(error) as err:
        await register(db, users[user], **overrides)
    if field:
        assert err.value.field == field and err.value.status == 400


async def test_001_6_2_a_12345_transfer_records_its_reply_deadline(db, users):
    t = await register(db, users["agent"], source="platform", external_platform="12345", external_ref="HZ2025060012",
                       external_reply_due="2025-06-20")
    assert (t.source, t.external_platform, t.external_ref) == (Source.PLATFORM, "12345", "HZ2025060012")
    assert t.external_reply_due == dt.date(2025, 6, 20)
    async with db.session() as session:
        log = await tracking_log(session, await find_by_number(session, t.number))
    assert "转来平台：12345" in log[0].remark and "原平台答复期限：2025-06-20" in log[0].remark


async def test_b_3_1_a_returned_incomplete_ticket_is_amended_by_the_centre(db, users, units):
    t = await register(db, users["agent"], complainant_org=None)
    t = await act(db, t.number, "退回", {"reason": "材料不全：缺被诉方电话"}, users["th_handler"])
    with pytest.raises(PermissionDenied):
        await act(db, t.number, "补正", {"respondent_phone": "020-1"}, users["th_handler"])
    with pytest.raises(WorkflowError) as err:
        await act(db, t.number, "补正", {"respondent_name": t.respondent_name}, users["agent"])
    assert "至少一项" in err.value.message
    with pytest.raises(WorkflowError) as err:
        await act(db, t.number, "补正", {"complaint_object": "生产企业"}, users["agent"])  # a 12365 object
    assert err.value.field == "complaint_object"
    t = await act(db, t.number, "补正", {"respondent_phone": "020-38886666", "amount": "3500",
                                        "description": "跟团游被强制购物，已补充合同。"}, users["agent"])
    assert t.respondent_phone == "020-38886666" and str(t.amount) == "3500.00" and t.state == State.RETURNED
    t = await act(db, t.number, "重新派单", {"target_unit_id": units["12301-GD-GZ-TH"].id}, users["agent"],
                  NOW + dt.timedelta(hours=2))
    async with db.session() as session:
        log = await tracking_log(session, await find_by_number(session, t.number))
    amend = next(a for a in log if a.action == "补正")
    assert "被诉方电话由「」改为「020-38886666」" in amend.remark and "涉案金额由「3200.00」改为「3500.00」" in amend.remark
    assert amend.inputs["changes"]["respondent_phone"] == [None, "020-38886666"]
    assert [a.action for a in log] == ["重新派单", "补正", "退回", "登记"]

"""Unit boundaries, list filters, home counters, look-ups, the IVR read-back, dispatch suggestion."""

from __future__ import annotations

import datetime as dt

import pytest
from ticket_helpers import NOW, act, register

from tickets import dispatch
from tickets.models import State
from tickets.queries import (
    TicketFilter,
    closing_rates,
    find_by_number,
    home_counters,
    list_tickets,
    open_tickets_for_phone,
    status_readback,
    tickets_for_phone,
)
from tickets.workflow import WorkflowError, can_view

TODAY = NOW.date()


async def _spread(db, users, units):
    """One ticket at each of several units of both hotlines."""
    made = {}
    for code, extra in {
        "12301-GD-GZ-TH": {},
        "12301-GD-GZ": {"county": None},
        "12301-SC-CD-WH": {"province": "四川省", "city": "成都市", "county": "武侯区", "complainant_phone": "13900000002"},
        "12365-ZJ-HZ-XH": {"hotline": "12365", "complaint_object": "销售企业", "event_category": "产品质量问题",
                           "province": "浙江省", "city": "杭州市", "county": "西湖区",
                           "complainant_phone": "13900000003"},
    }.items():
        made[code] = await register(db, users["agent"], unit_id=units[code].id, **extra)
    return made


async def _visible(db, user) -> set[str]:
    async with db.session() as session:
        page = await list_tickets(session, user, TicketFilter(), TODAY, page_size=200)
    return {t.number for t in page.items}


@pytest.mark.parametrize(("username", "expected"), [
    ("gd_handler", {"12301-GD-GZ-TH", "12301-GD-GZ"}),
    ("gz_handler", {"12301-GD-GZ-TH", "12301-GD-GZ"}),
    ("th_handler", {"12301-GD-GZ-TH"}),
    ("sc_handler", {"12301-SC-CD-WH"}),
    ("nat12301", {"12301-GD-GZ-TH", "12301-GD-GZ", "12301-SC-CD-WH"}),
    ("zj_handler", {"12365-ZJ-HZ-XH"}),
    ("agent", {"12301-GD-GZ-TH", "12301-GD-GZ", "12301-SC-CD-WH", "12365-ZJ-HZ-XH"}),
    ("admin", {"12301-GD-GZ-TH", "12301-GD-GZ", "12301-SC-CD-WH", "12365-ZJ-HZ-XH"}),
])
async def test_a_unit_sees_its_own_tickets_and_those_below_nothing_else(db, users, units, username, expected):
    made = await _spread(db, users, units)
    want = {made[c].number for c in expected}
    assert await _visible(db, users[username]) == want
    for code, ticket in made.items():
        assert can_view(users[username], ticket) == (code in expected)


async def test_a_unit_cannot_act_on_a_ticket_below_it_held_by_another_unit(db, users, units):
    made = await _spread(db, users, units)
    with pytest.raises(WorkflowError):
        await act(db, made["12301-GD-GZ-TH"].number, "受理", {"note": "x"}, users["gd_handler"])
    with pytest.raises(WorkflowError):
        await act(db, made["12301-SC-CD-WH"].number, "受理", {"note": "x"}, users["gd_handler"])


async def test_filters_combine_and_paginate(db, users, units):
    await _spread(db, users, units)
    for i in range(5):
        await register(db, users["agent"], complainant_phone="13700000000", event_category="不合理低价",
                       now=NOW + dt.timedelta(minutes=i))
    admin = users["admin"]
    async with db.session() as session:
        by_phone = await list_tickets(session, admin, TicketFilter(phone="13700000000"), TODAY, page_size=2)
        assert by_phone.total == 5 and len(by_phone.items) == 2
        last = await list_tickets(session, admin, TicketFilter(phone="13700000000"), TODAY, page=3, page_size=2)
        assert len(last.items) == 1
        assert by_phone.items[0].created_at > by_phone.items[1].created_at  # newest first
        combined = TicketFilter(province="广东省", city="广州市", event_category="不合理低价",
                                complaint_object="旅行社及导游领队", state="pending")
        assert (await list_tickets(session, admin, combined, TODAY)).total == 5
        assert (await list_tickets(session, admin, TicketFilter(province="浙江省"), TODAY)).total == 1
        one = by_phone.items[0].number
        assert [t.number for t in (await list_tickets(session, admin, TicketFilter(number=one), TODAY)).items] == [one]


async def test_days_to_expiry_buckets(db, users, units):
    # Countdown 60 days from registration: registered 5, 40 and 55 days before "today".
    for days_ago in (5, 40, 55):
        await register(db, users["agent"], now=NOW - dt.timedelta(days=days_ago))
    async with db.session() as session:
        counts = {b: (await list_tickets(session, users["admin"], TicketFilter(expiry=b), TODAY)).total
                  for b in ("0-9", "10-29", "30-59")}
    assert counts == {"0-9": 1, "10-29": 1, "30-59": 1}


async def test_expiry_pages_are_newest_first(db, users, units):
    made = [await register(db, users["agent"], now=NOW - dt.timedelta(days=55, hours=h)) for h in (3, 2, 1)]
    async with db.session() as session:
        first = await list_tickets(session, users["admin"], TicketFilter(expiry="0-9"), TODAY, page_size=2)
        second = await list_tickets(session, users["admin"], TicketFilter(expiry="0-9"), TODAY, page=2, page_size=2)
    assert first.total == 3
    assert [t.number for t in first.items + second.items] == [t.number for t in reversed(made)]


async def test_supervised_filter_and_home_counters(db, users, units):
    made = await _spread(db, users, units)
    await act(db, made["12301-GD-GZ-TH"].number, "督办", {"note": "加快"}, users["gd_head"])
    old = await register(db, users["agent"], now=NOW - dt.timedelta(days=55))  # 5 days left
    await act(db, old.number, "受理", {"note": "受理"}, users["th_handler"], now=NOW - dt.timedelta(days=52))
    await act(db, old.number, "调解成功", {"amount": "10", "closing_date": "2025-06-09", "remark": "x"},
              users["th_handler"])
    await act(db, old.number, "审核通过", {}, users["th_head"])
    other = await register(db, users["agent"])
    await act(db, other.number, "受理", {"note": "受理"}, users["th_handler"])
    async with db.session() as session:
        supervised = await list_tickets(session, users["gd_head"], TicketFilter(supervised=True), TODAY)
        assert [t.number for t in supervised.items] == [made["12301-GD-GZ-TH"].number]
        counters = await home_counters(session, users["th_handler"], TODAY)
        rates = await closing_rates(session, users["gd_head"])
    assert counters["per_state"]["pending"] == 1 and counters["per_state"]["mediated"] == 1
    assert counters["per_state"]["accepted"] == 1 and counters["per_state_labels"]["受理中"] == 1
    assert counters["supervised"] == 1
    assert counters["expiring_10_days"] == 0  # the 5-days-left one is closed
    assert (counters["accepted_total"], counters["closed_total"], counters["closing_rate"]) == (2, 1, 0.5)
    assert rates == [{"user_id": users["th_handler"].id, "name": "天河区经办人", "accepted_total": 2,
                      "closed_total": 1, "closing_rate": 0.5}]


async def test_lookups_and_ivr_status_readback(db, users, units):
    t = await register(db, users["agent"])
    async with db.session() as session:
        found = await find_by_number(session, t.number)
        assert await find_by_number(session, "2099010110001") is None
        assert [x.number for x in await open_tickets_for_phone(session, "13505456680")] == [t.number]
        assert [x.number for x in await tickets_for_phone(session, "13505456680")] == [t.number]
    sentence = status_readback(found, TODAY + dt.timedelta(days=10))
    digits = " ".join(t.number)
    assert sentence == (f"您的投诉工单 {digits}，当前状态为待受理，由天河区文化广电旅游体育局办理，"
                        "距办理期限还有 50 天。")
    assert "已超过办理期限 2 天" in status_readback(found, TODAY + dt.timedelta(days=62))
    await act(db, t.number, "移交", {"authority": "市场监督管理部门（12315）", "remark": "属商品质量纠纷"}, users["th_handler"])
    async with db.session() as session:
        assert await open_tickets_for_phone(session, "13505456680") == []
        moved = await find_by_number(session, t.number)
    assert "已移交" in status_readback(moved, TODAY)


@pytest.mark.parametrize(("hotline", "location", "obj", "code"), [
    ("12301", ("广东省", "广州市", "天河区"), "旅行社及导游领队", "12301-GD-GZ-TH"),
    ("12301", ("广东省", "广州市", "海珠区"), "旅行社及导游领队", "12301-GD-GZ"),
    ("12301", ("广东省", "深圳市", None), "景区", "12301-GD-SZ"),
    ("12301", ("广东省", "广州市", "天河区"), "在线旅游企业", "12301-GD"),
    ("12301", ("西藏自治区", "拉萨市", None), "景区", "12301-NAT"),
    ("12365", ("浙江省", "杭州市", "西湖区"), "特种设备使用单位", "12365-ZJ-HZ"),
    ("12365", ("江苏省", "南京市", "玄武区"), "生产企业", "12365-JS-NJ-XW"),
])
async def test_dispatch_suggestion_from_location_and_category(db, units, hotline, location, obj, code):
    async with db.session() as session:
        unit = await dispatch.suggest_unit(session, hotline, *location, obj)
    assert unit.code == code


async def test_seeding_units_twice_changes_nothing(db, units):
    async with db.transaction() as session:
        again = await dispatch.seed_units(session)
    assert {c: u.path for c, u in again.items()} == {c: u.path for c, u in units.items()}
    assert units["12301-GD-GZ-TH"].path.startswith(units["12301-GD"].path)


def test_invalid_filter_values_name_the_parameter():
    with pytest.raises(WorkflowError) as err:
        TicketFilter.from_query({"expiry": "60-90"})
    assert err.value.field == "expiry"
    with pytest.raises(WorkflowError) as err:
        TicketFilter.from_query({"state": "lost"})
    assert err.value.field == "state"
    assert TicketFilter.from_query({"supervised": "true", "phone": ""}) == TicketFilter(supervised=True)
    assert State.PENDING.value == "pending"

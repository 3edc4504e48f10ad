"""Rules per hotline, closing review and the countdown (issue 15 items 4 and 5), named after the seed clauses."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
import yaml
from ticket_helpers import NOW, act, register

from core.settings import ConfigError
from tickets import rules
from tickets.models import ReviewStatus, State
from tickets.queries import tracking_log
from tickets.rules import RULES_FILE, load_rules
from tickets.workflow import SELF_REVIEW, PermissionDenied, WorkflowError, available_actions

QUALITY = {"hotline": "12365", "complaint_object": "生产企业", "event_category": "产品质量问题",
           "province": "浙江省", "city": "杭州市", "county": "西湖区", "respondent_name": "某电器厂"}


async def test_004_6_3_5_2_2_a_12365_complaint_refuses_tourism_only_outcomes_and_clauses(db, users):
    t = await register(db, users["agent"], **QUALITY)
    tourism_clause = "超过旅游合同结束之日90天的"
    with pytest.raises(WorkflowError) as err:
        await act(db, t.number, "不予受理", {"clauses": [tourism_clause], "remark": "x"}, users["xh_handler"])
    assert err.value.field == "clauses" and tourism_clause in err.value.message and "12365" in err.value.message
    t = await act(db, t.number, "受理", {"note": "已联系"}, users["xh_handler"])
    assert "启用质保金赔偿" not in available_actions(t, users["xh_handler"])
    assert "自行和解" not in available_actions(t, users["xh_handler"])
    assert "调解成功" in available_actions(t, users["xh_handler"])
    for action, inputs in (("启用质保金赔偿", {"amount": "5000", "closing_date": "2025-06-10", "facts": "x"}),
                           ("自行和解", {"amount": "1", "closing_date": "2025-06-10", "remark": "x"})):
        with pytest.raises(WorkflowError) as err:
            await act(db, t.number, action, inputs, users["xh_handler"])
        assert err.value.field == "action" and f"「{action}」" in err.value.message and "12365" in err.value.message
    t = await act(db, t.number, "调解成功", {"amount": "300", "closing_date": "2025-06-10", "remark": "退货"},
                  users["xh_handler"])
    assert t.state == State.PENDING_REVIEW


async def test_004_6_3_2_2_a_12365_case_outside_the_remit_is_rejected_with_its_own_clause(db, users):
    t = await register(db, users["agent"], **QUALITY)
    clause = rules.profile("12365").rejection_clauses[0]
    t = await act(db, t.number, "不予受理", {"clauses": [clause], "remark": "属合同纠纷"}, users["xh_handler"])
    t = await act(db, t.number, "审核通过", {}, users["xh_head"])
    assert t.state == State.REJECTED
    # …and a 12301 case cannot use the 12365 clause.
    tourism = await register(db, users["agent"])
    with pytest.raises(WorkflowError) as err:
        await act(db, tourism.number, "不予受理", {"clauses": [clause], "remark": "x"}, users["th_handler"])
    assert err.value.field == "clauses"


def _write(tmp_path: Path, change) -> Path:
    raw = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    change(raw)
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize(("change", "named"), [
    (lambda r: r["profiles"]["quality"]["closing_actions"].append("赔钱了事"), "赔钱了事"),
    (lambda r: r["profiles"]["quality"].update(review_levels=0), "review_levels"),
    (lambda r: r["profiles"]["tourism"].pop("authorities"), "authorities"),
    (lambda r: r["profiles"]["tourism"].update(rejection_clauses=[]), "rejection_clauses"),
    (lambda r: r["hotlines"].update({"12365": "nope"}), "nope"),
    (lambda r: r["hotlines"].pop("12365"), "12365"),
    (lambda r: r["profiles"]["quality"]["handover"].update(unit="fortnights"), "handover.unit"),
])
def test_rule_profiles_are_validated_at_start_up(tmp_path, change, named):
    path = _write(tmp_path, change)
    with pytest.raises(ConfigError) as err:
        load_rules(path, hotlines=("12301", "12365"))
    assert named in str(err.value) and str(path) in str(err.value)


def test_the_shipped_profiles_load():
    loaded = load_rules(hotlines=("12301", "12365"))
    assert "启用质保金赔偿" in loaded.for_hotline("12301").closing_actions
    assert "启用质保金赔偿" not in loaded.for_hotline("12365").closing_actions


async def test_001_6_3_nobody_approves_their_own_closing_proposal(db, users):
    t = await register(db, users["agent"])
    await act(db, t.number, "受理", {"note": "受理"}, users["th_head"])
    t = await act(db, t.number, "调解失败", {"closing_date": "2025-06-10", "remark": "未达成一致"}, users["th_head"])
    assert "审核通过" not in available_actions(t, users["th_head"])
    with pytest.raises(PermissionDenied) as err:
        await act(db, t.number, "审核通过", {}, users["th_head"])
    assert err.value.message == SELF_REVIEW
    with pytest.raises(PermissionDenied):  # withdrawing by "sending back" one's own proposal is review too
        await act(db, t.number, "审核退回", {"reason": "x"}, users["th_head"])
    with pytest.raises(PermissionDenied):  # the admin who proposed is no exception
        t2 = await register(db, users["agent"])
        await act(db, t2.number, "受理", {"note": "受理"}, users["admin"])
        await act(db, t2.number, "调解失败", {"closing_date": "2025-06-10", "remark": "x"}, users["admin"])
        await act(db, t2.number, "审核通过", {}, users["admin"])


async def test_001_6_3_closing_is_reviewed_level_by_level(db, users, monkeypatch):
    shipped = rules.profile
    monkeypatch.setattr(rules, "profile", lambda hotline: dataclasses.replace(shipped(hotline), review_levels=2))
    t = await register(db, users["agent"])
    await act(db, t.number, "受理", {"note": "受理"}, users["th_handler"])
    t = await act(db, t.number, "调解成功", {"amount": "10", "closing_date": "2025-06-10", "remark": "x"},
                  users["th_handler"])
    assert (t.review_level, t.review_levels) == (0, 2)
    with pytest.raises(PermissionDenied):  # level 1 is the handling unit's own head, not the one above
        await act(db, t.number, "审核通过", {}, users["gz_head"])
    t = await act(db, t.number, "审核通过", {"remark": "同意"}, users["th_head"])
    assert t.state == State.PENDING_REVIEW and t.review_level == 1 and t.closed_at is None
    with pytest.raises(PermissionDenied):  # level 2 is the head of the unit above (广州市)
        await act(db, t.number, "审核通过", {}, users["th_head"])
    t = await act(db, t.number, "审核通过", {"remark": "同意结案"}, users["gz_head"])
    assert t.state == State.MEDIATED and t.review_status == ReviewStatus.APPROVED and t.closed_at is not None
    async with db.session() as session:
        remarks = [a.remark for a in await tracking_log(session, t) if a.action == "审核通过"]
    assert any("第 1 级，共 2 级" in r for r in remarks) and any("第 2 级，共 2 级" in r for r in remarks)


async def test_001_6_3_the_default_is_one_level_above_the_handler(db, users):
    t = await register(db, users["agent"], **QUALITY)
    await act(db, t.number, "受理", {"note": "受理"}, users["xh_handler"])
    t = await act(db, t.number, "调解失败", {"closing_date": "2025-06-10", "remark": "x"}, users["xh_handler"])
    assert t.review_levels == 1
    assert await act(db, t.number, "审核通过", {}, users["xh_head"]) is not None


@pytest.mark.parametrize("closing_date", ["2020-01-01", "2099-01-01", "2025-06-09", "2025-06-12"])
async def test_closing_date_lies_between_registration_and_today(db, users, closing_date):
    t = await register(db, users["agent"])  # registered 2025-06-10
    await act(db, t.number, "受理", {"note": "受理"}, users["th_handler"])
    with pytest.raises(WorkflowError) as err:
        await act(db, t.number, "调解失败", {"closing_date": closing_date, "remark": "x"}, users["th_handler"],
                  NOW + dt.timedelta(days=1))  # today is 2025-06-11
    assert err.value.field == "closing_date" and "2025-06-10" in err.value.message and "2025-06-11" in err.value.message
    t = await act(db, t.number, "调解失败", {"closing_date": "2025-06-11", "remark": "x"}, users["th_handler"],
                  NOW + dt.timedelta(days=1))
    assert t.state == State.PENDING_REVIEW


async def test_000_3_2_the_60_day_countdown_runs_from_registration_and_acceptance_does_not_restart_it(db, users):
    t = await register(db, users["agent"])
    assert t.handling_due == dt.date(2025, 8, 9)
    t = await act(db, t.number, "受理", {"note": "逾期受理"}, users["th_handler"], NOW + dt.timedelta(days=56))
    assert t.handling_due == dt.date(2025, 8, 9)  # 4 days left, not a fresh 60


async def test_004_6_3_5_2_1_a_12365_complaint_has_60_days_from_acceptance(db, users):
    t = await register(db, users["agent"], **QUALITY)
    t = await act(db, t.number, "受理", {"note": "受理"}, users["xh_handler"], NOW + dt.timedelta(days=3))
    assert t.handling_due == dt.date(2025, 6, 13) + dt.timedelta(days=60)


def test_001_s6_3_review_levels_from_the_configured_rules_file(tmp_path: Path):
    """``[tickets] rules_file`` (chosen by check_rules at the desk's start) replaces config/rules.yaml; without
    it the shipped profiles apply again, and a broken file stops the start-up naming the key."""
    raw = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    raw["profiles"]["tourism"]["review_levels"] = 3
    chosen = tmp_path / "rules.yaml"
    chosen.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    try:
        rules.check_rules(str(chosen))
        assert rules.profile("12301").review_levels == 3 and rules.profile("12365").review_levels == 1
        raw["profiles"]["tourism"]["review_levels"] = 9
        chosen.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
        with pytest.raises(ConfigError, match="review_levels"):
            rules.check_rules(chosen)
    finally:
        rules.check_rules(None)
    assert rules.profile("12301").review_levels == 1

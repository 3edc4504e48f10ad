"""Ticket numbers under concurrency; risk grading rules, override and alerts."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from ticket_helpers import NOW, SHANGHAI, act, register

from core.settings import ConfigError
from tickets.risk import RiskFacts, active_rules, alert_if_needed, grade, load_rules
from tickets.workflow import WorkflowError


async def test_many_agents_registering_at_the_same_moment_get_unique_consecutive_numbers(db, users):
    n = 40
    tickets = await asyncio.gather(*(register(db, users["agent"], complainant_phone=f"139{i:08d}")
                                     for i in range(n)))
    numbers = sorted(t.number for t in tickets)
    assert numbers == [f"20250610{10001 + i}" for i in range(n)]


async def test_numbering_restarts_each_local_day(db, users):
    a = await register(db, users["agent"], now=dt.datetime(2016, 8, 5, 21, 8, tzinfo=SHANGHAI))
    b = await register(db, users["agent"], now=dt.datetime(2016, 8, 5, 23, 59, tzinfo=SHANGHAI))
    c = await register(db, users["agent"], now=dt.datetime(2016, 8, 6, 0, 1, tzinfo=SHANGHAI))
    assert (a.number, b.number, c.number) == ("2016080510001", "2016080510002", "2016080610001")


async def test_a_failed_registration_gives_its_number_back(db, users):
    with pytest.raises(WorkflowError):
        await register(db, users["agent"], call_ids=["no-such-call"])
    t = await register(db, users["agent"])
    assert t.number == "2025061010001"


def _facts(text="", amount=None, earlier=0, group=1) -> RiskFacts:
    return RiskFacts(text=text, amount=None if amount is None else Decimal(amount),
                     earlier_tickets=earlier, group_size=group)


@pytest.mark.parametrize(("facts", "level", "reason"), [
    (_facts("游客在景区索道事故中死亡"), "I", "涉及人员死亡"),
    (_facts("餐厅燃气爆炸"), "I", "爆炸"),
    (_facts("团餐后多人中毒送医"), "I", "群死群伤或多人受害"),
    (_facts("吃了海鲜后食物中毒"), "II", "涉及中毒"),
    (_facts("酒店电梯突然下坠"), "II", "特种设备"),
    (_facts("导游推搡致游客骨折"), "II", "人身伤害"),
    (_facts("购物退款纠纷", amount="150000"), "II", "10 万元以上"),
    (_facts("购物退款纠纷", amount="20000"), "III", "1 万元以上"),
    (_facts("购物退款纠纷", earlier=2), "III", "重复来电"),
    (_facts("购物退款纠纷", group=12), "II", "群体投诉"),
    (_facts("全团游客集体投诉"), "III", "疑似群体投诉"),
    (_facts("行程单与实际不符", amount="500"), "IV", None),
])
def test_risk_levels_from_transparent_rules(facts, level, reason):
    result = grade(facts, active_rules())
    assert result.level == level
    if reason:
        assert any(reason in r for r in result.reasons)
    else:
        assert result.reasons == []


def test_the_most_severe_rule_wins_and_every_reason_is_kept():
    result = grade(_facts("电梯故障致一人死亡", amount="20000"), active_rules())
    assert result.level == "I"
    assert [r[:3] for r in result.reasons] == ["I级：", "II级", "III"]


async def test_repeat_caller_is_graded_from_earlier_tickets(db, users):
    for _ in range(2):
        await register(db, users["agent"], description="行程单与实际不符", amount="100")
    third = await register(db, users["agent"], description="行程单与实际不符", amount="100")
    assert third.risk_level == "III" and any("此前 2 件" in r for r in third.risk_reasons)


class FakeRedis:
    def __init__(self) -> None:
        self.added: list[tuple[str, dict]] = []

    async def xadd(self, stream, fields, **kw):
        self.added.append((stream, fields))
        return "1-0"


async def test_level_i_ticket_raises_an_alert_to_team_leads(db, users):
    t = await register(db, users["agent"], description="游客乘坐观光车翻车，一人死亡")
    redis = FakeRedis()
    event = await alert_if_needed(t, redis)
    assert event is not None and event.level == "I" and redis.added[0][1]["name"] == "risk_alert"
    calm = await register(db, users["agent"], description="导游态度差", amount="100")
    assert await alert_if_needed(calm, FakeRedis()) is None


async def test_manual_override_keeps_the_automatic_grade_and_logs_the_remark(db, users):
    t = await register(db, users["agent"], description="导游态度差", amount="100")
    assert t.risk_level == "IV"
    with pytest.raises(WorkflowError) as err:
        await act(db, t.number, "调整风险等级", {"level": "II"}, users["lead"])
    assert err.value.field == "remark"
    with pytest.raises(WorkflowError) as err:
        await act(db, t.number, "调整风险等级", {"level": "V", "remark": "x"}, users["lead"])
    assert err.value.field == "level"
    t = await act(db, t.number, "调整风险等级", {"level": "II", "remark": "媒体已关注"}, users["lead"],
                  now=NOW + dt.timedelta(hours=2))
    assert (t.risk_level, t.risk_auto_level, t.risk_override_remark) == ("II", "IV", "媒体已关注")
    assert t.risk_override_by_id == users["lead"].id


@pytest.mark.parametrize(("rule", "message"), [
    ({"id": "x", "level": "V", "reason": "r", "keywords": ["a"]}, "level"),
    ({"id": "x", "level": "I", "keywords": ["a"]}, "reason"),
    ({"id": "x", "level": "I", "reason": "r"}, "条件"),
    ({"id": "x", "level": "I", "reason": "r", "keywords": []}, "keywords"),
    ({"id": "x", "level": "I", "reason": "r", "amount_at_least": -1}, "amount_at_least"),
    ({"id": "x", "level": "I", "reason": "r", "keywords": ["a"], "colour": "red"}, "未知的键"),
])
def test_risk_rule_errors_are_precise(tmp_path: Path, rule, message):
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"levels": ["I", "II", "III", "IV"], "rules": [rule]}, allow_unicode=True))
    with pytest.raises(ConfigError) as err:
        load_rules(path)
    assert message in str(err.value)

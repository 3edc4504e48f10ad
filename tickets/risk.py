"""Risk grading (风险研判): levels I (most severe) to IV by the rules of config/risk-rules.yaml.

:func:`grade` is pure (facts in, level and reasons out); :func:`assess` looks up
the facts (earlier tickets from the same phone) and stores the result;
:func:`alert_if_needed` publishes a :class:`core.events.RiskAlert` for level I/II.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core import content, policy
from core.events import RiskAlert, publish
from core.policy import fail
from core.settings import CONFIG_DIR
from tickets.models import Kind, Ticket

RULES_FILE = CONFIG_DIR / "risk-rules.yaml"
CONDITIONS = ("keywords", "amount_at_least", "repeat_at_least", "group_at_least")


@dataclass(frozen=True)
class Rule:
    id: str
    level: str
    reason: str
    condition: str
    value: Any


@dataclass(frozen=True)
class RiskRules:
    levels: tuple[str, ...]
    default_level: str
    alert_levels: frozenset[str]
    repeat_window_days: int
    rules: tuple[Rule, ...]

    def severity(self, level: str) -> int:
        """Smaller is more severe (I → 0)."""
        return self.levels.index(level)


@dataclass(frozen=True)
class RiskFacts:
    text: str
    amount: Decimal | None
    earlier_tickets: int
    group_size: int


@dataclass(frozen=True)
class RiskGrade:
    level: str
    reasons: list[str]


def load_rules(path: Path | None = None) -> RiskRules:
    """Read and validate the rule file; errors name the line, the rule and the key."""
    path = path or content.config_path("risk-rules.yaml")
    raw = policy.read(path)
    levels_raw = raw.get("levels")
    if not isinstance(levels_raw, list) or not levels_raw:
        raise fail(raw if "levels" in raw else path, "缺少 levels（风险等级列表，最严重的在前）", "levels")
    levels = tuple(str(x) for x in levels_raw)
    default = str(raw.get("default_level", levels[-1]))
    alert_raw = raw.get("alert_levels") or []
    if not isinstance(alert_raw, list):
        raise fail(raw, "alert_levels 应为等级列表", "alert_levels")
    alerts = frozenset(str(x) for x in alert_raw)
    for name, value in (("default_level", {default}), ("alert_levels", alerts)):
        if not value <= set(levels):
            raise fail(raw, f"{name} 含未定义的等级 {sorted(value - set(levels))}（可用：{list(levels)}）", name)
    window = raw.get("repeat_window_days", 365)
    if not isinstance(window, int) or isinstance(window, bool) or window <= 0:
        raise fail(raw, f"repeat_window_days 应为正整数，实际为 {window!r}", "repeat_window_days")
    items = raw.get("rules") or []
    if not isinstance(items, list):
        raise fail(raw, "rules 应为规则列表", "rules")
    unknown = sorted(set(raw) - {"levels", "default_level", "alert_levels", "repeat_window_days", "rules"})
    if unknown:
        raise fail(raw, f"未知的键 {unknown[0]!r}", unknown[0])
    rules = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"rules[{i}]"
        if not isinstance(item, dict):
            raise fail(items, f"{where} 应为映射（id、level、reason 和一个条件）", i)
        rule_id = str(item.get("id") or "")
        if not rule_id or rule_id in seen:
            raise fail(items, f"{where}: id 缺失或重复（{rule_id!r}）", i)
        seen.add(rule_id)
        where = f"规则 {rule_id}"
        level = str(item.get("level"))
        if level not in levels:
            raise fail(item if "level" in item else items, f"{where}: level {level!r} 不在 {list(levels)} 中",
                       "level" if "level" in item else i)
        if not item.get("reason"):
            raise fail(items, f"{where}: 缺少 reason", i)
        conds = [c for c in CONDITIONS if c in item]
        if len(conds) != 1:
            raise fail(items, f"{where}: 应恰好有一个条件（{' / '.join(CONDITIONS)}）", i)
        cond = conds[0]
        value = item[cond]
        if cond == "keywords":
            if not isinstance(value, list) or not value or not all(isinstance(w, str) and w for w in value):
                raise fail(item, f"{where}: keywords 应为非空的词语列表", cond)
            value = tuple(value)
        elif not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise fail(item, f"{where}: {cond} 应为正数", cond)
        unknown = sorted(set(item) - {"id", "level", "reason", cond})
        if unknown:
            raise fail(item, f"{where}: 未知的键 {unknown[0]!r}", unknown[0])
        rules.append(Rule(rule_id, level, str(item["reason"]), cond, value))
    return RiskRules(levels, default, alerts, window, tuple(rules))


@cache
def active_rules() -> RiskRules:
    return load_rules()


policy.register("风险研判规则 config/risk-rules.yaml", lambda _settings: active_rules())
content.register("risk-rules.yaml", "风险研判规则", "policy", load_rules, active_rules.cache_clear)


def _match(rule: Rule, facts: RiskFacts) -> str | None:
    """The reason text when the rule applies, else None."""
    if rule.condition == "keywords":
        hits = [w for w in rule.value if w in facts.text]
        return f"{rule.reason}（关键词：{'、'.join(hits)}）" if hits else None
    if rule.condition == "amount_at_least":
        if facts.amount is not None and facts.amount >= Decimal(str(rule.value)):
            return f"{rule.reason}（{facts.amount} 元）"
        return None
    if rule.condition == "repeat_at_least":
        return f"{rule.reason}（此前 {facts.earlier_tickets} 件）" if facts.earlier_tickets >= rule.value else None
    if facts.group_size >= rule.value:  # group_at_least
        return f"{rule.reason}（{facts.group_size} 人）"
    return None


def grade(facts: RiskFacts, rules: RiskRules) -> RiskGrade:
    """The most severe level of all matching rules, with every matching rule's reason."""
    matched = [(rule, reason) for rule in rules.rules if (reason := _match(rule, facts))]
    if not matched:
        return RiskGrade(rules.default_level, [])
    level = min((rule.level for rule, _ in matched), key=rules.severity)
    matched.sort(key=lambda pair: rules.severity(pair[0].level))
    return RiskGrade(level, [f"{rule.level}级：{reason}" for rule, reason in matched])


def ticket_text(ticket: Ticket) -> str:
    parts = (ticket.description, ticket.respondent_name, ticket.complaint_object,
             ticket.event_category, ticket.transcript)
    return "\n".join(p for p in parts if p)


async def earlier_ticket_count(session: AsyncSession, ticket: Ticket, window_days: int) -> int:
    if not ticket.complainant_phone:
        return 0
    since = ticket.created_at - dt.timedelta(days=window_days)
    query = select(func.count()).select_from(Ticket).where(
        Ticket.complainant_phone == ticket.complainant_phone, Ticket.created_at >= since,
    )
    if ticket.id is not None:
        query = query.where(Ticket.id != ticket.id)
    return int(await session.scalar(query) or 0)


async def assess(session: AsyncSession, ticket: Ticket, rules: RiskRules | None = None) -> RiskGrade | None:
    """Grade a complaint or report and store level and reasons (consultations are not graded)."""
    if ticket.kind == Kind.CONSULT:
        return None
    rules = rules or active_rules()
    facts = RiskFacts(
        text=ticket_text(ticket), amount=ticket.amount,
        earlier_tickets=await earlier_ticket_count(session, ticket, rules.repeat_window_days),
        group_size=ticket.group_size or 1,
    )
    result = grade(facts, rules)
    ticket.risk_auto_level = result.level
    ticket.risk_reasons = result.reasons
    if ticket.risk_override_at is None:
        ticket.risk_level = result.level
    return result


def needs_alert(ticket: Ticket, rules: RiskRules | None = None) -> bool:
    rules = rules or active_rules()
    return ticket.risk_level in rules.alert_levels


async def alert_if_needed(ticket: Ticket, redis: Any | None = None, rules: RiskRules | None = None) -> RiskAlert | None:
    """Publish a RiskAlert for level I/II tickets (when a redis is given); returns the event."""
    if not needs_alert(ticket, rules):
        return None
    event = RiskAlert(ticket_number=ticket.number, level=str(ticket.risk_level), reasons=list(ticket.risk_reasons))
    if redis is not None:
        await publish(redis, event)
    return event

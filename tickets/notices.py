"""What the workflow tells people: messages in the platform and notices (SMS / e-mail) to citizens and units.

:func:`after_action` is called for every step written to the tracking log (registration included), inside
the transaction of that step: the messages and the outbox rows it adds commit or roll back with the action,
so a notice exists exactly when its cause does. Sending is the scheduler's job (``tickets/outbox.py``): a
gateway that is down delays a notice, it never fails the action.

Templates are data (``config/notices.yaml``), checked by :func:`load_notice_config` at start-up.
"""

from __future__ import annotations

import datetime as dt
import re
import string
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import content, policy
from core.models import Role, Unit
from core.policy import fail
from core.settings import CONFIG_DIR
from tickets import dispatch, risk
from tickets.models import CLOSED_STATES, STATE_LABELS, Kind, State, Ticket, TicketAction
from tickets.notify_models import Message, Notice

NOTICES_FILE = CONFIG_DIR / "notices.yaml"
FIELDS = frozenset({"number", "hotline", "unit", "handling_due", "contact", "reason", "outcome", "step", "due",
                    "from_unit"})
CITIZEN_TEMPLATES = ("registered", "accepted", "rejected", "transferred", "closed")
UNIT_TEMPLATES = ("reminder", "acceptance_overdue", "expiring", "handling_overdue", "supervised",
                  "supervision_followup", "handover_overdue")
MOBILE = re.compile(r"^1[3-9]\d{9}$")  # only mobile numbers receive SMS; a landline is skipped
SYSTEM = "系统"


@dataclass(frozen=True)
class Contact:
    phone: str = ""
    sms: str = ""
    email: str = ""


@dataclass(frozen=True)
class NoticeConfig:
    sender: str
    citizen: dict[str, str]
    unit: dict[str, str]
    email_subject: str
    contacts: dict[str, Contact]
    expiring_days: int
    supervision_followup_days: int


def _check_template(parent: Any, key: Any, where: str) -> str:
    text = parent.get(key) if isinstance(parent, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise fail(parent, f"{where}: 应为非空文本", key)
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise fail(parent, f"{where}: 模板格式错误：{exc}", key) from None
    unknown = sorted(names - FIELDS)
    if unknown:
        raise fail(parent, f"{where}: 模板使用了未知字段 {unknown}（可用：{sorted(FIELDS)}）", key)
    return text


def _positive(raw: dict, key: str, where: Any) -> int:
    value = raw.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise fail(raw if key in raw else where, f"{key}: 应为正整数，实际为 {value!r}", key)
    return value


def load_notice_config(path: Path | None = None) -> NoticeConfig:
    """Read and check the templates and unit contacts; errors name the line and the key at fault."""
    path = path or content.config_path("notices.yaml")
    raw = policy.read(path)
    groups: dict[str, dict[str, str]] = {}
    for group, names in (("citizen", CITIZEN_TEMPLATES), ("unit", UNIT_TEMPLATES)):
        section = raw.get(group)
        if not isinstance(section, dict):
            raise fail(raw if group in raw else path, f"缺少 {group}（模板：{'、'.join(names)}）", group)
        missing = [n for n in names if n not in section]
        extra = sorted(set(section) - set(names))
        if missing:
            raise fail(raw, f"{group} 缺少模板 {missing}", group)
        if extra:
            raise fail(section, f"{group} 未知模板 {extra[0]!r}（可用：{'、'.join(names)}）", extra[0])
        groups[group] = {n: _check_template(section, n, f"{group}.{n}") for n in names}
    # Uncached: an edit of units.yaml (core.content) is checked against these contacts before it is saved.
    codes = {u.code for u in dispatch.load_unit_config().units}
    contacts: dict[str, Contact] = {}
    entries = raw.get("contacts") or {}
    if not isinstance(entries, dict):
        raise fail(raw, "contacts 应为“单位代码: 联系方式”的映射", "contacts")
    for code, entry in entries.items():
        if str(code) not in codes:
            raise fail(entries, f"contacts 中的单位代码 {code!r} 不在 units.yaml 中", code)
        if not isinstance(entry, dict) or set(entry) - {"phone", "sms", "email"}:
            raise fail(entries, f"contacts.{code} 只能有 phone、sms、email", code)
        sms = str(entry.get("sms", ""))
        if sms and not MOBILE.match(sms):
            raise fail(entry, f"contacts.{code}.sms 应为手机号，实际为 {sms!r}", "sms")
        contacts[str(code)] = Contact(str(entry.get("phone", "")), sms, str(entry.get("email", "")))
    return NoticeConfig(
        sender=str(raw.get("sms_sender", "")),
        citizen=groups["citizen"], unit=groups["unit"],
        email_subject=_check_template(raw, "email_subject", "email_subject"),
        contacts=contacts,
        expiring_days=_positive(raw, "expiring_days", path),
        supervision_followup_days=_positive(raw, "supervision_followup_days", path),
    )


@cache
def notice_config() -> NoticeConfig:
    return load_notice_config()


policy.register("通知模板与单位联系方式 config/notices.yaml", lambda _settings: notice_config())
content.register("notices.yaml", "通知模板与单位联系方式", "unit", load_notice_config, notice_config.cache_clear)


# --- queueing -------------------------------------------------------------------------------

async def _unit(session: AsyncSession, unit_id: int) -> Unit | None:
    return await session.get(Unit, unit_id)


def fields_for(ticket: Ticket, unit: Unit | None, **extra: str) -> dict[str, str]:
    contact = notice_config().contacts.get(unit.code if unit else "", Contact())
    values = {k: "" for k in FIELDS}
    values.update(number=ticket.number, hotline=ticket.hotline, unit=unit.name if unit else "",
                  handling_due=ticket.handling_due.isoformat() if ticket.handling_due else "—",
                  contact=contact.phone or ticket.hotline)
    values.update(extra)
    return values


def queue_notice(session: AsyncSession, ticket: Ticket, key: str, audience: str, template: str, text: str,
                 phone: str | None, email: str | None, values: dict[str, str]) -> list[Notice]:
    """Outbox rows (SMS to a mobile number, e-mail to an address) for one cause, identified by ``key``."""
    cfg = notice_config()
    body = text.format(**values)
    rows = []
    if phone and MOBILE.match(phone):
        rows.append(Notice(ticket_id=ticket.id, dedupe_key=f"{key}:sms:{phone}", channel="sms", recipient=phone,
                           audience=audience, template=template, body=body))
    if email:
        rows.append(Notice(ticket_id=ticket.id, dedupe_key=f"{key}:email:{email}", channel="email",
                           recipient=email, audience=audience, template=template, body=body,
                           subject=cfg.email_subject.format(**values)))
    session.add_all(rows)
    return rows


def notify_unit_contact(session: AsyncSession, ticket: Ticket, unit: Unit | None, key: str, template: str,
                        **extra: str) -> list[Notice]:
    contact = notice_config().contacts.get(unit.code if unit else "")
    if contact is None:
        return []
    return queue_notice(session, ticket, key, "unit", template, notice_config().unit[template],
                        contact.sms, contact.email, fields_for(ticket, unit, **extra))


def add_message(session: AsyncSession, ticket: Ticket, unit_id: int, kind: str, text: str,
                role: Role | None = None) -> Message:
    message = Message(unit_id=unit_id, role=role.value if role else None, ticket_id=ticket.id,
                      ticket_number=ticket.number, kind=kind, text=text)
    session.add(message)
    return message


def _citizen(session: AsyncSession, ticket: Ticket, row: TicketAction, template: str, unit: Unit | None,
             **extra: str) -> None:
    queue_notice(session, ticket, f"t{ticket.id}:a{row.id}:{template}", "citizen", template,
                 notice_config().citizen[template], ticket.complainant_phone, None,
                 fields_for(ticket, unit, **extra))


async def _rejection_reason(session: AsyncSession, ticket: Ticket) -> str:
    proposal = await session.scalar(select(TicketAction).where(
        TicketAction.ticket_id == ticket.id, TicketAction.action == "不予受理").order_by(TicketAction.id.desc()))
    if proposal is None:
        return "不符合受理条件"
    clauses = proposal.inputs.get("clauses") or []
    return "、".join(clauses) or proposal.remark


async def after_action(session: AsyncSession, ticket: Ticket, row: TicketAction) -> None:
    """Messages and notices caused by one step of the tracking log (same transaction as the step)."""
    action = row.action
    unit = await _unit(session, ticket.unit_id)
    here = unit.name if unit else ""
    number = ticket.number
    dispatched = unit is not None and unit.id != ticket.centre_unit_id
    if action in ("登记", "重新派单", "分类") and dispatched:
        add_message(session, ticket, ticket.unit_id, "dispatched", f"新工单 {number} 已派至{here}，请及时受理")
    if action == "登记" and ticket.kind != Kind.UNCLASSIFIED and ticket.state != State.ANSWERED:
        _citizen(session, ticket, row, "registered", unit)
        if risk.needs_alert(ticket):
            add_message(session, ticket, ticket.centre_unit_id, "risk",
                        f"风险预警：工单 {number} 风险等级 {ticket.risk_level}", Role.TEAM_LEAD)
    elif action == "转办":
        add_message(session, ticket, ticket.unit_id, "transferred", f"上级单位转办工单 {number} 至{here}，请及时受理")
        _citizen(session, ticket, row, "transferred", unit)
    elif action == "转办退回":
        add_message(session, ticket, ticket.unit_id, "transferred_back", f"工单 {number} 被下级单位转办退回，请重新处理")
    elif action == "退回":
        add_message(session, ticket, ticket.unit_id, "returned", f"工单 {number} 被处理单位退回：{row.remark}")
    elif action == "受理":
        _citizen(session, ticket, row, "accepted", unit)
    elif action == "督办":
        add_message(session, ticket, ticket.unit_id, "supervised", f"督办：工单 {number} 已列为督办件，请优先办理")
        notify_unit_contact(session, ticket, unit, f"t{ticket.id}:a{row.id}:supervised", "supervised")
    elif action == "审核退回":
        add_message(session, ticket, ticket.unit_id, "sent_back", f"工单 {number} 的结案申请被退回：{row.remark}")
    elif action == "审核通过" and ticket.state == State.REJECTED:
        _citizen(session, ticket, row, "rejected", unit, reason=await _rejection_reason(session, ticket))
    elif action == "审核通过" and ticket.state in CLOSED_STATES:
        _citizen(session, ticket, row, "closed", unit, outcome=STATE_LABELS[ticket.state])
    if ticket.state == State.PENDING_REVIEW:
        # The head of the unit that reviews the next level (001 §6.3 逐级审核).
        outcome = STATE_LABELS[ticket.review_outcome] if ticket.review_outcome else action
        add_message(session, ticket, ticket.reviewing_unit_id, "review",
                    f"工单 {number} 拟结案（{outcome}），待您审核", Role.UNIT_HEAD)


def system_log(ticket: Ticket, action: str, remark: str, now: dt.datetime, inputs: dict[str, Any]) -> TicketAction:
    """A step of the tracking log written by the scheduler (no operator)."""
    return TicketAction(ticket_id=ticket.id, action=action, operator_id=None, operator_name=SYSTEM,
                        operator_unit=None, at=now, state=ticket.state, remark=remark, inputs=inputs)

"""The ticket workflow of the 12301 manual (000 §3) with the closing review of 001 §6.3 / 004 §6.3.5.2.3.

Every action is a row of :data:`ACTIONS`: the states it starts from, the ticket
kinds it applies to, who may do it, and its required inputs (validated with a
Chinese message naming the field). :func:`perform_action` checks all of that,
applies the effect and appends the step to the immutable tracking log.

Closing outcomes (自行和解, 调解成功, 调解失败, 启用质保金赔偿, 办结 of a report,
不予受理) do not close the ticket at once: it waits in 待审核结案 until the
unit head approves (审核通过 → the outcome state, closed and archived) or sends
it back (审核退回 → the state it came from).

Visibility: a unit sees its tickets and those of units below it; the call
centre also sees every ticket it registered; admins see everything.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, false, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from core import inputs
from core.calls import CallRecord
from core.db import utcnow
from core.inputs import InputError
from core.models import Role, Unit, UnitLevel, User
from tickets import dispatch, notices, return_visits, risk, rules
from tickets.call_access import may_link_call
from tickets.deadlines import DeadlinePolicy, active_policy, apply_deadlines
from tickets.models import (
    KIND_LABELS,
    OPEN_STATES,
    SOURCE_LABELS,
    STATE_LABELS,
    Evidence,
    Kind,
    ReviewStatus,
    Source,
    State,
    Ticket,
    TicketAction,
    TicketCall,
)
from tickets.numbering import next_number
from tickets.satisfaction import grade_from_calls


class WorkflowError(InputError):
    """A refused step; ``message`` is Chinese and ``field`` names the input at fault (if any)."""


@contextmanager
def as_workflow_error() -> Iterator[None]:
    """Input refused by the parsers of core.inputs, raised as the WorkflowError this module promises."""
    try:
        yield
    except WorkflowError:
        raise
    except InputError as exc:
        raise WorkflowError(exc.message, exc.field, exc.status) from None


class PermissionDenied(WorkflowError):
    def __init__(self, message: str) -> None:
        super().__init__(message, None, 403)


# --- inputs --------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    key: str
    label: str
    kind: str = "text"  # text | amount | date | unit | clauses | ids | level | call | authority
    required: bool = True


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value == []


MAX_LIST_ITEMS = 100


def _column(key: str) -> Any:
    """The ticket column an input of this name is stored in (its length bounds the input), if any."""
    return Ticket.__table__.c.get(key)


def _clean_value(f: Field, value: Any) -> Any:
    bad = WorkflowError(f"{f.label}格式不正确", f.key)
    if f.kind == "text":
        return inputs.column_text(value, f.key, f.label, _column(f.key))
    if f.kind == "amount":
        return str(inputs.amount(value, f.key, f.label, Ticket.__table__.c.amount))
    if f.kind == "date":
        return inputs.iso_date(value, f.key, f.label).isoformat()
    if f.kind == "unit":
        return inputs.record_id(value, f.key, f.label)
    if f.kind == "authority":  # checked against the ticket's rule profile in perform_action
        return inputs.column_text(value, f.key, f.label, Ticket.__table__.c.handover_authority)
    if f.kind == "level":
        return inputs.text(value if isinstance(value, str) else str(value), f.key, f.label, max_length=16,
                           multiline=False)
    if f.kind == "call":
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        return inputs.column_text(value, f.key, f.label, CallRecord.__table__.c.ref)
    if not isinstance(value, list) or len(value) > MAX_LIST_ITEMS:
        raise bad
    if f.kind == "clauses":  # checked against the ticket's rule profile in perform_action
        return [inputs.text(v, f.key, f.label, max_length=200) for v in value]
    if f.kind == "ids":
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise bad
        return [inputs.record_id(v, f.key, f.label) for v in value]
    raise AssertionError(f.kind)


def validate_inputs(fields: tuple[Field, ...], inputs: dict[str, Any]) -> dict[str, Any]:
    """Required inputs present and well-formed; returns the cleaned values (JSON-safe)."""
    if not isinstance(inputs, dict):
        raise WorkflowError("操作参数应为 JSON 对象", "inputs")
    cleaned: dict[str, Any] = {}
    for f in fields:
        value = inputs.get(f.key)
        if _blank(value):
            if f.required:
                verb = "选择" if f.kind in ("unit", "clauses", "level", "authority") else "填写"
                raise WorkflowError(f"请{verb}{f.label}", f.key)
            continue
        with as_workflow_error():
            cleaned[f.key] = _clean_value(f, value)
    return cleaned


# --- permissions ------------------------------------------------------------------

def _path_within(path: str, scope: str) -> bool:
    return dispatch.is_within(path, scope)


def visible_ticket_filter(user: User) -> ColumnElement[bool]:
    """SQL condition for the tickets ``user`` may see (``user.unit`` must be loaded)."""
    if user.role == Role.ADMIN:
        return true()
    unit = user.unit
    if unit is None:
        return false()
    scope = dispatch.subtree_condition(Ticket.unit_path, unit.path)
    if unit.level == UnitLevel.CALL_CENTRE:
        return or_(Ticket.centre_unit_id == unit.id, scope)
    return scope


def can_view(user: User, ticket: Ticket) -> bool:
    if user.role == Role.ADMIN:
        return True
    unit = user.unit
    if unit is None:
        return False
    if unit.level == UnitLevel.CALL_CENTRE and ticket.centre_unit_id == unit.id:
        return True
    return _path_within(ticket.unit_path, unit.path)


def _acts_for_unit(user: User, ticket: Ticket) -> bool:
    return user.role == Role.ADMIN or (user.unit_id is not None and user.unit_id == ticket.unit_id)


def review_levels_for(ticket: Ticket) -> int:
    """Levels a closing of this ticket needs: the profile's, or as many heads as there are above."""
    return min(rules.profile(ticket.hotline).review_levels, ticket.unit_path.strip("/").count("/") + 1)


SELF_REVIEW = "不能审核自己提出的结案，须由上一级负责人审核（001 §6.3 逐级审核）"


def _check_permission(rule: str, user: User, ticket: Ticket) -> None:
    if rule == "reviewer" and ticket.review_proposed_by_id is not None and user.id == ticket.review_proposed_by_id:
        raise PermissionDenied(SELF_REVIEW)
    ok = {
        "unit": lambda: _acts_for_unit(user, ticket),
        "reviewer": lambda: user.role == Role.ADMIN or (
            user.role in (Role.UNIT_HEAD, Role.TEAM_LEAD) and user.unit_id == ticket.reviewing_unit_id),
        "supervise": lambda: user.role == Role.ADMIN or (
            user.role in (Role.UNIT_HEAD, Role.TEAM_LEAD) and can_view(user, ticket)),
        "viewer": lambda: can_view(user, ticket),
    }[rule]()
    if not ok:
        message = {
            "unit": "只有工单当前所在单位可以办理此工单",
            "reviewer": "只有本级审核单位的负责人可以审核结案",
            "supervise": "只有负责人、班长或管理员可以执行此操作",
            "viewer": "无权查看此工单",
        }[rule]
        raise PermissionDenied(message)


# --- actions -------------------------------------------------------------------------

@dataclass
class Context:
    session: AsyncSession
    operator: User
    now: dt.datetime
    policy: DeadlinePolicy
    extra_log: dict[str, Any] = field(default_factory=dict)  # display values added to the log remark


Effect = Callable[[Ticket, dict[str, Any], Context], Any]


@dataclass(frozen=True)
class ActionSpec:
    name: str
    fields: tuple[Field, ...]
    sources: frozenset[State] | None  # None: any state
    kinds: frozenset[Kind]
    permission: str
    effect: Effect


PENDING_STATES = frozenset({State.PENDING, State.PENDING_TRANSFERRED})
ALL_KINDS = frozenset(Kind)
CASE_KINDS = frozenset({Kind.COMPLAINT, Kind.REPORT})
COMPLAINT = frozenset({Kind.COMPLAINT})
REMARK = Field("remark", "备注")
CLOSING_DATE = Field("closing_date", "结案时间", "date")
AMOUNT = Field("amount", "赔偿金额", "amount")


async def _unit(session: AsyncSession, unit_id: int, key: str) -> Unit:
    unit = await session.get(Unit, unit_id)
    if unit is None:
        raise WorkflowError("所选单位不存在", key)
    return unit


def _move(ticket: Ticket, unit: Unit) -> None:
    ticket.unit_id = unit.id
    ticket.unit_path = unit.path
    ticket.unit = unit


async def _hotline_root(session: AsyncSession, hotline: str) -> Unit:
    code = dispatch.unit_config().national.get(hotline)
    root = await session.scalar(select(Unit).where(Unit.code == code)) if code else None
    if root is None:
        raise WorkflowError(f"热线 {hotline} 没有配置处理单位", "hotline")
    return root


async def _accept(ticket: Ticket, inputs: dict, ctx: Context) -> State:
    ticket.accepted_at = ctx.now
    ticket.accepted_by_id = ctx.operator.id
    apply_deadlines(ticket, ctx.policy)  # limits the policy counts from 受理 start now (not 12301's 60 days, 000 §3.2)
    return State.ACCEPTED


async def _transfer(ticket: Ticket, inputs: dict, ctx: Context) -> State:
    target = await _unit(ctx.session, inputs["target_unit_id"], "target_unit_id")
    current = await _unit(ctx.session, ticket.unit_id, "target_unit_id")
    if not dispatch.is_strictly_below(target, current):
        raise WorkflowError("转办只能转给本单位的下级单位", "target_unit_id")
    ticket.transfer_chain = [*ticket.transfer_chain, current.id]
    ticket.transferred_at = ctx.now
    _move(ticket, target)
    ctx.extra_log["转办地"] = target.name
    return State.PENDING_TRANSFERRED


async def _transfer_back(ticket: Ticket, inputs: dict, ctx: Context) -> State:
    if not ticket.transfer_chain:
        raise WorkflowError("此工单不是上级转办的工单，不能转办退回", "action")
    *rest, previous_id = ticket.transfer_chain
    previous = await _unit(ctx.session, previous_id, "action")
    ticket.transfer_chain = rest
    if not rest:
        ticket.transferred_at = None
    _move(ticket, previous)
    ctx.extra_log["退回至"] = previous.name
    # The higher unit holds it as it held it before transferring.
    return State.PENDING_TRANSFERRED if rest else State.PENDING


async def _hand_over(ticket: Ticket, inputs: dict, ctx: Context) -> State:
    """移交 (000 §3.2.1 3): the case leaves the system for another authority, which must have it within the
    profile's days (004 §6.3.5.1: 5 working days); it is tracked until that authority's result is recorded."""
    limit = rules.profile(ticket.hotline).handover
    start = ctx.policy.local_date(ctx.now)
    ticket.handover_authority = inputs["authority"]
    ticket.handover_due = (start + dt.timedelta(days=limit.days) if limit.unit == "calendar"
                           else ctx.policy.calendar.add_working_days(start, limit.days))
    ticket.handover_result = None
    ticket.handover_result_at = None
    ctx.extra_log["移送期限"] = ticket.handover_due.isoformat()
    return State.HANDED_OVER


async def _handover_result(ticket: Ticket, inputs: dict, ctx: Context) -> State:
    """The receiving authority's result (004 §6.3.5.1 跟踪处理情况): the 移交 is then complete and archivable."""
    if ticket.handover_result is not None:
        raise WorkflowError("此工单的移交结果已登记", "action", 409)
    ticket.handover_result = inputs["result"]
    ticket.handover_result_at = ctx.now
    ctx.extra_log["接收单位"] = ticket.handover_authority or ""
    return State.HANDED_OVER


async def _return(ticket: Ticket, inputs: dict, ctx: Context) -> State:
    centre = await ctx.session.get(Unit, ticket.centre_unit_id)
    assert centre is not None
    ticket.transfer_chain = []
    ticket.transferred_at = None
    _move(ticket, centre)
    return State.RETURNED


async def _redispatch(ticket: Ticket, inputs: dict, ctx: Context) -> State:
    target = await _unit(ctx.session, inputs["target_unit_id"], "target_unit_id")
    root = await _hotline_root(ctx.session, ticket.hotline)
    if not _path_within(target.path, root.path):
        raise WorkflowError(f"所选单位不属于 {ticket.hotline} 热线的处理体系", "target_unit_id")
    _move(ticket, target)
    ctx.extra_log["派往"] = target.name
    return State.PENDING


def _check_closing_date(ticket: Ticket, inputs: dict, ctx: Context) -> None:
    """结案时间 lies between the ticket's registration and today (local dates of the policy)."""
    if "closing_date" not in inputs:
        return
    day = dt.date.fromisoformat(inputs["closing_date"])
    first, last = ctx.policy.local_date(ticket.created_at), ctx.policy.local_date(ctx.now)
    if not first <= day <= last:
        raise WorkflowError(f"结案时间应在登记日期 {first.isoformat()} 与今天 {last.isoformat()} 之间",
                            "closing_date")


def _to_review(outcome: State) -> Effect:
    async def effect(ticket: Ticket, inputs: dict, ctx: Context) -> State:
        _check_closing_date(ticket, inputs, ctx)
        ticket.review_outcome = outcome
        ticket.review_from_state = ticket.state
        ticket.review_status = ReviewStatus.PENDING
        ticket.review_proposed_by_id = ctx.operator.id
        ticket.review_level = 0
        ticket.review_levels = review_levels_for(ticket)
        ctx.extra_log["拟结案结果"] = STATE_LABELS[outcome]
        ctx.extra_log["审核级数"] = ticket.review_levels
        return State.PENDING_REVIEW
    return effect


async def _approve(ticket: Ticket, inputs: dict, ctx: Context) -> State:
    outcome = ticket.review_outcome
    assert outcome is not None
    ticket.review_level += 1
    ctx.extra_log["审核级次"] = f"第 {ticket.review_level} 级，共 {ticket.review_levels} 级"
    if ticket.review_level < ticket.review_levels:
        ctx.extra_log["待审核"] = "上一级负责人"
        return State.PENDING_REVIEW
    ticket.review_status = ReviewStatus.APPROVED
    ticket.closed_at = ctx.now
    ctx.extra_log["结案结果"] = STATE_LABELS[outcome]
    return outcome


async def _send_back(ticket: Ticket, inputs: dict, ctx: Context) -> State:
    previous = ticket.review_from_state or State.ACCEPTED
    ticket.review_status = ReviewStatus.SENT_BACK
    ticket.review_outcome = None
    ticket.review_from_state = None
    ticket.review_level = 0
    return previous


async def _answer(ticket: Ticket, inputs: dict, ctx: Context) -> State:
    ticket.closed_at = ctx.now
    return State.ANSWERED


async def _supervise(ticket: Ticket, inputs: dict, ctx: Context) -> State:
    ticket.supervised = True
    ticket.supervision_note = inputs["note"]
    return ticket.state


async def _add_evidence(ticket: Ticket, inputs: dict, ctx: Context) -> State:
    ids = inputs["evidence_ids"]
    found = (await ctx.session.scalars(
        select(Evidence).where(Evidence.id.in_(ids), Evidence.ticket_id == ticket.id)
    )).all()
    if len(found) != len(set(ids)):
        raise WorkflowError("凭证不存在或不属于此工单", "evidence_ids")
    ctx.extra_log["凭证"] = "、".join(e.filename for e in found)
    return ticket.state


async def _attach_call(ticket: Ticket, inputs: dict, ctx: Context) -> State:
    await link_calls(ctx.session, ticket, [inputs["call_id"]], ctx.operator, "call_id")
    return ticket.state


async def _override_risk(ticket: Ticket, inputs: dict, ctx: Context) -> State:
    rules = risk.active_rules()
    if inputs["level"] not in rules.levels:
        raise WorkflowError(f"风险等级应为 {'、'.join(rules.levels)} 之一", "level")
    ctx.extra_log["原等级"] = ticket.risk_level or "无"
    ticket.risk_level = inputs["level"]
    ticket.risk_override_by_id = ctx.operator.id
    ticket.risk_override_remark = inputs["remark"]
    ticket.risk_override_at = ctx.now
    return ticket.state


async def _classify(ticket: Ticket, inputs: dict, ctx: Context) -> State:
    """A voice message becomes a consultation, complaint or report and is dispatched like a new case."""
    try:
        kind = Kind(inputs["kind"])
    except ValueError:
        raise WorkflowError("工单类型应为咨询、投诉或举报", "kind") from None
    if kind == Kind.UNCLASSIFIED:
        raise WorkflowError("工单类型应为咨询、投诉或举报", "kind")
    for key in CLASSIFY_DETAILS:
        if key in inputs:
            setattr(ticket, key, inputs[key])
    for key in REQUIRED_BY_KIND[kind]:
        if _blank(getattr(ticket, key)):
            raise WorkflowError(f"{KIND_LABELS[kind]}工单请填写{_labels()[key]}", key)
    ticket.kind = kind
    if "unit_id" in inputs:
        unit = await _unit(ctx.session, inputs["unit_id"], "unit_id")
        root = await _hotline_root(ctx.session, ticket.hotline)
        if not _path_within(unit.path, root.path):
            raise WorkflowError(f"所选单位不属于 {ticket.hotline} 热线的处理体系", "unit_id")
    else:
        unit = await dispatch.suggest_unit(ctx.session, ticket.hotline, ticket.province, ticket.city,
                                           ticket.county, ticket.complaint_object)
        if unit is None:
            raise WorkflowError("没有可派发的处理单位，请选择处理单位", "unit_id")
    _move(ticket, unit)
    ticket.created_at = ctx.now  # deadlines run from classification, when the case becomes actionable
    apply_deadlines(ticket, ctx.policy)
    grade = await risk.assess(ctx.session, ticket)
    ctx.extra_log["类型"] = KIND_LABELS[kind]
    ctx.extra_log["处理单位"] = unit.name
    if grade is not None:
        ctx.extra_log["风险等级"] = grade.level
    return State.PENDING


async def _amend(ticket: Ticket, inputs: dict, ctx: Context) -> State:
    """补正: the call centre completes a ticket a unit returned as incomplete (B.3.1 材料不全); each changed
    field goes into the tracking log with its old and new value."""
    _check_categories(ticket.hotline, inputs)
    labels = {f.key: f.label for f in ACTIONS["补正"].fields}
    changes: dict[str, list[str | None]] = {}
    for key, value in inputs.items():
        new = Decimal(value) if key == "amount" else value
        old = getattr(ticket, key)
        if old != new:
            changes[key] = [None if old is None else str(old), value]
            setattr(ticket, key, new)
    if not changes:
        raise WorkflowError("没有需要补正的内容：请修改至少一项", "action")
    ctx.extra_log["修改"] = "，".join(f"{labels[k]}由「{old or ''}」改为「{new}」" for k, (old, new) in changes.items())
    inputs.clear()  # the log keeps old and new values once: structured here, readable in the remark
    inputs["changes"] = changes
    return ticket.state


CLASSIFY_DETAILS = ("complainant_name", "respondent_name", "respondent_phone", "complaint_object",
                    "event_category", "province", "city", "county", "description")


def _spec(name, fields, sources, kinds, permission, effect) -> ActionSpec:
    return ActionSpec(name, tuple(fields), None if sources is None else frozenset(sources),
                      frozenset(kinds), permission, effect)


ACTIONS: dict[str, ActionSpec] = {s.name: s for s in (
    _spec("分类", [Field("kind", "工单类型"), Field("unit_id", "处理单位", "unit", required=False),
                 *(Field(key, label, required=False) for key, label in (
                     ("complainant_name", "诉求方姓名"), ("respondent_name", "被诉方"),
                     ("respondent_phone", "被诉方电话"), ("complaint_object", "投诉对象"),
                     ("event_category", "事件类别"), ("province", "案件归属地（省）"),
                     ("city", "案件归属地（市）"), ("county", "案件归属地（区县）"),
                     ("description", "诉求内容")))],
          {State.UNCLASSIFIED}, {Kind.UNCLASSIFIED}, "unit", _classify),
    _spec("受理", [Field("note", "受理说明")], PENDING_STATES, CASE_KINDS, "unit", _accept),
    _spec("转办", [Field("target_unit_id", "转办单位", "unit"), Field("remark", "转办备注")],
          PENDING_STATES, ALL_KINDS, "unit", _transfer),
    _spec("转办退回", [Field("reason", "转办退回原因")], {State.PENDING_TRANSFERRED}, ALL_KINDS, "unit", _transfer_back),
    _spec("移交", [Field("authority", "移交单位", "authority"), Field("remark", "移交说明")],
          PENDING_STATES, CASE_KINDS, "unit", _hand_over),
    _spec("移交结果", [Field("result", "接收单位处理结果")], {State.HANDED_OVER}, CASE_KINDS, "unit",
          _handover_result),
    _spec("退回", [Field("reason", "退回原因")], PENDING_STATES, ALL_KINDS, "unit", _return),
    _spec("不予受理", [Field("clauses", "不予受理条款", "clauses"), REMARK],
          PENDING_STATES, CASE_KINDS, "unit", _to_review(State.REJECTED)),
    _spec("自行和解", [AMOUNT, CLOSING_DATE, Field("remark", "和解备注")],
          {State.ACCEPTED}, COMPLAINT, "unit", _to_review(State.SETTLED)),
    _spec("调解成功", [AMOUNT, CLOSING_DATE, Field("remark", "调解备注"),
                   Field("document_issued", "是否出具调解书", required=False)],
          {State.ACCEPTED}, COMPLAINT, "unit", _to_review(State.MEDIATED)),
    _spec("调解失败", [CLOSING_DATE, Field("remark", "调解备注"),
                   Field("document_issued", "是否出具终止调解书", required=False)],
          {State.ACCEPTED}, COMPLAINT, "unit", _to_review(State.MEDIATION_FAILED)),
    _spec("启用质保金赔偿", [AMOUNT, CLOSING_DATE, Field("facts", "事实经过")],
          {State.ACCEPTED}, COMPLAINT, "unit", _to_review(State.DEPOSIT_PAID)),
    _spec("办结", [Field("result", "办理结果"), CLOSING_DATE],
          {State.ACCEPTED}, {Kind.REPORT}, "unit", _to_review(State.CONCLUDED)),
    _spec("答复", [Field("answer", "答复内容")], PENDING_STATES | {State.RETURNED}, {Kind.CONSULT}, "unit", _answer),
    _spec("审核通过", [Field("remark", "审核意见", required=False)],
          {State.PENDING_REVIEW}, ALL_KINDS, "reviewer", _approve),
    _spec("审核退回", [Field("reason", "退回理由")], {State.PENDING_REVIEW}, ALL_KINDS, "reviewer", _send_back),
    _spec("重新派单", [Field("target_unit_id", "处理单位", "unit"), Field("remark", "备注", required=False)],
          {State.RETURNED}, ALL_KINDS, "unit", _redispatch),
    _spec("补正", [Field(key, label, required=False) for key, label in (
        ("complainant_name", "诉求方姓名"), ("complainant_phone", "诉求方电话"), ("complainant_org", "工作单位"),
        ("respondent_name", "被诉方"), ("respondent_phone", "被诉方电话"), ("complaint_object", "投诉对象"),
        ("event_category", "事件类别"), ("province", "案件归属地（省）"), ("city", "案件归属地（市）"),
        ("county", "案件归属地（区县）"), ("description", "诉求内容"))] + [Field("amount", "涉案金额", "amount",
                                                                           required=False)],
          {State.RETURNED}, ALL_KINDS, "unit", _amend),
    _spec("督办", [Field("note", "督办说明")], OPEN_STATES, ALL_KINDS, "supervise", _supervise),
    _spec("补充凭证", [Field("evidence_ids", "凭证", "ids"), Field("remark", "说明", required=False)],
          None, ALL_KINDS, "viewer", _add_evidence),
    _spec("关联来电", [Field("call_id", "来电编号", "call")], None, ALL_KINDS, "viewer", _attach_call),
    _spec("调整风险等级", [Field("level", "风险等级", "level"), Field("remark", "调整理由")],
          OPEN_STATES, CASE_KINDS, "supervise", _override_risk),
)}


def _remark(spec: ActionSpec, cleaned: dict[str, Any], ctx: Context) -> str:
    parts = [f"{f.label}：{'、'.join(v) if isinstance(v := cleaned[f.key], list) else v}"
             for f in spec.fields if f.key in cleaned and f.kind not in ("unit", "ids")]
    parts += [f"{k}：{v}" for k, v in ctx.extra_log.items()]
    return "；".join(parts)


def _profile_refusal(ticket: Ticket, action: str) -> WorkflowError | None:
    """The hotline's rule profile does not allow this closing outcome (config/rules.yaml)."""
    profile = rules.profile(ticket.hotline)
    if action in rules.CLOSING_ACTIONS and action not in profile.closing_actions:
        return WorkflowError(f"{ticket.hotline} 热线（{profile.label}）的工单不能以「{action}」结案", "action")
    return None


def _check_profile_inputs(ticket: Ticket, cleaned: dict[str, Any]) -> None:
    """Clauses and authorities come from the lists of the ticket's hotline (config/rules.yaml)."""
    profile = rules.profile(ticket.hotline)
    unknown = [v for v in cleaned.get("clauses", ()) if v not in profile.rejection_clauses]
    if unknown:
        raise WorkflowError(f"不予受理条款不适用于 {ticket.hotline} 热线：{'、'.join(unknown)}", "clauses")
    if "authority" in cleaned and cleaned["authority"] not in profile.authorities:
        raise WorkflowError(f"移交单位「{cleaned['authority']}」不在 {ticket.hotline} 热线的移交单位名录中，"
                            f"应为 {'、'.join(profile.authorities)} 之一", "authority")


def available_actions(ticket: Ticket, user: User) -> list[str]:
    """Actions ``user`` may try on ``ticket`` now (for the desk's buttons)."""
    names = []
    for spec in ACTIONS.values():
        if ticket.kind not in spec.kinds or (spec.sources is not None and ticket.state not in spec.sources):
            continue
        if _profile_refusal(ticket, spec.name) is not None:
            continue
        try:
            _check_permission(spec.permission, user, ticket)
        except PermissionDenied:
            continue
        names.append(spec.name)
    return names


async def _log(session: AsyncSession, ticket: Ticket, action: str, operator: User, now: dt.datetime,
               remark: str, inputs: dict[str, Any]) -> TicketAction:
    unit = await session.get(Unit, operator.unit_id) if operator.unit_id else None
    row = TicketAction(ticket_id=ticket.id, action=action, operator_id=operator.id,
                       operator_name=operator.display_name, operator_unit=unit.name if unit else None,
                       at=now, state=ticket.state, remark=remark, inputs=inputs)
    session.add(row)
    await session.flush()
    await notices.after_action(session, ticket, row)  # messages and outbox rows in this same transaction
    await return_visits.after_action(session, ticket, row)  # a closed case the centre visits: its 回访 task
    return row


async def perform_action(
    session: AsyncSession, ticket: Ticket, action: str, inputs: dict[str, Any], operator: User,
    now: dt.datetime | None = None, *, policy: DeadlinePolicy | None = None,
) -> TicketAction:
    """Apply one workflow action and append it to the tracking log; raises WorkflowError when refused."""
    spec = ACTIONS.get(action)
    if spec is None:
        raise WorkflowError(f"未知的操作「{action}」", "action")
    if ticket.kind not in spec.kinds:
        raise WorkflowError(f"{KIND_LABELS[ticket.kind]}工单不能执行「{action}」", "action")
    if spec.sources is not None and ticket.state not in spec.sources:
        raise WorkflowError(f"工单当前状态为「{STATE_LABELS[ticket.state]}」，不能执行「{action}」", "action", 409)
    refusal = _profile_refusal(ticket, action)
    if refusal is not None:
        raise refusal
    _check_permission(spec.permission, operator, ticket)
    cleaned = validate_inputs(spec.fields, inputs or {})
    _check_profile_inputs(ticket, cleaned)
    ctx = Context(session, operator, now or utcnow(), policy or active_policy())
    ticket.state = await spec.effect(ticket, cleaned, ctx)
    return await _log(session, ticket, action, operator, ctx.now, _remark(spec, cleaned, ctx), cleaned)


async def add_evidence(session: AsyncSession, ticket: Ticket, operator: User, *, filename: str, content_type: str,
                       size_bytes: int, sha256: str, storage_path: str, remark: str | None,
                       policy: DeadlinePolicy | None = None, now: dt.datetime | None = None) -> Evidence:
    """A stored evidence file's row and the 补充凭证 step naming it, in the caller's transaction."""
    evidence = Evidence(ticket_id=ticket.id, filename=filename, content_type=content_type, size_bytes=size_bytes,
                        sha256=sha256, storage_path=storage_path, uploaded_by_id=operator.id)
    session.add(evidence)
    await session.flush()
    await perform_action(session, ticket, "补充凭证", {"evidence_ids": [evidence.id], "remark": remark},
                         operator, now, policy=policy)
    return evidence


# --- registration ----------------------------------------------------------------------

REGISTRATION_FIELDS = (
    Field("kind", "工单类型"), Field("hotline", "热线"), Field("description", "诉求内容"),
    Field("complainant_phone", "诉求方电话"), Field("complainant_name", "诉求方姓名", required=False),
    Field("complainant_org", "工作单位", required=False),
    Field("respondent_name", "被诉方", required=False), Field("respondent_phone", "被诉方电话", required=False),
    Field("complaint_object", "投诉对象", required=False), Field("event_category", "事件类别", required=False),
    Field("province", "案件归属地（省）", required=False), Field("city", "案件归属地（市）", required=False),
    Field("county", "案件归属地（区县）", required=False),
    Field("amount", "涉案金额", "amount", required=False), Field("transcript", "通话转写", required=False),
    Field("unit_id", "处理单位", "unit", required=False), Field("answer", "答复内容", required=False),
    Field("source", "来源", required=False),
    Field("external_platform", "转来平台", required=False), Field("external_ref", "原平台工单号", required=False),
    Field("external_reply_due", "原平台答复期限", "date", required=False),
)
# Who registers what (001 §1.1 1)): the call centre registers its calls and the cases other platforms
# transfer (12345, the province office, 12301 online, 110 …); a handling unit registers the visits,
# letters and calls it takes itself (004 §6.1.2: 电话、现场、信函服务).
UNIT_SOURCES = frozenset({Source.WALK_IN, Source.LETTER, Source.UNIT_PHONE})
CENTRE_SOURCES = frozenset(Source) - {Source.UNIT_PHONE}
EXTERNAL_FIELDS = ("external_platform", "external_ref", "external_reply_due")
MAX_GROUP_SIZE = 100_000
# Complaints need the parties and the classification of 000 §3.2; reports a place.
REQUIRED_BY_KIND = {
    Kind.COMPLAINT: ("complainant_name", "respondent_name", "complaint_object", "event_category", "province"),
    Kind.REPORT: ("respondent_name", "province"),
    Kind.CONSULT: (),
}


def _labels() -> dict[str, str]:
    return {f.key: f.label for f in REGISTRATION_FIELDS}


def _check_categories(hotline: str, cleaned: dict[str, Any]) -> None:
    cats = dispatch.categories()
    objects = cats.complaint_objects.get(hotline, {})
    if "complaint_object" in cleaned and cleaned["complaint_object"] not in objects:
        raise WorkflowError(f"投诉对象应为 {'、'.join(objects)} 之一", "complaint_object")
    events = cats.event_categories.get(hotline, ())
    if "event_category" in cleaned and cleaned["event_category"] not in events:
        raise WorkflowError(f"事件类别应为 {'、'.join(events)} 之一", "event_category")


def validate_registration(data: dict[str, Any]) -> dict[str, Any]:
    cleaned = validate_inputs(REGISTRATION_FIELDS, data)
    try:
        kind = Kind(cleaned["kind"])
    except ValueError:
        raise WorkflowError("工单类型应为 consult（咨询）、complaint（投诉）或 report（举报）", "kind") from None
    cleaned["kind"] = kind
    hotlines = dispatch.unit_config().national
    if cleaned["hotline"] not in hotlines:
        raise WorkflowError(f"热线应为 {'、'.join(hotlines)} 之一", "hotline")
    for key in REQUIRED_BY_KIND[kind]:
        if key not in cleaned:
            raise WorkflowError(f"{KIND_LABELS[kind]}工单请填写{_labels()[key]}", key)
    _check_categories(cleaned["hotline"], cleaned)
    try:
        cleaned["source"] = Source(cleaned.get("source", Source.AGENT))
    except ValueError:
        raise WorkflowError(f"来源应为 {'、'.join(s.value for s in Source)} 之一", "source") from None
    external = [k for k in EXTERNAL_FIELDS if k in cleaned]
    if cleaned["source"] == Source.PLATFORM:
        for key in ("external_platform", "external_reply_due"):  # 001 §1.1 2), §6.2: its time limit noted
            if key not in cleaned:
                raise WorkflowError(f"其他平台转来的工单请填写{_labels()[key]}", key)
    elif external:
        raise WorkflowError("只有其他平台转来的工单（来源 platform）才有转来平台和答复期限", external[0])
    group = data.get("group_size", 1)
    if isinstance(group, bool) or not isinstance(group, int) or not 1 <= group <= MAX_GROUP_SIZE:
        raise WorkflowError(f"诉求人数应为 1 到 {MAX_GROUP_SIZE} 之间的整数", "group_size")
    cleaned["group_size"] = group
    calls = data.get("call_ids") or []
    if not isinstance(calls, list) or len(calls) > MAX_LIST_ITEMS or not all(isinstance(c, str) and c for c in calls):
        raise WorkflowError("来电编号应为字符串列表", "call_ids")
    with as_workflow_error():
        cleaned["call_ids"] = [inputs.column_text(c, "call_ids", "来电编号", CallRecord.__table__.c.ref)
                               for c in calls]
    if "answer" in cleaned and kind != Kind.CONSULT:
        raise WorkflowError("只有咨询工单可以在登记时直接答复", "answer")
    return cleaned


# One answer for an unknown reference and a call the operator may not link: the message must not tell
# which references exist (issue 12 item 1).
CALL_REFUSED = "来电编号无效，或您无权关联该来电"
# The alphabet and length of cti.models.new_call_ref: anything else names no call and never reaches SQL.
CALL_REF = re.compile(rf"[A-Za-z0-9_-]{{1,{CallRecord.__table__.c.ref.type.length}}}")


async def link_calls(session: AsyncSession, ticket: Ticket, refs: list[str], operator: User,
                     field: str = "call_ids") -> None:
    """Attach calls named by their public reference (``CallRecord.ref``), if ``operator`` may link each."""
    if not refs:
        return
    wanted = [r for r in dict.fromkeys(refs) if CALL_REF.fullmatch(r)]
    calls = {c.ref: c for c in (await session.scalars(select(CallRecord).where(CallRecord.ref.in_(wanted)))).all()}
    if len(calls) != len(dict.fromkeys(refs)) or not all(may_link_call(operator, c, ticket) for c in calls.values()):
        raise WorkflowError(CALL_REFUSED, field)
    await attach_calls(session, ticket, list(calls.values()), operator.id)


async def attach_calls(session: AsyncSession, ticket: Ticket, calls: list[CallRecord],
                       linked_by_id: int | None) -> None:
    """Store the links (``linked_by_id`` None: the system's own, e.g. a voice message's ticket)."""
    existing = {link.call_id: link for link in (await session.scalars(select(TicketCall).where(
        TicketCall.ticket_id == ticket.id, TicketCall.call_id.in_([c.call_id for c in calls])))).all()}
    for call in calls:
        link = existing.get(call.call_id)
        if link is None:
            session.add(TicketCall(ticket_id=ticket.id, call_id=call.call_id, linked_by_id=linked_by_id))
        elif link.linked_by_id is None and linked_by_id is not None:
            link.linked_by_id = linked_by_id  # someone entitled now vouches for an older, unattributed link
    grade_from_calls(ticket, [call.satisfaction for call in calls])
    await session.flush()


async def register_ticket(
    session: AsyncSession, data: dict[str, Any], operator: User, now: dt.datetime | None = None, *,
    policy: DeadlinePolicy | None = None,
) -> Ticket:
    """Register a call as a ticket at the call centre and dispatch it (to ``unit_id`` or the suggested unit).

    A consultation registered with ``answer`` is answered at once and closed at the call centre.
    Risk is graded; the caller publishes the alert after commit (:func:`tickets.risk.alert_if_needed`).
    """
    cleaned = validate_registration(data)
    now = now or utcnow()
    policy = policy or active_policy()
    own = await session.get(Unit, operator.unit_id) if operator.unit_id else None
    at_unit = own is not None and own.level != UnitLevel.CALL_CENTRE
    if at_unit:
        if cleaned["source"] not in UNIT_SOURCES:
            raise PermissionDenied("处理单位只能登记本单位接待的来访、来信或单位来电（来源 walk_in、letter 或 "
                                   "unit_phone）")
        centre = await dispatch.call_centre(session)  # where a 退回 sends it, as for any ticket
    elif own is None and operator.role != Role.ADMIN:
        raise PermissionDenied("只有呼叫中心坐席或处理单位可以登记工单")
    else:
        centre = own or await dispatch.call_centre(session)
        if cleaned["source"] not in CENTRE_SOURCES:
            raise WorkflowError("呼叫中心登记的工单来源不能是单位来电", "source")
    kind: Kind = cleaned["kind"]
    answered = "answer" in cleaned
    if at_unit and own is not None and "unit_id" not in cleaned:
        unit = own  # 本单位处理案件 (001 §2 1)): the unit keeps what it registered unless it names another
        root = await _hotline_root(session, cleaned["hotline"])
        if not _path_within(unit.path, root.path):
            raise WorkflowError(f"本单位不属于 {cleaned['hotline']} 热线的处理体系", "hotline")
        if answered:
            raise WorkflowError("处理单位登记的咨询请在登记后答复", "answer")
    elif answered:
        unit = centre
    elif "unit_id" in cleaned:
        unit = await _unit(session, cleaned["unit_id"], "unit_id")
        root = await _hotline_root(session, cleaned["hotline"])
        if not _path_within(unit.path, root.path):
            raise WorkflowError(f"所选单位不属于 {cleaned['hotline']} 热线的处理体系", "unit_id")
        if at_unit and own is not None and not _path_within(unit.path, own.path):
            raise WorkflowError("处理单位登记的工单只能由本单位或下级单位办理", "unit_id")
    else:
        unit = await dispatch.suggest_unit(session, cleaned["hotline"], cleaned.get("province"),
                                           cleaned.get("city"), cleaned.get("county"),
                                           cleaned.get("complaint_object"))
        if unit is None:
            raise WorkflowError("没有可派发的处理单位，请选择处理单位", "unit_id")
    # The number is drawn first: on SQLite this takes the write lock before anything else is written.
    number = await next_number(session, policy.local_date(now))
    columns = {k: v for k, v in cleaned.items() if k not in ("unit_id", "answer", "call_ids")}
    if "amount" in columns:
        columns["amount"] = Decimal(columns["amount"])
    if "external_reply_due" in columns:
        columns["external_reply_due"] = dt.date.fromisoformat(columns["external_reply_due"])
        if columns["external_reply_due"] < policy.local_date(now):
            raise WorkflowError("原平台答复期限不能早于登记日期", "external_reply_due")
    ticket = Ticket(number=number, state=State.PENDING, unit_id=unit.id, unit_path=unit.path,
                    centre_unit_id=centre.id, created_at=now, created_by_id=operator.id,
                    created_by_name=operator.display_name, transfer_chain=[], risk_reasons=[], **columns)
    ticket.unit = unit
    apply_deadlines(ticket, policy)
    session.add(ticket)
    await session.flush()
    await link_calls(session, ticket, cleaned["call_ids"], operator)
    grade = await risk.assess(session, ticket)
    remark = f"登记{KIND_LABELS[kind]}工单；来源：{SOURCE_LABELS[ticket.source]}；处理单位：{unit.name}"
    if ticket.external_platform:
        remark += (f"；转来平台：{ticket.external_platform}；原平台工单号：{ticket.external_ref or '无'}"
                   f"；原平台答复期限：{columns['external_reply_due'].isoformat()}")
    if grade is not None:
        remark += f"；风险等级：{grade.level}"
    await _log(session, ticket, "登记", operator, now, remark,
               {"unit_id": unit.id, "risk_level": ticket.risk_level})
    if answered:
        await perform_action(session, ticket, "答复", {"answer": cleaned["answer"]}, operator, now, policy=policy)
    return ticket

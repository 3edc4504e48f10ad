"""Service-quality indicators, each exactly as its source defines it (one place for every definition).

Sources: the 12365 draft standard (seed 004 §3.7–3.10 and Table 1 of §7.1.1), GB/T 33358-2016 政府热线服务规范
(「电话受理时应在15秒之内接听，连续24小时内呼叫接通率应大于等于95%」) and the operational figures team
leads use. Every :class:`Definition` names its clause, numerator, denominator, what is left out and the unit;
the report prints them beside the figures, and ``tests/desk/test_kpi.py`` checks each one against a hand
computation on a small known set of calls and tickets.

Facts are loaded from the database by :func:`load_facts`: one row per call into a DID *from its arrival*
(the dialplan's HotlineCallStart, before the recording notice and the IVR), so IVR-only, after-hours,
voice-message calls and calls that never reached a queue are all in 「呼入总数」.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core import satisfaction as grades
from core.calls import CUT_OFF_CAUSES, CallbackRequest, CallRecord, call_waits, span
from core.metrics import percentile as nearest_rank
from tickets.deadlines import WorkCalendar
from tickets.models import CLOSED_STATES, HANDOVER_ACTION, Kind, State, Ticket, TicketAction

# 004 Table 1 item 9: 「来电者空等时间宜不超过1分钟」.
WAIT_LIMIT_SECONDS = 60.0
# GB/T 33358-2016: 「电话受理时应在15秒之内接听」.
GBT_ANSWER_SECONDS = 15.0
# Kept for the wallboard's per-queue figure until it moves to the settings below.
SERVICE_LEVEL_SECONDS = WAIT_LIMIT_SECONDS


@dataclass(frozen=True)
class KpiSettings:
    """What a centre may choose; the defaults are the seed's reading.

    ``short_abandon_seconds``: a call the caller left within this many seconds of its arrival, never
    answered, is left out of every call denominator (0: the seed counts every call into the hotline).
    ``service_level_seconds`` / ``service_level_target``: the operational X-in-Y figure.
    ``wrapup_seconds``: after-call work per answered call (Asterisk's queue wrapuptime, during which the
    agent gets no call), added to the handling time. ``agent_complaint_objects``: the 投诉对象 values
    that mean a complaint about a seat agent (Table 1 item 22).
    """

    short_abandon_seconds: float = 0.0
    service_level_seconds: float = 20.0
    service_level_target: float = 0.8
    wrapup_seconds: float = 0.0
    agent_complaint_objects: tuple[str, ...] = ("坐席服务",)

    @classmethod
    def from_settings(cls, kpi: Mapping[str, Any], wrapup_seconds: float = 0.0) -> KpiSettings:
        """From the ``[kpi]`` section of hotline.toml (missing keys keep the defaults)."""
        base = cls(wrapup_seconds=float(wrapup_seconds))
        values: dict[str, Any] = {}
        for key in ("short_abandon_seconds", "service_level_seconds", "service_level_target"):
            if key in kpi:
                number = float(kpi[key])
                if number < 0 or (key == "service_level_target" and number > 1) or not math.isfinite(number):
                    raise ValueError(f"[kpi] {key} = {kpi[key]!r}: out of range")
                values[key] = number
        if "agent_complaint_objects" in kpi:
            values["agent_complaint_objects"] = tuple(str(v) for v in kpi["agent_complaint_objects"])
        return cls(**{**base.__dict__, **values})


# --- facts ----------------------------------------------------------------------------------------

class Outcome(enum.StrEnum):
    """How a call into the hotline ended, from its arrival."""

    ANSWERED = "answered"                # an agent answered
    ABANDONED_QUEUE = "abandoned_queue"  # left while waiting for an agent
    ABANDONED_IVR = "abandoned_ivr"      # left in the recording notice or the menus, never asked for an agent
    SELF_SERVICE = "self_service"        # heard a ticket's status read back by the IVR, then hung up
    VOICEMAIL = "voicemail"              # left a voice message (after hours, or from the queue)
    CALLBACK = "callback"                # asked to be called back, keeping their place in line
    CUT_OFF = "cut_off"                  # cut off by the platform (Asterisk restarted, its node was lost)
    AFTER_HOURS = "after_hours"          # after hours, hung up before leaving a message
    IN_PROGRESS = "in_progress"          # still in the IVR or the queue as the report is made


OUTCOME_LABELS = {
    Outcome.ANSWERED: "人工接通", Outcome.ABANDONED_QUEUE: "排队中放弃", Outcome.ABANDONED_IVR: "语音导航中挂机",
    Outcome.SELF_SERVICE: "自助查询", Outcome.VOICEMAIL: "录音留言", Outcome.CALLBACK: "预约回拨",
    Outcome.CUT_OFF: "系统故障中断",
    Outcome.AFTER_HOURS: "非工作时间未留言", Outcome.IN_PROGRESS: "进行中",
}


@dataclass(frozen=True)
class CallFact:
    """One inbound call into a DID, from its arrival (``started_at``) to its end."""

    started_at: datetime
    queued_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    abandoned: bool = False           # the CTI's verdict: queued, never answered, no message or callback
    queue_wait: float | None = None   # queue entry -> answer (answered) or -> hang-up (abandoned)
    talk_seconds: float | None = None
    hold_seconds: float = 0.0
    agent_id: int | None = None
    hotline: str | None = None
    ivr_path: str | None = None
    voicemail: bool = False
    callback: bool = False
    lookup_ticket: str | None = None
    satisfaction: str | None = None   # 一次一评 grade (core.satisfaction); None when no agent answered
    hangup_cause: str | None = None

    # Derived once per call (the report reads them for every indicator).
    arrival_wait: float | None = field(init=False)  # §3.8 热线等待时间: arrival -> an agent answered
    answer_wait: float | None = field(init=False)   # queue entry -> answered (ASA, service level)
    duration: float | None = field(init=False)      # arrival -> hang-up (None while still on)
    outcome: Outcome = field(init=False)

    def __post_init__(self) -> None:
        # The same derivation the call records store for the SQL report (core.calls.call_waits).
        arrival_wait, answer_wait = call_waits(self.started_at, self.queued_at, self.answered_at, self.queue_wait)
        object.__setattr__(self, "arrival_wait", arrival_wait)
        object.__setattr__(self, "answer_wait", answer_wait)
        object.__setattr__(self, "duration", span(self.started_at, self.ended_at))
        object.__setattr__(self, "outcome", self._outcome())

    def _outcome(self) -> Outcome:
        if self.answered_at is not None:
            return Outcome.ANSWERED
        if self.voicemail:
            return Outcome.VOICEMAIL
        if self.callback:
            return Outcome.CALLBACK
        if self.hangup_cause in CUT_OFF_CAUSES:  # not the citizen's choice: never an abandon
            return Outcome.CUT_OFF
        if self.ended_at is None and not self.abandoned:
            return Outcome.IN_PROGRESS
        if self.queued_at is not None:
            return Outcome.ABANDONED_QUEUE
        if (self.ivr_path or "").startswith("after-hours"):
            return Outcome.AFTER_HOURS
        if self.lookup_ticket:
            return Outcome.SELF_SERVICE
        return Outcome.ABANDONED_IVR


@dataclass(slots=True)  # not frozen: the SQL loader makes some 18 000 a month, and a frozen init costs 3x
class TicketFact:
    kind: str
    state: str
    created_at: datetime
    accepted_at: datetime | None = None
    closed_at: datetime | None = None
    handed_over_at: datetime | None = None   # the 移交 action
    transferred_at: datetime | None = None   # arrival at the unit that holds it (转办)
    review_outcome: str | None = None        # the outcome awaiting the unit head's review
    complaint_object: str | None = None
    hotline: str | None = None
    visit_due: bool = False                  # closing made a 回访 task (tickets.return_visits)
    visit_satisfaction: str | None = None    # the grade the citizen gave on the 回访; None: not reached (yet)
    count: int = 1   # tickets this row stands for (the SQL loader groups tickets with the same facts and days)


@dataclass
class Facts:
    """Everything the indicators are computed from, for one period (``start``..``end`` local dates)."""

    start: date
    end: date
    zone: tzinfo
    calls: list[CallFact] = field(default_factory=list)
    tickets: list[TicketFact] = field(default_factory=list)
    previous_calls: int | None = None   # calls into the hotline in the equal period just before
    as_of: date | None = None           # the day deadlines are judged on (the period's end, or today)
    agent_names: dict[int, str] = field(default_factory=dict)
    staffed_seconds: dict[int, float] | None = None  # logged-in time per agent, where recorded
    call_tally: CallTally | None = None  # the calls already aggregated in SQL (kpi_sql), instead of ``calls``
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)
    _dates: dict[datetime, date] = field(default_factory=dict, repr=False)

    def local_date(self, moment: datetime) -> date:
        # Remembered: the SQL loader's tickets share a few hundred moments (local noons) among thousands of
        # rows, and a zone conversion costs more than the look-up.
        day = self._dates.get(moment)
        if day is None:
            day = self._dates[moment] = moment.astimezone(self.zone).date()
        return day

    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        """Computed once per report: several indicators share the same subsets of calls."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]


# --- definitions -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Definition:
    key: str
    name: str
    source: str
    numerator: str
    denominator: str
    excluded: str
    unit: str  # "%" | "秒" | "通"

    @property
    def text(self) -> str:
        """One line for the page's hover text and the export."""
        if self.unit == "%":
            body = f"{self.numerator} ÷ {self.denominator}"
        else:
            body = f"{self.numerator}（{self.denominator}）"
        return f"{self.name}（{self.source}）= {body}；不计：{self.excluded}"


@dataclass(frozen=True)
class Figure:
    definition: Definition
    value: float | None
    numerator: float | None = None
    denominator: float | None = None

    @property
    def display(self) -> str:
        if self.value is None:
            return "—"
        if self.definition.unit == "%":
            return f"{self.value * 100:.1f}%"
        if self.definition.unit == "秒":
            return f"{self.value:.1f} 秒"
        return f"{self.value:g}"


Compute = Callable[[Facts, KpiSettings], Figure]


@dataclass(frozen=True)
class Indicator:
    definition: Definition
    compute: Compute
    group: str  # 004 | GB/T 33358 | 运营


def _rate(definition: Definition, part: float, whole: float) -> Figure:
    return Figure(definition, part / whole if whole else None, part, whole)


def _mean(definition: Definition, total: float, count: int) -> Figure:
    return Figure(definition, total / count if count else None, total, count)


def counted(facts: Facts, settings: KpiSettings) -> list[CallFact]:
    """Calls into the hotline that count: all of them, less short abandons where the centre chose so."""
    limit = settings.short_abandon_seconds
    if limit <= 0:
        return facts.calls
    return facts.cached(("counted", limit), lambda: [
        c for c in facts.calls
        if c.answered_at is not None or c.voicemail or c.callback or c.duration is None or c.duration >= limit])


WAIT_BINS = ((0, 10, "0–10 秒"), (10, 30, "10–30 秒"), (30, 60, "30–60 秒"), (60, 120, "1–2 分钟"),
             (120, math.inf, "2 分钟以上"))


@dataclass
class AgentRow:
    agent_id: int
    name: str
    calls: int = 0
    handling_seconds: float = 0.0
    rated: int = 0
    satisfied: int = 0   # 满意 or 基本满意

    @property
    def satisfaction_rate(self) -> float | None:
        return self.satisfied / self.rated if self.rated else None

    @property
    def average_handling(self) -> float | None:
        return self.handling_seconds / self.calls if self.calls else None


@dataclass
class DayRow:
    day: date
    calls: int = 0
    offered: int = 0
    answered: int = 0
    abandoned: int = 0


@dataclass
class CallTally:
    """Every count and sum the call indicators divide, for one set of settings.

    Made from the calls one by one (:func:`tally_calls`) or by SQL aggregates over the call records
    (``quality.kpi_sql``, what the report page and the bench use); ``tests/tickets/test_kpi.py`` checks
    both against the same hand computation. "Counted" calls are all calls less the centre's short abandons;
    "offered" are counted calls that entered a queue; handling and satisfaction figures take every call.
    """

    settings: KpiSettings
    calls: int = 0                 # every call into the hotline
    counted: int = 0
    counted_answered: int = 0
    counted_wait_sum: float = 0.0  # arrival -> answer, over counted answered calls
    within_15: int = 0             # counted, answered within 15 s of arrival
    ivr_abandoned: int = 0         # counted, outcome ABANDONED_IVR
    offered: int = 0
    offered_answered: int = 0
    within_minute: int = 0         # offered, answered within 60 s of arrival
    service_level: int = 0         # offered, answered within Y s of queue entry
    asa_sum: float = 0.0           # queue entry -> answer, over offered answered calls
    abandoned_queue: int = 0       # offered, outcome ABANDONED_QUEUE
    abandon_wait_sum: float = 0.0
    wait_p90: float | None = None  # nearest rank over counted answered calls' arrival waits
    histogram: list[int] = field(default_factory=lambda: [0] * len(WAIT_BINS))
    outcomes: dict[Outcome, int] = field(default_factory=lambda: {o: 0 for o in Outcome})
    answered: int = 0              # every answered call (AHT, 一次一评)
    talk_hold_sum: float = 0.0     # talk + hold over every answered call (wrap-up added per call)
    surveyed: int = 0              # answered, with a satisfaction record (grade or 未评价)
    rated: int = 0                 # answered, graded 满意/基本满意/不满意
    satisfied: int = 0             # answered, graded 满意/基本满意
    agents: dict[int, AgentRow] = field(default_factory=dict)   # names filled in by compute()
    days: list[DayRow] = field(default_factory=list)

    @property
    def handling_sum(self) -> float:
        return self.talk_hold_sum + self.settings.wrapup_seconds * self.answered


def wait_bin(seconds: float) -> int:
    return next(i for i, (low, high, _label) in enumerate(WAIT_BINS) if low <= seconds < high)


def tally_calls(f: Facts, s: KpiSettings) -> CallTally:
    """The tally of ``f.calls`` (or the one loaded in SQL), once per report and settings."""
    if f.call_tally is not None:
        if f.call_tally.settings != s:
            raise ValueError("calls aggregated for other settings than the report's")
        return f.call_tally
    return f.cached(("tally", s), lambda: _tally(f, s))


def _tally(f: Facts, s: KpiSettings) -> CallTally:
    t = CallTally(s, calls=len(f.calls))
    waits = []
    for c in counted(f, s):
        t.counted += 1
        if c.answered_at is not None:
            t.counted_answered += 1
            t.counted_wait_sum += c.arrival_wait
            t.within_15 += c.arrival_wait <= GBT_ANSWER_SECONDS
            t.histogram[wait_bin(c.arrival_wait)] += 1
            waits.append(c.arrival_wait)
        t.ivr_abandoned += c.outcome == Outcome.ABANDONED_IVR
        if c.queued_at is None:
            continue
        t.offered += 1
        t.abandoned_queue += c.outcome == Outcome.ABANDONED_QUEUE
        if c.outcome == Outcome.ABANDONED_QUEUE:
            t.abandon_wait_sum += c.queue_wait or 0.0
        if c.answered_at is not None:
            t.offered_answered += 1
            t.within_minute += c.arrival_wait <= WAIT_LIMIT_SECONDS
            t.service_level += (c.answer_wait or 0) <= s.service_level_seconds
            t.asa_sum += c.answer_wait or 0.0
    t.wait_p90 = nearest_rank(waits, 90) if waits else None
    for c in f.calls:
        t.outcomes[c.outcome] += 1
        if c.answered_at is None:
            continue
        t.answered += 1
        t.talk_hold_sum += (c.talk_seconds or 0.0) + (c.hold_seconds or 0.0)
        t.surveyed += c.satisfaction is not None
        t.rated += c.satisfaction in RATED
        t.satisfied += c.satisfaction in (grades.SATISFIED, grades.BASIC)
        if c.agent_id is not None:
            row = t.agents.setdefault(c.agent_id, AgentRow(c.agent_id, ""))
            row.calls += 1
            row.handling_seconds += handling_seconds(c, s)
            row.rated += c.satisfaction in RATED
            row.satisfied += c.satisfaction in (grades.SATISFIED, grades.BASIC)
    t.days = _daily(f, s)
    return t


_CALCULATED = WorkCalendar(provisional=True)


@functools.lru_cache(maxsize=65536)
def working_days(start: date, end: date) -> int:
    """Working days after ``start`` up to and including ``end`` (Chinese calendar with 调休)."""
    return _CALCULATED.working_days_between(start, end)


CASES = (Kind.COMPLAINT.value, Kind.REPORT.value)
ACCEPTED_KINDS = (Kind.CONSULT.value, *CASES)
# The enum values the ticket indicators compare with, read once (an enum member's .value is a descriptor
# call: tens of thousands of them per report).
_CONSULT, _COMPLAINT = Kind.CONSULT.value, Kind.COMPLAINT.value
_RETURNED, _REJECTED, _PENDING_REVIEW = State.RETURNED.value, State.REJECTED.value, State.PENDING_REVIEW.value
_NOT_IN_SCOPE = (State.REJECTED.value, State.HANDED_OVER.value)  # 不予受理, 移交: outside item 14
CLOSED_STATE_VALUES = frozenset(s.value for s in CLOSED_STATES)
FINISHED_STATE_VALUES = CLOSED_STATE_VALUES - {_REJECTED}


def is_accepted(t: TicketFact) -> bool:
    """受理: a consultation is taken in by the hotline itself when registered; a complaint or report
    when a handling unit performed 受理 (a 不予受理, 移交 or 退回 ticket was never accepted)."""
    if t.kind == _CONSULT:
        return t.state != _RETURNED
    return t.kind in CASES and t.accepted_at is not None


def is_finished(t: TicketFact) -> bool:
    """处理完毕: closed after the unit head's review (consultation: answered), never 不予受理."""
    return t.state in FINISHED_STATE_VALUES


def is_replied(t: TicketFact) -> bool:
    """已答复: the citizen has been given the outcome: finished, or the outcome entered and awaiting only
    the head's review (an accepted case still being handled has not been replied to)."""
    if is_finished(t):
        return True
    return t.state == _PENDING_REVIEW and t.review_outcome is not None and t.review_outcome != _REJECTED


def _d(key: str, name: str, source: str, numerator: str, denominator: str, excluded: str, unit: str) -> Definition:
    return Definition(key, name, source, numerator, denominator, excluded, unit)


ANSWERING = _d("answering_rate", "接线率", "004 §3.7，表1第19项", "坐席实际接通的来电数",
               "呼入热线的来电总数（含语音导航中结束、非工作时间、录音留言、未进入排队的来电）",
               "外呼；中心设定的短时放弃（默认不排除）", "%")


def answering_rate(f: Facts, s: KpiSettings) -> Figure:
    t = tally_calls(f, s)
    return _rate(ANSWERING, t.counted_answered, t.counted)


WAITING = _d("waiting_time", "热线等待时间（平均）", "004 §3.8", "各接通来电从呼入到坐席接通的时长之和",
             "坐席接通的来电数", "未接通的来电", "秒")


def waiting_time(f: Facts, s: KpiSettings) -> Figure:
    t = tally_calls(f, s)
    return _mean(WAITING, t.counted_wait_sum, t.counted_answered)


WAITING_P90 = _d("waiting_time_p90", "热线等待时间（90%）", "004 §3.8", "从呼入到接通时长的第90百分位（最近秩）",
                 "坐席接通的来电", "未接通的来电", "秒")


def waiting_time_p90(f: Facts, s: KpiSettings) -> Figure:
    t = tally_calls(f, s)
    return Figure(WAITING_P90, t.wait_p90, None, t.counted_answered)


WAIT_WITHIN_MINUTE = _d("wait_within_minute", "空等不超过1分钟的比例", "004 表1第9项",
                        "从呼入到坐席接通不超过60秒的来电数",
                        "请求人工服务（进入排队）的来电数：等待中放弃的也计入，视为未达标",
                        "未请求人工服务的来电；短时放弃（按设定）", "%")


def wait_within_minute(f: Facts, s: KpiSettings) -> Figure:
    t = tally_calls(f, s)
    return _rate(WAIT_WITHIN_MINUTE, t.within_minute, t.offered)


REPLY = _d("reply_rate", "答复率", "004 §3.9，表1第20项",
           "已答复的咨询、投诉、举报数（咨询已答复；投诉举报已办结，或办理结果已录入待审核）",
           "受理的咨询、投诉、举报数（咨询登记即受理；投诉举报以处理单位「受理」为准）",
           "不予受理、移交、退回、待分类的工单（未受理）", "%")


def reply_rate(f: Facts, s: KpiSettings) -> Figure:
    accepted = [t for t in f.tickets if is_accepted(t)]
    return _rate(REPLY, sum(t.count for t in accepted if is_replied(t)), sum(t.count for t in accepted))


ENDING = _d("ending_rate", "办结率", "004 §3.10，表1第21项", "处理完毕（审核通过结案；咨询已答复）的咨询、投诉、举报数",
            "受理的咨询、投诉、举报数", "不予受理（从未受理，分子分母都不计）、移交、退回、待分类", "%")


def ending_rate(f: Facts, s: KpiSettings) -> Figure:
    accepted = [t for t in f.tickets if is_accepted(t)]
    return _rate(ENDING, sum(t.count for t in accepted if is_finished(t)), sum(t.count for t in accepted))


ACCEPT_IN_TIME = _d("accepted_within_5", "5个工作日内受理", "004 表1第14项",
                    "登记后5个工作日内由处理单位受理的投诉、举报数",
                    "属于受理范围的投诉、举报数：已受理的，以及截至统计日已超5个工作日仍未受理的",
                    "不予受理、移交的（不属受理范围）；未超期的待受理工单；「告知申诉、举报者」平台尚无记录，本项只计时限",
                    "%")


def accepted_within_5(f: Facts, s: KpiSettings) -> Figure:
    as_of = f.as_of or f.end
    hit = whole = 0
    for t in f.tickets:
        if t.kind not in CASES or t.state in _NOT_IN_SCOPE:
            continue
        registered = f.local_date(t.created_at)
        if t.accepted_at is not None:
            whole += t.count
            hit += t.count * (working_days(registered, f.local_date(t.accepted_at)) <= 5)
        elif working_days(registered, as_of) > 5:
            whole += t.count
    return _rate(ACCEPT_IN_TIME, hit, whole)


HANDOVER_IN_TIME = _d("handed_over_within_2", "2个工作日内移送", "004 表1第15项",
                      "到达本单位（登记或转办到达）后2个工作日内完成移交的投诉、举报数",
                      "移交的投诉、举报数",
                      "其余工单。平台中「决定不受理并移送」是同一次移交操作，故从工单到达本单位起算（比原文严格）", "%")


def handed_over_within_2(f: Facts, s: KpiSettings) -> Figure:
    hit = whole = 0
    for t in f.tickets:
        if t.kind not in CASES or t.handed_over_at is None:
            continue
        arrived = max(t.created_at, t.transferred_at or t.created_at)
        whole += t.count
        hit += t.count * (working_days(f.local_date(arrived), f.local_date(t.handed_over_at)) <= 2)
    return _rate(HANDOVER_IN_TIME, hit, whole)


FINISH_IN_TIME = _d("finished_within_60", "60个工作日内办结", "004 表1第17项",
                    "受理后60个工作日内处理完毕的投诉、举报数",
                    "已受理（不需移送）的投诉、举报中：已处理完毕的，以及截至统计日受理已满60个工作日仍未完毕的",
                    "未受理的；受理未满60个工作日且仍在办理的", "%")


def finished_within_60(f: Facts, s: KpiSettings) -> Figure:
    as_of = f.as_of or f.end
    hit = whole = 0
    for t in f.tickets:
        if t.kind not in CASES or t.accepted_at is None:
            continue
        accepted = f.local_date(t.accepted_at)
        if is_finished(t) and t.closed_at is not None:
            whole += t.count
            hit += t.count * (working_days(accepted, f.local_date(t.closed_at)) <= 60)
        elif working_days(accepted, as_of) > 60:
            whole += t.count
    return _rate(FINISH_IN_TIME, hit, whole)


AGENT_COMPLAINTS = _d("agent_complaint_rate", "座席员受客户投诉率", "004 表1第22项",
                      "投诉对象为座席服务的投诉数（投诉对象取值可设定）", "坐席接通的来电数",
                      "其他投诉对象；未接通的来电", "%")


def agent_complaint_rate(f: Facts, s: KpiSettings) -> Figure:
    complaints = sum(t.count for t in f.tickets if t.kind == _COMPLAINT
                     and t.complaint_object in s.agent_complaint_objects)
    return _rate(AGENT_COMPLAINTS, complaints, tally_calls(f, s).counted_answered)


GROWTH = _d("volume_growth", "热线业务量增长", "004 表1第23项",
            "本期呼入总数 − 上一等长期间呼入总数", "上一等长期间呼入总数", "外呼", "%")


def volume_growth(f: Facts, s: KpiSettings) -> Figure:
    if f.previous_calls is None:
        return Figure(GROWTH, None)
    now = tally_calls(f, s).calls
    return Figure(GROWTH, (now - f.previous_calls) / f.previous_calls if f.previous_calls else None,
                  now - f.previous_calls, f.previous_calls)


GBT_15 = _d("answered_within_15", "15秒内接听率", "GB/T 33358-2016",
            "从呼入到坐席接通不超过15秒的来电数", "呼入热线的来电总数", "外呼；短时放弃（按设定）", "%")


def answered_within_15(f: Facts, s: KpiSettings) -> Figure:
    t = tally_calls(f, s)
    return _rate(GBT_15, t.within_15, t.counted)


GBT_24H = _d("connected_24h", "连续24小时呼叫接通率（最低日）", "GB/T 33358-2016（应≥95%）",
             "各自然日坐席接通的来电数", "该日呼入热线的来电总数；取期间内最低的一日", "没有来电的日子", "%")


def connected_24h(f: Facts, s: KpiSettings) -> Figure:
    days = tally_calls(f, s).days
    rates = [(d.answered / d.calls, d) for d in days if d.calls]
    if not rates:
        return Figure(GBT_24H, None)
    worst, day = min(rates, key=lambda r: (r[0], r[1].day))
    return Figure(GBT_24H, worst, day.answered, day.calls)


SERVICE_LEVEL = _d("service_level", "服务水平（X秒内接通）", "运营指标，Y 秒可设定",
                   "进入排队后 Y 秒内接通的来电数", "进入排队的来电数（排队中放弃、留言、回拨的也计入）",
                   "未进入排队的来电；短时放弃（按设定）", "%")


def service_level(f: Facts, s: KpiSettings) -> Figure:
    t = tally_calls(f, s)
    return _rate(SERVICE_LEVEL, t.service_level, t.offered)


OFFERED_ANSWER = _d("offered_answer_rate", "进入排队来电的人工接通率", "运营指标（原报表的「接线率」，并非 004 §3.7）",
                    "坐席接通的来电数", "进入排队的来电数", "未进入排队的来电；短时放弃（按设定）", "%")


def offered_answer_rate(f: Facts, s: KpiSettings) -> Figure:
    t = tally_calls(f, s)
    return _rate(OFFERED_ANSWER, t.offered_answered, t.offered)


ASA = _d("asa", "平均应答速度 ASA", "运营指标", "各接通来电从进入排队到接通的时长之和", "坐席接通的来电数",
         "未接通的来电；排队之前语音导航的时间", "秒")


def asa(f: Facts, s: KpiSettings) -> Figure:
    t = tally_calls(f, s)
    return _mean(ASA, t.asa_sum, t.offered_answered)


ABANDON = _d("abandon_rate", "排队放弃率", "运营指标", "排队中放弃的来电数", "进入排队的来电数",
             "留言或预约回拨的（不算放弃）；短时放弃（按设定）", "%")


def abandon_rate(f: Facts, s: KpiSettings) -> Figure:
    t = tally_calls(f, s)
    return _rate(ABANDON, t.abandoned_queue, t.offered)


IVR_ABANDON = _d("ivr_abandon_rate", "语音导航中挂机率", "运营指标", "未请求人工、未自助查询、未留言即挂机的来电数",
                 "呼入热线的来电总数", "非工作时间的来电单独统计；短时放弃（按设定）", "%")


def ivr_abandon_rate(f: Facts, s: KpiSettings) -> Figure:
    t = tally_calls(f, s)
    return _rate(IVR_ABANDON, t.ivr_abandoned, t.counted)


TIME_TO_ABANDON = _d("time_to_abandon", "平均放弃前等待", "运营指标", "各排队放弃来电从进入排队到挂机的时长之和",
                     "排队放弃的来电数", "接通、留言、回拨的来电", "秒")


def time_to_abandon(f: Facts, s: KpiSettings) -> Figure:
    t = tally_calls(f, s)
    return _mean(TIME_TO_ABANDON, t.abandon_wait_sum, t.abandoned_queue)


AHT = _d("aht", "平均处理时长 AHT", "运营指标", "各接通来电的通话、保持与话后整理时长之和（话后整理取队列设定的时长）",
         "坐席接通的来电数", "未接通的来电", "秒")


def handling_seconds(call: CallFact, settings: KpiSettings) -> float:
    return (call.talk_seconds or 0.0) + (call.hold_seconds or 0.0) + settings.wrapup_seconds


def aht(f: Facts, s: KpiSettings) -> Figure:
    t = tally_calls(f, s)
    return _mean(AHT, t.handling_sum, t.answered)


RATED = (grades.SATISFIED, grades.BASIC, grades.DISSATISFIED)
SATISFACTION = _d("satisfaction_rate", "满意率（一次一评）", "GB/T 33358（工单记录回访结果）；一次一评",
                  "评价为满意或基本满意的来电数", "坐席接通且来电人按键评价的来电数",
                  "未评价（来电人先挂机或未按键，单列于参评率）；未接通的来电", "%")


def satisfaction_rate(f: Facts, s: KpiSettings) -> Figure:
    t = tally_calls(f, s)
    return _rate(SATISFACTION, t.satisfied, t.rated)


SURVEY_TAKEN = _d("survey_rate", "参评率（一次一评）", "一次一评", "来电人按键评价的来电数", "坐席接通的来电数",
                  "未接通的来电；平台启用评价之前的来电（无评价记录）", "%")


def survey_rate(f: Facts, s: KpiSettings) -> Figure:
    t = tally_calls(f, s)
    return _rate(SURVEY_TAKEN, t.rated, t.surveyed)


VISITED = _d("return_visit_rate", "回访率", "GB/T 33358-2016（工单记录回访结果）",
             "已回访（联系到来电人并记录回访结果与满意度）的工单数",
             "结案后须回访的投诉、举报数（按 [return_visits] 设定生成回访任务的工单，按登记日期统计）",
             "不需回访的工单；多次未接通的只计入分母", "%")


def return_visit_rate(f: Facts, s: KpiSettings) -> Figure:
    due = [t for t in f.tickets if t.visit_due]
    return _rate(VISITED, sum(t.count for t in due if t.visit_satisfaction in RATED), sum(t.count for t in due))


VISIT_SATISFIED = _d("visit_satisfaction_rate", "回访满意率", "GB/T 33358-2016（工单记录回访结果）；004 §6.2.3.2（当事人满意度）",
                     "回访评价为满意或基本满意的工单数", "已回访并记录满意度的工单数",
                     "未联系到来电人的回访；尚未回访的工单", "%")


def visit_satisfaction_rate(f: Facts, s: KpiSettings) -> Figure:
    rated = [t for t in f.tickets if t.visit_due and t.visit_satisfaction in RATED]
    return _rate(VISIT_SATISFIED, sum(t.count for t in rated if t.visit_satisfaction in (grades.SATISFIED, grades.BASIC)),
                 sum(t.count for t in rated))


OCCUPANCY = _d("occupancy", "坐席占用率", "运营指标", "坐席处理时长（通话+保持+话后整理）之和", "坐席签入时长之和",
               "未记录签入时长时不计算", "%")


def occupancy(f: Facts, s: KpiSettings) -> Figure:
    if not f.staffed_seconds:
        return Figure(OCCUPANCY, None)
    busy = sum(a.handling_seconds for a in tally_calls(f, s).agents.values() if a.agent_id in f.staffed_seconds)
    return _rate(OCCUPANCY, busy, sum(f.staffed_seconds.values()))


INDICATORS: tuple[Indicator, ...] = (
    Indicator(ANSWERING, answering_rate, "004"),
    Indicator(WAITING, waiting_time, "004"),
    Indicator(WAITING_P90, waiting_time_p90, "004"),
    Indicator(WAIT_WITHIN_MINUTE, wait_within_minute, "004"),
    Indicator(REPLY, reply_rate, "004"),
    Indicator(ENDING, ending_rate, "004"),
    Indicator(ACCEPT_IN_TIME, accepted_within_5, "004"),
    Indicator(HANDOVER_IN_TIME, handed_over_within_2, "004"),
    Indicator(FINISH_IN_TIME, finished_within_60, "004"),
    Indicator(AGENT_COMPLAINTS, agent_complaint_rate, "004"),
    Indicator(GROWTH, volume_growth, "004"),
    Indicator(GBT_15, answered_within_15, "GB/T 33358"),
    Indicator(GBT_24H, connected_24h, "GB/T 33358"),
    Indicator(SATISFACTION, satisfaction_rate, "GB/T 33358"),
    Indicator(SURVEY_TAKEN, survey_rate, "GB/T 33358"),
    Indicator(VISITED, return_visit_rate, "GB/T 33358"),
    Indicator(VISIT_SATISFIED, visit_satisfaction_rate, "GB/T 33358"),
    Indicator(SERVICE_LEVEL, service_level, "运营"),
    Indicator(OFFERED_ANSWER, offered_answer_rate, "运营"),
    Indicator(ASA, asa, "运营"),
    Indicator(ABANDON, abandon_rate, "运营"),
    Indicator(IVR_ABANDON, ivr_abandon_rate, "运营"),
    Indicator(TIME_TO_ABANDON, time_to_abandon, "运营"),
    Indicator(AHT, aht, "运营"),
    Indicator(OCCUPANCY, occupancy, "运营"),
)
BY_KEY = {i.definition.key: i for i in INDICATORS}


# --- the report -----------------------------------------------------------------------------------

@dataclass
class Report:
    figures: list[Figure]
    outcomes: dict[Outcome, int]
    agents: list[AgentRow]
    days: list[DayRow]
    wait_histogram: list[tuple[str, int]]
    settings: KpiSettings

    def __getitem__(self, key: str) -> Figure:
        return next(f for f in self.figures if f.definition.key == key)

    @property
    def calls(self) -> int:
        return sum(self.outcomes.values())


def _daily(f: Facts, s: KpiSettings) -> list[DayRow]:
    days: dict[date, DayRow] = {}
    for c in counted(f, s):
        day = f.local_date(c.started_at)
        row = days.setdefault(day, DayRow(day))
        row.calls += 1
        row.offered += c.queued_at is not None
        row.answered += c.answered_at is not None
        row.abandoned += c.outcome == Outcome.ABANDONED_QUEUE
    return sorted(days.values(), key=lambda d: d.day)


def compute(facts: Facts, settings: KpiSettings | None = None) -> Report:
    settings = settings or KpiSettings()
    figures = [i.compute(facts, settings) for i in INDICATORS]
    t = tally_calls(facts, settings)
    agents = [AgentRow(a.agent_id, facts.agent_names.get(a.agent_id, f"#{a.agent_id}"), a.calls,
                       a.handling_seconds, a.rated, a.satisfied) for a in t.agents.values()]
    histogram = [(label, n) for (_low, _high, label), n in zip(WAIT_BINS, t.histogram, strict=True)]
    return Report(figures, dict(t.outcomes), sorted(agents, key=lambda a: (-a.calls, a.agent_id)), t.days,
                  histogram, settings)


# --- loading facts -----------------------------------------------------------------------------------

def local_bounds(start: date, end: date, zone: tzinfo) -> tuple[datetime, datetime]:
    """[start 00:00, end+1 00:00) local, as UTC instants."""
    lo = datetime.combine(start, dt.time(), zone).astimezone(dt.UTC)
    hi = datetime.combine(end + dt.timedelta(days=1), dt.time(), zone).astimezone(dt.UTC)
    return lo, hi


def first_handover(ticket_id: Any) -> Any:
    """The ticket's first 移交 (Table 1 item 15), or NULL: a look-up per ticket of the period through
    ix_ticket_actions_ticket_at (a subquery grouping every 移交 of the tracking log read the whole log: 0.9 s
    at 1 000 000 tickets, more with every year kept)."""
    return (select(func.min(TicketAction.at)).where(TicketAction.ticket_id == ticket_id, TicketAction.action == HANDOVER_ACTION)
            .scalar_subquery())


async def previous_calls(session: AsyncSession, start: date, end: date, zone: tzinfo, hotline: str) -> int:
    """Calls into the hotline in the equal period just before [start, end] (Table 1 item 23)."""
    length = end - start + dt.timedelta(days=1)
    lo, hi = local_bounds(start - length, start - dt.timedelta(days=1), zone)
    query = select(func.count()).select_from(CallRecord).where(
        CallRecord.direction == "inbound", CallRecord.started_at >= lo, CallRecord.started_at < hi)
    if hotline:
        query = query.where(CallRecord.hotline == hotline)
    return await session.scalar(query)


async def load_facts(session: AsyncSession, start: date, end: date, zone: tzinfo, hotline: str = "",
                     today: date | None = None) -> Facts:
    """Calls that arrived and tickets registered in [start, end] (local days), narrow rows only."""
    lo, hi = local_bounds(start, end, zone)
    call_cols = (CallRecord.started_at, CallRecord.queued_at, CallRecord.answered_at, CallRecord.ended_at,
                 CallRecord.abandoned, CallRecord.wait_seconds, CallRecord.talk_seconds, CallRecord.hold_seconds,
                 CallRecord.agent_id, CallRecord.hotline, CallRecord.ivr_path, CallRecord.voicemail_file,
                 CallbackRequest.id, CallRecord.lookup_ticket, CallRecord.satisfaction, CallRecord.hangup_cause)
    calls_q = (select(*call_cols)
               .outerjoin(CallbackRequest, (CallbackRequest.call_id == CallRecord.call_id)
                          & (CallbackRequest.source == "queue"))
               .where(CallRecord.direction == "inbound", CallRecord.started_at >= lo, CallRecord.started_at < hi))
    visit = (CallbackRequest.ticket_number == Ticket.number) & (CallbackRequest.source == "visit")
    tickets_q = (select(Ticket.kind, Ticket.state, Ticket.created_at, Ticket.accepted_at, Ticket.closed_at,
                        first_handover(Ticket.id), Ticket.transferred_at, Ticket.review_outcome,
                        Ticket.complaint_object, Ticket.hotline, CallbackRequest.id, Ticket.visit_satisfaction)
                 .outerjoin(CallbackRequest, visit)
                 .where(Ticket.created_at >= lo, Ticket.created_at < hi))
    if hotline:
        calls_q = calls_q.where(CallRecord.hotline == hotline)
        tickets_q = tickets_q.where(Ticket.hotline == hotline)
    calls = [CallFact(s, q, a, e, bool(ab), w, t, h or 0.0, ag, hl, path, bool(vm), cb is not None, look, sat, cause)
             for s, q, a, e, ab, w, t, h, ag, hl, path, vm, cb, look, sat, cause
             in (await session.execute(calls_q)).all()]
    tickets = [TicketFact(str(k), str(st), c, acc, cl, ho, tr, None if ro is None else str(ro), obj, hl,
                          visit is not None, grade)
               for k, st, c, acc, cl, ho, tr, ro, obj, hl, visit, grade in (await session.execute(tickets_q)).all()]
    previous = await previous_calls(session, start, end, zone, hotline)
    as_of = min(end, today) if today else end
    return Facts(start, end, zone, calls, tickets, previous_calls=previous, as_of=as_of)


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (core.metrics), None rather than NaN where there are no values."""
    return nearest_rank(values, pct) if values else None

"""Service-quality KPIs of the 12365 standard (seed 004 §3.7–3.10, Table 1), as pure functions.

Definitions used (stated here so the report and its reader agree):

* **offered** (呼入请求人工): inbound calls that entered an agent queue. Calls
  that ended in the IVR (self service, ticket status read-back) were never
  offered to an agent and are not counted.
* **接线率** answering rate = answered / offered.
* **wait** (热线等待时间): queue entry to answer, over answered calls; mean and
  90th percentile (nearest-rank).
* **share answered within 60 s** = answered with wait ≤ 60 s / offered (an
  abandoned call counts against it; 004 Table 1 item 9: wait ≤ 1 minute).
* **abandonment** (放弃率) = abandoned / offered; a caller who left a voice
  message or asked for a callback is not abandoned.
* **答复率** reply rate = tickets replied to / tickets registered (受理), where
  replied means a consultation answered, or a complaint/report accepted by a
  handling unit, handed over, or closed.
* **办结率** completion rate = tickets closed (after the closing review) / registered.
* **average handling time** per agent = (talk + hold) / answered calls.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo

from core.metrics import percentile as nearest_rank
from tickets.models import CLOSED_STATES, State

SERVICE_LEVEL_SECONDS = 60.0


@dataclass(frozen=True)
class CallFact:
    started_at: datetime
    queued: bool
    answered: bool
    abandoned: bool
    wait_seconds: float | None = None
    talk_seconds: float | None = None
    hold_seconds: float = 0.0
    agent_id: int | None = None
    direction: str = "inbound"


@dataclass(frozen=True)
class TicketFact:
    kind: str
    state: str
    accepted: bool  # a handling unit accepted it (受理)


@dataclass
class AgentRow:
    agent_id: int
    name: str
    calls: int = 0
    handling_seconds: float = 0.0

    @property
    def average_handling(self) -> float | None:
        return self.handling_seconds / self.calls if self.calls else None


@dataclass
class DayRow:
    day: date
    offered: int = 0
    answered: int = 0
    abandoned: int = 0


@dataclass
class Report:
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    answered_within: int = 0
    wait_mean: float | None = None
    wait_p90: float | None = None
    tickets: int = 0
    replied: int = 0
    closed: int = 0
    agents: list[AgentRow] = field(default_factory=list)
    days: list[DayRow] = field(default_factory=list)
    wait_histogram: list[tuple[str, int]] = field(default_factory=list)

    @staticmethod
    def _rate(part: int, whole: int) -> float | None:
        return part / whole if whole else None

    @property
    def answer_rate(self) -> float | None:
        return self._rate(self.answered, self.offered)

    @property
    def abandon_rate(self) -> float | None:
        return self._rate(self.abandoned, self.offered)

    @property
    def service_level(self) -> float | None:
        return self._rate(self.answered_within, self.offered)

    @property
    def reply_rate(self) -> float | None:
        return self._rate(self.replied, self.tickets)

    @property
    def completion_rate(self) -> float | None:
        return self._rate(self.closed, self.tickets)


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (core.metrics), None rather than NaN where there are no values."""
    return nearest_rank(values, pct) if values else None


WAIT_BINS = ((0, 10, "0–10 秒"), (10, 30, "10–30 秒"), (30, 60, "30–60 秒"), (60, 120, "1–2 分钟"),
             (120, math.inf, "2 分钟以上"))


def is_replied(ticket: TicketFact) -> bool:
    state = State(ticket.state)
    return state in CLOSED_STATES or state == State.HANDED_OVER or ticket.accepted


def compute(calls: Iterable[CallFact], tickets: Iterable[TicketFact], agent_names: dict[int, str],
            zone: tzinfo) -> Report:
    report = Report()
    waits: list[float] = []
    agents: dict[int, AgentRow] = {}
    days: dict[date, DayRow] = defaultdict(lambda: DayRow(date.min))
    for call in calls:
        if call.direction != "inbound" or not call.queued:
            continue
        day = call.started_at.astimezone(zone).date()
        row = days[day]
        row.day = day
        report.offered += 1
        row.offered += 1
        if call.answered:
            report.answered += 1
            row.answered += 1
            wait = call.wait_seconds or 0.0
            waits.append(wait)
            if wait <= SERVICE_LEVEL_SECONDS:
                report.answered_within += 1
            if call.agent_id is not None:
                agent = agents.setdefault(call.agent_id, AgentRow(call.agent_id,
                                                                  agent_names.get(call.agent_id, f"#{call.agent_id}")))
                agent.calls += 1
                agent.handling_seconds += (call.talk_seconds or 0.0) + (call.hold_seconds or 0.0)
        elif call.abandoned:
            report.abandoned += 1
            row.abandoned += 1
    report.wait_mean = sum(waits) / len(waits) if waits else None
    report.wait_p90 = percentile(waits, 90)
    report.wait_histogram = [(label, sum(1 for w in waits if low <= w < high)) for low, high, label in WAIT_BINS]
    for ticket in tickets:
        report.tickets += 1
        report.replied += is_replied(ticket)
        report.closed += State(ticket.state) in CLOSED_STATES
    report.agents = sorted(agents.values(), key=lambda a: (-a.calls, a.agent_id))
    report.days = sorted(days.values(), key=lambda d: d.day)
    return report


# --- charts: geometry for inline SVG, drawn by the templates ----------------------------------

@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    x: float
    y: float
    width: float
    height: float
    series: int = 0


def bar_chart(groups: list[tuple[str, list[float]]], width: float = 640, height: float = 200,
              gap: float = 12, max_bar: float = 48) -> list[Bar]:
    """Grouped vertical bars scaled to the tallest value, centred in their slot; one per (group, series)."""
    if not groups:
        return []
    top = max((v for _label, values in groups for v in values), default=0) or 1
    slot = width / len(groups)
    per = max(1, max(len(values) for _label, values in groups))
    bar_w = min(max_bar, max(2.0, (slot - gap) / per))
    offset = (slot - bar_w * per) / 2
    bars = []
    for i, (label, values) in enumerate(groups):
        for j, value in enumerate(values):
            h = value / top * height
            bars.append(Bar(label, value, i * slot + offset + j * bar_w, height - h, bar_w - 2, h, j))
    return bars

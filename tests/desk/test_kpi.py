"""KPI math of the service-quality report (004 §3.7–3.10, Table 1)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from agent_desk.kpi import CallFact, TicketFact, bar_chart, compute, percentile

SHANGHAI = ZoneInfo("Asia/Shanghai")
T0 = datetime(2025, 10, 8, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai


def answered(wait: float, agent: int = 1, talk: float = 100, hold: float = 0, at: datetime = T0) -> CallFact:
    return CallFact(at, True, True, False, wait, talk, hold, agent)


def test_nearest_rank_percentile():
    assert percentile([], 90) is None
    assert percentile([5.0], 90) == 5.0
    assert percentile([float(i) for i in range(1, 11)], 90) == 9.0
    assert percentile([float(i) for i in range(1, 11)], 100) == 10.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0


def test_answer_rate_waits_service_level_and_abandonment_count_only_calls_offered_to_agents():
    calls = [
        answered(10), answered(30), answered(61), answered(120, agent=2),
        CallFact(T0, True, False, True, 45.0),             # abandoned in the queue
        CallFact(T0, False, False, False),                 # finished in the IVR: never offered
        CallFact(T0, True, False, False, None),            # left a voice message: neither answered nor abandoned
        CallFact(T0, False, True, False, direction="outbound"),
    ]
    report = compute(calls, [], {1: "王丽", 2: "李强"}, SHANGHAI)
    assert report.offered == 6
    assert report.answered == 4 and report.abandoned == 1
    assert report.answer_rate == 4 / 6
    assert report.abandon_rate == 1 / 6
    assert report.wait_mean == (10 + 30 + 61 + 120) / 4
    assert report.wait_p90 == 120
    assert report.answered_within == 2 and report.service_level == 2 / 6
    assert dict(report.wait_histogram) == {"0–10 秒": 0, "10–30 秒": 1, "30–60 秒": 1, "1–2 分钟": 1, "2 分钟以上": 1}


def test_average_handling_time_per_agent_includes_hold():
    report = compute([answered(5, 1, talk=100, hold=20), answered(5, 1, talk=60), answered(5, 2, talk=30)],
                     [], {1: "王丽"}, SHANGHAI)
    first, second = report.agents
    assert (first.name, first.calls, first.average_handling) == ("王丽", 2, 90.0)
    assert (second.name, second.calls, second.average_handling) == ("#2", 1, 30.0)


def test_reply_and_completion_rates_over_registered_tickets():
    tickets = [
        TicketFact("consult", "answered", False),           # replied and closed
        TicketFact("complaint", "pending", False),          # neither
        TicketFact("complaint", "accepted", True),          # replied (accepted), not closed
        TicketFact("complaint", "pending_review", True),    # awaiting the head's review: not closed yet
        TicketFact("report", "handed_over", False),         # replied (handed over), not closed
        TicketFact("complaint", "mediated", True),          # closed
    ]
    report = compute([], tickets, {}, SHANGHAI)
    assert report.tickets == 6
    assert report.replied == 5 and report.reply_rate == 5 / 6
    assert report.closed == 2 and report.completion_rate == 2 / 6


def test_empty_period_has_no_rates_instead_of_dividing_by_zero():
    report = compute([], [], {}, SHANGHAI)
    assert report.answer_rate is None and report.service_level is None and report.reply_rate is None
    assert report.wait_mean is None and report.days == []


def test_days_follow_the_centre_time_zone():
    late = datetime(2025, 10, 8, 16, 30, tzinfo=UTC)  # 00:30 on 9 October in Shanghai
    report = compute([answered(5, at=T0), answered(5, at=late)], [], {}, SHANGHAI)
    assert [d.day.isoformat() for d in report.days] == ["2025-10-08", "2025-10-09"]
    assert all(d.offered == 1 and d.answered == 1 for d in report.days)
    assert late - T0 > timedelta(hours=12)


def test_bar_chart_scales_to_the_tallest_bar():
    bars = bar_chart([("a", [10, 5]), ("b", [0, 20])], width=200, height=100)
    assert len(bars) == 4
    tallest = max(bars, key=lambda b: b.value)
    assert tallest.height == 100 and tallest.y == 0
    assert next(b for b in bars if b.value == 5).height == 25
    assert bar_chart([]) == []

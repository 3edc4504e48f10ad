"""The yearly evaluation of 004 §7.1: the centre's indicators and weights as data, the score by hand, and the
report for reporting upward (XLSX with charts, PDF) read back."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook
from pypdf import PdfReader

from core.policy import PolicyError
from quality import evaluation, kpi
from quality.kpi import CallFact, Facts, KpiSettings, TicketFact
from tickets.models import Kind, State

ZONE = ZoneInfo("Asia/Shanghai")
START, END = dt.date(2025, 1, 1), dt.date(2025, 12, 31)
T = dt.datetime(2025, 3, 3, 2, 0, tzinfo=dt.UTC)

SCHEME = """\
title: 测试中心服务质量评价
items:
  - {indicator: answering_rate, weight: 30, target: 0.8, better: higher, method: 接线率80%得满分}
  - {indicator: waiting_time, weight: 20, target: 27, better: lower, method: 平均等待不超过27秒得满分}
  - {indicator: reply_rate, weight: 20, target: 0.4, better: higher, method: 答复率40%得满分}
  - {indicator: occupancy, weight: 25, target: 0.8, better: higher, method: 占用率80%得满分}
"""


def s(seconds: float) -> dt.datetime:
    return T + dt.timedelta(seconds=seconds)


def facts() -> Facts:
    calls = [
        CallFact(T, queued_at=s(5), answered_at=s(20), ended_at=s(200), talk_seconds=180, agent_id=1),  # waited 20 s
        CallFact(T, queued_at=s(5), answered_at=s(40), ended_at=s(300), talk_seconds=260, agent_id=2),  # waited 40 s
        CallFact(T, queued_at=s(5), ended_at=s(30), abandoned=True, queue_wait=25),  # left the queue
        CallFact(T, ended_at=s(6), ivr_path="main:no-choice"),                          # hung up in the IVR
    ]
    tickets = [TicketFact(Kind.CONSULT.value, State.ANSWERED.value, T, closed_at=s(600)),     # accepted, replied
               TicketFact(Kind.COMPLAINT.value, State.ACCEPTED.value, T, accepted_at=s(900))]  # accepted, not yet
    return Facts(START, END, ZONE, calls, tickets, previous_calls=2, agent_names={1: "王丽", 2: "李强"})


@pytest.fixture
def scheme(tmp_path: Path) -> evaluation.Scheme:
    path = tmp_path / "evaluation.yaml"
    path.write_text(SCHEME, encoding="utf-8")
    return evaluation.load_scheme(path)


def built(scheme: evaluation.Scheme) -> evaluation.Evaluation:
    report = kpi.compute(facts(), KpiSettings())
    part = evaluation.Slice("2025-03", report, evaluation.score(scheme, report))
    return evaluation.Evaluation(scheme.title, START, END, "", part, [part],
                                 [part, evaluation.Slice("12365", kpi.compute(Facts(START, END, ZONE)),
                                                         evaluation.score(scheme, kpi.compute(Facts(START, END, ZONE))))])


def test_the_score_follows_the_centres_weights_and_targets(scheme):
    scored = evaluation.score(scheme, kpi.compute(facts(), KpiSettings()))
    by_key = {i.item.indicator.definition.key: i for i in scored.items}
    # 接线率 2 answered of 4 calls = 0.5, target 0.8: 0.5 / 0.8 = 0.625 of weight 30 = 18.75.
    assert by_key["answering_rate"].attainment == pytest.approx(0.625)
    assert by_key["answering_rate"].score == pytest.approx(18.75)
    # 热线等待时间 (20 + 40) / 2 = 30 s, lower is better, target 27 s: 27 / 30 = 0.9 of 20 = 18.
    assert by_key["waiting_time"].score == pytest.approx(18)
    # 答复率 1 replied of 2 accepted = 0.5 is above the target 0.4: the whole weight, 20 (never more).
    assert by_key["reply_rate"].score == pytest.approx(20)
    # 占用率: no logged-in time, no figure: left out of the score and of the weights.
    assert by_key["occupancy"].score is None and scored.left_out == ["坐席占用率"]
    # (18.75 + 18 + 20) / (30 + 20 + 20) × 100 = 81.07…
    assert scored.weights == 70
    assert scored.total == pytest.approx((18.75 + 18 + 20) / 70 * 100)


def test_the_xlsx_has_the_items_the_trends_and_their_charts(scheme):
    book = load_workbook(io.BytesIO(evaluation.evaluation_xlsx(built(scheme))))
    assert book.sheetnames == ["评价结果", "月度趋势", "分热线", "分坐席"]
    result = list(book["评价结果"].iter_rows(values_only=True))
    assert result[0][0] == "测试中心服务质量评价"
    rows = {row[0]: row for row in result if row and row[0]}
    assert rows["接线率"][2:7] == (30, "80.0%", "50.0%", "62.5%", 18.75)
    assert rows["坐席占用率"][5] == "无数据"
    assert any(str(row[0]).startswith("综合得分：81.1 分") for row in result if row[0])
    trend = list(book["月度趋势"].iter_rows(values_only=True))
    assert trend[1][:3] == ("2025-03", 81.1, 50.0)
    agents = list(book["分坐席"].iter_rows(values_only=True))
    assert agents[1:3] == [("王丽", 1, 180.0, 0, None), ("李强", 1, 260.0, 0, None)]
    for name in ("月度趋势", "分热线", "分坐席"):
        assert len(book[name]._charts) == 1, name


def test_the_pdf_holds_the_figures_and_the_charts_labels(scheme):
    pdf = PdfReader(io.BytesIO(evaluation.evaluation_pdf(built(scheme))))
    text = "".join(page.extract_text() for page in pdf.pages).replace(" ", "")
    for needle in ("测试中心服务质量评价", "接线率", "50.0%", "62.5%", "18.75", "综合得分：81.1分", "无数据未计分：坐席占用率",
                   "综合得分月度趋势", "2025-03", "各坐席接听量", "王丽", "李强"):
        assert needle in text, needle


@pytest.mark.parametrize(("text", "reason"), [
    (SCHEME.replace("weight: 20, target: 27", "weight: 0, target: 27"), "weight 应为正数"),
    (SCHEME.replace("better: lower", "better: less"), "better 应为 higher 或 lower"),
    (SCHEME.replace("indicator: reply_rate", "indicator: answering_rate"), "指标 'answering_rate' 重复"),
    (SCHEME.replace(", method: 答复率40%得满分", ""), "缺少 method"),
])
def test_a_wrong_scheme_is_refused_with_its_line(tmp_path, text, reason):
    path = tmp_path / "evaluation.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        evaluation.load_scheme(path)
    assert reason in caught.value.reason and caught.value.line in (3, 4, 5), str(caught.value)

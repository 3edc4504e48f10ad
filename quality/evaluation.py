"""The service-quality evaluation of 004 §7.1.2–7.1.3, and its report for reporting upward (XLSX, PDF).

「从表1中选取指标，建立服务质量评价计算公式，并对每项评价指标明确相应的考核办法」: the centre writes its
choice in ``config/evaluation.yaml`` (indicator of :mod:`quality.kpi`, weight, target, direction,
考核办法), checked at start-up with file, line and reason (``core.policy``). :func:`score` is the formula:
an item earns its whole weight at its target and a proportional share below it; items without data in the
period are left out of the score and of the weights (and named so in the report). The total is out of 100.

:func:`evaluate` computes it for any period, with the trend per month, per hotline and per agent (each an
SQL-aggregated :func:`quality.kpi_sql.load_report`); :func:`evaluation_xlsx` and :func:`evaluation_pdf`
write the report with its charts.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from datetime import date, tzinfo
from functools import cache
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.chart import BarChart, LineChart, Reference
from openpyxl.styles import Font
from sqlalchemy.ext.asyncio import AsyncSession

from core import policy
from core.policy import fail
from core.settings import CONFIG_DIR
from core.sheets import append_row, pdf_document, workbook_bytes
from quality import kpi, kpi_sql

EVALUATION_FILE = CONFIG_DIR / "evaluation.yaml"
HOTLINES = ("12301", "12365")
ITEM_KEYS = {"indicator", "weight", "target", "better", "method"}


@dataclass(frozen=True)
class Item:
    indicator: kpi.Indicator
    weight: float
    target: float
    higher_is_better: bool
    method: str

    @property
    def name(self) -> str:
        return self.indicator.definition.name


@dataclass(frozen=True)
class Scheme:
    title: str
    items: tuple[Item, ...]


def _number(where: Any, key: str, positive: bool) -> float:
    value = where.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (positive and value == 0):
        raise fail(where, f"{key} 应为{'正数' if positive else '不小于0的数'}，实际为 {value!r}", key)
    return float(value)


def load_scheme(path: Path = EVALUATION_FILE) -> Scheme:
    """The centre's evaluation scheme; errors name the file, the line and the reason."""
    data = policy.read(path)
    unknown = sorted(set(data) - {"title", "items"})
    if unknown:
        raise fail(data, f"未知的键 {unknown[0]!r}（可用：title、items）", unknown[0])
    title = data.get("title", "服务质量评价")
    if not isinstance(title, str) or not title.strip():
        raise fail(data, "title（评价名称）应为非空文字", "title")
    items = data.get("items")
    if not isinstance(items, list) or not items:
        raise fail(data, "items 应为非空列表：从表1中选取的评价指标", "items" if "items" in data else None)
    chosen: list[Item] = []
    for i, entry in enumerate(items):
        if not isinstance(entry, dict):
            raise fail(items, "每项应为 {indicator, weight, target, better, method}", i)
        unknown = sorted(set(entry) - ITEM_KEYS)
        if unknown:
            raise fail(entry, f"未知的键 {unknown[0]!r}（可用：{'、'.join(sorted(ITEM_KEYS))}）", unknown[0])
        missing = sorted(ITEM_KEYS - set(entry))
        if missing:
            raise fail(items, f"第 {i + 1} 项缺少 {'、'.join(missing)}", i)
        key = entry["indicator"]
        if key not in kpi.BY_KEY:
            raise fail(entry, f"未知的指标 {key!r}（可用：{'、'.join(kpi.BY_KEY)}）", "indicator")
        if any(c.indicator.definition.key == key for c in chosen):
            raise fail(entry, f"指标 {key!r} 重复", "indicator")
        indicator = kpi.BY_KEY[key]
        target = _number(entry, "target", positive=entry["better"] == "higher")
        if indicator.definition.unit == "%" and target > 1:
            raise fail(entry, f"比例指标的 target 应写小数（如 0.95），实际为 {target:g}", "target")
        if entry["better"] not in ("higher", "lower"):
            raise fail(entry, f"better 应为 higher 或 lower，实际为 {entry['better']!r}", "better")
        if not isinstance(entry["method"], str) or not entry["method"].strip():
            raise fail(entry, "method（考核办法）应为非空文字", "method")
        chosen.append(Item(indicator, _number(entry, "weight", positive=True), target,
                           entry["better"] == "higher", entry["method"].strip()))
    return Scheme(title.strip(), tuple(chosen))


@cache
def scheme() -> Scheme:
    return load_scheme()


policy.register("服务质量评价 config/evaluation.yaml", lambda _settings: scheme())


# --- the formula ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ItemScore:
    item: Item
    figure: kpi.Figure
    attainment: float | None   # 0..1; None: no data in the period
    score: float | None        # attainment × weight

    @property
    def target_display(self) -> str:
        return kpi.Figure(self.item.indicator.definition, self.item.target).display


@dataclass(frozen=True)
class Scored:
    items: list[ItemScore]
    total: float | None        # out of 100, over the items with data
    weights: float             # the weights of the items with data

    @property
    def left_out(self) -> list[str]:
        return [s.item.name for s in self.items if s.score is None]


def attainment(item: Item, value: float | None) -> float | None:
    if value is None:
        return None
    if item.higher_is_better:
        return min(1.0, value / item.target)
    return 1.0 if value <= item.target else item.target / value


def score(chosen: Scheme, report: kpi.Report) -> Scored:
    items = []
    for item in chosen.items:
        figure = report[item.indicator.definition.key]
        share = attainment(item, figure.value)
        items.append(ItemScore(item, figure, share, None if share is None else share * item.weight))
    weights = sum(s.item.weight for s in items if s.score is not None)
    total = sum(s.score for s in items if s.score is not None) / weights * 100 if weights else None
    return Scored(items, total, weights)


# --- the evaluation of a period -----------------------------------------------------------------------

@dataclass
class Slice:
    label: str
    report: kpi.Report
    scored: Scored
    report_start: date | None = None   # the period of this part (a month: the page drills down to it)
    report_end: date | None = None


@dataclass
class Evaluation:
    title: str
    start: date
    end: date
    hotline: str
    whole: Slice
    months: list[Slice]
    hotlines: list[Slice]

    @property
    def agents(self) -> list[kpi.AgentRow]:
        return self.whole.report.agents


def months_of(start: date, end: date) -> list[tuple[date, date]]:
    """The calendar months touching [start, end], clipped to it."""
    out, first = [], start.replace(day=1)
    while first <= end:
        following = (first + dt.timedelta(days=32)).replace(day=1)
        out.append((max(first, start), min(end, following - dt.timedelta(days=1))))
        first = following
    return out


async def evaluate(session: AsyncSession, chosen: Scheme, start: date, end: date, zone: tzinfo, hotline: str = "",
                   today: date | None = None, settings: kpi.KpiSettings | None = None,
                   agent_names: dict[int, str] | None = None) -> Evaluation:
    async def part(label: str, lo: date, hi: date, line: str) -> Slice:
        report = await kpi_sql.load_report(session, lo, hi, zone, line, today, settings, agent_names)
        return Slice(label, report, score(chosen, report), lo, hi)

    whole = await part(f"{start} 至 {end}", start, end, hotline)
    months = [await part(f"{lo:%Y-%m}", lo, hi, hotline) for lo, hi in months_of(start, end)]
    lines = [await part(line, start, end, line) for line in (HOTLINES if not hotline else (hotline,))]
    return Evaluation(chosen.title, start, end, hotline, whole, months, lines)


# --- the report for reporting upward ----------------------------------------------------------------

def _percent(value: float | None) -> float | None:
    return None if value is None else round(value * 100, 1)


def _value(figure: kpi.Figure) -> float | None:
    """The figure as a number for the sheet and the charts: percentages in %, seconds as they are."""
    if figure.value is None:
        return None
    return round(figure.value * 100, 2) if figure.definition.unit == "%" else round(figure.value, 1)


def item_rows(e: Evaluation) -> list[list[Any]]:
    rows: list[list[Any]] = [["评价指标", "来源", "权重", "达标值", "实际值", "达成度", "得分", "考核办法"]]
    for s in e.whole.scored.items:
        rows.append([s.item.name, s.item.indicator.definition.source, s.item.weight, s.target_display,
                     s.figure.display, "无数据" if s.attainment is None else f"{s.attainment * 100:.1f}%",
                     None if s.score is None else round(s.score, 2), s.item.method])
    return rows


def total_line(e: Evaluation) -> str:
    scored = e.whole.scored
    if scored.total is None:
        return "综合得分：无数据"
    line = f"综合得分：{scored.total:.1f} 分（满分100，按有数据指标的权重合计 {scored.weights:g} 折算）"
    if scored.left_out:
        line += f"；无数据未计分：{'、'.join(scored.left_out)}"
    return line


def _header(e: Evaluation) -> list[str]:
    return [e.title, f"{e.start} 至 {e.end}", f"热线：{e.hotline or '全部'}"]


def evaluation_xlsx(e: Evaluation) -> bytes:
    """Sheets 评价结果, 月度趋势, 分热线, 分坐席, each trend with its chart."""
    book = Workbook()
    sheet = book.active
    sheet.title = "评价结果"
    for row in [_header(e), [], *item_rows(e), [], [total_line(e)]]:
        append_row(sheet, row)
    sheet["A1"].font = Font(bold=True, size=14)
    sheet.column_dimensions["A"].width = 28
    sheet.column_dimensions["H"].width = 60

    names = [s.item.name + ("（%）" if s.item.indicator.definition.unit == "%" else "（秒）")
             for s in e.whole.scored.items]
    trend = book.create_sheet("月度趋势")
    append_row(trend, ["月份", "综合得分", *names])
    for m in e.months:
        append_row(trend, [m.label, None if m.scored.total is None else round(m.scored.total, 1),
                           *(_value(s.figure) for s in m.scored.items)])
    chart = LineChart()
    chart.title, chart.y_axis.title, chart.x_axis.title = "综合得分月度趋势", "得分", "月份"
    chart.add_data(Reference(trend, min_col=2, min_row=1, max_row=len(e.months) + 1), titles_from_data=True)
    chart.set_categories(Reference(trend, min_col=1, min_row=2, max_row=len(e.months) + 1))
    trend.add_chart(chart, f"A{len(e.months) + 4}")

    lines = book.create_sheet("分热线")
    append_row(lines, ["热线", "呼入总数", "综合得分", *names])
    for h in e.hotlines:
        append_row(lines, [h.label, h.report.calls, None if h.scored.total is None else round(h.scored.total, 1),
                           *(_value(s.figure) for s in h.scored.items)])
    bars = BarChart()
    bars.title, bars.y_axis.title = "各热线综合得分与呼入量", "数值"
    bars.add_data(Reference(lines, min_col=2, max_col=3, min_row=1, max_row=len(e.hotlines) + 1),
                  titles_from_data=True)
    bars.set_categories(Reference(lines, min_col=1, min_row=2, max_row=len(e.hotlines) + 1))
    lines.add_chart(bars, f"A{len(e.hotlines) + 4}")

    agents = book.create_sheet("分坐席")
    append_row(agents, ["坐席", "接听（通）", "平均处理时长（秒）", "参评（通）", "满意率（%）"])
    for a in e.agents:
        append_row(agents, [a.name, a.calls, None if a.average_handling is None else round(a.average_handling, 1),
                            a.rated, _percent(a.satisfaction_rate)])
    per_agent = BarChart()
    per_agent.title, per_agent.y_axis.title = "各坐席接听量", "通"
    per_agent.add_data(Reference(agents, min_col=2, min_row=1, max_row=max(2, len(e.agents) + 1)),
                       titles_from_data=True)
    per_agent.set_categories(Reference(agents, min_col=1, min_row=2, max_row=max(2, len(e.agents) + 1)))
    agents.add_chart(per_agent, f"A{len(e.agents) + 4}")
    return workbook_bytes(book)


def _bars(pdf: Any, title: str, bars: list[tuple[str, float | None]], unit: str, height: float = 45) -> None:
    """A captioned bar chart drawn on the page: one bar per label, its value above it."""
    pdf.set_font("cjk", size=11)
    pdf.cell(0, 8, title, new_x="LMARGIN", new_y="NEXT")
    left, top, width = pdf.l_margin + 4, pdf.get_y() + 4, pdf.epw - 8
    top_value = max((v for _label, v in bars if v), default=0) or 1
    slot = width / max(1, len(bars))
    bar_w = min(14.0, slot * 0.6)
    pdf.set_draw_color(120, 120, 120)
    pdf.line(left, top + height, left + width, top + height)
    pdf.set_font("cjk", size=7)
    for i, (label, value) in enumerate(bars):
        x = left + i * slot + (slot - bar_w) / 2
        h = (value or 0) / top_value * height
        pdf.set_fill_color(46, 110, 170)
        if h:
            pdf.rect(x, top + height - h, bar_w, h, style="F")
        pdf.text(x, top + height - h - 1, "—" if value is None else f"{value:g}{unit}")
        pdf.text(x, top + height + 4, label[:10])
    pdf.set_y(top + height + 8)


def evaluation_pdf(e: Evaluation) -> bytes:
    """The evaluation report as PDF: the items, the total, and charts per month, per hotline, per agent."""
    pdf = pdf_document()
    pdf.set_font("cjk", size=16)
    pdf.cell(0, 10, e.title, new_x="LMARGIN", new_y="NEXT", align="C")
    pdf.set_font("cjk", size=10)
    pdf.cell(0, 7, f"评价期间：{e.start} 至 {e.end}　热线：{e.hotline or '全部'}　（004 §7.1）",
             new_x="LMARGIN", new_y="NEXT", align="C")
    rows = item_rows(e)
    pdf.set_font("cjk", size=8)
    with pdf.table(col_widths=(30, 26, 10, 14, 14, 14, 12, 60), text_align="LEFT", first_row_as_headings=False) as table:
        for row in rows:
            cells = table.row()
            for value in row:
                cells.cell("" if value is None else f"{value:g}" if isinstance(value, float) else str(value))
    pdf.set_font("cjk", size=11)
    pdf.multi_cell(0, 8, total_line(e), new_x="LMARGIN", new_y="NEXT")
    _bars(pdf, "综合得分月度趋势（分）", [(m.label, None if m.scored.total is None else round(m.scored.total, 1))
                                     for m in e.months], "")
    _bars(pdf, "各热线综合得分（分）", [(h.label, None if h.scored.total is None else round(h.scored.total, 1))
                                   for h in e.hotlines], "")
    _bars(pdf, "各坐席接听量（通）", [(a.name, a.calls) for a in e.agents[:20]], "")
    out = io.BytesIO()
    pdf.output(out)
    return out.getvalue()

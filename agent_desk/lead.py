"""The team lead's console: live wallboard, listen/whisper/barge, and the service-quality report.

The wallboard page listens to /events and re-reads ``/api/wallboard`` (a snapshot
from the database, the CTI's agent sessions and Asterisk's QueueStatus asked through the CTI) on
every event and every few seconds, so it is right within a second of a change
and also after a missed event.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from dataclasses import asdict
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp_jinja2
from aiohttp import web

from agent_desk import alerts
from agent_desk.auth import require_roles
from agent_desk.common import cti_command, local_zone, sheet_response
from core.disk import disk_space
from core.inputs import iso_date, record_id
from core.models import Role
from core.provisioning import enabled_queue_names
from core.sheets import XLSX_TYPE
from core.users import active_agents, agent_names
from core.web import DB_KEY, REDIS_KEY, SETTINGS_KEY, json_error, read_json
from cti import read
from cti.callbacks import missed_tasks_between
from cti.calls import calls_between, calls_queued_since
from cti.models import CallbackRequest, CallbackStatus, CallRecord, CallState
from quality import evaluation, kpi, kpi_sql
from tickets import return_visits

HOTLINES = ("12301", "12365")
QUEUE_LABELS = {"general": "综合", "consult": "咨询", "complaint": "投诉", "report": "举报"}


_leads_only = require_roles(Role.TEAM_LEAD, Role.ADMIN)


def queue_label(name: str) -> str:
    hotline, _, business = name.partition("-")
    return f"{hotline} {QUEUE_LABELS.get(business, business)}"


def local_day_bounds(day: dt.date, zone) -> tuple[dt.datetime, dt.datetime]:
    return kpi.local_bounds(day, day, zone)


def queue_rows(names: list[str], waiting: list[dict[str, Any]], today_calls: list[CallRecord]) -> list[dict]:
    """Per queue: callers waiting, longest wait, answered/abandoned today, share answered within 60 s."""
    rows = []
    for name in names:
        here = [w for w in waiting if w["queue"] == name]
        calls = [c for c in today_calls if c.queue == name and c.direction == "inbound"]
        answered = [c for c in calls if c.answered_at is not None]
        within = sum(1 for c in answered if (c.wait_seconds or 0) <= kpi.SERVICE_LEVEL_SECONDS)
        offered = len(calls)
        rows.append({"queue": name, "label": queue_label(name), "waiting": len(here),
                     "longest_wait": max((w["wait"] for w in here), default=0),
                     "callers": [w["caller"] for w in here],
                     "answered": len(answered), "abandoned": sum(1 for c in calls if c.abandoned),
                     "offered": offered, "within_60": within / offered if offered else None})
    return rows


async def live_calls(app: web.Application, ask_asterisk: bool = True,
                     ) -> tuple[list[CallRecord], list[dict[str, Any]], str]:
    """Today's call records, the callers in queue now (from Asterisk, else from the records) and which."""
    zone = ZoneInfo(app[SETTINGS_KEY].timezone)
    start, end = local_day_bounds(dt.datetime.now(zone).date(), zone)
    now = dt.datetime.now(dt.UTC)
    async with app[DB_KEY].session() as db:
        today_calls = await calls_between(db, start, end)
    callers = await read.waiting_callers(app[REDIS_KEY]) if ask_asterisk else None
    if callers is None:  # the CTI cannot ask Asterisk now: fall back to what it wrote
        return today_calls, waiting_in_records(today_calls, now), "database"
    return today_calls, [{"queue": w.queue, "caller": w.caller, "wait": w.wait} for w in callers], "asterisk"


def waiting_in_records(calls: list[CallRecord], now: dt.datetime) -> list[dict[str, Any]]:
    """The callers in queue now as the call records have them (queue entry, no end), with their wait."""
    return [{"queue": c.queue, "caller": c.caller_number, "wait": (now - (c.queued_at or c.started_at)).total_seconds()}
            for c in calls if c.state in (CallState.QUEUED, CallState.RINGING) and not c.ended_at]


async def alert_data(app: web.Application) -> tuple[list[CallRecord], list[float]]:
    """What the alert watcher checks: from the call records only (queue entry without an end), so that the
    watcher's rounds add no load on the CTI and Asterisk; an open wallboard asks Asterisk itself. Only the
    rolling window's calls and those still waiting are read, not the whole day, every ``check_seconds``."""
    rules = await alerts.effective_rules(app[alerts.RULES_KEY], app[REDIS_KEY])
    now = dt.datetime.now(dt.UTC)
    async with app[DB_KEY].session() as db:
        calls = await calls_queued_since(db, now - dt.timedelta(minutes=rules.window_minutes))
    return calls, [w["wait"] for w in waiting_in_records(calls, now)]


async def snapshot(request: web.Request) -> dict[str, Any]:
    zone = local_zone(request)
    start, end = local_day_bounds(dt.datetime.now(zone).date(), zone)
    today_calls, waiting, source = await live_calls(request.app)
    async with request.app[DB_KEY].session() as db:
        missed = await missed_tasks_between(db, start, end)
        agents = await active_agents(db)
    figures, crossing, rules = await alerts.check(request.app, today_calls, [w["wait"] for w in waiting])
    sessions = await read.agent_sessions(request.app[REDIS_KEY])
    live = {c.agent_id: c for c in today_calls if c.state == CallState.TALKING and not c.ended_at and c.agent_id}
    agent_rows = []
    for agent in agents:
        session = sessions.get(agent.id) or read.AgentSession(agent.id)
        call = live.get(agent.id)
        agent_rows.append({
            "id": agent.id, "name": agent.display_name, "username": agent.username, "number": agent.agent_number,
            "state": session.state, "state_label": session.state_label, "reason": session.reason_label,
            "since": session.since, "phone": session.phone,
            "caller": call.caller_number if call else None,
            "answered_today": sum(1 for c in today_calls if c.agent_id == agent.id and c.answered_at),
        })
    # A disk running low is shown before recordings stop being written ([disk] in hotline.toml).
    disk = [d.detail for d in disk_space(request.app[SETTINGS_KEY]) if d.low]
    queues = queue_rows(await enabled_queue_names(request.app[DB_KEY]), waiting, today_calls)
    return {"now": time.time(), "source": source, "queues": queues,
            "agents": agent_rows, "abandoned": abandoned_rows(today_calls, missed), "disk_alarms": disk,
            "service": {**dataclasses.asdict(figures), "window_minutes": rules.window_minutes,
                        "service_level_seconds": rules.service_level_seconds,
                        "thresholds": {k: getattr(rules, k) for k in alerts.THRESHOLDS}},
            "alerts": [a.to_json() for a in crossing]}


MISSED_STATES = {CallbackStatus.PENDING: "待回拨", CallbackStatus.DIALING: "回拨中", CallbackStatus.DONE: "已回拨",
                 CallbackStatus.FAILED: "回拨未接通", CallbackStatus.EXPIRED: "已过期", CallbackStatus.CANCELLED: "已取消"}


def abandoned_rows(today_calls: list[CallRecord], missed: dict[str, CallbackRequest] | None = None,
                   limit: int = 50) -> list[dict[str, Any]]:
    """Today's abandoned calls (in the queue, or in the IVR where they made a 漏接回拨 task), newest first,
    with whether the number was reached again since and the outcome of the missed-call callback (pure)."""
    missed = missed or {}
    by_number = {t.number: t for t in missed.values()}  # a number's later missed calls share its one task
    reached = {}
    for call in today_calls:
        if call.answered_at and call.caller_number:
            reached[call.caller_number] = max(reached.get(call.caller_number, call.started_at), call.started_at)
    rows = []
    left = (c for c in today_calls if c.abandoned or c.call_id in missed)
    for call in sorted(left, key=lambda c: c.started_at, reverse=True)[:limit]:
        task = missed.get(call.call_id) or by_number.get(call.caller_number or "")
        rows.append({"caller": call.caller_number, "hotline": call.hotline, "queue": call.queue,
                     "at": call.started_at.timestamp(), "waited": round(call.wait_seconds or 0),
                     "reached_since": reached.get(call.caller_number or "", call.started_at) > call.started_at,
                     "callback": MISSED_STATES.get(task.status, task.status) if task else None,
                     "callback_attempts": task.attempts if task else 0})
    return rows


@_leads_only
async def wallboard_page(request: web.Request) -> web.Response:
    return aiohttp_jinja2.render_template("wallboard.html", request, {
        "lead_phone": request.app[SETTINGS_KEY].sip.lead_extensions[0]})


@_leads_only
async def wallboard_json(request: web.Request) -> web.Response:
    return web.json_response(await snapshot(request))


@_leads_only
async def get_alerts(request: web.Request) -> web.Response:
    """GET /api/wallboard/alerts: the thresholds in force (settings, or the team lead's for the shift)."""
    rules = await alerts.effective_rules(request.app[alerts.RULES_KEY], request.app[REDIS_KEY])
    return web.json_response({k: getattr(rules, k) for k in alerts.THRESHOLDS})


@_leads_only
async def post_alerts(request: web.Request) -> web.Response:
    """POST /api/wallboard/alerts {service_level_below?, longest_wait_seconds?, abandon_rate_above?} for the
    shift, or {"reset": true} back to the settings."""
    data = await read_json(request)
    try:
        rules = await alerts.set_thresholds(request.app[alerts.RULES_KEY], request.app[REDIS_KEY],
                                            None if data.get("reset") is True else data)
    except alerts.ThresholdError as exc:
        raise json_error(400, str(exc), exc.field) from None
    return web.json_response({k: getattr(rules, k) for k in alerts.THRESHOLDS})


@_leads_only
async def post_spy(request: web.Request) -> web.Response:
    """POST /api/wallboard/spy {agent_id, mode: listen|whisper|barge}: ChanSpy to the lead's phone."""
    data = await read_json(request)
    mode = data.get("mode")
    if mode not in ("listen", "whisper", "barge"):
        raise json_error(400, "请选择监听方式", "mode")
    agent_id = record_id(data.get("agent_id"), "agent_id", "坐席")
    answer = await cti_command(request, "spy", {"agent_id": agent_id, "mode": mode})
    return web.json_response({"ok": True, "message": f"请接听班长话机 {answer['lead_phone']}"})


# --- the service-quality report ------------------------------------------------------

def _period(request: web.Request, year: bool = False) -> tuple[dt.date, dt.date, str]:
    """The period asked for; by default the last seven days (the report) or this year so far (the evaluation)."""
    zone = local_zone(request)
    today = dt.datetime.now(zone).date()
    first = today.replace(month=1, day=1) if year else today - dt.timedelta(days=6)
    start = iso_date(request.query.get("from") or first, "from", "开始日期")
    end = iso_date(request.query.get("to") or today, "to", "结束日期")
    if end < start:
        raise json_error(400, "结束日期不能早于开始日期", "to")
    hotline = request.query.get("hotline", "")
    if hotline and hotline not in HOTLINES:
        raise json_error(400, "热线应为 12301 或 12365", "hotline")
    return start, end, hotline


def kpi_settings(request: web.Request) -> kpi.KpiSettings:
    settings = request.app[SETTINGS_KEY]
    return kpi.KpiSettings.from_settings(asdict(settings.kpi), settings.queues.wrapup_seconds)


async def build_report(request: web.Request, start: dt.date, end: dt.date, hotline: str) -> kpi.Report:
    zone = local_zone(request)
    async with request.app[DB_KEY].session() as db:
        return await kpi_sql.load_report(db, start, end, zone, hotline, today=dt.datetime.now(zone).date(),
                                         settings=kpi_settings(request), agent_names=await agent_names(db))


async def dissatisfied_visits(request: web.Request, start: dt.date, end: dt.date, hotline: str) -> list[dict]:
    """The 回访 whose citizen said 不满意, for the team lead to follow up (same period as the report)."""
    zone = local_zone(request)
    lo, hi = kpi.local_bounds(start, end, zone)
    async with request.app[DB_KEY].session() as db:
        tickets = await return_visits.dissatisfied(db, lo, hi, hotline)
    return [{"number": t.number, "state_label": t.state_label, "visit_result": t.visit_result,
             "visited_by_name": t.visited_by_name,
             "visited": t.visited_at.astimezone(zone).strftime("%Y-%m-%d %H:%M") if t.visited_at else ""}
            for t in tickets]


def chart(categories: list[str], series: dict[str, list[float | None]], kind: str = "bar",
          links: list[str] | None = None, unit: str = "", integer: bool = True) -> dict[str, Any]:
    """What static/charts.js draws with ECharts: categories, named series, and a link per category."""
    return {"categories": categories, "series": [{"name": n, "data": d} for n, d in series.items()],
            "type": kind, "links": links, "unit": unit, "integer": integer}


@_leads_only
async def report_page(request: web.Request) -> web.Response:
    start, end, hotline = _period(request)
    report = await build_report(request, start, end, hotline)
    days = chart([d.day.strftime("%m-%d") for d in report.days],
                 {"呼入总数": [d.calls for d in report.days], "坐席接通": [d.answered for d in report.days],
                  "排队放弃": [d.abandoned for d in report.days]},
                 links=[f"/report?from={d.day}&to={d.day}&hotline={hotline}" for d in report.days], unit="通")
    waits = chart([label for label, _n in report.wait_histogram], {"来电数": [n for _l, n in report.wait_histogram]},
                  unit="通")
    agents = chart([a.name for a in report.agents], {"接听": [a.calls for a in report.agents]}, unit="通")
    return aiohttp_jinja2.render_template("report.html", request, {
        "r": report, "outcome_labels": kpi.OUTCOME_LABELS, "start": start, "end": end, "hotline": hotline,
        "hotlines": HOTLINES, "day_chart": days, "wait_chart": waits, "agent_chart": agents,
        "query": f"from={start}&to={end}&hotline={hotline}",
        "dissatisfied": await dissatisfied_visits(request, start, end, hotline),
    })


def _export_rows(report: kpi.Report, start: dt.date, end: dt.date, hotline: str,
                 dissatisfied: list[dict] = ()) -> list[list[Any]]:
    rows: list[list[Any]] = [["服务质量报表", f"{start} 至 {end}", f"热线：{hotline or '全部'}"], []]
    rows += [["指标", "数值", "分子", "分母", "定义"]]
    rows += [[f.definition.name, f.display, f.numerator, f.denominator, f.definition.text] for f in report.figures]
    rows += [[], ["来电结果", "来电数"]]
    rows += [[kpi.OUTCOME_LABELS[o], n] for o, n in report.outcomes.items()]
    rows += [[], ["坐席", "接听（通）", "平均处理时长（秒，含话后整理）", "参评（通）", "满意或基本满意（通）"]]
    rows += [[a.name, a.calls, round(a.average_handling or 0, 1), a.rated, a.satisfied] for a in report.agents]
    rows += [[], ["日期", "呼入总数", "进入排队", "坐席接通", "排队放弃"]]
    rows += [[d.day.isoformat(), d.calls, d.offered, d.answered, d.abandoned] for d in report.days]
    rows += [[], ["回访不满意工单", "结案结果", "回访结果", "回访人", "回访时间"]]
    rows += [[t["number"], t["state_label"], t["visit_result"], t["visited_by_name"], t["visited"]] for t in dissatisfied]
    return rows


@_leads_only
async def report_export(request: web.Request) -> web.Response:
    start, end, hotline = _period(request)
    if request.query.get("format", "csv") not in ("csv", "xlsx"):
        raise json_error(400, "导出格式应为 csv 或 xlsx", "format")
    rows = _export_rows(await build_report(request, start, end, hotline), start, end, hotline,
                        await dissatisfied_visits(request, start, end, hotline))
    return sheet_response(request, rows, "服务质量", f"report-{start:%Y%m%d}-{end:%Y%m%d}")


async def build_evaluation(request: web.Request) -> evaluation.Evaluation:
    start, end, hotline = _period(request, year=True)
    if (end - start).days > 366 * 3:
        raise json_error(400, "评价期间不能超过三年", "from")
    zone = local_zone(request)
    async with request.app[DB_KEY].session() as db:
        return await evaluation.evaluate(db, evaluation.scheme(), start, end, zone, hotline,
                                         today=dt.datetime.now(zone).date(), settings=kpi_settings(request),
                                         agent_names=await agent_names(db))


@_leads_only
async def evaluation_page(request: web.Request) -> web.Response:
    e = await build_evaluation(request)

    def total(part: evaluation.Slice) -> float | None:
        return None if part.scored.total is None else round(part.scored.total, 1)

    months = chart([m.label for m in e.months], {"综合得分": [total(m) for m in e.months]}, kind="line",
                   links=[f"/report?from={m.report_start}&to={m.report_end}&hotline={e.hotline}" for m in e.months],
                   unit="分", integer=False)
    lines = chart([h.label for h in e.hotlines], {"综合得分": [total(h) for h in e.hotlines]},
                  links=[f"/evaluation?from={e.start}&to={e.end}&hotline={h.label}" for h in e.hotlines],
                  unit="分", integer=False)
    return aiohttp_jinja2.render_template("evaluation.html", request, {
        "e": e, "hotlines": HOTLINES, "total_line": evaluation.total_line(e), "month_chart": months,
        "hotline_chart": lines,
        "query": f"from={e.start}&to={e.end}&hotline={e.hotline}",
    })


@_leads_only
async def evaluation_export(request: web.Request) -> web.Response:
    fmt = request.query.get("format", "xlsx")
    if fmt not in ("xlsx", "pdf"):
        raise json_error(400, "导出格式应为 xlsx 或 pdf", "format")
    e = await build_evaluation(request)
    if fmt == "xlsx":
        body, ctype = evaluation.evaluation_xlsx(e), XLSX_TYPE
    else:
        body, ctype = evaluation.evaluation_pdf(e), "application/pdf"
    name = f"evaluation-{e.start:%Y%m%d}-{e.end:%Y%m%d}.{fmt}"
    return web.Response(body=body, content_type=ctype,
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/wallboard", wallboard_page)
    app.router.add_get("/api/wallboard", wallboard_json)
    app.router.add_post("/api/wallboard/spy", post_spy)
    app.router.add_get("/api/wallboard/alerts", get_alerts)
    app.router.add_post("/api/wallboard/alerts", post_alerts)
    app.router.add_get("/report", report_page)
    app.router.add_get("/report/export", report_export)
    app.router.add_get("/evaluation", evaluation_page)
    app.router.add_get("/evaluation/export", evaluation_export)

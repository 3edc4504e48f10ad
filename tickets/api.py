"""JSON HTTP API of the tickets (aiohttp). The desk app adds ``routes`` and its auth middleware,
which puts the logged-in :class:`core.models.User` (``.unit`` loaded) in ``request["user"]``.

Every handler checks the unit boundary; every write runs in one transaction;
wrong input gets a 4xx whose JSON names the field, in Chinese.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from core.inputs import column_text, query_int, record_id, text
from core.models import User
from core.sheets import XLSX_TYPE
from core.web import DB_KEY, REDIS_KEY, SETTINGS_KEY, USER_KEY, json_error, read_json, streamed_upload
from tickets import archive, clock, dispatch, risk
from tickets.deadlines import (
    DeadlinePolicy,
    acceptance_overdue,
    active_policy,
    days_left,
    handling_overdue,
    handover_overdue,
    policy_name,
    today_local,
)
from tickets.models import KIND_LABELS, STATE_LABELS, Evidence, Ticket, TicketAction
from tickets.openapi import openapi_document
from tickets.queries import (
    MAX_PAGE,
    MAX_PAGE_SIZE,
    TicketFilter,
    closing_rates,
    evidence_of,
    find_by_number,
    home_counters,
    iter_filtered,
    list_tickets,
    ticket_evidence,
    tracking_log,
)
from tickets.workflow import (
    WorkflowError,
    add_evidence,
    available_actions,
    can_view,
    perform_action,
    register_ticket,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

routes = web.RouteTableDef()
NUMBER = r"{number:\d{8,20}}"
MAX_EVIDENCE_BYTES = 10 * 1024 * 1024  # default of [web] evidence_max_mb
MAX_REMARK_CHARS = 500
MAX_REMARK_BYTES = 4 * MAX_REMARK_CHARS  # UTF-8: at most 4 bytes a character
# Accepted evidence, recognised by the file's first bytes, not by its name or declared type.
MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
    (b"GIF87a", "image/gif", "gif"),
    (b"GIF89a", "image/gif", "gif"),
    (b"%PDF-", "application/pdf", "pdf"),
)


SAFE_ASCII_NAME = re.compile(r"[A-Za-z0-9._ ()-]{1,200}")


def sniff(head: bytes) -> tuple[str, str] | None:
    """(content type, extension) of an accepted image or PDF, from its magic bytes."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp", "webp"
    return next(((ctype, ext) for magic, ctype, ext in MAGIC if head.startswith(magic)), None)


# --- helpers ----------------------------------------------------------------------

def _user(request: web.Request) -> User:
    user = request.get(USER_KEY)
    if user is None:
        raise json_error(401, "请先登录")
    return user


def _policy(request: web.Request) -> DeadlinePolicy:
    return active_policy(policy_name(request.app.get(SETTINGS_KEY)))


def _now(request: web.Request) -> dt.datetime:
    """The rules' clock (tickets/clock.py), the scheduler's: a step's date, the deadlines it sets and the
    reminders the scheduler fires from them agree, also when a test shifts that clock."""
    return clock.now(request.app.get(SETTINGS_KEY))


def _today(request: web.Request) -> dt.date:
    return today_local(_policy(request), _now(request))


def _workflow_error(exc: WorkflowError) -> web.HTTPException:
    return json_error(exc.status, exc.message, exc.field)




async def _visible_ticket(session: AsyncSession, request: web.Request) -> Ticket:
    ticket = await find_by_number(session, request.match_info["number"])
    if ticket is None or not can_view(_user(request), ticket):
        # Outside the unit boundary a ticket does not exist, as far as the caller can tell.
        raise json_error(404, "工单不存在", "number")
    return ticket


def ticket_json(ticket: Ticket, today: dt.date, user: User | None = None) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "number": ticket.number, "kind": ticket.kind.value, "kind_label": KIND_LABELS[ticket.kind],
        "hotline": ticket.hotline, "state": ticket.state.value, "state_label": STATE_LABELS[ticket.state],
        "source": ticket.source.value,
        "complainant_name": ticket.complainant_name, "complainant_phone": ticket.complainant_phone,
        "complainant_org": ticket.complainant_org,
        "respondent_name": ticket.respondent_name, "respondent_phone": ticket.respondent_phone,
        "complaint_object": ticket.complaint_object, "event_category": ticket.event_category,
        "province": ticket.province, "city": ticket.city, "county": ticket.county,
        "amount": None if ticket.amount is None else str(ticket.amount), "group_size": ticket.group_size,
        "description": ticket.description, "transcript": ticket.transcript,
        "unit": {"id": ticket.unit_id, "name": ticket.unit.name if ticket.unit else None},
        "risk": {"level": ticket.risk_level, "reasons": ticket.risk_reasons, "auto_level": ticket.risk_auto_level,
                 "override_remark": ticket.risk_override_remark, "override_at": iso(ticket.risk_override_at)},
        "supervised": ticket.supervised, "supervision_note": ticket.supervision_note,
        "acceptance_due": iso(ticket.acceptance_due), "handling_due": iso(ticket.handling_due),
        "deadlines_provisional": ticket.deadlines_provisional,
        "days_left": days_left(ticket, today),
        "acceptance_overdue": acceptance_overdue(ticket, today), "handling_overdue": handling_overdue(ticket, today),
        "handover": {"authority": ticket.handover_authority, "due": iso(ticket.handover_due),
                     "result": ticket.handover_result, "result_at": iso(ticket.handover_result_at),
                     "overdue": handover_overdue(ticket, today)},
        "external": {"platform": ticket.external_platform, "ref": ticket.external_ref,
                     "reply_due": iso(ticket.external_reply_due)},
        "return_visit": {"result": ticket.visit_result, "satisfaction": ticket.visit_satisfaction,
                         "at": iso(ticket.visited_at), "by": ticket.visited_by_name},
        "review_status": ticket.review_status.value,
        "review_outcome": ticket.review_outcome.value if ticket.review_outcome else None,
        "created_at": iso(ticket.created_at), "created_by": ticket.created_by_name,
        "accepted_at": iso(ticket.accepted_at), "closed_at": iso(ticket.closed_at),
        "actions": available_actions(ticket, user) if user else [],
    }


def evidence_json(number: str, evidence: Evidence) -> dict[str, Any]:
    return {"id": evidence.id, "filename": evidence.filename, "content_type": evidence.content_type,
            "size_bytes": evidence.size_bytes, "sha256": evidence.sha256,
            "uploaded_at": evidence.uploaded_at.isoformat(),
            "url": f"/api/tickets/{number}/evidence/{evidence.id}"}


def content_disposition(disposition: str, filename: str, fallback: str) -> str:
    """RFC 6266: a plain ASCII name for old clients and the original (e.g. Chinese) name as UTF-8 ``filename*``."""
    plain = filename if SAFE_ASCII_NAME.fullmatch(filename) else fallback
    return f"{disposition}; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _evidence_root(request: web.Request) -> Path:
    return request.app[SETTINGS_KEY].var_dir / "evidence"


def action_json(action: TicketAction) -> dict[str, Any]:
    return {"id": action.id, "action": action.action, "operator": action.operator_name,
            "operator_unit": action.operator_unit, "at": action.at.isoformat(), "state": action.state.value,
            "state_label": STATE_LABELS[action.state], "remark": action.remark, "inputs": action.inputs}


# --- read -----------------------------------------------------------------------------

@routes.get("/api/tickets/openapi.json")
async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


@routes.get("/api/tickets")
async def get_list(request: web.Request) -> web.Response:
    user, today = _user(request), _today(request)
    try:
        flt = TicketFilter.from_query(request.query)
        async with request.app[DB_KEY].session() as session:
            page = await list_tickets(session, user, flt, today,
                                      query_int(request.query.get("page"), "page", "页码", 1, 1, MAX_PAGE),
                                      query_int(request.query.get("page_size"), "page_size", "每页条数", 20, 1,
                                                MAX_PAGE_SIZE))
    except WorkflowError as exc:
        raise _workflow_error(exc) from None
    return web.json_response({"total": page.total, "page": page.page, "page_size": page.page_size,
                              "items": [ticket_json(t, today) for t in page.items]})


@routes.get("/api/tickets/export")
async def get_export(request: web.Request) -> web.Response:
    user, today = _user(request), _today(request)
    fmt = request.query.get("format", "csv")
    if fmt not in ("csv", "xlsx"):
        raise json_error(400, "导出格式应为 csv 或 xlsx", "format")
    try:
        flt = TicketFilter.from_query(request.query)
    except WorkflowError as exc:
        raise _workflow_error(exc) from None
    async with request.app[DB_KEY].session() as session:
        tickets = await iter_filtered(session, user, flt, today)
    body = archive.list_csv(tickets, today) if fmt == "csv" else archive.list_xlsx(tickets, today)
    ctype = "text/csv" if fmt == "csv" else XLSX_TYPE
    return web.Response(body=body, content_type=ctype,
                        headers={"Content-Disposition": f'attachment; filename="tickets-{today:%Y%m%d}.{fmt}"'})


@routes.get("/api/tickets/counters")
async def get_counters(request: web.Request) -> web.Response:
    async with request.app[DB_KEY].session() as session:
        return web.json_response(await home_counters(session, _user(request), _today(request)))


@routes.get("/api/tickets/closing-rates")
async def get_closing_rates(request: web.Request) -> web.Response:
    async with request.app[DB_KEY].session() as session:
        return web.json_response({"users": await closing_rates(session, _user(request))})


@routes.get("/api/tickets/suggest-unit")
async def get_suggestion(request: web.Request) -> web.Response:
    _user(request)
    q = request.query
    if not q.get("hotline"):
        raise json_error(400, "请选择热线", "hotline")
    async with request.app[DB_KEY].session() as session:
        unit = await dispatch.suggest_unit(session, q["hotline"], q.get("province"), q.get("city"),
                                           q.get("county"), q.get("complaint_object"))
    if unit is None:
        raise json_error(404, "没有可派发的处理单位", "hotline")
    return web.json_response({"unit": {"id": unit.id, "code": unit.code, "name": unit.name,
                                       "level": unit.level.value}})


@routes.get(f"/api/tickets/{NUMBER}")
async def get_ticket(request: web.Request) -> web.Response:
    async with request.app[DB_KEY].session() as session:
        ticket = await _visible_ticket(session, request)
        return web.json_response(ticket_json(ticket, _today(request), _user(request)))


@routes.get(f"/api/tickets/{NUMBER}/log")
async def get_log(request: web.Request) -> web.Response:
    async with request.app[DB_KEY].session() as session:
        ticket = await _visible_ticket(session, request)
        return web.json_response({"number": ticket.number,
                                  "log": [action_json(a) for a in await tracking_log(session, ticket)]})


@routes.get(f"/api/tickets/{NUMBER}/archive")
async def get_archive(request: web.Request) -> web.Response:
    fmt = request.query.get("format", "pdf")
    if fmt not in ("pdf", "xlsx"):
        raise json_error(400, "归档格式应为 pdf 或 xlsx", "format")
    async with request.app[DB_KEY].session() as session:
        ticket = await _visible_ticket(session, request)
        try:
            form = archive.archive_form(ticket, await tracking_log(session, ticket))
        except archive.ArchiveError as exc:
            raise json_error(409, str(exc), "number") from None
    body = archive.form_pdf(form) if fmt == "pdf" else archive.form_xlsx(form)
    ctype = "application/pdf" if fmt == "pdf" else XLSX_TYPE
    return web.Response(body=body, content_type=ctype,
                        headers={"Content-Disposition": f'attachment; filename="{form.number}-{form.appendix}.{fmt}"'})


@routes.get(f"/api/tickets/{NUMBER}/evidence")
async def get_evidence_list(request: web.Request) -> web.Response:
    async with request.app[DB_KEY].session() as session:
        ticket = await _visible_ticket(session, request)
        rows = await ticket_evidence(session, ticket)
    return web.json_response({"number": ticket.number, "evidence": [evidence_json(ticket.number, e) for e in rows]})


@routes.get(rf"/api/tickets/{NUMBER}/evidence/{{evidence_id:\d{{1,18}}}}")
async def get_evidence_file(request: web.Request) -> web.StreamResponse:
    """One evidence file, to whoever may see the ticket: shown in the browser, or saved with ``?download=1``."""
    async with request.app[DB_KEY].session() as session:
        ticket = await _visible_ticket(session, request)
        evidence = await evidence_of(
            session, ticket, record_id(request.match_info["evidence_id"], "evidence_id", "凭证"))
    if evidence is None:
        raise json_error(404, "该工单没有这份凭证", "evidence_id")
    root = _evidence_root(request).resolve()
    path = (root / evidence.storage_path).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise json_error(404, "凭证文件已不在存储中，请联系系统管理员", "evidence_id")
    ext = Path(evidence.storage_path).suffix
    disposition = "attachment" if request.query.get("download") in ("1", "true") else "inline"
    return web.FileResponse(path, headers={
        "Content-Type": evidence.content_type,
        "Content-Disposition": content_disposition(disposition, evidence.filename,
                                                   f"evidence-{ticket.number}-{evidence.id}{ext}"),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-store",
    })


# --- write ------------------------------------------------------------------------------

@routes.post("/api/tickets")
async def post_ticket(request: web.Request) -> web.Response:
    user, data = _user(request), await read_json(request)
    policy = _policy(request)
    try:
        async with request.app[DB_KEY].transaction() as session:
            ticket = await register_ticket(session, data, user, _now(request), policy=policy)
    except WorkflowError as exc:
        raise _workflow_error(exc) from None
    await risk.alert_if_needed(ticket, request.app.get(REDIS_KEY))  # after commit: no alert for a rollback
    return web.json_response(ticket_json(ticket, _today(request), user), status=201)


async def _act(request: web.Request, action: str, inputs: dict[str, Any]) -> web.Response:
    user, policy = _user(request), _policy(request)
    try:
        async with request.app[DB_KEY].transaction() as session:
            ticket = await _visible_ticket(session, request)
            step = await perform_action(session, ticket, action, inputs, user, _now(request), policy=policy)
    except WorkflowError as exc:
        raise _workflow_error(exc) from None
    if action == "调整风险等级":
        await risk.alert_if_needed(ticket, request.app.get(REDIS_KEY))
    return web.json_response({"ticket": ticket_json(ticket, _today(request), user), "step": action_json(step)})


@routes.post(f"/api/tickets/{NUMBER}/actions")
async def post_action(request: web.Request) -> web.Response:
    data = await read_json(request)
    action = data.get("action")
    if not isinstance(action, str) or not action:
        raise json_error(400, "请选择操作", "action")
    action = column_text(action, "action", "操作", TicketAction.__table__.c.action)
    return await _act(request, action, data.get("inputs") or {})


@routes.post(f"/api/tickets/{NUMBER}/risk")
async def post_risk(request: web.Request) -> web.Response:
    data = await read_json(request)
    return await _act(request, "调整风险等级", {"level": data.get("level"), "remark": data.get("remark")})


def evidence_cap(app: web.Application) -> int:
    """Largest evidence file accepted, in bytes (``[web] evidence_max_mb``)."""
    settings = app.get(SETTINGS_KEY)
    return settings.web.evidence_max_mb * 1024 * 1024 if settings is not None else MAX_EVIDENCE_BYTES


def evidence_too_large(cap: int, size: int) -> web.HTTPException:
    return json_error(413, f"文件超过 {cap // 1024 // 1024} MB 上限", "file", max_size=cap, actual_size=size)


@dataclass
class Upload:
    filename: str
    path: Path  # the file as received, in the evidence store's incoming folder
    size: int
    sha256: str
    head: bytes  # its first bytes, to recognise the type
    remark: str


async def _read_at_most(part: Any, limit: int) -> bytes:
    """The first ``limit`` bytes of a form field; the rest is skipped, never buffered."""
    data = b""
    while len(data) < limit and (chunk := await part.read_chunk(limit - len(data))):
        data += chunk
    return data


async def _next_part(reader: Any) -> Any:
    """The next part of a multipart body; a malformed part header (e.g. a control character) is the client's error."""
    try:
        return await reader.next()
    except BadHttpMessage:
        raise json_error(400, "上传内容格式不正确（文件名或字段头含有非法字符）", "file") from None


async def _read_upload(request: web.Request) -> Upload:
    """The multipart upload streamed to a temporary file, refused (and removed) once over the cap.

    Nothing is held in memory but one chunk: the desk serves many users in one process."""
    if not request.content_type.startswith("multipart/"):
        raise json_error(415, "请以 multipart/form-data 上传文件", "file")
    cap = evidence_cap(request.app)
    reader = await request.multipart()
    upload: Upload | None = None
    remark = ""
    incoming = _evidence_root(request) / ".incoming"
    try:
        while (part := await _next_part(reader)) is not None:
            if part.name == "remark":
                raw = await _read_at_most(part, MAX_REMARK_BYTES + 1)
                if len(raw) > MAX_REMARK_BYTES:
                    raise json_error(400, f"说明不能超过 {MAX_REMARK_CHARS} 个字符", "remark")
                try:
                    remark = text(raw.decode(), "remark", "说明", max_length=MAX_REMARK_CHARS)
                except UnicodeDecodeError:
                    raise json_error(400, "说明不是有效的 UTF-8 文字", "remark") from None
            elif part.name == "file" and upload is None:
                # Browsers send UTF-8 names raw; some clients (aiohttp) percent-encode them.
                filename = column_text(Path(unquote(part.filename or "凭证")).name or "凭证", "file", "文件名",
                                       Evidence.__table__.c.filename)
                incoming.mkdir(parents=True, exist_ok=True)
                upload = Upload(filename, incoming / f"{secrets.token_hex(16)}.part", 0, "", b"", "")
                digest = hashlib.sha256()
                with upload.path.open("wb") as out:
                    while chunk := await part.read_chunk(64 * 1024):
                        upload.size += len(chunk)
                        if upload.size > cap:
                            raise evidence_too_large(cap, upload.size)
                        if len(upload.head) < 16:
                            upload.head += chunk[:16 - len(upload.head)]
                        digest.update(chunk)
                        out.write(chunk)
                upload.sha256 = digest.hexdigest()
    except BaseException:
        if upload is not None:
            upload.path.unlink(missing_ok=True)
        raise
    if upload is None or upload.size == 0:
        if upload is not None:
            upload.path.unlink(missing_ok=True)
        raise json_error(400, "请选择要上传的文件", "file")
    upload.remark = remark
    return upload


@routes.post(f"/api/tickets/{NUMBER}/evidence")
@streamed_upload
async def post_evidence(request: web.Request) -> web.Response:
    user, policy = _user(request), _policy(request)
    async with request.app[DB_KEY].session() as session:
        await _visible_ticket(session, request)  # first: nothing is received for a ticket the user cannot see
    upload = await _read_upload(request)
    filename, remark, digest = upload.filename, upload.remark, upload.sha256
    root = _evidence_root(request)
    target: Path | None = None
    existed = True
    try:
        kind = sniff(upload.head)
        if kind is None:
            raise json_error(415, "凭证只接受图片（PNG、JPEG、GIF、WebP）或 PDF 文件", "file")
        ctype, ext = kind
        relative = Path(request.match_info["number"]) / f"{digest}.{ext}"
        target = root / relative
        existed = target.exists()
        async with request.app[DB_KEY].transaction() as session:
            ticket = await _visible_ticket(session, request)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not existed:
                upload.path.replace(target)
            evidence = await add_evidence(session, ticket, user, filename=filename, content_type=ctype,
                                          size_bytes=upload.size, sha256=digest, storage_path=str(relative),
                                          remark=remark, policy=policy, now=_now(request))
    except BaseException as exc:
        if not existed and target is not None:
            target.unlink(missing_ok=True)  # nothing half-written: no file without its row
        if isinstance(exc, WorkflowError):
            raise _workflow_error(exc) from None
        raise
    finally:
        upload.path.unlink(missing_ok=True)  # a duplicate's copy, or what was refused
    return web.json_response({"id": evidence.id, "filename": filename, "content_type": ctype,
                              "size_bytes": upload.size, "sha256": digest}, status=201)

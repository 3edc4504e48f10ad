"""Archive forms of the 12365 standard (004 Appendix C consultation, D complaint, E report) and list exports.

One :func:`archive_form` builds the form's fields from the ticket and its
tracking log; :func:`form_xlsx` and :func:`form_pdf` only lay it out. The PDF
needs a CJK font: the Debian package ``fonts-wqy-microhei`` (path below, or
``HOTLINE_CJK_FONT``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from fpdf import FPDF
from openpyxl import Workbook
from openpyxl.styles import Alignment, Font

from core.inputs import clean_for_export
from core.sheets import MissingFont, append_row, csv_bytes, pdf_document, workbook_bytes, xlsx_bytes
from tickets.deadlines import SHANGHAI, days_left
from tickets.models import (
    CLOSED_STATES,
    KIND_LABELS,
    STATE_LABELS,
    Kind,
    State,
    Ticket,
    TicketAction,
)

FORM_TITLES = {Kind.CONSULT: "咨询处理归档表", Kind.COMPLAINT: "投诉处理归档表", Kind.REPORT: "举报处理归档表"}
FORM_APPENDIX = {Kind.CONSULT: "C", Kind.COMPLAINT: "D", Kind.REPORT: "E"}
MEDIATION = {"调解成功", "调解失败"}
CLOSING = {"自行和解", "调解成功", "调解失败", "启用质保金赔偿", "办结", "答复", "不予受理"}


class ArchiveError(ValueError):
    """The ticket cannot be archived (yet); message in Chinese."""


@dataclass(frozen=True)
class ArchiveForm:
    title: str
    appendix: str
    number: str
    fields: list[tuple[str, str]]
    content_label: str
    content: str


def _local(moment: dt.datetime | None) -> str:
    return moment.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M") if moment else ""


def _last(actions: list[TicketAction], names: set[str]) -> TicketAction | None:
    """The newest action among ``names`` (``actions`` newest first, as the tracking log)."""
    return next((a for a in actions if a.action in names), None)


def archive_form(ticket: Ticket, actions: list[TicketAction]) -> ArchiveForm:
    """The Appendix C/D/E form of a closed ticket (``actions`` newest first)."""
    if ticket.state == State.HANDED_OVER and ticket.handover_result is None:
        raise ArchiveError("工单已移交，登记接收单位的处理结果后才能归档（004 §6.3.5.1）")
    if ticket.state not in CLOSED_STATES | {State.HANDED_OVER}:
        raise ArchiveError(f"工单状态为「{STATE_LABELS[ticket.state]}」，结案后才能归档")
    label = KIND_LABELS[ticket.kind]
    head = [
        ("工单编号", ticket.number), (f"{label}时间", _local(ticket.created_at)),
        ("姓名", ticket.complainant_name or ""), ("工作单位", ticket.complainant_org or ""),
        ("联系方式", ticket.complainant_phone or ""), ("接待人员", ticket.created_by_name or ""),
    ]
    accepted = _last(actions, {"受理"})
    handed = _last(actions, {"移交"})
    transfers = [a for a in reversed(actions) if a.action in ("转办", "重新派单")]
    forwarded = "；".join(a.remark for a in transfers) or "无"
    moved = handed.inputs.get("authority", "") if handed else "未移送"
    if handed and ticket.handover_result:
        moved += f"；处理结果：{ticket.handover_result}"
    closing = _last(actions, CLOSING)
    review = _last(actions, {"审核通过"})
    reply_time = _local(ticket.closed_at)
    reply_by = closing.operator_name if closing else ""
    if ticket.kind == Kind.CONSULT:
        fields = [("是否受理", "是"), ("转发情况", forwarded),
                  ("处理情况", closing.inputs.get("answer", "") if closing else ""),
                  ("答复时间", reply_time), ("答复人员", reply_by)]
    elif ticket.kind == Kind.COMPLAINT:
        mediated = closing is not None and closing.action in MEDIATION
        document = closing.inputs.get("document_issued", "否") if closing else "否"
        fields = [
            ("是否受理", "是" if accepted else f"否（{STATE_LABELS[ticket.state]}）"), ("移送情况", moved),
            ("是否调解", "是" if mediated else "否"),
            ("调解情况", f"{STATE_LABELS[ticket.state]}：{closing.remark}" if closing else ""),
            ("是否出具调解书或终止调解书", document),
            ("审批情况", f"{review.operator_name} {_local(review.at)} 审核通过 {review.remark}".strip()
             if review else ""),
            ("答复时间", reply_time), ("答复人员", reply_by),
        ]
    else:
        fields = [
            ("受理情况（是否受理）", "是" if accepted else f"否（{STATE_LABELS[ticket.state]}）"),
            ("移送情况", moved), ("答复时间", reply_time), ("答复人员", reply_by),
            ("办理结果", closing.inputs.get("result", closing.remark) if closing else ""),
        ]
    return ArchiveForm(FORM_TITLES[ticket.kind], FORM_APPENDIX[ticket.kind], ticket.number, head + fields,
                       f"{label}内容", ticket.description)


def form_xlsx(form: ArchiveForm) -> bytes:
    wb = Workbook()
    ws = wb.active
    ws.title = form.title
    ws.column_dimensions["A"].width = 28
    ws.column_dimensions["B"].width = 70
    append_row(ws, [form.title])
    ws.merge_cells("A1:B1")
    ws["A1"].font = Font(bold=True, size=14)
    ws["A1"].alignment = Alignment(horizontal="center")
    for label, value in [*form.fields[:6], (form.content_label, form.content), *form.fields[6:]]:
        append_row(ws, [label, value])
        ws.cell(ws.max_row, 2).alignment = Alignment(wrap_text=True, vertical="top")
    append_row(ws, [f"（GB/T 质检举报处置热线服务规范 附录 {form.appendix}）"])
    return workbook_bytes(wb)


def _pdf() -> FPDF:
    try:
        return pdf_document()
    except MissingFont as exc:
        raise ArchiveError(str(exc)) from None


def form_pdf(form: ArchiveForm) -> bytes:
    pdf = _pdf()
    pdf.set_font("cjk", size=16)
    pdf.cell(0, 12, form.title, align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("cjk", size=10)
    for label, raw in [*form.fields[:6], (form.content_label, form.content), *form.fields[6:]]:
        value = clean_for_export(raw)  # a control character stored before the input checks must not break it
        y = pdf.get_y()
        pdf.multi_cell(50, 8, label, border=1, new_x="RIGHT", new_y="TOP")
        pdf.multi_cell(0, 8, value or " ", border=1, new_x="LMARGIN", new_y="NEXT")
        if pdf.get_y() < y + 8:  # a page break happened inside the value
            pdf.set_y(max(pdf.get_y(), pdf.t_margin))
    pdf.ln(4)
    pdf.cell(0, 8, f"附录 {form.appendix}　工单编号 {form.number}")
    return bytes(pdf.output())


# --- list export -------------------------------------------------------------------

LIST_COLUMNS = ("工单号", "类型", "热线", "状态", "诉求方", "诉求方电话", "被诉方", "投诉对象", "事件类别",
                "省", "市", "区县", "涉案金额", "处理单位", "登记时间", "剩余天数", "督办", "风险等级")


def list_rows(tickets: list[Ticket], today: dt.date) -> list[list[str]]:
    """Rows of the list export (``ticket.unit`` loaded)."""
    rows = []
    for t in tickets:
        left = days_left(t, today)
        rows.append([
            t.number, KIND_LABELS[t.kind], t.hotline, STATE_LABELS[State(t.state)], t.complainant_name or "",
            t.complainant_phone or "", t.respondent_name or "", t.complaint_object or "", t.event_category or "",
            t.province or "", t.city or "", t.county or "", "" if t.amount is None else str(t.amount),
            t.unit.name if t.unit else "", _local(t.created_at), "" if left is None else str(left),
            "是" if t.supervised else "", t.risk_level or "",
        ])
    return rows


def list_csv(tickets: list[Ticket], today: dt.date) -> bytes:
    return csv_bytes([LIST_COLUMNS, *list_rows(tickets, today)])


def list_xlsx(tickets: list[Ticket], today: dt.date) -> bytes:
    return xlsx_bytes("工单列表", [LIST_COLUMNS, *list_rows(tickets, today)])

"""Archive forms of 004 Appendix C/D/E come out readable; list filters use indexes (query plans)."""

from __future__ import annotations

import io
import re

import pytest
from openpyxl import load_workbook
from sqlalchemy import text
from ticket_helpers import NOW, act, register

from tickets.archive import ArchiveError, archive_form, form_pdf, form_xlsx
from tickets.models import Ticket
from tickets.perf import list_plans, literal_sql
from tickets.queries import (
    TicketFilter,
    count_statement,
    counter_statements,
    filtered,
    find_by_number,
    tracking_log,
)
from tickets.workflow import register_ticket


async def _form(db, number):
    async with db.session() as session:
        ticket = await find_by_number(session, number)
        return archive_form(ticket, await tracking_log(session, ticket))


def _pdf_pages(data: bytes) -> int:
    assert data.startswith(b"%PDF")
    return len(re.findall(rb"/Type\s*/Page\b", data))


async def test_consultation_form_appendix_c(db, users, units):
    async with db.transaction() as session:
        t = await register_ticket(session, {
            "kind": "consult", "hotline": "12365", "complainant_phone": "13800000001", "complainant_name": "李明",
            "complainant_org": "杭州某公司", "description": "儿童安全座椅有哪些强制认证要求？",
            "unit_id": units["12365-ZJ"].id,  # not in the knowledge base: forwarded to the province
        }, users["agent"], NOW)
    await act(db, t.number, "答复", {"answer": "需通过 CCC 认证，详见知识库。"}, users["zj_handler"])
    form = await _form(db, t.number)
    fields = dict(form.fields)
    assert (form.title, form.appendix) == ("咨询处理归档表", "C")
    assert fields["姓名"] == "李明" and fields["工作单位"] == "杭州某公司" and fields["接待人员"] == "王丽"
    assert fields["处理情况"].startswith("需通过 CCC") and fields["答复人员"] == "浙江省经办人"
    assert "浙江省" in fields["转发情况"] or fields["转发情况"] == "无"
    sheet = load_workbook(io.BytesIO(form_xlsx(form))).active
    assert sheet["A1"].value == "咨询处理归档表"
    assert _pdf_pages(form_pdf(form)) >= 1


async def test_report_form_appendix_e_and_long_text_spans_pages(db, users):
    long_text = "某工厂生产的电热水器存在漏电隐患，" * 400
    t = await register(db, users["agent"], kind="report", hotline="12365", complaint_object="生产企业",
                       event_category="产品质量问题", province="浙江省", city="杭州市", county="西湖区",
                       description=long_text)
    await act(db, t.number, "受理", {"note": "受理"}, users["xh_handler"])
    await act(db, t.number, "办结", {"result": "已责令停产整改并立案", "closing_date": "2025-06-10"}, users["xh_handler"])
    await act(db, t.number, "审核通过", {}, users["xh_head"])
    form = await _form(db, t.number)
    fields = dict(form.fields)
    assert (form.title, form.appendix) == ("举报处理归档表", "E")
    assert fields["受理情况（是否受理）"] == "是" and fields["办理结果"] == "已责令停产整改并立案"
    assert _pdf_pages(form_pdf(form)) >= 2


async def test_open_ticket_cannot_be_archived(db, users):
    t = await register(db, users["agent"])
    with pytest.raises(ArchiveError):
        await _form(db, t.number)


async def test_list_filters_use_indexes(db, users):
    postgres = db.engine.dialect.name == "postgresql"
    async with db.session() as session:
        if postgres:  # on a near-empty table PostgreSQL rightly prefers a scan; ask whether an index exists
            await session.execute(text("SET enable_seqscan = off"))
        plans = await list_plans(session, users["gd_handler"], NOW.date())
    for name, plan in plans.items():
        if postgres:
            assert "Index" in plan and "Seq Scan" not in plan, f"{name}:\n{plan}"
        else:
            assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, f"{name}:\n{plan}"


async def test_supervised_list_and_counter_can_use_the_partial_index(db, users):
    """ix_tickets_supervised_scope serves only queries whose WHERE repeats its predicate word for word."""
    dialect = db.engine.dialect.name
    index = next(i for i in Ticket.__table__.indexes if i.name == "ix_tickets_supervised_scope")
    predicate = str(index.dialect_options[dialect]["where"])  # supervised IS 1 / supervised IS true
    user, today = users["gd_handler"], NOW.date()
    statements = {"list": count_statement(filtered(user, TicketFilter(supervised=True), today)),
                  "counter": counter_statements(user, today)["supervised"]}
    async with db.session() as session:
        for name, statement in statements.items():
            sql = literal_sql(session, statement)
            assert f"tickets.{predicate}" in sql, f"{name}: {sql}"
            if dialect == "sqlite":  # INDEXED BY fails ("no query solution") where the index cannot serve
                forced = sql.replace("FROM tickets", "FROM tickets INDEXED BY ix_tickets_supervised_scope")
                await session.execute(text(forced))

"""Ticket tables: the ticket, its immutable tracking log, evidence files, reminders, the number counter.

Indexes follow the list filters of the 12301 manual (000 §3.2) and the home
counters (000 §3.1); every list is scoped by ``unit_path`` (a copy of the
handling unit's materialised path, so "this unit and below" needs no join).
``tickets/perf.py`` prints the query plans.
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    Enum,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    delete,
    event,
    inspect,
    or_,
    select,
    text,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from core.calls import SUMMARY_GRACE, CallbackRequest, DaySummary
from core.db import Base, UTCDateTime, utcnow
from core.models import Unit
from tickets.vocabulary import (
    CLOSED_STATES,  # noqa: F401 (re-exported: the services import the words with the tables)
    FINAL_STATES,  # noqa: F401 (re-exported: the services import the words with the tables)
    KIND_LABELS,
    OPEN_STATES,
    SOURCE_LABELS,  # noqa: F401 (re-exported: the services import the words with the tables)
    STATE_LABELS,
    Kind,
    ReviewStatus,
    Source,
    State,
)

# Binary ordering on both databases, so "path >= '/1/4/' AND path < '/1/40'" is an index range.
PathString = String(255).with_variant(String(255, collation="C"), "postgresql")


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(cls, native_enum=False, length=24, values_callable=lambda e: [m.value for m in e])


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        # Lists: "my unit and below", newest first; also per state.
        Index("ix_tickets_unit_path_created", "unit_path", "created_at"),
        Index("ix_tickets_unit_path_state", "unit_path", "state"),
        Index("ix_tickets_centre_state", "centre_unit_id", "state"),
        Index("ix_tickets_created", "created_at"),
        # Filters of 000 §3.2. Each ends with the scope (unit_path), so a filter within a unit's scope is
        # one index range that also answers the count and the page's ids without reading rows (SQLite
        # keeps the rowid in every index; PostgreSQL gets the id as an included column).
        Index("ix_tickets_phone_created", "complainant_phone", "created_at"),
        Index("ix_tickets_location_scope", "province", "city", "county", "unit_path", postgresql_include=["id"]),
        Index("ix_tickets_object_scope", "complaint_object", "unit_path", postgresql_include=["id"]),
        Index("ix_tickets_object_category_scope", "complaint_object", "event_category", "state", "unit_path",
              postgresql_include=["id"]),
        Index("ix_tickets_category_scope", "event_category", "unit_path", postgresql_include=["id"]),
        Index("ix_tickets_state_scope", "state", "unit_path", "handling_due", postgresql_include=["id"]),
        Index("ix_tickets_due_scope", "handling_due", "state", "unit_path", postgresql_include=["id"]),
        Index("ix_tickets_acceptance_due", "acceptance_due"),
        # 督办: about 2 % of tickets; a partial index holds only those, so the planners see how few they are.
        # Queries must say "supervised IS true" as written here (TicketFilter and the home counter do).
        Index("ix_tickets_supervised_scope", "state", "unit_path", postgresql_include=["id"],
              sqlite_where=text("supervised IS 1"), postgresql_where=text("supervised IS true")),
        # Closing rate per user (000 §3.7).
        Index("ix_tickets_accepted_by", "accepted_by_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(16), unique=True)
    kind: Mapped[Kind] = mapped_column(_enum(Kind))
    hotline: Mapped[str] = mapped_column(String(8))
    state: Mapped[State] = mapped_column(_enum(State), default=State.PENDING)
    source: Mapped[Source] = mapped_column(_enum(Source), default=Source.AGENT)

    complainant_name: Mapped[str | None] = mapped_column(String(64))
    complainant_phone: Mapped[str | None] = mapped_column(String(32))
    complainant_org: Mapped[str | None] = mapped_column(String(128))  # 工作单位 (archive forms)
    respondent_name: Mapped[str | None] = mapped_column(String(128))
    respondent_phone: Mapped[str | None] = mapped_column(String(32))
    complaint_object: Mapped[str | None] = mapped_column(String(64))
    event_category: Mapped[str | None] = mapped_column(String(64))
    province: Mapped[str | None] = mapped_column(String(32))
    city: Mapped[str | None] = mapped_column(String(32))
    county: Mapped[str | None] = mapped_column(String(32))
    amount: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    group_size: Mapped[int] = mapped_column(Integer, default=1)  # complainants in a group complaint
    description: Mapped[str] = mapped_column(Text, default="")
    transcript: Mapped[str | None] = mapped_column(Text)

    # Where the ticket is now, and the call centre that registered it.
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), index=True)
    unit_path: Mapped[str] = mapped_column(PathString)
    centre_unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"))
    # Units that transferred the ticket down (转办), oldest first: 转办退回 pops the last one.
    transfer_chain: Mapped[list] = mapped_column(JSON, default=list)
    transferred_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    risk_level: Mapped[str | None] = mapped_column(String(4))
    risk_reasons: Mapped[list] = mapped_column(JSON, default=list)
    risk_auto_level: Mapped[str | None] = mapped_column(String(4))
    risk_override_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    risk_override_remark: Mapped[str | None] = mapped_column(Text)
    risk_override_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    supervised: Mapped[bool] = mapped_column(Boolean, default=False)
    supervision_note: Mapped[str | None] = mapped_column(Text)

    # Local (Asia/Shanghai) calendar dates.
    acceptance_due: Mapped[date | None] = mapped_column(Date)
    handling_due: Mapped[date | None] = mapped_column(Date)
    # True when a deadline crosses a year the holiday calendar does not cover yet (see deadlines.py).
    deadlines_provisional: Mapped[bool] = mapped_column(Boolean, default=False)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_by_name: Mapped[str | None] = mapped_column(String(64))
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    accepted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    # Closing review (001 §6.3, 004 §6.3.5.2.3): the outcome waits for the unit head.
    review_status: Mapped[ReviewStatus] = mapped_column(_enum(ReviewStatus), default=ReviewStatus.NONE)
    review_outcome: Mapped[State | None] = mapped_column(_enum(State))
    review_from_state: Mapped[State | None] = mapped_column(_enum(State))
    # 逐级审核 (001 §6.3 3)): levels approved so far of the levels this closing needs; the proposer may
    # approve none of them.
    review_level: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    review_levels: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    review_proposed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    # 移交 (004 §6.3.5.1): the receiving authority, the date the case must have reached it, and its result.
    handover_authority: Mapped[str | None] = mapped_column(String(100))
    handover_due: Mapped[date | None] = mapped_column(Date, index=True)
    handover_result: Mapped[str | None] = mapped_column(Text)
    handover_result_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    # A case transferred from another platform (001 §6.2): which, its number there, its reply deadline.
    external_platform: Mapped[str | None] = mapped_column(String(32))
    external_ref: Mapped[str | None] = mapped_column(String(64))
    external_reply_due: Mapped[date | None] = mapped_column(Date, index=True)

    # 一次一评 of the call the ticket came from (core.satisfaction; the first rated linked call).
    call_satisfaction: Mapped[str | None] = mapped_column(String(16))
    # 回访 (GB/T 33358-2016: 回访结果 in the 工单; tickets.return_visits): what the citizen said when called
    # back after the closing, their grade (core.satisfaction.GRADES, or None when never reached), when, by whom.
    visit_result: Mapped[str | None] = mapped_column(Text)
    visit_satisfaction: Mapped[str | None] = mapped_column(String(16))
    visited_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    visited_by_name: Mapped[str | None] = mapped_column(String(64))

    unit: Mapped[Unit] = relationship(foreign_keys=[unit_id])
    actions: Mapped[list[TicketAction]] = relationship(
        back_populates="ticket", order_by="desc(TicketAction.id)", viewonly=True,
    )
    calls: Mapped[list[TicketCall]] = relationship(back_populates="ticket", viewonly=True)
    evidence: Mapped[list[Evidence]] = relationship(back_populates="ticket", viewonly=True)

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    @property
    def state_label(self) -> str:
        return STATE_LABELS[self.state]

    @property
    def kind_label(self) -> str:
        return KIND_LABELS[self.kind]

    @property
    def reviewing_unit_id(self) -> int:
        """The unit whose head reviews the next level of a closing: the handling unit itself at level 1
        (its head is one level above the handler), the unit above it at level 2, and so on (001 §6.3 3))."""
        ancestors = [int(part) for part in self.unit_path.strip("/").split("/")]
        return ancestors[-1 - min(self.review_level, len(ancestors) - 1)]


class TicketCall(Base):
    """A call (and so its recording) a ticket came from; a caller's later calls are added here."""

    __tablename__ = "ticket_calls"
    __table_args__ = (UniqueConstraint("ticket_id", "call_id", name="uq_ticket_calls_ticket_call"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    call_id: Mapped[str] = mapped_column(ForeignKey("call_records.call_id"), index=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Who attached the call (None: the system, e.g. a voice message); playback re-checks their right.
    linked_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    ticket: Mapped[Ticket] = relationship(back_populates="calls")


class TicketAction(Base):
    """One step of the tracking log (工单跟踪). Rows are only ever inserted."""

    __tablename__ = "ticket_actions"
    __table_args__ = (Index("ix_ticket_actions_ticket_at", "ticket_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(16))  # the Chinese action name, e.g. 受理
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    operator_name: Mapped[str] = mapped_column(String(64))
    operator_unit: Mapped[str | None] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    state: Mapped[State] = mapped_column(_enum(State))  # resulting state
    remark: Mapped[str] = mapped_column(Text, default="")
    inputs: Mapped[dict] = mapped_column(JSON, default=dict)

    ticket: Mapped[Ticket] = relationship(back_populates="actions")

    @property
    def state_label(self) -> str:
        return STATE_LABELS[self.state]


# The tracking log's action the report's 2-working-day handover figure (004 Table 1 item 15) reads.
HANDOVER_ACTION = "移交"


class TicketDaySummary(DaySummary):
    """A finished local day's ticket rows for the service-quality report (quality.kpi_sql.ticket_groups: the
    tickets registered that day, one row per distinct set of facts and days, with its count).

    One writer, the report, as for the calls (core.calls.CallDaySummary): the days that ended at least
    SUMMARY_GRACE ago, under a lock that waits for in-flight changes. A ticket goes on changing for weeks
    (受理, 移交, closing, 回访), so every change of a ticket registered before now - SUMMARY_GRACE, every 移交
    step and every 回访 task made or removed deletes the summaries of the day the ticket was registered on,
    in the same transaction (:func:`forget_ticket_days`, the ORM's flush for any writer): that day is
    computed again by the next report, the others are read. Today's tickets are never in a summary."""

    __tablename__ = "report_ticket_days"
    __table_args__ = (Index("uq_report_ticket_days_key", "hotline", "variant", "lo", "hi", unique=True),
                      Index("ix_report_ticket_days_lo", "lo"))


@event.listens_for(Session, "after_flush")
def forget_ticket_days(session: Session, _context: object) -> None:
    """Deletes the ticket-day summaries a flush's changes make stale (see TicketDaySummary)."""
    horizon = utcnow() - SUMMARY_GRACE
    moments: set[datetime] = set()
    ticket_ids: set[int] = set()
    numbers: set[str] = set()
    for record in (*session.new, *session.dirty, *session.deleted):
        if isinstance(record, Ticket):
            history = inspect(record).attrs.created_at.history  # the old day too, were it corrected
            moments.update(m for m in (*history.added, *history.unchanged, *history.deleted)
                           if m is not None and m < horizon)
        elif isinstance(record, TicketAction) and record.action == HANDOVER_ACTION:
            ticket_ids.add(record.ticket_id)
        elif (isinstance(record, CallbackRequest) and record not in session.dirty and record.source == "visit"
              and record.ticket_number):  # a 回访 task made or removed (its status is not in the report)
            numbers.add(record.ticket_number)
    if not (moments or ticket_ids or numbers):
        return
    covers = [(TicketDaySummary.lo <= m) & (TicketDaySummary.hi > m) for m in moments]
    if ticket_ids or numbers:
        covers.append(select(1).where(or_(Ticket.id.in_(ticket_ids), Ticket.number.in_(numbers)),
                                      Ticket.created_at < horizon, TicketDaySummary.lo <= Ticket.created_at,
                                      TicketDaySummary.hi > Ticket.created_at).exists())
    session.connection().execute(delete(TicketDaySummary).where(or_(*covers)))


class Evidence(Base):
    """A file added as 补充凭证 (image or PDF); the bytes live under var/evidence/."""

    __tablename__ = "ticket_evidence"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_path: Mapped[str] = mapped_column(String(255))  # relative to the evidence root
    uploaded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    ticket: Mapped[Ticket] = relationship(back_populates="evidence")


class Reminder(Base):
    """A step of the 催办 ladder that has fallen due (001 §5); one row per ticket, ladder and step."""

    __tablename__ = "ticket_reminders"
    __table_args__ = (
        UniqueConstraint("ticket_id", "ladder", "day", name="uq_ticket_reminders_step"),
        Index("ix_ticket_reminders_due", "due_on"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    ladder: Mapped[str] = mapped_column(String(16))  # own | transferred
    day: Mapped[int] = mapped_column(Integer)
    who: Mapped[str] = mapped_column(String(64))     # e.g. 科室负责人催办
    due_on: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class TicketCounter(Base):
    """Last sequence number handed out for one local day (ticket numbering)."""

    __tablename__ = "ticket_counters"

    day: Mapped[str] = mapped_column(String(8), primary_key=True)  # YYYYMMDD
    last: Mapped[int] = mapped_column(Integer, default=0)

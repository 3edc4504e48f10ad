"""Tables of the notification side of the workflow: rule firings, the outbox, the message centre.

* :class:`Firing` — one row per time-driven rule, ticket and step that has fired (催办 steps, acceptance
  overdue, expiring, handling overdue, 督办 follow-ups). Its unique key is what makes a rule fire exactly
  once, whichever scheduler process (or restart of it) gets there first.
* :class:`Notice` — the outbox: an SMS or e-mail to a citizen or a unit contact, written in the same
  transaction as the action that causes it and sent later by the scheduler (retries with back-off).
* :class:`Message` / :class:`MessageRead` — the in-platform message centre: a message is addressed to a
  unit (optionally only to one role in it); each user's reading is a row of its own.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, Enum, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime, utcnow


class NoticeState(enum.StrEnum):
    PENDING = "pending"      # waiting for its (next) attempt
    SENDING = "sending"      # handed to the gateway right now (committed before the attempt)
    SENT = "sent"            # the gateway accepted it
    UNCERTAIN = "uncertain"  # the process died mid-attempt: never re-sent automatically (never twice)
    FAILED = "failed"        # gave up after the last attempt


NOTICE_STATE_LABELS = {
    NoticeState.PENDING: "待发送", NoticeState.SENDING: "发送中", NoticeState.SENT: "已发送",
    NoticeState.UNCERTAIN: "发送结果不明（请人工核实）", NoticeState.FAILED: "发送失败",
}


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(cls, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])


class Firing(Base):
    __tablename__ = "rule_firings"
    __table_args__ = (
        UniqueConstraint("ticket_id", "rule", "step", name="uq_rule_firings_ticket_rule_step"),
        Index("ix_rule_firings_rule_at", "rule", "fired_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    rule: Mapped[str] = mapped_column(String(32))   # e.g. reminder:own, acceptance_overdue
    step: Mapped[str] = mapped_column(String(32))   # e.g. the ladder day "20", or the due date
    label: Mapped[str] = mapped_column(String(64))  # what people read, e.g. 科室负责人催办
    due_on: Mapped[datetime | None] = mapped_column(UTCDateTime())
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Notice(Base):
    __tablename__ = "notices"
    __table_args__ = (
        UniqueConstraint("dedupe_key", name="uq_notices_dedupe_key"),
        Index("ix_notices_state_next", "state", "next_attempt_at"),
        Index("ix_notices_ticket", "ticket_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    # One notice per cause: "<ticket>:<trace row or firing>:<template>:<channel>:<recipient>".
    dedupe_key: Mapped[str] = mapped_column(String(160))
    channel: Mapped[str] = mapped_column(String(8))       # sms | email
    recipient: Mapped[str] = mapped_column(String(128))   # phone number or e-mail address
    audience: Mapped[str] = mapped_column(String(16))     # citizen | unit
    template: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(200), default="")
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[NoticeState] = mapped_column(_enum(NoticeState), default=NoticeState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def state_label(self) -> str:
        return NOTICE_STATE_LABELS[self.state]


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_unit_created", "unit_id", "created_at"),
                      Index("ix_messages_published", "published"))

    id: Mapped[int] = mapped_column(primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"))
    role: Mapped[str | None] = mapped_column(String(16))  # only this role of the unit (None: everyone in it)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    ticket_number: Mapped[str | None] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(24))   # dispatched, transferred, returned, 督办 ...
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    published: Mapped[bool] = mapped_column(Boolean, default=False)  # live event sent by the scheduler


class MessageRead(Base):
    __tablename__ = "message_reads"
    __table_args__ = (UniqueConstraint("message_id", "user_id", name="uq_message_reads_message_user"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    read_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

"""The message centre (消息中心): every user's messages, unread counts and the live notice of a new one.

A message is addressed to a unit, optionally to one role in it (closing reviews to the unit head, risk
alerts to the call centre's team leads). A user sees the messages of their own unit only, so a unit
never sees another unit's messages; admins see every message, as they see every ticket.

Live: the scheduler publishes each new message on the event stream once per recipient
(:class:`MessageNotice`, addressed like a screen pop to one user id), then marks it published.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from core.events import Event, publish
from core.models import Role, User
from tickets.notify_models import Message, MessageRead

PUBLISH_BATCH = 200


@dataclass
class MessageNotice(Event):
    """A new message for one user: the page's unread badge goes up and a toast says what happened."""

    name: ClassVar[str] = "inbox"
    audience: ClassVar[str] = "agent"  # core.events: delivered to the user whose id is agent_id only
    agent_id: int
    message_id: int
    kind: str
    text: str
    ticket_number: str | None


def visible_messages(user: User) -> ColumnElement[bool]:
    if user.role == Role.ADMIN:
        return true()
    if user.unit_id is None:
        return Message.id.is_(None)
    return and_(Message.unit_id == user.unit_id, or_(Message.role.is_(None), Message.role == user.role.value))


def _unread(user: User) -> ColumnElement[bool]:
    return ~exists().where(MessageRead.message_id == Message.id, MessageRead.user_id == user.id)


async def unread_count(session: AsyncSession, user: User) -> int:
    return int(await session.scalar(select(func.count()).where(visible_messages(user), _unread(user))) or 0)


async def list_messages(session: AsyncSession, user: User, limit: int = 50,
                        ticket_number: str | None = None) -> list[dict[str, Any]]:
    """The user's newest messages, or only those about one ticket (its page, a busy unit's old case)."""
    read = exists().where(MessageRead.message_id == Message.id, MessageRead.user_id == user.id)
    query = select(Message, read.label("read")).where(visible_messages(user))
    if ticket_number is not None:
        query = query.where(Message.ticket_number == ticket_number)
    rows = (await session.execute(query.order_by(Message.id.desc()).limit(limit))).all()
    return [{"id": m.id, "kind": m.kind, "text": m.text, "ticket_number": m.ticket_number,
             "created_at": m.created_at, "read": bool(is_read)} for m, is_read in rows]


async def mark_read(session: AsyncSession, user: User, message_ids: list[int] | None = None) -> int:
    """Mark the user's unread messages (these ids, or all) as read; returns how many."""
    query = select(Message.id).where(visible_messages(user), _unread(user))
    if message_ids is not None:
        query = query.where(Message.id.in_(message_ids))
    ids = (await session.scalars(query)).all()
    session.add_all(MessageRead(message_id=i, user_id=user.id) for i in ids)
    await session.flush()
    return len(ids)


async def recipients(session: AsyncSession, message: Message) -> list[int]:
    query = select(User.id).where(User.active.is_(True), or_(User.unit_id == message.unit_id, User.role == Role.ADMIN))
    if message.role:
        query = query.where(or_(User.role == message.role, User.role == Role.ADMIN))
    return list((await session.scalars(query)).all())


async def publish_new(session: AsyncSession, redis: Any) -> int:
    """Send the live notice of every unpublished message (at least once: the page re-reads its count)."""
    messages = (await session.scalars(select(Message).where(Message.published.is_(False))
                                      .order_by(Message.id).limit(PUBLISH_BATCH))).all()
    for message in messages:
        for user_id in await recipients(session, message):
            await publish(redis, MessageNotice(agent_id=user_id, message_id=message.id, kind=message.kind,
                                               text=message.text, ticket_number=message.ticket_number))
        message.published = True
    return len(messages)


async def to_team_leads(session: AsyncSession, kind: str, text: str) -> list[Message]:
    """A message for the team leads of every unit that has them (e.g. a live service-level alert)."""
    units = (await session.scalars(select(User.unit_id).where(
        User.role == Role.TEAM_LEAD, User.active.is_(True), User.unit_id.is_not(None)).distinct())).all()
    messages = [Message(unit_id=unit_id, role=Role.TEAM_LEAD.value, kind=kind, text=text) for unit_id in units]
    session.add_all(messages)
    return messages

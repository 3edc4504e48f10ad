"""The administration audit log: every change an admin makes, with who, what, before/after, when, from where.

For the other administration modules, one call inside the transaction that makes the change::

    from core.admin_audit import record_change
    record_change(session, actor, address, "queue", queue.name, "update", before, after)

``before``/``after`` are plain dicts of the entity's fields (None for a creation's before or a removal's
after); :func:`snapshot` makes one from a model. Written in the same transaction as the change, so there
is no change without its row and no row for a change that was rolled back. Secrets never reach the log:
a field named like a password, secret, token or hash is written as :data:`REDACTED` whatever its value
(:func:`redact`), so the row says that it changed and nothing of what it became.

Entities (``entity``) are short English keys; :data:`ENTITY_LABELS` gives the Chinese the audit page
shows (add yours there). Actions likewise (:data:`ACTION_LABELS`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum
from typing import Any

from sqlalchemy import ForeignKey, String, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, Database, JSONText, UTCDateTime, utcnow
from core.models import User

REDACTED = "（已隐藏）"
# Names of fields whose values are never written: passwords and their hashes, SIP secrets, tokens, keys.
SECRET_FIELD = re.compile(r"pass(word)?|secret|token|hash|api_?key|private", re.IGNORECASE)

ENTITY_LABELS = {
    "user": "用户与坐席",
    "extension": "电话分机",
    "queue": "队列",
    "unit": "处理单位",
    "hours": "工作时间与节假日",
    "knowledge": "知识库",
    "phrase": "服务用语",
    "menu": "语音菜单",
    "policy": "风险与时限规则",
    "login_lock": "登录锁定",
    "import": "批量导入",
}

ACTION_LABELS = {
    "create": "新建",
    "update": "修改",
    "disable": "停用",
    "enable": "启用",
    "delete": "删除",
    "reset_password": "重置密码",
    "change_password": "修改密码",
    "lock": "锁定",
    "unlock": "解锁",
    "import": "导入",
    "reload": "生效",
    "signout": "签出队列",
}


class AdminChange(Base):
    """One administrative change (see the module docstring)."""

    __tablename__ = "admin_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    # The actor's id and, as it was then, their username: the row keeps its meaning after a rename.
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    actor: Mapped[str] = mapped_column(String(64), index=True)
    address: Mapped[str | None] = mapped_column(String(64))  # where the request came from (None: the command line)
    entity: Mapped[str] = mapped_column(String(32), index=True)
    entity_id: Mapped[str] = mapped_column(String(128), index=True)
    action: Mapped[str] = mapped_column(String(32))
    before: Mapped[dict | None] = mapped_column(JSONText())
    after: Mapped[dict | None] = mapped_column(JSONText())


def _plain(value: Any) -> Any:
    """A JSON-able form of a field value (enums by value, dates in ISO form, sets sorted)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted(_plain(v) for v in value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def redact(values: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``values`` made JSON-able, with every secret-named field replaced by :data:`REDACTED`."""
    if values is None:
        return None
    return {str(k): REDACTED if SECRET_FIELD.search(str(k)) else _plain(v) for k, v in values.items()}


def snapshot(obj: Any, fields: Iterable[str]) -> dict[str, Any]:
    """The named attributes of a model as a dict for ``before``/``after``."""
    return {name: getattr(obj, name) for name in fields}


def record_change(session: AsyncSession, actor: User | None, address: str | None, entity: str, entity_id: str | int,
                  action: str, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> AdminChange:
    """Add the audit row of a change to ``session`` (committed with the change itself).

    ``actor`` None is the platform (the command line, the demo seeding); ``address`` is the client's
    address (agent_desk.login_guard.source_address) or None off the web.
    """
    row = AdminChange(actor_id=actor.id if actor else None, actor=actor.username if actor else "系统",
                      address=address, entity=entity, entity_id=str(entity_id)[:128], action=action,
                      before=redact(before), after=redact(after))
    session.add(row)
    return row


async def record(db: Database, actor: User | None, address: str | None, entity: str, entity_id: str | int,
                 action: str, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> None:
    """:func:`record_change` in a transaction of its own, for a change that is not a database write (a
    log-in lock lifted in Redis, a policy file reloaded)."""
    async with db.transaction() as session:
        record_change(session, actor, address, entity, entity_id, action, before, after)


def changed_fields(row: AdminChange) -> list[str]:
    """The fields whose value differs between before and after (all of them for a creation or removal)."""
    before, after = row.before or {}, row.after or {}
    return [k for k in dict.fromkeys([*before, *after]) if before.get(k) != after.get(k)]


@dataclass(frozen=True)
class AuditQuery:
    """The audit page's search: who (actor's username), what (action), entity, entity id or text, time."""

    actor: str = ""
    entity: str = ""
    action: str = ""
    text: str = ""  # in the entity id or anywhere in before/after
    since: datetime | None = None
    until: datetime | None = None  # exclusive


def _where(query: AuditQuery) -> list[Any]:
    conditions: list[Any] = []
    if query.actor:
        conditions.append(AdminChange.actor.contains(query.actor, autoescape=True))
    if query.entity:
        conditions.append(AdminChange.entity == query.entity)
    if query.action:
        conditions.append(AdminChange.action == query.action)
    if query.text:
        text = query.text.lower()
        conditions.append(or_(*(func.lower(column, type_=String()).contains(text, autoescape=True)
                                for column in (AdminChange.entity_id, AdminChange.before, AdminChange.after))))
    if query.since:
        conditions.append(AdminChange.at >= query.since)
    if query.until:
        conditions.append(AdminChange.at < query.until)
    return conditions


async def search(db: Database, query: AuditQuery, limit: int | None = 200) -> tuple[int, list[AdminChange]]:
    """(how many rows match, the newest ``limit`` of them; all with ``limit`` None)."""
    conditions = _where(query)
    async with db.session() as session:
        total = await session.scalar(select(func.count()).select_from(AdminChange).where(*conditions))
        statement = select(AdminChange).where(*conditions).order_by(AdminChange.id.desc())
        if limit is not None:
            statement = statement.limit(limit)
        rows = list((await session.scalars(statement)).all())
    return int(total or 0), rows


EXPORT_HEADER = ("时间", "操作人", "来源地址", "对象类型", "对象", "操作", "变更字段", "变更前", "变更后")


def _describe(values: Mapping[str, Any] | None, fields: Sequence[str]) -> str:
    if values is None:
        return ""
    return "；".join(f"{k}={values.get(k)!s}" for k in fields if k in values)


def export_rows(rows: Iterable[AdminChange], local: Any) -> list[list[Any]]:
    """The rows of the CSV/XLSX export (``local``: datetime -> local time text), header first."""
    out: list[list[Any]] = [list(EXPORT_HEADER)]
    for row in rows:
        fields = changed_fields(row)
        out.append([local(row.at), row.actor, row.address or "", ENTITY_LABELS.get(row.entity, row.entity),
                    row.entity_id, ACTION_LABELS.get(row.action, row.action), "、".join(fields),
                    _describe(row.before, fields), _describe(row.after, fields)])
    return out

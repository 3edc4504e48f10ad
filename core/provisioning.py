"""Phones (PJSIP endpoints) and queues, kept in the database and rendered into Asterisk's files.

The database is the source: ``core.asterisk_config`` renders pjsip.conf, queues.conf and the dialplan's
per-queue settings from ``load()``, and the CTI applies a change to every node with targeted reloads
(cti/provisioning.py), so nothing restarts and no call drops. The extensions and queues of
``config/hotline.toml`` are only the seed of a new installation (``seed``).

A phone's password is never stored: Asterisk gets ``md5_cred`` (MD5 of ``user:realm:password``, what
digest authentication needs), and the generated password is shown once to the admin who created or
re-generated it.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Enum, Integer, String, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from core.admin_audit import record_change
from core.db import Base, Database, UTCDateTime, utcnow
from core.models import User
from core.settings import Settings

# The realm of the phones' digest authentication (pjsip.conf renders it on every auth object).
SIP_REALM = "hotline"
# The dialplan dials phones by the pattern _8XXX (dialplans/phones.conf).
EXTENSION = re.compile(r"^8\d{3}$")
QUEUE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,38}[a-z0-9]$")
HOTLINES = ("12301", "12365")
BUSINESSES = ("general", "consult", "complaint", "report")
# Asterisk's app_queue strategies (queues.conf), with their names for people.
STRATEGIES = {
    "rrmemory": "轮询（接着上次）", "ringall": "全部同时振铃", "leastrecent": "最久未接来电者优先",
    "fewestcalls": "接听最少者优先", "random": "随机", "wrandom": "按优先级加权随机", "linear": "按加入顺序",
}
MUSIC_CLASS = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
PASSWORD_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"  # typeable on a handset keypad, as settings' secrets


class PhoneKind(enum.StrEnum):
    AGENT = "agent"
    LEAD = "lead"


KIND_LABELS = {PhoneKind.AGENT: "坐席话机", PhoneKind.LEAD: "班长话机"}


class Phone(Base):
    __tablename__ = "phones"

    id: Mapped[int] = mapped_column(primary_key=True)
    extension: Mapped[str] = mapped_column(String(8), unique=True)
    label: Mapped[str] = mapped_column(String(64))
    kind: Mapped[PhoneKind] = mapped_column(Enum(PhoneKind, native_enum=False, length=8))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    md5_cred: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class HotlineQueue(Base):
    __tablename__ = "hotline_queues"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    hotline: Mapped[str] = mapped_column(String(8))
    business: Mapped[str] = mapped_column(String(16))
    strategy: Mapped[str] = mapped_column(String(16))
    ring_seconds: Mapped[int] = mapped_column(Integer)
    max_wait_seconds: Mapped[int] = mapped_column(Integer)
    announce_every_seconds: Mapped[int] = mapped_column(Integer)
    wrapup_seconds: Mapped[int] = mapped_column(Integer)
    music_class: Mapped[str] = mapped_column(String(32), default="default")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


@dataclass(frozen=True)
class PhoneView:
    extension: str
    label: str
    kind: str
    enabled: bool
    md5_cred: str

    def public(self) -> dict[str, Any]:
        """What pages and the audit log show: never the credential."""
        return {"extension": self.extension, "label": self.label, "kind": self.kind, "enabled": self.enabled}


@dataclass(frozen=True)
class QueueView:
    name: str
    hotline: str
    business: str
    strategy: str
    ring_seconds: int
    max_wait_seconds: int
    announce_every_seconds: int
    wrapup_seconds: int
    music_class: str
    enabled: bool

    def public(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Telephony:
    """Everything of the database that Asterisk's files carry."""

    phones: tuple[PhoneView, ...]
    queues: tuple[QueueView, ...]


class ProvisioningError(ValueError):
    """Refused input, in words for people; ``field`` names the form field."""

    def __init__(self, message: str, field: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.field, self.status = message, field, status


def md5_cred(extension: str, password: str) -> str:
    return hashlib.md5(f"{extension}:{SIP_REALM}:{password}".encode()).hexdigest()  # noqa: S324 - SIP digest


def new_password() -> str:
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(12))


def _phone_view(row: Phone) -> PhoneView:
    return PhoneView(row.extension, row.label, str(row.kind), row.enabled, row.md5_cred)


_QUEUE_FIELDS = ("name", "hotline", "business", "strategy", "ring_seconds", "max_wait_seconds",
                 "announce_every_seconds", "wrapup_seconds", "music_class", "enabled")


def _queue_view(row: HotlineQueue) -> QueueView:
    return QueueView(**{name: getattr(row, name) for name in _QUEUE_FIELDS})


# --- reading ---------------------------------------------------------------------------------------------

async def load(db: Database) -> Telephony:
    async with db.session() as session:
        phones = (await session.scalars(select(Phone).order_by(Phone.extension))).all()
        queues = (await session.scalars(select(HotlineQueue).order_by(HotlineQueue.name))).all()
    return Telephony(tuple(map(_phone_view, phones)), tuple(map(_queue_view, queues)))


async def list_phones(db: Database, search: str = "") -> list[PhoneView]:
    query = select(Phone).order_by(Phone.extension)
    if search.strip():
        like = f"%{search.strip()}%"
        query = query.where(or_(Phone.extension.like(like), Phone.label.like(like)))
    async with db.session() as session:
        return [_phone_view(row) for row in (await session.scalars(query)).all()]


async def list_queues(db: Database, search: str = "") -> list[QueueView]:
    query = select(HotlineQueue).order_by(HotlineQueue.name)
    if search.strip():
        like = f"%{search.strip()}%"
        query = query.where(or_(HotlineQueue.name.like(like), HotlineQueue.hotline.like(like),
                                HotlineQueue.business.like(like)))
    async with db.session() as session:
        return [_queue_view(row) for row in (await session.scalars(query)).all()]


async def get_phone(db: Database, extension: str) -> PhoneView | None:
    async with db.session() as session:
        row = await session.scalar(select(Phone).where(Phone.extension == extension))
    return _phone_view(row) if row else None


async def get_queue(db: Database, name: str) -> QueueView | None:
    async with db.session() as session:
        row = await session.scalar(select(HotlineQueue).where(HotlineQueue.name == name))
    return _queue_view(row) if row else None


async def enabled_extensions(db: Database, kind: PhoneKind = PhoneKind.AGENT) -> list[str]:
    """The phones an agent (or a team lead) may sign in on."""
    async with db.session() as session:
        rows = await session.scalars(select(Phone.extension).where(Phone.enabled.is_(True), Phone.kind == kind)
                                     .order_by(Phone.extension))
        return list(rows.all())


async def enabled_queue_names(db: Database) -> list[str]:
    async with db.session() as session:
        rows = await session.scalars(select(HotlineQueue.name).where(HotlineQueue.enabled.is_(True))
                                     .order_by(HotlineQueue.name))
        return list(rows.all())


# --- checking input --------------------------------------------------------------------------------------

def _text(data: Mapping[str, Any], name: str, label: str, max_length: int) -> str:
    value = str(data.get(name) or "").strip()
    if not value:
        raise ProvisioningError(f"请填写{label}", name)
    if len(value) > max_length:
        raise ProvisioningError(f"{label}最多 {max_length} 个字", name)
    return value


def _int(data: Mapping[str, Any], name: str, label: str, low: int, high: int) -> int:
    raw = data.get(name)
    try:
        value = int(str(raw).strip())
    except (TypeError, ValueError):
        raise ProvisioningError(f"{label}应为整数（{low}–{high}）", name) from None
    if not low <= value <= high:
        raise ProvisioningError(f"{label}应在 {low} 到 {high} 之间", name)
    return value


def _bool(data: Mapping[str, Any], name: str, default: bool) -> bool:
    value = data.get(name, default)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


KIND_BY_LABEL = {label: kind for kind, label in KIND_LABELS.items()}


def _kind(data: Mapping[str, Any], default: str = PhoneKind.AGENT) -> PhoneKind:
    """The key (agent, lead) or, as a spreadsheet writes it, the label (坐席话机, 班长话机)."""
    raw = str(data.get("kind") or default).strip()
    try:
        return KIND_BY_LABEL.get(raw) or PhoneKind(raw)
    except ValueError:
        raise ProvisioningError("话机类型应为坐席话机或班长话机", "kind") from None


def _extension(data: Mapping[str, Any]) -> str:
    extension = str(data.get("extension") or "").strip()
    if not EXTENSION.fullmatch(extension):
        raise ProvisioningError("分机号应为 8 开头的 4 位数字，如 8006", "extension")
    return extension


def check_phone(data: Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    """A new phone's fields (extension, label, kind, enabled), or every problem with them as (field, reason):
    the form stops at the first, the bulk import lists them all."""
    values: dict[str, Any] = {"enabled": _bool(data, "enabled", True)}
    problems: list[tuple[str, str]] = []
    for name, check in (("extension", _extension), ("label", lambda d: _text(d, "label", "名称", 64)),
                        ("kind", _kind)):
        try:
            values[name] = check(data)
        except ProvisioningError as exc:
            problems.append((exc.field or name, exc.message))
    return (None if problems else values), problems


def _queue_values(data: Mapping[str, Any]) -> dict[str, Any]:
    hotline = str(data.get("hotline") or "").strip()
    if hotline not in HOTLINES:
        raise ProvisioningError("热线应为 12301 或 12365", "hotline")
    business = _text(data, "business", "业务", 16)
    if not re.fullmatch(r"[a-z][a-z0-9]{0,15}", business):
        raise ProvisioningError("业务代码应为小写英文字母和数字，如 consult", "business")
    strategy = str(data.get("strategy") or "").strip()
    if strategy not in STRATEGIES:
        raise ProvisioningError("请选择有效的分配策略", "strategy")
    music = str(data.get("music_class") or "default").strip()
    if not MUSIC_CLASS.fullmatch(music):
        raise ProvisioningError("等待音乐类别应为小写英文字母、数字、- 或 _", "music_class")
    return {
        "hotline": hotline, "business": business, "strategy": strategy,
        "ring_seconds": _int(data, "ring_seconds", "振铃时长（秒）", 5, 120),
        "max_wait_seconds": _int(data, "max_wait_seconds", "最长等待（秒）", 10, 3600),
        "announce_every_seconds": _int(data, "announce_every_seconds", "播报间隔（秒）", 0, 600),
        "wrapup_seconds": _int(data, "wrapup_seconds", "话后整理（秒）", 0, 600),
        "music_class": music,
    }


# --- changing --------------------------------------------------------------------------------------------
# Every change is audited (core.admin_audit) in its own transaction: ``actor`` None is the platform itself,
# ``address`` where the admin's request came from.

def _toggle_action(before: bool, after: bool) -> str:
    return "update" if before == after else ("enable" if after else "disable")


async def create_phone(db: Database, data: Mapping[str, Any], actor: User | None = None,
                       address: str | None = None) -> tuple[PhoneView, str]:
    """A new phone; returns it and its generated password (shown once, stored only as md5_cred)."""
    values, problems = check_phone(data)
    if values is None:
        field, message = problems[0]
        raise ProvisioningError(message, field)
    async with db.transaction() as session:
        if await session.scalar(select(Phone.id).where(Phone.extension == values["extension"])) is not None:
            raise ProvisioningError(f"分机 {values['extension']} 已存在", "extension", 409)
        return add_phone(session, actor, address, values)


def add_phone(session: AsyncSession, actor: User | None, address: str | None,
              values: Mapping[str, Any]) -> tuple[PhoneView, str]:
    """Add a checked new phone (:func:`check_phone`) with its audit row to ``session``; (it, its generated
    password). The form and the bulk import both come here."""
    password = new_password()
    row = Phone(extension=values["extension"], label=values["label"], kind=values["kind"],
                enabled=values["enabled"], md5_cred=md5_cred(values["extension"], password))
    session.add(row)
    record_change(session, actor, address, "extension", row.extension, "create", None,
                  {**_phone_view(row).public(), "password": "generated"})
    return _phone_view(row), password


async def _phone_row(session, extension: str) -> Phone:
    row = await session.scalar(select(Phone).where(Phone.extension == extension))
    if row is None:
        raise ProvisioningError(f"分机 {extension} 不存在", "extension", 404)
    return row


async def update_phone(db: Database, extension: str, data: Mapping[str, Any], actor: User | None = None,
                       address: str | None = None) -> tuple[PhoneView, PhoneView]:
    """Label, kind, enabled; returns (before, after)."""
    async with db.transaction() as session:
        row = await _phone_row(session, extension)
        before = _phone_view(row)
        row.label = _text(data, "label", "名称", 64) if "label" in data else row.label
        row.kind = _kind(data, row.kind) if "kind" in data else row.kind
        row.enabled = _bool(data, "enabled", row.enabled)
        after = _phone_view(row)
        record_change(session, actor, address, "extension", extension, _toggle_action(before.enabled, after.enabled),
                      before.public(), after.public())
    return before, after


async def regenerate_password(db: Database, extension: str, actor: User | None = None,
                              address: str | None = None) -> str:
    """A new generated password (shown once); the old one stops working at the next apply."""
    password = new_password()
    async with db.transaction() as session:
        row = await _phone_row(session, extension)
        before = row.md5_cred
        row.md5_cred = md5_cred(extension, password)
        # Both sides are redacted by the audit log (the field's name): the row says that it changed.
        record_change(session, actor, address, "extension", extension, "reset_password",
                      {"password": before}, {"password": row.md5_cred})
    return password


async def create_queue(db: Database, data: Mapping[str, Any], actor: User | None = None,
                       address: str | None = None) -> QueueView:
    values = _queue_values(data)
    name = str(data.get("name") or f"{values['hotline']}-{values['business']}").strip()
    if not QUEUE_NAME.fullmatch(name):
        raise ProvisioningError("队列名应为 3–40 个小写英文字母、数字或 -，如 12301-consult", "name")
    async with db.transaction() as session:
        if await session.scalar(select(HotlineQueue.id).where(HotlineQueue.name == name)) is not None:
            raise ProvisioningError(f"队列 {name} 已存在", "name", 409)
        row = HotlineQueue(name=name, enabled=_bool(data, "enabled", True), **values)
        session.add(row)
        record_change(session, actor, address, "queue", name, "create", None, _queue_view(row).public())
    return _queue_view(row)


async def update_queue(db: Database, name: str, data: Mapping[str, Any], actor: User | None = None,
                       address: str | None = None) -> tuple[QueueView, QueueView]:
    """Every setting but the name (the dialplan, queue_log and call records know queues by it)."""
    async with db.transaction() as session:
        row = await session.scalar(select(HotlineQueue).where(HotlineQueue.name == name))
        if row is None:
            raise ProvisioningError(f"队列 {name} 不存在", "name", 404)
        before = _queue_view(row)
        values = _queue_values({**before.public(), **data})
        if values["strategy"] != before.strategy and "linear" in (values["strategy"], before.strategy):
            # app_queue keeps a queue's linear order or none: it refuses this change on a reload.
            raise ProvisioningError("「按加入顺序」策略不能与其他策略互改，请新建一个队列", "strategy")
        for key, value in values.items():
            setattr(row, key, value)
        row.enabled = _bool(data, "enabled", row.enabled)
        after = _queue_view(row)
        record_change(session, actor, address, "queue", name, _toggle_action(before.enabled, after.enabled),
                      before.public(), after.public())
    return before, after


# --- seed --------------------------------------------------------------------------------------------------

def seed_queues(settings: Settings) -> list[QueueView]:
    """The queues of a new installation: a general queue per hotline plus one per business (skill)."""
    q = settings.queues
    return [QueueView(f"{hotline}-{business}", hotline, business, "rrmemory", q.ring_seconds, q.max_wait_seconds,
                      q.announce_every_seconds, q.wrapup_seconds, "default", True)
            for hotline in HOTLINES for business in BUSINESSES]


def seed_phones(settings: Settings) -> list[PhoneView]:
    """The phones of config/hotline.toml [sip], with their passwords of var/secrets.toml."""
    def phone(ext: str, kind: PhoneKind, label: str) -> PhoneView:
        return PhoneView(ext, label, str(kind), True, md5_cred(ext, settings.sip_password(ext)))
    return ([phone(ext, PhoneKind.AGENT, f"坐席 {ext}") for ext in settings.sip.agent_extensions]
            + [phone(ext, PhoneKind.LEAD, f"班长 {ext}") for ext in settings.sip.lead_extensions])


def seed_telephony(settings: Settings) -> Telephony:
    return Telephony(tuple(seed_phones(settings)), tuple(seed_queues(settings)))


async def seed(db: Database, settings: Settings) -> None:
    """Idempotent: adds the configured extensions and the eight queues that are not in the database yet.
    What is in the database stays as an admin left it (a re-generated password too: `./hotline up` then
    prints that the password was changed, not the seed password of var/secrets.toml)."""
    async with db.transaction() as session:
        extensions = set((await session.scalars(select(Phone.extension))).all())
        for view in seed_phones(settings):
            if view.extension not in extensions:
                session.add(Phone(extension=view.extension, label=view.label, kind=PhoneKind(view.kind),
                                  enabled=True, md5_cred=view.md5_cred))
        names = set((await session.scalars(select(HotlineQueue.name))).all())
        for view in seed_queues(settings):
            if view.name not in names:
                session.add(HotlineQueue(**view.public()))

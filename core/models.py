"""People and organisation: handling units (national > province > city > county) and users."""

from __future__ import annotations

import enum
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy import Boolean, Enum, ForeignKey, String, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import Base, JSONText, UTCDateTime, utcnow

_hasher = PasswordHasher()


class UnitLevel(enum.StrEnum):
    NATIONAL = "national"
    PROVINCE = "province"
    CITY = "city"
    COUNTY = "county"
    CALL_CENTRE = "call_centre"


class Role(enum.StrEnum):
    AGENT = "agent"
    TEAM_LEAD = "team_lead"
    UNIT_HANDLER = "unit_handler"
    UNIT_HEAD = "unit_head"
    ADMIN = "admin"


# Team leads and admins: every call, recording and agent of the centre is theirs to see.
LEAD_ROLES = frozenset({Role.TEAM_LEAD, Role.ADMIN})

ROLE_LABELS = {
    Role.AGENT: "坐席员",
    Role.TEAM_LEAD: "班长",
    Role.UNIT_HANDLER: "处理单位经办人",
    Role.UNIT_HEAD: "处理单位负责人",
    Role.ADMIN: "系统管理员",
}


class Unit(Base):
    __tablename__ = "units"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    level: Mapped[UnitLevel] = mapped_column(Enum(UnitLevel, native_enum=False, length=16))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"), index=True)
    # Materialised path ("/1/4/9/"): "this unit and all below it" is one LIKE query.
    path: Mapped[str] = mapped_column(String(255), index=True, default="/")
    province: Mapped[str | None] = mapped_column(String(32))
    city: Mapped[str | None] = mapped_column(String(32))
    county: Mapped[str | None] = mapped_column(String(32))
    # 停用 (config/units.yaml ``disabled: true``): never deleted, since tickets and users refer to it.
    disabled: Mapped[bool] = mapped_column(default=False, server_default=false())

    parent: Mapped[Unit | None] = relationship(remote_side="Unit.id")


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=16))
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"), index=True)
    # Queues (skills) an agent serves, each with its penalty (Asterisk's QueueAdd Penalty: lower is offered
    # calls first), e.g. {"12301-complaint": 0, "12301-general": 2}; the CTI joins them at log-in.
    skills: Mapped[dict[str, int]] = mapped_column(JSONText(), default=lambda: {})
    agent_number: Mapped[str | None] = mapped_column(String(8))  # 工号, said in the greeting
    default_extension: Mapped[str | None] = mapped_column(String(16))  # preselected at 签入
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # A new user, or one whose password an admin reset, sets a password of their own before anything else.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    unit: Mapped[Unit | None] = relationship()

    def set_password(self, password: str) -> None:
        self.password_hash = self.hash_password(password)

    @staticmethod
    def hash_password(password: str) -> str:
        return _hasher.hash(password)

    def check_password(self, password: str) -> bool:
        try:
            return _hasher.verify(self.password_hash, password)
        except (VerifyMismatchError, InvalidHashError):
            return False

    @property
    def skill_list(self) -> list[str]:
        """The skill queues, by penalty then name."""
        return sorted(self.skills or {}, key=lambda queue: (self.skills[queue], queue))


class SecurityAudit(Base):
    """Log-in locks and their lifting: every lock (automatic) and unlock (an admin, or the CLI) leaves a row."""

    __tablename__ = "security_audit"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(16))  # "lock" | "unlock"
    subject_kind: Mapped[str] = mapped_column(String(16))  # "account" | "address"
    subject: Mapped[str] = mapped_column(String(128))
    actor: Mapped[str | None] = mapped_column(String(64))  # None: the platform itself (a lock)
    address: Mapped[str | None] = mapped_column(String(64))  # where the request came from
    detail: Mapped[str] = mapped_column(String(255), default="")

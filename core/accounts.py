"""Users and agents: the one service through which they are created and changed.

The admin pages (agent_desk/admin_users.py), the bulk import (core/bulk_import.py) and the demo seeding
(cli/demo.py) all come here, so a user is made one way whoever makes it. Every change writes its row in
the admin audit log (core.admin_audit) in the same transaction; passwords never reach it.

Fields arrive as text (a form, a spreadsheet row) and are checked by :func:`check_fields`, which reports
every problem at once as (field, Chinese reason), so a form shows them all and the import lists each
row's problems before anything is written. Users are never deleted (calls, tickets and the audit log
refer to them): they are disabled.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from core import admin_audit
from core.db import Database, utcnow
from core.models import ROLE_LABELS, Role, Unit, User
from core.provisioning import HotlineQueue, Phone, PhoneKind, seed_queues
from core.settings import PasswordsSettings, Settings

USERNAME = re.compile(r"^[a-z][a-z0-9_.-]{1,31}$")
AGENT_NUMBER = re.compile(r"^\d{1,8}$")
MAX_PENALTY = 99
# The fields a user has for people (form, import template, audit before/after), in this order.
FIELDS = ("username", "display_name", "role", "unit", "agent_number", "skills", "default_extension")
FIELD_LABELS = {"username": "用户名", "display_name": "姓名", "role": "角色", "unit": "所属单位",
                "agent_number": "工号", "skills": "技能队列", "default_extension": "默认分机"}
ROLE_BY_LABEL = {label: role for role, label in ROLE_LABELS.items()}
SKILL_ITEM = re.compile(r"^\s*([0-9a-z-]+)\s*(?:[:：]\s*(\S+))?\s*$")


class AccountError(ValueError):
    """A change refused; ``problems`` are (field, Chinese reason) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("；".join(reason for _field, reason in problems))
        self.problems = problems


# --- passwords -------------------------------------------------------------------------------------

CLASSES = (string.ascii_lowercase, string.ascii_uppercase, string.digits)


def _classes(password: str) -> int:
    found = {next((i for i, chars in enumerate(CLASSES) if ch in chars), 3) for ch in password}
    return len(found)


def password_problems(rules: PasswordsSettings, password: str, username: str = "") -> list[str]:
    """Why ``password`` breaks the centre's rules ([passwords]), in Chinese; empty if it does not."""
    problems = []
    if len(password) < rules.min_length:
        problems.append(f"密码至少 {rules.min_length} 位")
    if _classes(password) < rules.min_classes:
        problems.append(f"密码须包含小写字母、大写字母、数字、其他字符中的至少 {rules.min_classes} 类")
    if rules.forbid_username and username and username.lower() in password.lower():
        problems.append("密码不能包含用户名")
    if any(ch.isspace() or not ch.isprintable() for ch in password):
        problems.append("密码不能包含空格或控制字符")
    return problems


def generate_password(rules: PasswordsSettings) -> str:
    """A random password that meets the rules (all four classes; no look-alike characters)."""
    alphabet = [c.translate(str.maketrans("", "", "lIO0o1")) for c in (*CLASSES, "#%+=@!?")]
    while True:
        password = "".join(secrets.choice("".join(alphabet)) for _ in range(rules.generated_length))
        if _classes(password) == 4:
            return password


# --- fields ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Catalog:
    """What a user's fields may name: queues, extensions, units by code (and the taken names/numbers)."""

    queues: tuple[str, ...]
    extensions: tuple[str, ...]
    units: Mapping[str, int]  # code -> id
    usernames: Mapping[str, int] = field(default_factory=dict)  # lower-cased username -> user id
    agent_numbers: Mapping[str, int] = field(default_factory=dict)  # agent number -> user id


async def _telephony(session: AsyncSession, settings: Settings) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The enabled queues and agent phones (core.provisioning); before those tables are seeded (the first
    ``./hotline up`` seeds users first), the shipped ones of hotline.toml."""
    queues = (await session.scalars(select(HotlineQueue.name).where(HotlineQueue.enabled.is_(True))
                                    .order_by(HotlineQueue.name))).all()
    phones = (await session.scalars(select(Phone.extension).where(Phone.enabled.is_(True),
                                                                  Phone.kind == PhoneKind.AGENT)
                                    .order_by(Phone.extension))).all()
    return (tuple(queues or (queue.name for queue in seed_queues(settings))),
            tuple(phones or settings.sip.agent_extensions))


async def form_choices(db: Database, settings: Settings) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(queues, agent phones) an agent's skills and default extension may name."""
    async with db.session() as session:
        return await _telephony(session, settings)


async def catalog(session: AsyncSession, settings: Settings) -> Catalog:
    units = dict((await session.execute(select(Unit.code, Unit.id))).all())
    rows = (await session.execute(select(User.id, User.username, User.agent_number))).all()
    queues, extensions = await _telephony(session, settings)
    return Catalog(queues=queues, extensions=extensions, units=units,
                   usernames={name.lower(): uid for uid, name, _n in rows},
                   agent_numbers={number: uid for uid, _u, number in rows if number})


@dataclass
class UserFields:
    """Checked fields of a user (see :func:`check_fields`)."""

    username: str
    display_name: str
    role: Role
    unit_id: int | None
    agent_number: str | None
    skills: dict[str, int]
    default_extension: str | None


def parse_skills(raw: str, queues: Iterable[str]) -> tuple[dict[str, int], list[str]]:
    """``12301-general:0; 12301-complaint:2`` (penalty optional, 0; ``,`` ``；`` ``;`` or new lines between)
    -> ({queue: penalty}, problems)."""
    known, skills, problems = set(queues), {}, []
    for item in filter(str.strip, re.split(r"[,，;；\n]", raw or "")):
        match = SKILL_ITEM.match(item)
        if not match:
            problems.append(f"“{item.strip()}”应写作 队列:优先级，如 12301-general:0")
            continue
        queue, penalty = match.group(1), match.group(2) or "0"
        if queue not in known:
            problems.append(f"没有队列 {queue}")
        elif not penalty.isdigit() or int(penalty) > MAX_PENALTY:
            problems.append(f"队列 {queue} 的优先级应为 0 到 {MAX_PENALTY} 的整数")
        elif queue in skills:
            problems.append(f"队列 {queue} 重复")
        else:
            skills[queue] = int(penalty)
    return skills, problems


def format_skills(skills: Mapping[str, int]) -> str:
    return "; ".join(f"{queue}:{skills[queue]}" for queue in sorted(skills, key=lambda q: (skills[q], q)))


def check_fields(values: Mapping[str, Any], known: Catalog, user_id: int | None = None) -> tuple[
        UserFields | None, list[tuple[str, str]]]:
    """The fields of a user from text (a form, an import row), or every problem with them.

    ``role`` may be the role's key or its Chinese label; ``unit`` a unit code; ``skills`` either text
    (:func:`parse_skills`) or a dict; ``user_id`` is the user being edited (their own name is not taken).
    """
    problems: list[tuple[str, str]] = []

    def text(name: str, limit: int) -> str:
        value = values.get(name)
        value = "" if value is None else str(value).strip()
        if len(value) > limit:
            problems.append((name, f"{FIELD_LABELS[name]}不能超过 {limit} 个字符"))
        elif any(not ch.isprintable() for ch in value):
            problems.append((name, f"{FIELD_LABELS[name]}含有不可见的控制字符"))
        return value

    username = text("username", 32).lower()
    if not username:
        problems.append(("username", "请填写用户名"))
    elif not USERNAME.match(username):
        problems.append(("username", "用户名应为 2–32 位小写字母、数字或 _ . -，以字母开头"))
    elif known.usernames.get(username, user_id) != user_id:
        problems.append(("username", f"用户名 {username} 已存在"))
    display_name = text("display_name", 64)
    if not display_name:
        problems.append(("display_name", "请填写姓名"))
    raw_role = text("role", 32)
    role = ROLE_BY_LABEL.get(raw_role) or next((r for r in Role if r.value == raw_role), None)
    if role is None:
        problems.append(("role", f"角色应为 {'、'.join(ROLE_LABELS.values())} 之一" if raw_role else "请选择角色"))
    unit_code = text("unit", 32)
    unit_id = known.units.get(unit_code) if unit_code else None
    if unit_code and unit_id is None:
        problems.append(("unit", f"没有编码为 {unit_code} 的单位"))
    elif role in (Role.UNIT_HANDLER, Role.UNIT_HEAD) and unit_id is None:
        problems.append(("unit", "处理单位的用户须选择所属单位"))
    agent_number = text("agent_number", 8) or None
    raw_skills = values.get("skills") or ""
    if isinstance(raw_skills, Mapping):
        skills, skill_problems = parse_skills(format_skills(raw_skills), known.queues)
    else:
        skills, skill_problems = parse_skills(str(raw_skills), known.queues)
    problems += [("skills", reason) for reason in skill_problems]
    extension = text("default_extension", 16) or None
    if extension and extension not in known.extensions:
        problems.append(("default_extension", f"没有分机 {extension}（可用：{'、'.join(known.extensions)}）"))
    if role == Role.AGENT:
        if agent_number is None:
            problems.append(("agent_number", "坐席须填写工号"))
        elif not AGENT_NUMBER.match(agent_number):
            problems.append(("agent_number", "工号应为 1–8 位数字"))
        elif known.agent_numbers.get(agent_number, user_id) != user_id:
            problems.append(("agent_number", f"工号 {agent_number} 已被其他用户使用"))
        if not skills and not skill_problems:
            problems.append(("skills", "坐席至少需要一个技能队列"))
    elif role is not None:
        agent_number, skills, extension = None, {}, None  # only agents answer queues
    if problems or role is None:
        return None, problems
    return UserFields(username, display_name, role, unit_id, agent_number, skills, extension), []


def audited(user: User) -> dict[str, Any]:
    """The user's fields as the audit log records them."""
    return {"username": user.username, "display_name": user.display_name, "role": user.role,
            "unit_id": user.unit_id, "agent_number": user.agent_number, "skills": dict(user.skills or {}),
            "default_extension": user.default_extension, "active": user.active,
            "must_change_password": user.must_change_password}


def _apply(user: User, fields: UserFields) -> None:
    user.username, user.display_name, user.role = fields.username, fields.display_name, fields.role
    user.unit_id, user.agent_number = fields.unit_id, fields.agent_number
    user.skills, user.default_extension = dict(fields.skills), fields.default_extension


# --- changes ---------------------------------------------------------------------------------------

def add_user(session: AsyncSession, actor: User | None, address: str | None, fields: UserFields,
             password_hash: str, must_change_password: bool = True) -> User:
    """Add a checked user to ``session`` with its audit row (the caller hashed the password: argon2 is
    slow and must not run while a transaction holds SQLite's write lock)."""
    user = User(password_hash=password_hash, active=True, must_change_password=must_change_password)
    _apply(user, fields)
    session.add(user)
    return user


async def ensure_user(session: AsyncSession, known: Catalog, actor: User | None, values: Mapping[str, Any],
                      password_hash: str) -> User:
    """Create the user, or bring an existing one's fields and password up to date, audited (the demo seeding of
    ``./hotline up`` and the benchmarks' agents: the same checks as the admin's form)."""
    existing = await session.scalar(select(User).where(User.username == str(values.get("username", "")).lower()))
    fields, problems = check_fields(values, known, existing.id if existing else None)
    if fields is None:
        raise AccountError(problems)
    if existing is None:
        user = add_user(session, actor, None, fields, password_hash, must_change_password=False)
        await session.flush()
        admin_audit.record_change(session, actor, None, "user", user.username, "create", None, audited(user))
        return user
    before = audited(existing)
    _apply(existing, fields)
    existing.password_hash, existing.active = password_hash, True
    if before != audited(existing):
        admin_audit.record_change(session, actor, None, "user", existing.username, "update", before, audited(existing))
    return existing


async def create_user(db: Database, settings: Settings, actor: User | None, address: str | None,
                      values: Mapping[str, Any]) -> tuple[User, str]:
    """A new user from ``values`` with a generated password (shown once, changed at first log-in)."""
    password = generate_password(settings.passwords)
    password_hash = User.hash_password(password)
    async with db.transaction() as session:
        fields, problems = check_fields(values, await catalog(session, settings))
        if fields is None:
            raise AccountError(problems)
        user = add_user(session, actor, address, fields, password_hash)
        await session.flush()
        admin_audit.record_change(session, actor, address, "user", user.username, "create", None,
                                  {**audited(user), "password": "generated"})
    return user, password


async def update_user(db: Database, settings: Settings, actor: User | None, address: str | None, user_id: int,
                      values: Mapping[str, Any]) -> tuple[User, dict[str, Any], dict[str, Any]]:
    """Change a user's fields; (the user, before, after). Refuses an admin taking away their own role."""
    async with db.transaction() as session:
        user = await _get(session, user_id)
        fields, problems = check_fields(values, await catalog(session, settings), user_id)
        if fields is None:
            raise AccountError(problems)
        if actor is not None and actor.id == user.id and fields.role != user.role:
            raise AccountError([("role", "不能修改自己的角色")])
        before = audited(user)
        _apply(user, fields)
        after = audited(user)
        if before != after:
            admin_audit.record_change(session, actor, address, "user", user.username, "update", before, after)
    return user, before, after


async def set_active(db: Database, actor: User | None, address: str | None, user_id: int, active: bool) -> User:
    """Enable or disable a user (never deleted: history refers to them)."""
    async with db.transaction() as session:
        user = await _get(session, user_id)
        if not active and actor is not None and actor.id == user.id:
            raise AccountError([("active", "不能停用自己的账号")])
        if user.active != active:
            before = audited(user)
            user.active = active
            admin_audit.record_change(session, actor, address, "user", user.username,
                                      "enable" if active else "disable", before, audited(user))
    return user


async def reset_password(db: Database, settings: Settings, actor: User | None, address: str | None,
                         user_id: int) -> tuple[User, str]:
    """A new generated password (shown once); the user must change it at the next log-in."""
    password = generate_password(settings.passwords)
    password_hash = User.hash_password(password)
    async with db.transaction() as session:
        user = await _get(session, user_id)
        before = audited(user)
        user.password_hash, user.must_change_password = password_hash, True
        admin_audit.record_change(session, actor, address, "user", user.username, "reset_password",
                                  {**before, "password": "old"}, {**audited(user), "password": "generated"})
    return user, password


async def change_own_password(db: Database, settings: Settings, user_id: int, current: str, new: str,
                              address: str | None) -> None:
    """A user sets their own password (the forced change at first log-in, or any time)."""
    async with db.session() as session:
        user = await _get(session, user_id)
    problems = [] if user.check_password(current) else ["当前密码不正确"]
    problems += password_problems(settings.passwords, new, user.username)
    if current and new == current:
        problems.append("新密码不能与当前密码相同")
    if problems:
        raise AccountError([("password", reason) for reason in problems])
    password_hash = User.hash_password(new)
    async with db.transaction() as session:
        user = await _get(session, user_id)
        user.password_hash, user.must_change_password = password_hash, False
        user.password_changed_at = utcnow()
        admin_audit.record_change(session, user, address, "user", user.username, "change_password",
                                  {"password": "old"}, {"password": "new"})


async def _get(session: AsyncSession, user_id: int) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise AccountError([("id", "用户不存在")])
    return user


# --- reading ---------------------------------------------------------------------------------------

async def get_user(db: Database, user_id: int) -> User | None:
    async with db.session() as session:
        return await session.scalar(select(User).options(selectinload(User.unit)).where(User.id == user_id))


async def search_users(db: Database, text: str = "", role: str = "", active: bool | None = None,
                       limit: int | None = 500) -> tuple[int, list[User]]:
    """(how many match, the first ``limit`` by username): ``text`` in username, name or agent number."""
    conditions: list[Any] = []
    if text:
        conditions.append(or_(*(column.contains(text, autoescape=True)
                                for column in (User.username, User.display_name, User.agent_number))))
    if role:
        conditions.append(User.role == Role(role))
    if active is not None:
        conditions.append(User.active.is_(active))
    async with db.session() as session:
        total = await session.scalar(select(func.count()).select_from(User).where(*conditions))
        statement = select(User).options(selectinload(User.unit)).where(*conditions).order_by(User.username)
        rows = (await session.scalars(statement.limit(limit) if limit else statement)).all()
    return int(total or 0), list(rows)


async def unit_choices(db: Database) -> list[tuple[str, str]]:
    """(code, name) of every unit, for the forms."""
    async with db.session() as session:
        return [(code, name) for code, name in (await session.execute(select(Unit.code, Unit.name)
                                                                       .order_by(Unit.path))).all()]


def user_values(user: User) -> dict[str, str]:
    """A user's fields as the form and the export write them."""
    return {"username": user.username, "display_name": user.display_name, "role": ROLE_LABELS[user.role],
            "unit": user.unit.code if user.unit else "", "agent_number": user.agent_number or "",
            "skills": format_skills(user.skills or {}), "default_extension": user.default_extension or ""}

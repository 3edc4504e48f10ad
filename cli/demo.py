"""Demo accounts, so a newcomer can log in as each kind of user right after ``./hotline up``."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from core.db import Database
from core.models import Role, Unit, UnitLevel, User
from core.settings import Settings

CALL_CENTRE_CODE = "callcentre"


@dataclass(frozen=True)
class DemoUser:
    username: str
    display_name: str
    role: Role
    skills: str = ""
    agent_number: str | None = None
    unit_code: str | None = CALL_CENTRE_CODE


DEMO_USERS = (
    DemoUser("agent1", "王丽", Role.AGENT, "12301-general,12301-consult,12301-complaint,12301-report", "101"),
    DemoUser("agent2", "李强", Role.AGENT, "12365-general,12365-consult,12365-complaint,12365-report", "102"),
    DemoUser("agent3", "张敏", Role.AGENT, "12301-general,12365-general,12301-complaint,12365-complaint", "103"),
    DemoUser("agent4", "刘洋", Role.AGENT, "12301-general,12301-consult,12365-general,12365-consult", "104"),
    DemoUser("agent5", "陈静", Role.AGENT, "12301-general,12365-general,12301-report,12365-report", "105"),
    DemoUser("lead1", "赵班长", Role.TEAM_LEAD),
)


async def _ensure_call_centre(session) -> Unit:
    unit = await session.scalar(select(Unit).where(Unit.code == CALL_CENTRE_CODE))
    if unit is None:
        unit = Unit(code=CALL_CENTRE_CODE, name="12301/12365 热线中心", level=UnitLevel.CALL_CENTRE, path="/")
        session.add(unit)
        await session.flush()
        unit.path = f"/{unit.id}/"
    return unit


async def _ensure_user(session, spec: DemoUser, password: str, unit: Unit | None) -> None:
    user = await session.scalar(select(User).where(User.username == spec.username))
    if user is None:
        user = User(username=spec.username, display_name=spec.display_name, role=spec.role)
        session.add(user)
    user.set_password(password)
    user.role = spec.role
    user.skills = spec.skills
    user.agent_number = spec.agent_number
    user.unit_id = unit.id if unit else None


async def seed_demo_data(settings: Settings) -> list[DemoUser]:
    """Idempotent: creates or refreshes the units and demo users (passwords from var/secrets.toml)."""
    db = Database(settings.database_url)
    users = list(DEMO_USERS)
    try:
        async with db.transaction() as session:
            await _ensure_call_centre(session)
            try:
                from tickets.dispatch import demo_unit_users, seed_units
            except ImportError:  # tickets not wired yet
                seed_units = demo_unit_users = None
            if seed_units is not None:
                await seed_units(session)
                for username, name, role, unit_code in demo_unit_users():
                    users.append(DemoUser(username, name, Role(role), unit_code=unit_code))
            units = {u.code: u for u in (await session.scalars(select(Unit))).all()}
            for spec in users:
                await _ensure_user(session, spec, settings.secrets["demo_password"], units.get(spec.unit_code or ""))
            admin = DemoUser("admin", "系统管理员", Role.ADMIN, unit_code=None)
            await _ensure_user(session, admin, settings.secrets["admin_password"], None)
    finally:
        await db.close()
    return users

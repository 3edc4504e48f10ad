"""Demo accounts, so a newcomer can log in as each kind of user right after ``./hotline up``."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from core import accounts, provisioning
from core.db import Database
from core.models import Role, Unit, UnitLevel, User
from core.settings import Settings

CALL_CENTRE_CODE = "callcentre"


@dataclass(frozen=True)
class DemoUser:
    username: str
    display_name: str
    role: Role
    skills: str = ""  # queues, each optionally with its penalty: "12301-general:0, 12301-complaint:2"
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


def demo_values(spec: DemoUser) -> dict[str, str | None]:
    """The fields of a demo user as the user service takes them (core.accounts.check_fields)."""
    return {"username": spec.username, "display_name": spec.display_name, "role": spec.role.value,
            "unit": spec.unit_code, "agent_number": spec.agent_number, "skills": spec.skills}


async def seed_demo_data(settings: Settings) -> list[DemoUser]:
    """Idempotent: creates or refreshes the units and demo users (passwords from var/secrets.toml)."""
    from tickets.dispatch import demo_unit_users, seed_units

    db = Database(settings.database_url)
    users = list(DEMO_USERS)
    users += [DemoUser(username, name, Role(role), unit_code=code) for username, name, role, code in demo_unit_users()]
    admin = DemoUser("admin", "系统管理员", Role.ADMIN, unit_code=None)
    # Hashed before the transaction: argon2 takes a second per password on a loaded machine, and holding
    # SQLite's write lock that long (an upgrade re-seeds a running platform) makes the CTI's writes wait.
    hashes = {spec.username: User.hash_password(settings.secrets["demo_password"]) for spec in users}
    hashes["admin"] = User.hash_password(settings.secrets["admin_password"])
    try:
        async with db.transaction() as session:
            await _ensure_call_centre(session)
            await seed_units(session)
            known = await accounts.catalog(session, settings)
            for spec in [*users, admin]:  # through the user service, as an admin's form would
                await accounts.ensure_user(session, known, None, demo_values(spec), hashes[spec.username])
        await provisioning.seed(db, settings)  # the phones of the demo agents and the eight queues
    finally:
        await db.close()
    return users

"""Reading the platform's users for pages that list agents (wallboard, reports)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import Role, User


async def active_agents(session: AsyncSession) -> list[User]:
    """Seat agents who may log in, by username."""
    return list((await session.scalars(select(User).where(User.role == Role.AGENT, User.active.is_(True))
                                       .order_by(User.username))).all())


async def agent_names(session: AsyncSession) -> dict[int, str]:
    """Every seat agent's display name by id (also those no longer active: old calls keep their names)."""
    return dict((await session.execute(select(User.id, User.display_name).where(User.role == Role.AGENT))).all())

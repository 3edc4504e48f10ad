"""Reading the platform's users: the one signing in or holding a session, and pages that list agents
(wallboard, reports)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from core.models import Role, User


async def active_agents(session: AsyncSession) -> list[User]:
    """Seat agents who may log in, by username."""
    return list((await session.scalars(select(User).where(User.role == Role.AGENT, User.active.is_(True))
                                       .order_by(User.username))).all())


async def agent_names(session: AsyncSession) -> dict[int, str]:
    """Every seat agent's display name by id (also those no longer active: old calls keep their names)."""
    return dict((await session.execute(select(User.id, User.display_name).where(User.role == Role.AGENT))).all())


async def active_user(session: AsyncSession, user_id: int | None = None, username: str | None = None) -> User | None:
    """An active user by id (or else by username), with ``.unit`` loaded (the tickets code reads it)."""
    query = select(User).options(selectinload(User.unit)).where(User.active.is_(True))
    query = query.where(User.id == user_id) if user_id is not None else query.where(User.username == username)
    return await session.scalar(query)

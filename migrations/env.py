"""Alembic environment: the URL comes from the platform settings (or -x url=...)."""

from __future__ import annotations

import asyncio

from alembic import context

import core.admin_audit  # noqa: F401  (registers tables)
import core.models  # noqa: F401
import core.provisioning  # noqa: F401
import cti.models  # noqa: F401
import recordings.models  # noqa: F401
from core.db import Base, make_engine
from core.settings import load_settings

try:  # tickets registers its tables once the package has them
    import tickets.models  # noqa: F401
    import tickets.notify_models  # noqa: F401
except ImportError:
    pass

target_metadata = Base.metadata


def _url() -> str:
    return context.get_x_argument(as_dictionary=True).get("url") or load_settings().database_url


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _online() -> None:
    engine = make_engine(_url())
    async with engine.connect() as conn:
        await conn.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_online())

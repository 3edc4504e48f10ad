"""Database access: one declarative Base for every package's models, async sessions.

SQLite (file under var/) by default, PostgreSQL by URL. The schema is owned by
alembic (migrations/), never by ``create_all`` at run time.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import DateTime, MetaData, Text, event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


T = TypeVar("T")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator):
    """Timestamps stored as UTC and always returned timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class JSONText(TypeDecorator):
    """A JSON value stored as text with its Chinese as typed (not \\u escapes), so a plain LIKE finds it on
    SQLite and PostgreSQL alike (the admin audit log's search)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)

    def process_result_value(self, value: str | None, dialect: Any) -> Any:
        return None if value is None else json.loads(value)


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_engine(url: str) -> AsyncEngine:
    connect_args = {}
    if url.startswith("postgresql+asyncpg"):
        # asyncpg prepares every statement, and from the sixth run PostgreSQL may plan a prepared statement
        # once for any values: the ticket lists (scope ranges, expiry dates) then took up to twice as long at
        # 1 000 000 tickets (bench section tickets). Planning with the values costs well under a millisecond.
        connect_args["server_settings"] = {"plan_cache_mode": "force_custom_plan"}
    engine = create_async_engine(url, pool_pre_ping=True, connect_args=connect_args)
    if url.startswith("sqlite"):
        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # several services share the file
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
    return engine


class Database:
    """Engine plus session factory for one service."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session whose work is committed together, or not at all."""
        async with self.sessions() as session, session.begin():
            yield session

    async def close(self) -> None:
        await self.engine.dispose()


Work = Callable[[AsyncSession], Awaitable[Any]]


class GroupWriter:
    """Writes of one process taken by one task and committed together (group commit).

    SQLite has one writer at a time: N event handlers each opening their own transaction take turns, each
    paying a pool check-out, BEGIN, the write lock (with busy waits in sleeps when another process holds
    it) and COMMIT; a burst of 100 hang-ups then waited seconds (bench ring-to-pop). Here a burst costs one
    transaction: every work function waiting when the writer is free runs, in submission order, in one
    transaction, and each caller gets its own result once that transaction is committed (never before).
    When any work of a batch fails, the batch is rolled back and each work is tried again alone, so one bad
    write fails alone and the others still land. A work must only touch the session (it may run twice).

    ``prefetch(session, keys)``, if given, runs first in each transaction with the keys the works were
    submitted with (e.g. load all their rows in one query instead of one query per work: on aiosqlite each
    statement is a round trip to the connection's thread, which on a busy machine costs milliseconds)."""

    def __init__(self, db: Database, limit: int = 200,
                 prefetch: Callable[[AsyncSession, list[str]], Awaitable[None]] | None = None) -> None:
        self.db = db
        self.limit = limit
        self.prefetch = prefetch
        self.batches = 0  # transactions committed or tried (a test and the bench read them)
        self._queue: deque[tuple[Work, asyncio.Future, str | None]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def write(self, work: Callable[[AsyncSession], Awaitable[T]], key: str | None = None) -> T:
        """Run ``work(session)`` in the next batch; its result once the batch is committed."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((work, future, key))
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="db-group-writer")
        return await future

    async def _run(self) -> None:
        batch: list[tuple[Work, asyncio.Future, str | None]] = []
        try:
            while True:
                if not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                batch = []
                while self._queue and len(batch) < self.limit:
                    item = self._queue.popleft()
                    if not item[1].done():  # a caller that gave up (cancelled) wrote nothing, as before
                        batch.append(item)
                if not batch:
                    continue
                outcomes = await self._together(batch)
                for (_work, future, _key), (ok, value) in zip(batch, outcomes, strict=True):
                    if not future.done():
                        future.set_result(value) if ok else future.set_exception(value)
                batch = []
        finally:  # cancelled with the service: nobody waits for ever
            for _work, future, _key in (*batch, *self._queue):
                if not future.done():
                    future.cancel()
            self._queue.clear()

    async def _together(self, batch: list[tuple[Work, asyncio.Future, str | None]]) -> list[tuple[bool, Any]]:
        self.batches += 1
        try:
            async with self.db.transaction() as session:
                await self._prefetch(session, [key for _work, _future, key in batch])
                return [(True, await work(session)) for work, _future, _key in batch]
        except Exception as exc:  # noqa: BLE001 - handed to the caller, or each work tried alone
            if len(batch) == 1:
                return [(False, exc)]
        return [await self._alone(work, key) for work, _future, key in batch]

    async def _prefetch(self, session: AsyncSession, keys: list[str | None]) -> None:
        wanted = [key for key in dict.fromkeys(keys) if key is not None]
        if self.prefetch is not None and wanted:
            await self.prefetch(session, wanted)

    async def _alone(self, work: Work, key: str | None) -> tuple[bool, Any]:
        self.batches += 1
        try:
            async with self.db.transaction() as session:
                await self._prefetch(session, [key])
                return True, await work(session)
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            return False, exc

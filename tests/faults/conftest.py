"""Fixtures of the fault suite: two agents on SIPp phones, the harness's own AMI watcher, the result table."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sipdrivers.phones import agents_on_phones
from tests.faults.harness import OUTCOMES, TABLE_FILES, FaultRunner, Watcher, table


@pytest.fixture(scope="session")
def fault_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.getbasetemp() / "fault-table.md"
    TABLE_FILES.append(path)
    return path


@pytest_asyncio.fixture(scope="module")
async def fault_runner(stack, ami, db, redis, tmp_path_factory, fault_table) -> AsyncIterator[FaultRunner]:
    """agent1 (8001) and agent3 (8003), both on 12301-complaint, ready for the whole module."""
    from core.redis import connect

    session_redis = redis  # the other modules' client: its pooled connections die with Redis restarts
    # The harness's own Redis client; FaultRunner also drops its pooled connections after each fault.
    redis = connect(stack.settings, "tools")
    watcher = Watcher(stack.settings)
    await watcher.start()
    try:
        async with agents_on_phones(stack.settings, stack.runtime, ami, redis, db,
                                    {"agent1": "8001", "agent3": "8003"}) as agents:
            runner = FaultRunner(stack, ami, db, redis, agents, watcher, tmp_path_factory.mktemp("faults"))
            yield runner
            await runner.restore()
    finally:
        await watcher.close()
        await redis.aclose()
        await session_redis.connection_pool.disconnect()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not OUTCOMES:
        return
    terminalreporter.section("fault injection: fault x damage")
    terminalreporter.write(table())
    if TABLE_FILES:
        terminalreporter.write_line(f"table written to {TABLE_FILES[0]}")

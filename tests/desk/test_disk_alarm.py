"""The wallboard warns the team lead when the disk with recordings or the database runs low ([disk])."""

from __future__ import annotations


async def test_the_wallboard_shows_a_disk_alarm_only_while_free_space_is_below_the_limit(desk):
    await desk.login("lead1")
    limits = desk.settings["disk"]
    saved = dict(limits)
    try:
        limits.update(min_free_mb=0, min_free_percent=0)
        assert (await (await desk.client.get("/api/wallboard")).json())["disk_alarms"] == []
        limits["min_free_mb"] = 1 << 40  # more than any disk has free
        alarms = (await (await desk.client.get("/api/wallboard")).json())["disk_alarms"]
        assert alarms and "磁盘空间不足" in alarms[0] and "recordings" in alarms[0]
    finally:
        limits.update(saved)
    assert 'id="disk-alarm"' in await desk.page("/wallboard")

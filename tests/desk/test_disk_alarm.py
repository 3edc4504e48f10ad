"""The wallboard warns the team lead when the disk with recordings or the database runs low ([disk])."""

from __future__ import annotations

from dataclasses import replace


async def test_the_wallboard_shows_a_disk_alarm_only_while_free_space_is_below_the_limit(desk, monkeypatch):
    await desk.login("lead1")
    limits = desk.settings.disk
    monkeypatch.setattr(desk.settings, "disk", replace(limits, min_free_mb=0, min_free_percent=0))
    assert (await (await desk.client.get("/api/wallboard")).json())["disk_alarms"] == []
    # more than any disk has free
    monkeypatch.setattr(desk.settings, "disk", replace(limits, min_free_mb=1 << 40, min_free_percent=0))
    alarms = (await (await desk.client.get("/api/wallboard")).json())["disk_alarms"]
    assert alarms and "磁盘空间不足" in alarms[0] and "recordings" in alarms[0]
    monkeypatch.setattr(desk.settings, "disk", limits)
    assert 'id="disk-alarm"' in await desk.page("/wallboard")

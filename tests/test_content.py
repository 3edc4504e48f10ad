"""Edited content (core.content): an admin's change of a policy file is validated against everything that
reads it, published atomically into the instance's folder (never the shipped config/), kept in a history,
and picked up by each process's next refresh; a broken change is refused with line and reason and
changes nothing."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import cli.policies  # noqa: F401 - every owner registers its editable files
from core import content, hours
from core.policy import PolicyError, PolicyErrors
from core.settings import CONFIG_DIR, ConfigError, load_settings
from ivr.menu import load_all_menus
from tickets import risk
from tickets.deadlines import WorkCalendar, active_policy

MENU = "menus/12301.yaml"


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Path]:
    content.use(tmp_path)
    try:
        yield tmp_path / content.FOLDER
    finally:
        content.use(None)


def _messages(exc: ConfigError) -> list[str]:
    return [str(e) for e in exc.errors] if isinstance(exc, PolicyErrors) else [str(exc)]


def test_menu_edit_is_published_over_the_shipped_file_with_history(instance: Path) -> None:
    shipped = (CONFIG_DIR / MENU).read_text(encoding="utf-8")
    edited = shipped.replace("咨询请按1，投诉请按2", "您好，咨询请按1，投诉请按2")
    assert edited != shipped

    revision = content.save(MENU, edited, "admin", "127.0.0.1")

    assert (instance / MENU).read_text(encoding="utf-8") == edited
    assert (CONFIG_DIR / MENU).read_text(encoding="utf-8") == shipped  # the repository's file is never written
    assert content.text_of(MENU) == edited and content.is_edited(MENU)
    assert load_all_menus()["12301"].main.prompt.text.startswith("您好，咨询请按1")
    assert content.version() == revision.version == 1
    [row] = content.history(MENU)
    assert (row.user, row.address, row.text, row.version) == ("admin", "127.0.0.1", edited, 1)

    content.revert(MENU, "admin")
    assert not content.is_edited(MENU) and content.text_of(MENU) == shipped
    assert [r.text for r in content.history(MENU)] == [edited, None] and content.version() == 2


def test_broken_yaml_is_refused_with_line_and_reason_and_nothing_changes(instance: Path) -> None:
    shipped = (CONFIG_DIR / MENU).read_text(encoding="utf-8")
    lines = shipped.splitlines()
    at = next(i for i, line in enumerate(lines) if '"3": {target: "queue:report"' in line)
    lines[at] = lines[at].replace("queue:report", "queue:nowhere")
    with pytest.raises(ConfigError) as refused:
        content.save(MENU, "\n".join(lines) + "\n", "admin")
    [message] = _messages(refused.value)
    assert message.startswith(f"config/{MENU} 第 {at + 1} 行：") and "未知的队列 'nowhere'" in message

    with pytest.raises(PolicyError) as syntax:
        content.save(MENU, shipped.replace("hotline: \"12301\"", "hotline: [\"12301\""), "admin")
    assert "YAML 格式错误" in str(syntax.value) and syntax.value.line

    assert not (instance / MENU).exists() and content.version() == 0 and content.history(MENU) == []
    assert load_all_menus()["12301"].main.choices["3"].target == "queue:report"


def test_knowledge_edit_that_breaks_a_menu_is_refused_naming_the_menu(instance: Path) -> None:
    text = (CONFIG_DIR / "knowledge.yaml").read_text(encoding="utf-8")
    without = text.replace("  tour-refund:", "  tour-refund-old:")
    with pytest.raises(ConfigError) as refused:
        content.save("knowledge.yaml", without, "admin")
    assert any(m.startswith(f"config/{MENU} 第 ") and "没有答案 'tour-refund'" in m for m in _messages(refused.value))
    assert content.version() == 0


def test_names_outside_the_editable_files_are_refused(instance: Path) -> None:
    for name in ("../hotline.toml", "hotline.toml", "/etc/passwd", "menus/../rules.yaml", ".version", "menus/9.yaml"):
        with pytest.raises(ConfigError):
            content.save(name, "x: 1\n", "admin")
    assert content.version() == 0


def test_refresh_drops_cached_rules_once_per_change(instance: Path) -> None:
    before = risk.active_rules()
    text = content.text_of("risk-rules.yaml")
    content.save("risk-rules.yaml", text.replace("repeat_window_days: 365", "repeat_window_days: 30"), "admin")
    assert risk.active_rules() is before  # cached until this process refreshes
    assert content.refresh() is True
    assert risk.active_rules().repeat_window_days == 30
    assert content.refresh() is False


def test_holiday_and_make_up_day_overrides_count_for_hours_and_deadlines(instance: Path) -> None:
    monday, saturday = dt.date(2026, 12, 14), dt.date(2026, 12, 19)
    assert hours.is_working_day(monday) and not hours.is_working_day(saturday)
    calendar = WorkCalendar()
    assert calendar.add_working_days(dt.date(2026, 12, 11), 1) == monday  # Friday + 1 working day
    assert active_policy().calendar.working_days_between(dt.date(2026, 12, 18), saturday) == 0  # counted before

    content.save("calendar.yaml", 'open: "9:00"\nclose: "18:00"\ndays:\n'
                 '  "2026-12-14": holiday\n  2026-12-19: workday\n', "admin")
    content.refresh()

    assert not hours.is_working_day(monday) and hours.is_working_day(saturday)
    assert calendar.add_working_days(dt.date(2026, 12, 11), 1) == dt.date(2026, 12, 15)
    assert active_policy().calendar.working_days_between(dt.date(2026, 12, 18), saturday) == 1
    assert (hours.calendar_edits().open, hours.calendar_edits().close) == (dt.time(9), dt.time(18))
    # What the IVR asks before its menu (after-hours routing): the centre's hours and days, not [hours].
    settings = load_settings(var_dir=instance.parent, env={"HOTLINE_HOURS_MODE": "calendar"})
    zone = ZoneInfo(settings.timezone)
    tuesday = dt.date(2026, 12, 15)
    assert hours.is_open(settings, dt.datetime.combine(tuesday, dt.time(17, 45), tzinfo=zone))
    assert not hours.is_open(settings, dt.datetime.combine(tuesday, dt.time(8, 45), tzinfo=zone))
    assert not hours.is_open(settings, dt.datetime.combine(monday, dt.time(10), tzinfo=zone))  # the holiday
    assert hours.is_open(settings, dt.datetime.combine(saturday, dt.time(10), tzinfo=zone))  # the make-up day


@pytest.mark.parametrize(("text", "line", "reason"), [
    ("days:\n  2026-13-01: holiday\n", 2, "无效"),
    ("days:\n  \"2026-12-14\": off\n", 2, "holiday（不上班）或 workday（上班）"),
    ('open: "18:00"\nclose: "9:00"\n', 2, "必须晚于 open"),
    ('open: "9:00"\n', 1, "同时填写"),
    ("weekends: []\n", 1, "未知的键"),
])
def test_calendar_mistakes_are_refused_with_line_and_reason(instance: Path, text: str, line: int,
                                                            reason: str) -> None:
    with pytest.raises(PolicyError) as refused:
        content.save("calendar.yaml", text, "admin")
    assert refused.value.line == line and reason in refused.value.reason
    assert str(refused.value).startswith(f"config/calendar.yaml 第 {line} 行：")
    assert content.version() == 0


async def test_publish_writes_the_file_and_its_audit_row_and_a_refusal_neither(instance: Path, db_url: str) -> None:
    from core.admin_audit import AuditQuery, search
    from core.db import Database

    db = Database(db_url)
    try:
        marker = f"phrases-{uuid.uuid4().hex[:8]}"
        shipped = content.text_of("phrases.yaml")
        edited = shipped.replace("这里是{region}{hotline}热线", f"这里是{{region}}{{hotline}}热线（{marker}）", 1)
        assert edited != shipped
        with pytest.raises(ConfigError):
            await content.publish(db, None, "127.0.0.9", "phrases.yaml",
                                  edited.replace(f"这里是{{region}}{{hotline}}热线（{marker}）",
                                                 f"这里是{{regoin}}{{hotline}}热线（{marker}）"))
        assert (await search(db, AuditQuery(text=marker)))[0] == 0 and content.version() == 0

        await content.publish(db, None, "127.0.0.9", "phrases.yaml", edited)
        total, [row] = await search(db, AuditQuery(entity="phrase", text=marker))
        assert total == 1 and (row.actor, row.address, row.entity_id, row.action) == ("系统", "127.0.0.9",
                                                                                        "phrases.yaml", "update")
        assert row.before["text"] == shipped and row.after["text"] == edited and row.after["version"] == 1
        assert content.text_of("phrases.yaml") == edited
    finally:
        await db.close()


async def test_units_are_created_and_disabled_through_the_file_and_never_deleted(instance: Path, db_url: str) -> None:
    from sqlalchemy import delete, select

    from core.db import Database
    from core.models import Unit
    from tickets.dispatch import seed_units, suggest_unit

    db = Database(db_url)
    new_code = f"12301-GD-GZ-{uuid.uuid4().hex[:4].upper()}"
    try:
        async with db.transaction() as session:
            await seed_units(session)
        shipped = content.text_of("units.yaml")
        sz = '{code: "12301-GD-SZ", name: 深圳市文化广电旅游体育局, city: 深圳市}'
        yx = "              - {code: \"12301-GD-GZ-YX\", name: 越秀区文化广电旅游体育局, county: 越秀区}\n"
        assert sz in shipped and yx in shipped
        edited = shipped.replace(sz, sz.replace("}", ", disabled: true}")).replace(
            yx, yx + f"              - {{code: \"{new_code}\", name: 海珠区文化广电旅游体育局, county: 海珠区}}\n")
        await content.publish(db, None, None, "units.yaml", edited)
        async with db.session() as session:
            units = {u.code: u for u in (await session.scalars(select(Unit))).all()}
            gz, new = units["12301-GD-GZ"], units[new_code]
            assert new.parent_id == gz.id and new.path == f"{gz.path}{new.id}/" and new.county == "海珠区"
            assert units["12301-GD-SZ"].disabled and not new.disabled
            assert (await suggest_unit(session, "12301", "广东省", "深圳市", None)).code == "12301-GD"  # not to SZ
            assert (await suggest_unit(session, "12301", "广东省", "广州市", "海珠区")).code == new_code

        with pytest.raises(ConfigError) as refused:  # left out of the file: refused, the way to disable named
            await content.publish(db, None, None, "units.yaml", shipped)
        assert "单位不能删除" in str(refused.value) and new_code in str(refused.value) and "disabled: true" in str(
            refused.value)
        assert content.text_of("units.yaml") == edited
        async with db.session() as session:
            assert await session.scalar(select(Unit).where(Unit.code == new_code)) is not None
    finally:
        async with db.transaction() as session:  # the session's database is shared: leave it as it was
            await session.execute(delete(Unit).where(Unit.code == new_code))
            for unit in (await session.scalars(select(Unit).where(Unit.disabled.is_(True)))).all():
                unit.disabled = False
        await db.close()

"""Edited content (core.content): an admin's change of a policy file is validated against everything that
reads it, published atomically into the instance's folder (never the shipped config/), kept in a history,
and picked up by each process's next refresh; a broken change is refused with line and reason and
changes nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

import cli.policies  # noqa: F401 - every owner registers its editable files
from core import content, hours
from core.policy import PolicyError, PolicyErrors
from core.settings import CONFIG_DIR, ConfigError
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

    content.save("calendar.yaml", 'open: "9:00"\nclose: "18:00"\ndays:\n'
                 '  "2026-12-14": holiday\n  2026-12-19: workday\n', "admin")
    content.refresh()

    assert not hours.is_working_day(monday) and hours.is_working_day(saturday)
    assert calendar.add_working_days(dt.date(2026, 12, 11), 1) == dt.date(2026, 12, 15)
    assert active_policy().calendar.working_days_between(dt.date(2026, 12, 18), saturday) == 1
    assert (hours.calendar_edits().open, hours.calendar_edits().close) == (dt.time(9), dt.time(18))


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

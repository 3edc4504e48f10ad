"""Every policy file is read by one loader (core.policy) and refused with file, line and reason;
`./hotline up` checks them all before it builds or starts anything (issue 14 item 5)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from agent_desk.knowledge import load_phrases
from core import content, policy
from core.hours import load_calendar
from core.policy import PolicyError
from core.settings import CONFIG_DIR, REPO_ROOT
from ivr.menu import load_all_menus
from ivr.setup import load_prompt_texts
from quality.evaluation import load_scheme
from tickets.deadlines import load_policy
from tickets.dispatch import load_categories, load_unit_config
from tickets.notices import load_notice_config
from tickets.risk import load_rules as load_risk_rules
from tickets.rules import load_rules as load_rule_profiles


def _menus(config: Path) -> Any:
    return load_all_menus(config / "menus", config / "knowledge.yaml")


# (file under config/, its loader given the copied config folder, text replaced, replacement,
#  text on the line the error must name, words of the reason)
CASES: list[tuple[str, Callable[[Path], Any], str, str, str, str]] = [
    ("units.yaml", lambda c: load_unit_config(c / "units.yaml"),
     'code: "12301-GD-SZ"', 'code: "12301-GD-GZ"', 'code: "12301-GD-GZ",', "单位代码 '12301-GD-GZ' 重复"),
    ("calendar.yaml", lambda c: load_calendar(c / "calendar.yaml"),
     "days: {}", 'days: {"2026-12-14": off}', '"2026-12-14": off', "应为 holiday（不上班）或 workday（上班）"),
    ("categories.yaml", lambda c: load_categories(c / "categories.yaml"),
     "在线旅游企业: {dispatch_level: province}", "在线旅游企业: {dispatch_level: planet}", "在线旅游企业",
     "无效的级别 'planet'"),
    ("risk-rules.yaml", lambda c: load_risk_rules(c / "risk-rules.yaml"),
     "  - id: death\n    level: I\n", "  - id: death\n    level: V\n", "    level: V", "level 'V' 不在"),
    ("risk-rules.yaml", lambda c: load_risk_rules(c / "risk-rules.yaml"),
     "default_level: IV\n", "default_level: IV\ndefault_level: III\n", "default_level: III",
     "键 'default_level' 重复"),
    ("rules.yaml", lambda c: load_rule_profiles(c / "rules.yaml"),
     "    review_levels: 1\n", "    review_levels: 9\n", "review_levels: 9", "1 到 4 之间的整数"),
    ("notices.yaml", lambda c: load_notice_config(c / "notices.yaml"),
     "工单号{number}。可拨打", "工单号{ticket_no}。可拨打", "{ticket_no}", "未知字段 ['ticket_no']"),
    ("deadlines/default.yaml", lambda c: load_policy("default", c / "deadlines"),
     "acceptance: {days: 5, unit: working, from: registered}    # 004 §6.3.2.2",
     "acceptance: {days: -5, unit: working, from: registered}", "days: -5", "应为正整数，实际为 -5"),
    ("deadlines/12315-2019.yaml", lambda c: load_policy("12315-2019", c / "deadlines"),
     "extends: default", "extends: defualt", "extends: defualt", "时限配置 'defualt' 不存在"),
    ("deadlines/default.yaml", lambda c: load_policy("default", c / "deadlines"),
     "timezone: Asia/Shanghai", "timezone: Asia: Shanghai", "timezone: Asia: Shanghai", "YAML 格式错误"),
    ("menus/12301.yaml", _menus,
     '"2": {target: "queue:complaint", category: online-platform',
     '"2": {target: "queue:complain", category: online-platform', '"queue:complain"', "未知的队列 'complain'"),
    ("menus/12365.yaml", _menus,  # the satisfaction survey (一次一评) of one hotline
     '    "3": dissatisfied', '    "3": satisfied', '"3": satisfied', "评价 'satisfied' 对应了多个按键"),
    ("knowledge.yaml", _menus,
     "    question: 旅游投诉的受理条件\n", "    question: 旅游投诉的受理条件\n    source: 百度\n", "source: 百度",
     "未知的字段 'source'"),
    ("prompts.yaml", lambda c: load_prompt_texts(c / "prompts.yaml"),
     "工作日{open}至{close}", "工作日{opening}至{close}", "{opening}", "未知的占位符 ['opening']"),
    ("phrases.yaml", lambda c: load_phrases(c / "phrases.yaml"),
     "这里是{region}{hotline}热线", "这里是{regoin}{hotline}热线", "{regoin}", "未知的占位符 ['regoin']"),
    ("evaluation.yaml", lambda c: load_scheme(c / "evaluation.yaml"),
     "  - indicator: reply_rate", "  - indicator: reply_ratio", "indicator: reply_ratio", "未知的指标 'reply_ratio'"),
    ("evaluation.yaml", lambda c: load_scheme(c / "evaluation.yaml"),
     "    weight: 15\n    target: 1.0", "    weight: -15\n    target: 1.0", "weight: -15", "weight 应为正数"),
    ("evaluation.yaml", lambda c: load_scheme(c / "evaluation.yaml"),
     "    target: 0.95\n    better: higher\n    method: 接线率", "    target: 95\n    better: higher\n    method: 接线率",
     "target: 95", "比例指标的 target 应写小数"),
]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A copy of the shipped policy files."""
    copy = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, copy)
    return copy


def _break(config: Path, name: str, old: str, new: str) -> tuple[Path, str]:
    path = config / name
    text = path.read_text(encoding="utf-8")
    assert text.count(old) >= 1, f"{name} no longer contains {old!r}: update the case"
    broken = text.replace(old, new, 1)
    path.write_text(broken, encoding="utf-8")
    return path, broken


def _line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def test_the_shipped_policy_files_pass(config):
    for _name, load, *_ in CASES:
        load(config)  # the same loaders on an unchanged copy: the cases below break only what they change
    assert policy.validate_all(None)


@pytest.mark.parametrize(("name", "load", "old", "new", "at", "reason"), CASES,
                         ids=[f"{case[0]}:{case[5]}" for case in CASES])
def test_a_broken_policy_file_is_refused_with_file_line_and_reason(config, name, load, old, new, at, reason):
    path, broken = _break(config, name, old, new)
    with pytest.raises(PolicyError) as caught:
        load(config)
    error = caught.value
    assert (error.path, error.line) == (path, _line_of(broken, at)), str(error)
    assert reason in error.reason, str(error)
    assert str(error).startswith(f"{path} 第 {error.line} 行：")


def _up(config: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`./hotline up` (what the wrapper execs) on the copied configuration and a throwaway var folder."""
    env = {**os.environ, "HOTLINE_CONFIG_DIR": str(config), "HOTLINE_VAR": str(tmp_path / "var")}
    env.pop("HOTLINE_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "cli", "up"], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_up_refuses_every_broken_policy_file_before_starting_anything(config, tmp_path):
    # Knowledge and units are what other files are checked against (menus, notices, rules): broken in a
    # second run, so that the first one shows that every other file is checked on its own.
    roots = {"knowledge.yaml", "units.yaml"}
    files = sorted(p.relative_to(config).as_posix() for p in config.rglob("*.yaml"))
    assert {case[0] for case in CASES} == set(files), "every policy file needs a case above"
    for broken in ([f for f in files if f not in roots], sorted(roots)):
        for name in broken:
            path = config / name
            path.write_text("timezone: Asia: Shanghai\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
        proc = _up(config, tmp_path)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "Checking configuration and policies" in proc.stdout and "Asterisk runtime" not in proc.stdout, proc.stdout
        for name in broken:
            assert f"{config / name} 第 1 行：YAML 格式错误" in proc.stderr, (name, proc.stderr)
        assert not (tmp_path / "var" / "run" / "supervisord.conf").exists()
        assert not (tmp_path / "var" / "hotline.db").exists()
        for name in broken:  # repaired for the next run
            shutil.copy(CONFIG_DIR / name, config / name)


def test_a_service_refuses_to_start_on_a_broken_policy_file(config, tmp_path, monkeypatch, capsys):
    from core import service

    path, _ = _break(config, "rules.yaml", "    review_levels: 1\n", "    review_levels: 0\n")
    monkeypatch.setenv("HOTLINE_VAR", str(tmp_path / "var"))
    monkeypatch.setattr(policy, "_REGISTRY", dict(policy._REGISTRY))
    policy.register("规则档案（坏的副本）", lambda _settings: load_rule_profiles(path))
    started = []

    async def main(settings, stop) -> None:
        started.append(settings)

    # run_service configures this process's logging onto capsys's stream (closed after the test) and points it
    # at the test's content folder: both are put back, or later tests in this process log into a closed file.
    logging_config = structlog.get_config()
    monkeypatch.setattr(content, "_root", content._root)
    try:
        with pytest.raises(SystemExit) as caught:
            service.run_service("test-service", main)
    finally:
        structlog.configure(**logging_config)
    assert caught.value.code == 2 and not started
    assert f"{path} 第 {_line_of(path.read_text(encoding='utf-8'), 'review_levels: 0')} 行：" in capsys.readouterr().err

"""Settings are read through typed sections (issue 14 item 4), every one checked when the settings load:
a wrong type, an unknown or a missing key is refused with the file, section, key and reason."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from core.settings import DEFAULT_CONFIG, ConfigError, load_settings


def _load(tmp_path: Path, old: str = "", new: str = "", **env: str):
    config = tmp_path / "hotline.toml"
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    assert old in text
    config.write_text(text.replace(old, new, 1), encoding="utf-8")
    return load_settings(var_dir=tmp_path / "var", config_file=config, env=env)


def test_sections_are_typed_and_frozen(tmp_path):
    settings = _load(tmp_path, HOTLINE_WEB_PORT="18080", HOTLINE_NOTIFY_TICK_SECONDS="2")
    assert settings.web.port == 18080 and settings.web_url == "http://127.0.0.1:18080"
    assert settings.notify.tick_seconds == 2.0 and isinstance(settings.notify.tick_seconds, float)
    assert settings.sip.agent_extensions == ("8001", "8002", "8003", "8004", "8005")
    assert settings.web.trust_forwarded_for is False
    with pytest.raises(FrozenInstanceError):
        settings.web.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(("old", "new", "reason"), [
    ("port = 8080", 'port = "8080"', "[web] port = '8080'：应为整数"),
    ("trust_forwarded_for = false", "trust_forwarded_for = 1", "[web] trust_forwarded_for = 1：应为true 或 false"),
    ('lead_extensions = ["8101"]', "lead_extensions = 8101", "[sip] lead_extensions = 8101：应为文字的列表"),
    ('session_timers = "always"', 'session_timers = "sometimes"', "只能是 always / yes / no"),
    ("max_body_kb = 256", "max_body_kb = 256\nmax_body_mb = 1", "[web] 中有未知的配置项 max_body_mb"),
    ("spool_grace_seconds = 600\n", "", "[recordings] 缺少配置项 spool_grace_seconds"),
    ("[backup]", "[backups]\nkeep = 3\n[backup]", "未知的配置节 [backups]"),
    ("service_level_target = 0.8", "service_level_target = 80", "[kpi] service_level_target = 80.0：超出范围"),
    ('close = "17:30"', 'close = "5:30 pm"', "[hours] close = '5:30 pm'：应为 HH:MM 格式"),
    ("min_length = 10", "min_length = 4", "[passwords] min_length = 4：应在 8 到 128 之间"),
    ("min_classes = 3", "min_classes = 5", "[passwords] min_classes = 5：应在 1 到 4 之间"),

])
def test_a_wrong_setting_is_refused_at_load_with_section_key_and_reason(tmp_path, old, new, reason):
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, old, new)
    assert str(caught.value).startswith(f"{tmp_path / 'hotline.toml'}: "), caught.value
    assert reason in str(caught.value)


def test_an_environment_override_of_the_wrong_type_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="HOTLINE_WEB_PORT='eighty'"):
        _load(tmp_path, HOTLINE_WEB_PORT="eighty")


def test_a_dict_lookup_says_what_replaced_it(tmp_path):
    with pytest.raises(TypeError, match=r"settings\.web\.<key>"):
        _load(tmp_path)["web"]

"""Generated prompts: real espeak-ng audio in Asterisk's format; the main menu is short enough to hear."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest

from core.asterisk_runtime import AsteriskRuntime
from core.settings import load_settings
from ivr.menu import load_all_menus
from ivr.setup import generate_prompts, load_prompt_texts

MENUS = load_all_menus()


def seconds(path: Path) -> float:
    with wave.open(str(path)) as wav:
        return wav.getnframes() / wav.getframerate()


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime")
    settings = load_settings(var_dir=root / "var", env={})
    runtime = AsteriskRuntime(root, "test")
    return generate_prompts(settings, runtime), runtime, settings


def test_every_prompt_is_8khz_mono_16bit_speech(generated):
    made, runtime, _settings = generated
    texts, sounds = load_prompt_texts()
    expected = set(texts) | {p.name for m in MENUS.values() for p in m.prompts()} | {f"zh/{n}" for n in sounds}
    assert expected <= set(made)
    for path in made.values():
        with wave.open(str(path)) as wav:
            assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
            assert wav.getnframes() > 800  # at least 0.1 s of sound
    assert made["recording-notice"].parent == runtime.host_path(runtime.inside("sounds"))
    assert made["zh/digits/7"] == runtime.host_path("/usr/share/asterisk/sounds/zh/digits/7.wav")
    assert made["zh/queue-thereare"].exists()


@pytest.mark.parametrize("hotline", sorted(MENUS))
def test_greeting_and_main_menu_take_under_20_seconds(generated, hotline):
    made = generated[0]
    heard = seconds(made[f"{hotline}-greeting"]) + seconds(made[f"{hotline}-menu-main"])
    assert heard < 20, f"{hotline}: greeting + main menu last {heard:.1f} s"


def test_regeneration_reuses_the_cache(generated):
    made, runtime, settings = generated
    before = {name: path.stat().st_mtime_ns for name, path in made.items()}
    cache = runtime.host_path("/var/cache/hotline-prompts")
    cached = sorted(cache.iterdir())
    again = generate_prompts(settings, runtime)
    assert sorted(cache.iterdir()) == cached  # nothing synthesized twice
    assert {name: path.stat().st_mtime_ns for name, path in again.items()} == before  # unchanged files untouched


def test_after_hours_prompt_names_the_configured_hours(generated):
    from ivr.setup import platform_prompts

    after = {p.name: p.text for p in platform_prompts(generated[2])}["after-hours"]
    assert "8点30分至17点30分" in after


def test_004_appendix_b1_first_greeting_names_the_region(generated, tmp_path):
    """The first thing a 12365 caller hears (dialplans/hotline.conf plays recording-notice-<hotline> at
    answer) is B.1's first 接入语 with [centre] region; no prompt keeps a literal placeholder."""
    from ivr.prompts import _content_key
    from ivr.setup import platform_prompts

    made, runtime, settings = generated
    texts = {p.name: p.text for p in platform_prompts(settings)}
    assert texts["recording-notice-12365"].startswith("您好，这里是浙江省质量技术监督、出入境检验检疫12365举报处置指挥中心")
    assert not [name for name, text in texts.items() if "{" in text or "}" in text]
    # What Asterisk plays is the synthesis of exactly that text.
    cached = runtime.host_path("/var/cache/hotline-prompts") / f"{_content_key(texts['recording-notice-12365'])}.wav"
    assert made["recording-notice-12365"].read_bytes() == cached.read_bytes()
    other = load_settings(var_dir=tmp_path, env={"HOTLINE_CENTRE_REGION": "江苏省"})
    assert "这里是江苏省质量技术监督" in {p.name: p.text for p in platform_prompts(other)}["recording-notice-12365"]

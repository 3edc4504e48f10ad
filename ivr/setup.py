"""Set-up of the IVR's sounds: every prompt of config/prompts.yaml and the menu files, plus the
Mandarin (``zh``) number and queue-announcement sounds Asterisk's app_queue and say.c play.

Called by ``./hotline up`` and the test harness; prompts are cached by content
(ivr/prompts.py), so running it again only copies files.
"""

from __future__ import annotations

import string
from pathlib import Path

from core import policy
from core.asterisk_runtime import AsteriskRuntime
from core.hours import staffed_hours
from core.policy import fail
from core.settings import CONFIG_DIR, Settings
from ivr.menu import RECORDED_PROMPTS, HotlineMenu, Prompt, load_all_menus
from ivr.prompts import AsteriskPrompts, PromptStore, convert_to_asterisk_wav, share_with_asterisk

PROMPTS_FILE = CONFIG_DIR / "prompts.yaml"
ZH_SOUNDS = "/usr/share/asterisk/sounds/zh"
SHARED_CACHE = "/var/cache/hotline-prompts"  # inside the runtime: shared by every instance


# What a platform prompt may name: the staffed hours (core.hours.staffed_hours) and the centre's region
# ([centre] region, spoken in 004 Appendix B.1's 接入语).
PROMPT_FIELDS = ("open", "close", "region")


def load_prompt_texts(path: Path = PROMPTS_FILE) -> tuple[dict[str, str], dict[str, str]]:
    """(platform prompts, Asterisk zh sounds) from config/prompts.yaml; errors name the line."""
    data = policy.read(path)
    unknown = sorted(set(data) - {"prompts", "asterisk_sounds"})
    if unknown:
        raise fail(data, f"未知的键 {unknown[0]!r}（可用：prompts、asterisk_sounds）", unknown[0])
    found: list[dict[str, str]] = []
    for section in ("prompts", "asterisk_sounds"):
        values = data.get(section) or {}
        if not isinstance(values, dict):
            raise fail(data, f"{section} 应为“名称: 文字”的映射", section)
        for name, text in values.items():
            if not isinstance(text, str) or not text.strip():
                raise fail(values, f"{section}.{name} 的文字为空", name)
            try:
                fields = {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}
            except ValueError as exc:
                raise fail(values, f"{section}.{name}：文字中的花括号有误（{exc}）", name) from None
            allowed = PROMPT_FIELDS if section == "prompts" else ()
            if fields - set(allowed):
                raise fail(values, f"{section}.{name}：未知的占位符 {sorted(fields - set(allowed))}"
                           f"（可用：{'、'.join('{' + f + '}' for f in allowed) or '无'}）", name)
        found.append(dict(values))
    return found[0], found[1]


policy.register("平台提示音 config/prompts.yaml", lambda _settings: load_prompt_texts())


def platform_prompts(settings: Settings, path: Path = PROMPTS_FILE) -> list[Prompt]:
    """The shared prompts, with the staffed hours and the centre's region (004 Appendix B.1) filled in."""
    texts, _sounds = load_prompt_texts(path)
    values = {**staffed_hours(settings), "region": settings.centre.region}
    return [Prompt(name, text.format(**values)) for name, text in texts.items()]


def prompt_store(runtime: AsteriskRuntime) -> PromptStore:
    """The instance's prompt folder (``${PROMPTS}`` in the dialplan), with the runtime-wide cache."""
    sounds = runtime.inside("sounds")
    return PromptStore(runtime.host_path(sounds), sounds, cache_dir=runtime.host_path(SHARED_CACHE))


def asterisk_prompts(runtime: AsteriskRuntime) -> AsteriskPrompts:
    return AsteriskPrompts(prompt_store(runtime))


def _make(store: PromptStore, prompt: Prompt) -> str:
    if prompt.audio:
        convert_to_asterisk_wav(RECORDED_PROMPTS / prompt.audio, store.directory / f"{prompt.name}.wav")
        share_with_asterisk(store.directory / f"{prompt.name}.wav")
        return f"{store.asterisk_directory}/{prompt.name}"
    return store.ensure(prompt.name, prompt.text)


def make_prompts(store: PromptStore, prompts: list[Prompt]) -> dict[str, Path]:
    """Make each prompt's file in ``store`` (cached by content: only new texts are synthesized)."""
    made: dict[str, Path] = {}
    for prompt in prompts:
        _make(store, prompt)
        made[prompt.name] = store.directory / f"{prompt.name}.wav"
    return made


def menu_prompts(menus: dict[str, HotlineMenu]) -> list[Prompt]:
    return [p for menu in menus.values() for p in menu.prompts()]


def generate_prompts(settings: Settings, runtime: AsteriskRuntime,
                     menus: dict[str, HotlineMenu] | None = None) -> dict[str, Path]:
    """(Re)generate every prompt; returns prompt name -> host path of its WAV file."""
    menus = menus if menus is not None else load_all_menus()
    store = prompt_store(runtime)
    store.directory.mkdir(parents=True, exist_ok=True)
    made = make_prompts(store, platform_prompts(settings) + menu_prompts(menus))

    _texts, sounds = load_prompt_texts()
    zh = PromptStore(runtime.host_path(ZH_SOUNDS), ZH_SOUNDS, cache_dir=store.cache_dir, private=False)
    for name, text in sounds.items():
        zh.ensure(name, text)
        made[f"zh/{name}"] = zh.directory / f"{name}.wav"
    for folder in {path.parent for path in made.values()} - {store.directory}:
        folder.chmod(0o755)  # Asterisk's own zh sounds: the same for every instance, nothing private
    # The instance's prompts (read-backs included): group asterisk (render_asterisk_config), new files
    # inherit it (set-group-id folder); older read-backs are given to that group too.
    store.directory.chmod(0o2750)
    for path in store.directory.iterdir():
        if path.is_file():
            share_with_asterisk(path)
    return made

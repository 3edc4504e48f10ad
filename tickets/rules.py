"""Rule profiles per hotline (``config/rules.yaml``): what the workflow allows a ticket of each hotline.

12301 (tourism) and 12365 (quality supervision) share the states and actions of the 000 manual, but
not their outcomes: a 12365 product-quality complaint has no travel-agency quality deposit to pay
from (启用质保金赔偿) and is not rejected under the clauses of the tourism-complaint regulation
(001 §3.3). A ticket follows the profile of its hotline; the file is read and checked once, when the
desk starts (:func:`check_rules`), so a broken profile stops the start-up with the key at fault instead
of surfacing on some later action.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from core import policy
from core.policy import fail
from core.settings import CONFIG_DIR, ConfigError
from tickets import dispatch

RULES_FILE = CONFIG_DIR / "rules.yaml"
# The closing outcomes a profile may allow (the actions of tickets.workflow that end in 待审核结案,
# 不予受理 apart: every hotline may reject, with its own clauses).
CLOSING_ACTIONS = ("自行和解", "调解成功", "调解失败", "启用质保金赔偿", "办结")
MAX_REVIEW_LEVELS = 4  # national > province > city > county: no more heads above a county unit


@dataclass(frozen=True)
class Handover:
    days: int
    unit: str  # working | calendar


@dataclass(frozen=True)
class RuleProfile:
    name: str
    label: str
    closing_actions: frozenset[str]
    rejection_clauses: tuple[str, ...]
    review_levels: int
    handover: Handover
    authorities: tuple[str, ...]


@dataclass(frozen=True)
class Rules:
    profiles: dict[str, RuleProfile]
    hotlines: dict[str, str]  # hotline -> profile name

    def for_hotline(self, hotline: str) -> RuleProfile:
        try:
            return self.profiles[self.hotlines[hotline]]
        except KeyError:
            raise ConfigError(f"规则配置没有热线 {hotline} 的规则") from None


def _strings(parent: Any, key: str, where: str) -> tuple[str, ...]:
    raw = parent[key]
    if not isinstance(raw, list) or not raw or not all(isinstance(v, str) and v.strip() for v in raw):
        raise fail(parent, f"{where}.{key}: 应为非空的文字列表", key)
    values = tuple(v.strip() for v in raw)
    for i, value in enumerate(values):
        if value in values[:i]:
            raise fail(raw, f"{where}.{key}: 有重复项 {value!r}", i)
    return values


def _positive(parent: Any, key: str, where: str, maximum: int | None = None) -> int:
    raw = parent[key]
    if not isinstance(raw, int) or isinstance(raw, bool) or raw <= 0 or (maximum and raw > maximum):
        limit = f"1 到 {maximum} 之间的整数" if maximum else "正整数"
        raise fail(parent, f"{where}.{key}: 应为{limit}，实际为 {raw!r}", key)
    return raw


def _profile(name: str, parent: Any, where: str) -> RuleProfile:
    raw = parent[name]
    if not isinstance(raw, dict):
        raise fail(parent, f"{where}: 应为映射", name)
    known = {"label", "closing_actions", "rejection_clauses", "review_levels", "handover", "authorities"}
    missing = sorted(known - raw.keys())
    if missing:
        raise fail(parent, f"{where}: 缺少 {'、'.join(missing)}", name)
    unknown = sorted(raw.keys() - known)
    if unknown:
        raise fail(raw, f"{where}: 未知的键 {unknown}", unknown[0])
    closing = _strings(raw, "closing_actions", where)
    strange = [a for a in closing if a not in CLOSING_ACTIONS]
    if strange:
        raise fail(raw, f"{where}.closing_actions: {'、'.join(strange)} 不是结案操作"
                   f"（应为 {'、'.join(CLOSING_ACTIONS)} 中的若干项）", "closing_actions")
    handover = raw["handover"]
    if not isinstance(handover, dict) or set(handover) != {"days", "unit"}:
        raise fail(raw, f"{where}.handover: 应为 {{days: 天数, unit: working|calendar}}", "handover")
    if handover["unit"] not in ("working", "calendar"):
        raise fail(handover, f"{where}.handover.unit: 应为 working 或 calendar，实际为 {handover['unit']!r}", "unit")
    return RuleProfile(
        name=name, label=str(raw["label"]), closing_actions=frozenset(closing),
        rejection_clauses=_strings(raw, "rejection_clauses", where),
        review_levels=_positive(raw, "review_levels", where, MAX_REVIEW_LEVELS),
        handover=Handover(_positive(handover, "days", f"{where}.handover"), handover["unit"]),
        authorities=_strings(raw, "authorities", where),
    )


def load_rules(path: Path | None = None, hotlines: tuple[str, ...] | None = None) -> Rules:
    """Read and check the profiles; ``hotlines`` (the configured ones) must each have a profile."""
    path = path or RULES_FILE
    raw = policy.read(path)
    if not isinstance(raw.get("profiles"), dict) or not raw["profiles"]:
        raise fail(raw if "profiles" in raw else path, "应有 profiles（至少一个规则档案）", "profiles")
    profiles = {str(k): _profile(k, raw["profiles"], f"profiles.{k}") for k in raw["profiles"]}
    mapping = raw.get("hotlines")
    if not isinstance(mapping, dict) or not mapping:
        raise fail(raw if "hotlines" in raw else path, "应有 hotlines（热线 → 规则档案）", "hotlines")
    by_hotline = {str(k): str(v) for k, v in mapping.items()}
    for hotline, profile_name in by_hotline.items():
        if profile_name not in profiles:
            raise fail(mapping, f"hotlines.{hotline}: 未定义的规则档案 {profile_name!r}", hotline)
    missing = [h for h in hotlines or () if h not in by_hotline]
    if missing:
        raise fail(raw, f"热线 {'、'.join(missing)} 没有规则档案（units.yaml 中有这些热线）", "hotlines")
    return Rules(profiles, by_hotline)


_chosen_file: Path | None = None  # [tickets] rules_file, chosen by check_rules at start-up


@cache
def active_rules() -> Rules:
    """The profiles in use, checked against the hotlines of ``config/units.yaml``."""
    return load_rules(_chosen_file, hotlines=tuple(dispatch.unit_config().national))


def check_rules(rules_file: str | Path | None = None) -> None:
    """Start-up: use ``rules_file`` (``[tickets] rules_file``, relative to config/; empty: config/rules.yaml)
    and check it; raises ConfigError naming the file, line and key at fault."""
    global _chosen_file
    _chosen_file = CONFIG_DIR / rules_file if rules_file else None
    active_rules.cache_clear()
    active_rules()


def _rules_file(settings: Any) -> str | None:
    return settings.tickets.rules_file if settings is not None else None


policy.register("规则档案 config/rules.yaml（结案方式、不予受理条款、审核级数、移交时限与部门）",
                lambda settings: check_rules(_rules_file(settings)))


def profile(hotline: str) -> RuleProfile:
    return active_rules().for_hotline(hotline)

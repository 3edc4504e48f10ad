"""Handling units and dispatch: the configured unit tree, unit boundaries, the suggested unit.

Units form a tree with a materialised path (``/1/4/9/``): unit B is *below*
unit A when B's path starts with A's path. 转办 goes strictly down that tree,
转办退回 back up to the unit that transferred.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core import content, policy
from core.models import Role, Unit, UnitLevel
from core.policy import fail
from core.settings import CONFIG_DIR, ConfigError

UNITS_FILE = CONFIG_DIR / "units.yaml"
CATEGORIES_FILE = CONFIG_DIR / "categories.yaml"
LEVEL_ORDER = (UnitLevel.NATIONAL, UnitLevel.PROVINCE, UnitLevel.CITY, UnitLevel.COUNTY)
CHILD_LEVEL = dict(zip(LEVEL_ORDER, LEVEL_ORDER[1:], strict=False))


@dataclass(frozen=True)
class UnitSpec:
    code: str
    name: str
    level: UnitLevel
    parent_code: str | None
    province: str | None
    city: str | None
    county: str | None
    disabled: bool = False  # 停用: kept for the tickets that name it, no longer dispatched to


@dataclass(frozen=True)
class UnitConfig:
    call_centre: UnitSpec
    national: dict[str, str]  # hotline -> national unit code
    units: tuple[UnitSpec, ...]  # parents before children
    demo_users: tuple[tuple[str, str, str, str], ...]


def _walk(container: Any, key: Any, level: UnitLevel, parent: UnitSpec | None, out: list[UnitSpec],
          places: dict[str, policy.Mark | None], where: str) -> None:
    """The unit ``container[key]`` and its children, parents first; ``places``: code -> where it is written."""
    node = container[key]
    if not isinstance(node, dict):
        raise fail(container, f"{where}: 应为单位（code、name …）", key)
    for field in ("code", "name"):
        if not node.get(field):
            raise fail(container, f"{where}: 缺少 {field}", key)
    code = str(node["code"])
    if code in places:
        raise fail(node, f"{where}: 单位代码 {code!r} 重复", "code")
    places[code] = policy.mark_of(node, "code")
    disabled = node.get("disabled", False)
    if not isinstance(disabled, bool):
        raise fail(node, f"{where}: disabled 应为 true（停用）或 false，实际为 {disabled!r}", "disabled")
    unknown = sorted(set(node) - {"code", "name", "province", "city", "county", "children", "disabled"})
    if unknown:
        raise fail(node, f"{where}: 未知的键 {unknown[0]!r}（可用：code、name、province、city、county、children、"
                   "disabled）", unknown[0])
    inherited = {k: getattr(parent, k) if parent else None for k in ("province", "city", "county")}
    spec = UnitSpec(
        code=code, name=str(node["name"]), level=level,
        parent_code=parent.code if parent else None,
        province=node.get("province", inherited["province"]),
        city=node.get("city", inherited["city"]),
        county=node.get("county", inherited["county"]),
        disabled=disabled or bool(parent and parent.disabled),  # a disabled unit's units are out of use too
    )
    out.append(spec)
    children = node.get("children") or []
    if not isinstance(children, list):
        raise fail(node, f"{where}.children: 应为列表", "children")
    if children and level not in CHILD_LEVEL:
        raise fail(node, f"{where}: 区县级单位不能再有下级", "children")
    for i in range(len(children)):
        _walk(children, i, CHILD_LEVEL[level], spec, out, places, f"{where}.children[{i}]")


def load_unit_config(path: Path | None = None) -> UnitConfig:
    """config/units.yaml (or the instance's edited copy, core.content), checked."""
    path = path or content.config_path("units.yaml")
    raw = policy.read(path)
    cc = raw.get("call_centre") or {}
    if not isinstance(cc, dict) or not cc.get("code") or not cc.get("name"):
        raise fail(raw if "call_centre" in raw else path, "call_centre 需要 code 和 name", "call_centre")
    centre = UnitSpec(str(cc["code"]), str(cc["name"]), UnitLevel.CALL_CENTRE, None, None, None, None)
    units: list[UnitSpec] = [centre]
    national: dict[str, str] = {}
    hotlines = raw.get("hotlines") or {}
    if not isinstance(hotlines, dict):
        raise fail(raw, "hotlines 应为“热线号码: 全国单位”的映射", "hotlines")
    places: dict[str, policy.Mark | None] = {centre.code: policy.mark_of(cc, "code")}
    for hotline in hotlines:
        _walk(hotlines, hotline, UnitLevel.NATIONAL, None, units, places, f"hotlines.{hotline}")
        national[str(hotline)] = str(hotlines[hotline]["code"])
    users = []
    rows = raw.get("demo_users") or []
    if not isinstance(rows, list):
        raise fail(raw, "demo_users 应为列表", "demo_users")
    for i, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) == 4):
            raise fail(rows, f"demo_users[{i}] 应为 [用户名, 姓名, 角色, 单位代码]", i)
        if row[2] not in {r.value for r in Role}:
            raise fail(rows, f"demo_users[{i}] 角色 {row[2]!r} 无效", i)
        if row[3] not in places:
            raise fail(rows, f"demo_users[{i}] 单位代码 {row[3]!r} 未定义", i)
        users.append(tuple(str(x) for x in row))
    return UnitConfig(centre, national, tuple(units), tuple(users))  # type: ignore[arg-type]


@cache
def unit_config() -> UnitConfig:
    return load_unit_config()


policy.register("单位 config/units.yaml", lambda _settings: unit_config())


async def apply_units(session: AsyncSession) -> None:
    """An edited units.yaml into the units table (core.content.publish, in the change's transaction).

    Units are never deleted: tickets, users and the audit name them. A unit left out of the file is
    refused with the way to do it instead (停用, ``disabled: true``)."""
    config = load_unit_config()
    codes = {spec.code for spec in config.units}
    gone = (await session.scalars(select(Unit).where(Unit.code.not_in(codes)).order_by(Unit.code))).all()
    if gone:
        names = "、".join(f"{u.name}（{u.code}）" for u in gone)
        raise ConfigError(f"config/units.yaml：单位不能删除（工单和账号仍引用它们）：{names}；"
                          "不再使用的单位请写 disabled: true（停用）")
    await seed_units(session, config)


content.register("units.yaml", "处理单位", "unit", load_unit_config, unit_config.cache_clear, apply=apply_units)


async def seed_units(session: AsyncSession, config: UnitConfig | None = None) -> dict[str, Unit]:
    """Create or update the configured units (idempotent, keyed by code); returns them by code."""
    config = config or unit_config()
    existing = {u.code: u for u in (await session.scalars(
        select(Unit).where(Unit.code.in_([s.code for s in config.units]))
    )).all()}
    for spec in config.units:
        unit = existing.get(spec.code)
        if unit is None:
            unit = Unit(code=spec.code, path="/")
            session.add(unit)
            existing[spec.code] = unit
        parent = existing[spec.parent_code] if spec.parent_code else None
        unit.name, unit.level = spec.name, spec.level
        unit.province, unit.city, unit.county = spec.province, spec.city, spec.county
        unit.disabled = spec.disabled
        unit.parent_id = parent.id if parent else None
        await session.flush()
        unit.path = f"{parent.path if parent else '/'}{unit.id}/"
    await session.flush()
    return existing


def demo_unit_users() -> list[tuple[str, str, str, str]]:
    """(username, display name, role, unit code) of the handling units' demo accounts."""
    return list(unit_config().demo_users)


# --- boundaries --------------------------------------------------------------

def is_within(unit_path: str, scope_path: str) -> bool:
    """True when ``unit_path`` is ``scope_path`` or below it."""
    return unit_path.startswith(scope_path)


def is_strictly_below(unit: Unit, other: Unit) -> bool:
    return unit.path != other.path and is_within(unit.path, other.path)


def subtree_condition(column: Any, scope_path: str) -> ColumnElement[bool]:
    """SQL for "path is scope_path or below", as an index range (path characters are '/' and digits)."""
    return and_(column >= scope_path, column < scope_path[:-1] + "0")


# --- categories and suggestion ---------------------------------------------------

@dataclass(frozen=True)
class Categories:
    complaint_objects: dict[str, dict[str, UnitLevel]]  # hotline -> object -> lowest dispatch level
    event_categories: dict[str, tuple[str, ...]]


def load_categories(path: Path | None = None) -> Categories:
    path = path or CATEGORIES_FILE
    raw = policy.read(path)
    objects: dict[str, dict[str, UnitLevel]] = {}
    events: dict[str, tuple[str, ...]] = {}
    hotlines = raw.get("hotlines") or {}
    if not isinstance(hotlines, dict) or not hotlines:
        raise fail(raw if "hotlines" in raw else path, "缺少 hotlines（热线号码: 投诉对象与事件类别）", "hotlines")
    for hotline, spec in hotlines.items():
        where = f"hotlines.{hotline}"
        if not isinstance(spec, dict):
            raise fail(hotlines, f"{where}: 应为映射（complaint_objects、event_categories）", hotline)
        unknown = sorted(set(spec) - {"complaint_objects", "event_categories"})
        if unknown:
            raise fail(spec, f"{where}: 未知的键 {unknown[0]!r}", unknown[0])
        objs = {}
        raw_objects = spec.get("complaint_objects") or {}
        if not isinstance(raw_objects, dict) or not raw_objects:
            raise fail(spec, f"{where}: 缺少 complaint_objects", "complaint_objects")
        for name, opts in raw_objects.items():
            level = (opts or {}).get("dispatch_level", "county") if isinstance(opts, dict | None) else opts
            try:
                objs[str(name)] = UnitLevel(level)
            except ValueError:
                raise fail(raw_objects, f"{where}.complaint_objects.{name}.dispatch_level: 无效的级别 {level!r}"
                           f"（可用：{'、'.join(lv.value for lv in LEVEL_ORDER)}）", name) from None
        objects[str(hotline)] = objs
        raw_events = spec.get("event_categories") or ()
        if not isinstance(raw_events, list) or not all(isinstance(e, str) and e.strip() for e in raw_events):
            raise fail(spec, f"{where}.event_categories: 应为非空文字的列表", "event_categories")
        events[str(hotline)] = tuple(raw_events)
    return Categories(objects, events)


@cache
def categories() -> Categories:
    return load_categories()


policy.register("投诉对象与事件类别 config/categories.yaml", lambda _settings: categories())


async def suggest_unit(
    session: AsyncSession, hotline: str, province: str | None, city: str | None,
    county: str | None, complaint_object: str | None = None,
) -> Unit | None:
    """The deepest unit of the hotline's tree matching the case location, no lower than the
    complaint object's dispatch level; the national unit when nothing matches."""
    code = unit_config().national.get(hotline)
    if code is None:
        return None
    national = await session.scalar(select(Unit).where(Unit.code == code))
    if national is None:
        return None
    lowest = categories().complaint_objects.get(hotline, {}).get(complaint_object or "", UnitLevel.COUNTY)
    depth = LEVEL_ORDER.index(lowest)
    candidates = (await session.scalars(
        select(Unit).where(subtree_condition(Unit.path, national.path))
    )).all()
    wanted = (province, city, county)
    best = national
    for unit in candidates:
        if unit.disabled:  # 停用 (and so are the units below it: seed_units)
            continue
        level = LEVEL_ORDER.index(unit.level) if unit.level in LEVEL_ORDER else -1
        if level <= 0 or level > depth:
            continue
        location = (unit.province, unit.city, unit.county)
        if all(wanted[i] and location[i] == wanted[i] for i in range(level)):
            if LEVEL_ORDER.index(best.level) < level:
                best = unit
    return best


async def call_centre(session: AsyncSession) -> Unit:
    unit = await session.scalar(select(Unit).where(Unit.code == unit_config().call_centre.code))
    if unit is None:
        raise ConfigError("呼叫中心单位尚未创建，请先初始化单位数据")
    return unit

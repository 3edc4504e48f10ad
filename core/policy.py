"""Policy files: one YAML reader that keeps line numbers, one error that names file, line and reason,
and one registry of every policy file with its check.

Every policy the platform reads (menus, knowledge, prompts, deadlines, risk rules, units, categories,
rule profiles, notice templates, phrases) is read by :func:`read` (or, for the node-level menu
validator, :func:`compose`) and registered with :func:`register` by the module that owns it.
:func:`validate_all` runs every registered check: ``./hotline up`` calls it (with every owner
imported, ``cli.policies``) before anything starts, and each service calls it at its start
(``core.service.run_service``) for the policies it imports, so a broken file is refused with
"config/deadlines/default.yaml 第 12 行：原因" instead of being found by a user at the first request.

:func:`read` returns plain dicts and lists (:class:`Map`, :class:`Seq`) that also remember where each
key and item was written (:class:`Mark`); a validator raises ``fail(container, reason, key)``.
Duplicate keys, which ``yaml.safe_load`` silently drops, are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from core.settings import REPO_ROOT, ConfigError


def shown(path: Path) -> str:
    """The path as an administrator types it: relative to the repository when inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


class PolicyError(ConfigError):
    """A policy file is wrong; ``str()`` is ``<file> 第 <line> 行：<reason>``."""

    def __init__(self, path: Path, line: int | None, reason: str) -> None:
        self.path, self.line, self.reason = Path(path), line, reason
        super().__init__(f"{shown(path)} 第 {line} 行：{reason}" if line else f"{shown(path)}：{reason}")


class PolicyErrors(ConfigError):
    """Several policy files are wrong (``validate_all``): one line per problem."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("策略文件有误：\n" + "\n".join(f"  {error}" for error in errors))


@dataclass(frozen=True)
class Mark:
    """Where something was written: file and line (1-based)."""

    path: Path
    line: int | None


class Map(dict):
    """A YAML mapping: a dict that remembers its own place (``mark``) and each key's (``marks``)."""

    mark: Mark
    marks: dict[Any, Mark]


class Seq(list):
    """A YAML sequence: a list that remembers its own place and each item's."""

    mark: Mark
    marks: list[Mark]


def mark_of(where: Any, key: Any = None) -> Mark | None:
    """The place of ``where[key]`` (or of ``where`` itself) when ``where`` came from :func:`read`."""
    marks = getattr(where, "marks", None)
    if marks is not None and key is not None:
        if isinstance(marks, dict) and key in marks:
            return marks[key]
        if isinstance(marks, list) and isinstance(key, int) and 0 <= key < len(marks):
            return marks[key]
    return getattr(where, "mark", None)


def fail(where: Map | Seq | Mark | Path, reason: str, key: Any = None) -> PolicyError:
    """The error for ``where[key]`` (the key's line), or for ``where`` itself; a Path when no line is known."""
    mark = where if isinstance(where, Mark) else mark_of(where, key)
    if mark is None:
        if isinstance(where, Path):
            return PolicyError(where, None, reason)
        raise TypeError(f"no place known for {where!r}: pass a container from core.policy.read")
    return PolicyError(mark.path, mark.line, reason)


def compose(path: Path) -> Node:
    """The YAML node tree of ``path`` (with line numbers); missing, empty or malformed files are refused."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(path, None, "文件不存在") from None
    except UnicodeDecodeError:
        raise PolicyError(path, None, "文件应为 UTF-8 编码的文字") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise PolicyError(path, mark.line + 1 if mark else None, f"YAML 格式错误：{exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(path, None, f"YAML 格式错误：{exc}") from None
    if root is None:
        raise PolicyError(path, None, "文件为空")
    return root


class _Builder(yaml.constructor.SafeConstructor):
    """Builds plain data from a node tree, with a :class:`Mark` on every mapping, sequence, key and item."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def mark(self, node: Node) -> Mark:
        return Mark(self.path, node.start_mark.line + 1)

    def build(self, node: Node) -> Any:
        if isinstance(node, MappingNode):
            self.flatten_mapping(node)  # YAML merge keys (<<) as the safe loader does them
            out = Map()
            out.mark, out.marks = self.mark(node), {}
            for key_node, value_node in node.value:
                key = self.build(key_node)
                try:
                    hash(key)
                except TypeError:
                    raise PolicyError(self.path, key_node.start_mark.line + 1, "键应为文字或数字") from None
                if key in out:
                    first = out.marks[key].line
                    raise PolicyError(self.path, key_node.start_mark.line + 1, f"键 '{key}' 重复（第 {first} 行已定义）")
                out[key] = self.build(value_node)
                out.marks[key] = self.mark(key_node)
            return out
        if isinstance(node, SequenceNode):
            items = Seq(self.build(item) for item in node.value)
            items.mark, items.marks = self.mark(node), [self.mark(item) for item in node.value]
            return items
        try:
            return self.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            raise PolicyError(self.path, node.start_mark.line + 1, f"YAML 格式错误：{exc.problem}") from None
        except ValueError as exc:  # a timestamp-looking scalar that is no date (2026-13-01): the constructor raises
            raise PolicyError(self.path, node.start_mark.line + 1,
                              f"无效的值 '{node.value}'（{exc}；文字请加引号）") from None


def read(path: Path, top: type = dict) -> Any:
    """The data of a policy file, each mapping and sequence marked with its place (see :class:`Map`).

    ``top`` is the type the whole file must be (``dict`` or ``list``); refused with the reason otherwise."""
    path = Path(path)
    root = compose(path)
    data = _Builder(path).build(root)
    if not isinstance(data, top):
        raise PolicyError(path, root.start_mark.line + 1, "应为“名称: 值”的映射" if top is dict else "应为列表")
    return data


# --- the registry --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Policy:
    """One policy (a file or a set of files) and the check that loads and validates it."""

    name: str  # what it is and where, for people
    check: Callable[[Any], object]  # (settings or None) -> the loaded policy; raises ConfigError


_REGISTRY: dict[str, Policy] = {}


def register(name: str, check: Callable[[Any], object]) -> None:
    """Declare a policy (by the module that reads it); registering a name again replaces its check."""
    _REGISTRY[name] = Policy(name, check)


def registered() -> list[Policy]:
    return list(_REGISTRY.values())


def validate_all(settings: Any = None) -> list[str]:
    """Run every registered check; raises :class:`PolicyErrors` naming every broken file, line and reason.

    Returns the names of the policies checked."""
    errors: dict[str, ConfigError] = {}  # by message: a file others depend on is named once
    for policy in registered():
        try:
            policy.check(settings)
        except PolicyErrors as exc:
            errors.update((str(error), error) for error in exc.errors)
        except ConfigError as exc:
            errors[str(exc)] = exc
    if errors:
        raise PolicyErrors(list(errors.values()))
    return [policy.name for policy in registered()]

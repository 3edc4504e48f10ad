"""Service code imports our own packages at module level, where import-linter sees them (issue 14 item 3).

A function-level import hides a dependency from the contracts in pyproject.toml ([tool.importlinter]) and
was how the tickets <-> cti cycle stayed unnoticed. Pure test: reads the source, imports nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = {"core", "cli", "ivr", "cti", "agent_desk", "recordings", "tickets", "bench", "sipdrivers", "tests"}
# The command line (cli/) and the bench tools are entry points, not services, and are not checked here.
# No allow-list: the in-package cycles that forced the last lazy imports are gone (import-linter's
# acyclic_siblings contract keeps them out).
SERVICE_PACKAGES = ["core", "ivr", "cti", "agent_desk", "recordings", "tickets", "sipdrivers"]


def function_level_imports() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for package in SERVICE_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for func in ast.walk(tree):
                if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for node in ast.walk(func):
                    names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                             else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level
                             else [])
                    for name in names:
                        if name.split(".")[0] in OURS:
                            found.add((path.relative_to(ROOT).as_posix(), name))
    return found


def test_service_code_has_no_function_level_import_of_our_packages() -> None:
    found = function_level_imports()
    assert found == set(), "import these at module level (or break the cycle that forces the lazy import)"

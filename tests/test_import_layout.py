"""The layering rules import-linter cannot say by itself (issue 14 item 3; contracts in pyproject.toml).

Service code imports our own packages at module level: a function-level import hides a dependency from
the reader and is what a cycle forces (it was how the tickets <-> cti cycle stayed unnoticed). Every module
with routes is in the "no SQL, no AMI" handler contract and runs no query on a session itself.
Pure test: reads the source, imports nothing.
"""

from __future__ import annotations

import ast
import tomllib
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


def _handler_contract() -> dict:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return next(c for c in config["tool"]["importlinter"]["contracts"] if "sqlalchemy" in c.get("forbidden_modules", ()))


def _handler_modules() -> dict[str, ast.Module]:
    """The modules of the desk and the tickets API that register routes (add_routes, app.router.add_*,
    or a web.RouteTableDef)."""
    found = {}
    for path in sorted([*(ROOT / "agent_desk").glob("*.py"), *(ROOT / "tickets").glob("*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        routes = any(isinstance(n, ast.FunctionDef) and n.name == "add_routes" for n in tree.body) or any(
            isinstance(n, ast.Attribute) and (n.attr == "RouteTableDef" or n.attr.startswith("add_")
                                              and isinstance(n.value, ast.Attribute) and n.value.attr == "router")
            for n in ast.walk(tree))
        if routes:
            found[f"{path.parent.name}.{path.stem}"] = tree
    return found


def test_every_handler_module_is_in_the_no_sql_contract() -> None:
    # A new page or API module must join the import-linter contract that keeps sqlalchemy out of handlers.
    assert set(_handler_modules()) - set(_handler_contract()["source_modules"]) == set()


def test_handlers_run_no_query_on_a_session() -> None:
    # Without importing sqlalchemy a handler could still run db.get(Model, id) or db.execute(text): the
    # look-up belongs in a service function (tickets.queries, recordings.access, core.users …).
    calls = set()
    for module, tree in _handler_modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(
                    node.func.value, ast.Name) and node.func.value.id in {"db", "session"} and node.func.attr in {
                    "get", "execute", "scalar", "scalars", "stream", "stream_scalars", "add", "delete", "merge"}:
                calls.add((module, f"{node.func.value.id}.{node.func.attr}", node.lineno))
    assert calls == set()

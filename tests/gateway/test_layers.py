"""The protocol adapters are thin: no SQL in them, and the DIMSE modules import one another one way only.

SQL construction is an import from ``sqlalchemy`` other than its exception types, an import of a storage
function that builds SQL (one that takes a ``Connection``, or builds a condition), or opening a connection
or transaction. The adapters call application services (``gateway.query``...) instead.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SQL_BUILDERS = {"condition", "fuzzy_name", "scope_condition"}  # return SQL expressions
CONNECTION_CALLS = {"connect", "begin", "execute"}


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package.replace(".", "/")).glob("*.py"))


def _builds_sql(module: str, name: str) -> bool:
    if name in SQL_BUILDERS:
        return True
    try:
        target = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False
    if not inspect.isfunction(target):
        return False
    return any("Connection" in str(p.annotation) for p in inspect.signature(target).parameters.values())


def sql_construction(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] == "sqlalchemy"]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] == "sqlalchemy" and node.module != "sqlalchemy.exc":
                found.append(f"from {node.module} import ...")
            elif node.module.startswith("storage."):
                found += [f"{node.module}.{a.name}" for a in node.names if _builds_sql(node.module, a.name)]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CONNECTION_CALLS:
            if isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "engine":
                found.append(f"line {node.lineno}: .engine.{node.func.attr}()")
    return [f"{path.relative_to(ROOT)}: {what}" for what in found]


ADAPTERS = [
    pytest.param("gateway.dimse", id="dimse"),
    pytest.param("gateway.http", id="http"),
]


@pytest.mark.parametrize("package", ADAPTERS)
def test_no_adapter_module_builds_sql(package: str) -> None:
    found = [line for path in _modules(package) for line in sql_construction(path)]
    assert found == [], "\n".join(found)


def test_the_check_sees_sql() -> None:
    """The check itself: the storage module that holds the SQL is caught by it."""
    assert sql_construction(ROOT / "storage/index/study_query.py")


def _imports(path: Path, package: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == package:
                names |= {f"{package}.{a.name}" for a in node.names}
            elif node.module.startswith(package + "."):
                names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith(package + ".")}
    return names


def test_dimse_modules_import_each_other_one_way() -> None:
    """No cycle among gateway.dimse modules, counting imports made only for type checking."""
    package = "gateway.dimse"
    graph = {f"{package}.{p.stem}": _imports(p, package) for p in _modules(package) if p.stem != "__init__"}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and (seen.add(nxt) or reaches(nxt, goal, seen))):
                return True
        return False

    cycles = sorted(module for module in graph if reaches(module, module, set()))
    assert cycles == [], cycles

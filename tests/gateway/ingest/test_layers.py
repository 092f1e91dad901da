"""Ingest is an application service below the protocol adapters: the dependencies point to it, not from it."""

from __future__ import annotations

import ast
from pathlib import Path

import gateway

ROOT = Path(gateway.__file__).parent


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_ingest_imports_no_protocol_adapter() -> None:
    for path in [*sorted((ROOT / "ingest").glob("*.py")), ROOT / "statuses.py", ROOT / "part10.py"]:
        adapters = {name for name in imported(path) if name.startswith(("gateway.dimse", "gateway.http"))}
        assert not adapters, f"{path.name} imports {adapters}"


def test_http_stores_through_ingest_not_the_dicom_server() -> None:
    for path in sorted((ROOT / "http").glob("*.py")):
        assert "gateway.dimse.scp" not in imported(path), f"http/{path.name} imports gateway.dimse.scp"
    assert "gateway.ingest.service" in imported(ROOT / "http" / "stow.py")

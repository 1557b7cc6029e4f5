"""procwatch_api's modules import each other without cycles (errors <-> responses was one)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import procwatch_api

pytestmark = pytest.mark.unit

PACKAGE = Path(procwatch_api.__file__).parent


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "procwatch_api":
                found |= {alias.name for alias in node.names}
            elif node.module.startswith("procwatch_api."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("procwatch_api.")}
    return found


def test_no_import_cycles_between_api_modules():
    graph = {p.stem: imports_of(p) for p in PACKAGE.glob("*.py")}
    assert "responses" not in graph["errors"]

    def cycle_from(start: str, node: str, seen: tuple[str, ...]) -> tuple[str, ...] | None:
        for nxt in graph.get(node, ()):
            if nxt == start:
                return (*seen, nxt)
            if nxt not in seen:
                found = cycle_from(start, nxt, (*seen, nxt))
                if found:
                    return found
        return None

    cycles = [c for m in graph if (c := cycle_from(m, m, (m,)))]
    assert not cycles, cycles

"""SQL is built only from constants and bound parameters: an AST scan of every service and lib.

A call to `execute` / `executemany` / `exec_driver_sql` / `text` / `sql.SQL` whose SQL argument is an
f-string, a `%`-formatted string, a `.format(...)` call or a string concatenation with a non-constant
fails the test, unless the call site is allowlisted below (identifiers only, never values, and each
entry says why). Values must go through bound parameters (`%s` / `:name` with a params argument).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
SOURCES = sorted([*ROOT.glob("services/*/src/**/*.py"), *ROOT.glob("libs/*/src/**/*.py"), *ROOT.glob("src/**/*.py")])
SQL_CALLS = {"execute", "executemany", "exec_driver_sql", "text", "SQL", "fetch", "fetchrow", "fetchval"}

# (path relative to the repo, enclosing function) -> why the dynamic part is safe.
ALLOWLIST: dict[tuple[str, str], str] = {
    # `PROCESS_COLUMNS` is a module constant (column names); the ids are a bound parameter.
    ("services/alerter/src/procwatch_alerter/repository.py", "lock_processes"): "constant column list",
    ("services/alerter/src/procwatch_alerter/repository.py", "read_processes"): "constant column list",
    # `WINDOW_COLUMNS` (procwatch_domain.maintenance) is a module constant: the windows' column names.
    ("services/alerter/src/procwatch_alerter/repository.py", "load_windows"): "constant column list",
    ("services/notifier/src/procwatch_notifier/repository.py", "windows_of_users"): "constant column list",
    # The offline job's statements are built from module constants (the bench EXPLAINs the same text).
    ("services/alerter/src/procwatch_alerter/repository.py", "declare_offline"): "constant SQL fragments",
    ("services/alerter/src/procwatch_alerter/repository.py", "offline_alerts_to_resolve"): "constant SQL fragments",
    # The alert settings' column names come from the rule registry (procwatch_domain.rules): constants.
    ("services/ingest/src/procwatch_ingest/repository.py", "lock_processes"): "constant column list",
    # CREATE DATABASE takes no parameters; the name is the embedded server's own setting, not user input.
    ("src/procwatch/embedded.py", "_ensure_database"): "database identifier from settings",
    # DDL takes no parameters: partition names and bounds are formatted from `date`s the migration
    # computes, and COLUMNS is a module constant.
    ("libs/db/src/procwatch_db/migrations/versions/0003_partition_process_samples.py", "upgrade"): "DDL from dates",
    ("libs/db/src/procwatch_db/migrations/versions/0003_partition_process_samples.py", "downgrade"): "constant columns",
}


def _is_dynamic(node: ast.AST) -> bool:
    """True when the expression builds a string from something that is not a literal."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        if isinstance(node.op, ast.Add):
            return _is_dynamic(node.left) or _is_dynamic(node.right) or not (
                _is_literal(node.left) and _is_literal(node.right))
        return _is_literal(node.left)  # "..." % values
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        # psycopg's composition, `sql.SQL("... {}").format(sql.Identifier(x))`, quotes what it inserts.
        return not _is_psycopg_sql(node.func.value)
    return False


def _is_psycopg_sql(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and _callee(node) == "SQL" and bool(node.args) and _is_literal(node.args[0])


def _is_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _is_literal(node.left) and _is_literal(node.right)
    return isinstance(node, ast.JoinedStr) and not _is_dynamic(node)


def _callee(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    if isinstance(call.func, ast.Name):
        return call.func.id
    return None


def _assignments(tree: ast.AST) -> dict[str, list[ast.AST]]:
    """Name -> values assigned to it anywhere in the module (to follow `q = f"..."; execute(q)`)."""
    out: dict[str, list[ast.AST]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    out.setdefault(t.id, []).append(node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            out.setdefault(node.target.id, []).append(node.value)
    return out


def findings(path: Path) -> list[tuple[str, int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    assigned = _assignments(tree)
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and _callee(node) in SQL_CALLS and node.args):
            continue
        arg = node.args[0]
        candidates = [arg] + (assigned.get(arg.id, []) if isinstance(arg, ast.Name) else [])
        if any(_is_dynamic(c) for c in candidates):
            func = node
            while func in parents and not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                func = parents[func]
            name = getattr(func, "name", "<module>")
            found.append((str(path.relative_to(ROOT)), node.lineno, name))
    return found


def test_the_scan_covers_the_services():
    rels = {str(p.relative_to(ROOT)) for p in SOURCES}
    for svc in ("api", "ingest", "alerter"):
        assert any(r.startswith(f"services/{svc}/") and r.endswith("repository.py") for r in rels), svc


def test_the_detector_catches_string_built_sql(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def a(conn, x):\n    conn.execute(f\"select * from t where id = {x}\")\n"
        "def b(conn, x):\n    conn.execute(\"select * from t where id = %s\" % x)\n"
        "def c(conn, x):\n    q = \"select {}\".format(x)\n    conn.execute(q)\n"
        "def d(conn, x):\n    conn.execute(\"select \" + x)\n"
        "def ok(conn, x):\n    conn.execute(\"select * from t where id = %s\", (x,))\n"
        "def ok2(conn, x):\n    conn.execute(\"select 1\" \" from t\")\n"
        "def ok3(conn, x):\n    conn.execute(sql.SQL(\"select * from {}\").format(sql.Identifier(x)))\n"
    )
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        assert [f[2] for f in findings(bad)] == ["a", "b", "c", "d"]
    finally:
        ROOT = old


def test_sql_is_never_built_from_values():
    found = [f for p in SOURCES for f in findings(p)]
    unexpected = [f for f in found if (f[0], f[2]) not in ALLOWLIST]
    assert not unexpected, "SQL built by string formatting (use bound parameters):\n" + "\n".join(
        f"{path}:{line} in {func}()" for path, line, func in unexpected)
    stale = set(ALLOWLIST) - {(f[0], f[2]) for f in found}
    assert not stale, f"allowlisted call sites no longer exist: {stale}"

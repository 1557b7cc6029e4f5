"""Render every service's settings as a Markdown table (docs/settings.md).

The table is generated from the Settings classes themselves — names, environment
variables, defaults, and the comment above each field — so the operator's guide
cannot drift from the code: `tests/unit/test_settings_doc.py` fails when the
committed file differs from what this renders.

    uv run python -m procwatch.settings_doc > docs/settings.md
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

from pydantic_settings import BaseSettings

SERVICES: list[tuple[str, str, str]] = [
    ("all services", "procwatch_runtime.settings", "ConnectionSettings"),
    ("api", "procwatch_api.settings", "ApiSettings"),
    ("ingest", "procwatch_ingest.settings", "IngestSettings"),
    ("alerter", "procwatch_alerter.settings", "AlerterSettings"),
    ("notifier", "procwatch_notifier.settings", "NotifierSettings"),
    ("agent", "procwatch_agent.settings", "AgentSettings"),
    ("nats-auth", "procwatch_ingest.auth_callout", "NatsAuthSettings"),
]


def _field_comments(cls: type) -> dict[str, str]:
    """The `# …` lines directly above each field of `cls`, joined."""
    source_lines = Path(inspect.getsourcefile(cls)).read_text().splitlines()
    tree = ast.parse("\n".join(source_lines))
    comments: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    lines, i = [], stmt.lineno - 2
                    while i >= 0 and source_lines[i].strip().startswith("#"):
                        lines.insert(0, source_lines[i].strip().lstrip("#").strip())
                        i -= 1
                    comments[stmt.target.id] = " ".join(lines)
    return comments


def _env_names(cls: type[BaseSettings], name: str) -> str:
    field = cls.model_fields[name]
    alias = field.validation_alias
    choices = getattr(alias, "choices", None)
    if choices:
        return str(choices[0])
    prefix = cls.model_config.get("env_prefix", "")
    return f"{prefix}{name}".upper()


def _default(cls: type[BaseSettings], name: str) -> str:
    field = cls.model_fields[name]
    if field.default_factory is not None:
        return "(computed)"
    value = field.default
    if hasattr(value, "get_secret_value"):
        return '""' if not value.get_secret_value() else "(secret)"
    return f"`{value!r}`" if not isinstance(value, str) else f"`{value}`"


def render() -> str:
    out = [
        "# Settings",
        "",
        "Every setting of every service, read from the environment (generated from the",
        "Settings classes by `uv run python -m procwatch.settings_doc > docs/settings.md`;",
        "a test keeps this file in step with the code).",
        "",
    ]
    base_fields = set(importlib.import_module("procwatch_runtime.settings").ConnectionSettings.model_fields)
    for title, module_name, class_name in SERVICES:
        cls = getattr(importlib.import_module(module_name), class_name)
        comments = {}
        for klass in reversed(cls.__mro__):
            if isinstance(klass, type) and issubclass(klass, BaseSettings) and klass.__module__.startswith("procwatch"):
                comments.update(_field_comments(klass))
        names = [n for n in cls.model_fields if title == "all services" or n not in base_fields]
        out += [f"## {title}", "", "| variable | default | meaning |", "|---|---|---|"]
        for name in names:
            meaning = comments.get(name, "").replace("|", "\\|")
            out.append(f"| `{_env_names(cls, name)}` | {_default(cls, name)} | {meaning} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(render(), end="")

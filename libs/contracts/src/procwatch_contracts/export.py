"""JSON Schema of every broker message, as committed under `libs/contracts/schemas/`.

    uv run python -m procwatch_contracts.export          # rewrite the committed files
    uv run python -m procwatch_contracts.export --check  # exit 1 when they drifted

No I/O at import; `write_schemas` is the only function that touches files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from procwatch_contracts import messages

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"

# File stem -> model. Every top-level message on the broker (v1).
MODELS: dict[str, type[BaseModel]] = {
    "agent_sample.v1": messages.AgentSample,
    "watch_list_request.v1": messages.WatchListRequest,
    "watch_list_reply.v1": messages.WatchListReply,
    "sample_recorded.v1": messages.SampleRecorded,
    "process_changed.v1": messages.ProcessChanged,
    "alert_event.v1": messages.AlertEvent,
    "alert_acknowledged.v1": messages.AlertAcknowledged,
}


def schema_documents() -> dict[str, str]:
    """File name -> JSON text (stable: sorted keys, trailing newline)."""
    out = {}
    for stem, model in MODELS.items():
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"procwatch/{stem}.json"
        out[f"{stem}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write_schemas(directory: Path = SCHEMAS_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in schema_documents().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def drifted(directory: Path = SCHEMAS_DIR) -> list[str]:
    """Names of committed schema files that differ from the models (or are missing)."""
    bad = []
    for name, text in schema_documents().items():
        path = directory / name
        if not path.exists() or path.read_text() != text:
            bad.append(name)
    return bad


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--check" in argv:
        bad = drifted()
        for name in bad:
            print(f"schema drifted: {name}", file=sys.stderr)
        return 1 if bad else 0
    for path in write_schemas():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

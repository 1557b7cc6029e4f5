"""The AsyncAPI document of the broker API (docs/asyncapi.yaml), from the ingest app's declarations.

    uv run python -m procwatch_ingest.spec          # regenerate
    uv run python -m procwatch_ingest.spec --check  # exit 1 on drift
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from faststream.specification import AsyncAPI

from procwatch_ingest.app import IngestApp
from procwatch_ingest.settings import IngestSettings

DOC = Path(__file__).resolve().parents[4] / "docs" / "asyncapi.yaml"

ASYNCAPI_TITLE = "procwatch broker API (ingest)"
ASYNCAPI_VERSION = "1"


def asyncapi_yaml(settings: IngestSettings | None = None) -> str:
    """The AsyncAPI document of the broker API, as committed in docs/asyncapi.yaml."""
    settings = settings or IngestSettings(
        database_url="postgresql://unused/none", nats_url="nats://127.0.0.1:4222",
        watchlist_queue="procwatch-ingest", durable="procwatch-ingest",
    )
    app = IngestApp(settings)
    doc = AsyncAPI(
        app.docs_broker, app.broker, title=ASYNCAPI_TITLE, version=ASYNCAPI_VERSION,
        description="Messages the ingest service consumes, answers and publishes (contracts v1).",
    ).to_specification().to_jsonable()
    # FastStream's channel order depends on hash order (PYTHONHASHSEED): sort for a stable file.
    for key in ("channels", "operations"):
        if key in doc:
            doc[key] = dict(sorted(doc[key].items()))
    for key in ("messages", "schemas"):
        if key in doc.get("components", {}):
            doc["components"][key] = dict(sorted(doc["components"][key].items()))
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = asyncapi_yaml()
    if "--check" in argv:
        same = DOC.exists() and DOC.read_text() == text
        if not same:
            print(f"{DOC} drifted: run `uv run python -m procwatch_ingest.spec`", file=sys.stderr)
        return 0 if same else 1
    DOC.write_text(text)
    print(DOC)
    return 0


if __name__ == "__main__":
    sys.exit(main())

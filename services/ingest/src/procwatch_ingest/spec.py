"""Write or check the committed AsyncAPI document (docs/asyncapi.yaml).

    uv run python -m procwatch_ingest.spec          # regenerate
    uv run python -m procwatch_ingest.spec --check  # exit 1 on drift
"""

from __future__ import annotations

import sys
from pathlib import Path

from procwatch_ingest.app import asyncapi_yaml

DOC = Path(__file__).resolve().parents[4] / "docs" / "asyncapi.yaml"


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

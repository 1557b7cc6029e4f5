from pathlib import Path

import pytest

from procwatch.settings_doc import render

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def test_settings_doc_is_in_step_with_the_settings_classes():
    assert DOC.read_text() == render(), "regenerate: uv run python -m procwatch.settings_doc > docs/settings.md"


def test_every_service_setting_is_listed():
    text = render()
    for variable in ("DATABASE_URL", "PROCWATCH_API_RATE_LIMIT_PER_MINUTE", "PROCWATCH_INGEST_BATCH_SIZE",
                     "PROCWATCH_ALERTER_DURABLE", "PROCWATCH_AGENT_BUFFER_TICKS"):
        assert f"`{variable}`" in text

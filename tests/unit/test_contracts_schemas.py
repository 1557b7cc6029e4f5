"""The committed JSON Schemas and AsyncAPI document match the code (regenerate on purpose, never by accident)."""

from __future__ import annotations

import json

import pytest

from procwatch_contracts import export
from procwatch_contracts.messages import AgentSample

pytestmark = pytest.mark.unit


def test_committed_json_schemas_match_the_models():
    assert export.drifted() == [], "run `uv run python -m procwatch_contracts.export` and commit the result"


def test_drift_is_detected(tmp_path):
    export.write_schemas(tmp_path)
    assert export.drifted(tmp_path) == []
    path = tmp_path / "agent_sample.v1.json"
    doc = json.loads(path.read_text())
    doc["properties"]["server_id"]["minimum"] = 0
    path.write_text(json.dumps(doc))
    assert export.drifted(tmp_path) == ["agent_sample.v1.json"]


def test_agent_sample_schema_is_the_design_shape():
    doc = json.loads((export.SCHEMAS_DIR / "agent_sample.v1.json").read_text())
    assert set(doc["required"]) == {"v", "server_id", "agent_version", "sampled_at", "processes"}
    assert doc["additionalProperties"] is False
    reading = doc["$defs"]["ProcessReading"]
    assert set(reading["properties"]) == {"process_name", "count", "cpu_pct", "memory_pct", "oldest_start_unix"}
    assert doc["properties"]["processes"]["maxItems"] == 1000
    # The design's example message validates.
    AgentSample.model_validate_json(
        '{"v": 1, "server_id": 12, "agent_version": "2.4.1", "sampled_at": "2026-05-24T18:41:00Z",'
        ' "processes": [{"process_name": "nginx", "count": 4, "cpu_pct": 12.4, "memory_pct": 8.1,'
        ' "oldest_start_unix": 1716566400}]}'
    )


def test_committed_asyncapi_document_matches_the_ingest_app():
    from procwatch_ingest import spec

    assert spec.DOC.read_text() == spec.asyncapi_yaml(), "run `uv run python -m procwatch_ingest.spec`"
    text = spec.DOC.read_text()
    for needle in ("agent.samples.*", "agent.config.*", "samples.recorded.*", "deadletter.agent.samples",
                   "AgentSample", "SampleRecorded", "WatchListRequest"):
        assert needle in text

"""Pure helpers of the API service (no servers): ids, timestamps, numbers, cursors, bodies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from procwatch_api import service
from procwatch_api.errors import ValidationFailed
from procwatch_api.responses import json_response

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "value"),
    [("1", 1), ("12", 12), ("9223372036854775807", 2**63 - 1), ("0", None), ("-1", None), ("9223372036854775808", None),
     ("abc", None), ("1.0", None), ("", None), ("١", None), ("²", None), (" 1", None), ("1e3", None)],
)
def test_parse_id(raw, value):
    assert service.parse_id(raw) == value


def rendered_time(value: datetime | None) -> str | None:
    return orjson.loads(json_response([service.json_time(value)]).body)[0]


def test_timestamps_are_utc_with_z_and_fraction_only_when_nonzero():
    assert rendered_time(datetime(2026, 5, 24, 18, 41, tzinfo=UTC)) == "2026-05-24T18:41:00Z"
    assert rendered_time(datetime(2026, 5, 24, 18, 41, 0, 250000, tzinfo=UTC)) == "2026-05-24T18:41:00.25Z"
    assert rendered_time(datetime(2026, 5, 24, 20, 41, tzinfo=timezone(timedelta(hours=2)))) == "2026-05-24T18:41:00Z"
    assert rendered_time(None) is None
    # Naive values are UTC (the hot read SQL hands out samples' times that way).
    assert rendered_time(datetime(2026, 5, 24, 18, 41, 0, 120)) == "2026-05-24T18:41:00.00012Z"


def test_integral_numbers_render_as_integers():
    assert service.num(80.0) == 80 and isinstance(service.num(80.0), int)
    assert service.num(12.4) == 12.4 and service.num(None) is None and service.num(3) == 3


def test_cursor_round_trip_and_garbage():
    assert service.decode_cursor(service.encode_cursor(12345)) == 12345
    assert service.decode_cursor(None) is None
    for bad in ["", "!!", "YQ", service.encode_cursor(1)[:-1] + "*", "MTIz"]:
        with pytest.raises(ValidationFailed):
            service.decode_cursor(bad)


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer  ", "Basic abc", "Token abc", "Bearer " + "a" * 600])
def test_bearer_token_rejects_malformed_headers(header):
    assert service.bearer_token(header) is None


def test_bearer_token_extracts_the_token():
    assert service.bearer_token("Bearer pwt_abc") == "pwt_abc"
    assert service.bearer_token("bearer pwt_abc ") == "pwt_abc"


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "application/merge-patch+json", None])
def test_json_content_types_are_accepted(content_type):
    assert service.decode_json_object(b'{"a": 1}', content_type) == {"a": 1}

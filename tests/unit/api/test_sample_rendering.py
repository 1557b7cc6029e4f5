"""Responses render byte for byte as the representation's conventions say (`documented_time` below for
timestamps, num() for numbers), although json_time hands most timestamps to orjson as datetimes."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from procwatch_api.responses import json_response
from procwatch_api.service import json_time, num, present_process, present_samples
from procwatch_domain.rules import SETTING_DEFAULTS

pytestmark = pytest.mark.unit

# What the get statement returns: naive UTC timestamps, NOT NULL floats, nullable oldest_start_unix.
timestamps = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31))
floats = st.floats(allow_nan=True, allow_infinity=True)
rows = st.tuples(
    st.integers(1, 2**63 - 1), st.integers(1, 2**63 - 1), st.integers(0, 2**31 - 1), floats, floats,
    st.none() | st.integers(-(2**63), 2**63 - 1), timestamps,
)


def documented_time(value: datetime | None) -> str | None:
    """docs/api.md's format, written out slowly: ISO 8601 UTC with "Z", the fraction only when nonzero."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    text = f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    if value.microsecond:
        text += "." + f"{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def reference(row: tuple) -> dict:
    sample_id, process_id, count, cpu_pct, memory_pct, oldest_start_unix, recorded_at = row
    return {"id": sample_id, "watched_process_id": process_id, "count": count, "cpu_pct": num(cpu_pct),
            "memory_pct": num(memory_pct), "oldest_start_unix": oldest_start_unix,
            "recorded_at": documented_time(recorded_at)}


@given(st.lists(rows, max_size=20))
@example([(1, 2, 3, 80.0, 1.5, None, datetime(2026, 5, 24, 18, 41, 0, us)) for us in
          (0, 1, 5, 10, 120000, 123450, 123456, 500000, 999999)])
@example([(1, 2, 3, x, -x, 1700000000, datetime(2026, 5, 24)) for x in
          (0.0, -0.0, 0.1, 1e-7, 2.0**53, 2.0**53 - 1, 1e20, math.inf, math.nan)])
def test_rendered_samples_equal_the_reference_representation(samples):
    rendered = json_response({"samples": present_samples(samples)}).body
    assert rendered == orjson.dumps({"samples": [reference(r) for r in samples]})


def test_timestamps_follow_the_documented_format():
    body = orjson.loads(json_response(present_samples([
        (1, 2, 3, 1.0, 2.5, None, datetime(2026, 5, 24, 18, 41, 0)),
        (1, 2, 3, 1.0, 2.5, None, datetime(2026, 5, 24, 18, 41, 0, 120000)),
        (1, 2, 3, 1.0, 2.5, None, datetime(2026, 5, 24, 18, 41, 0, 123456)),
    ]), ).body)
    assert [s["recorded_at"] for s in body] == [
        "2026-05-24T18:41:00Z", "2026-05-24T18:41:00.12Z", "2026-05-24T18:41:00.123456Z"]
    assert body[0]["cpu_pct"] == 1 and isinstance(body[0]["cpu_pct"], int)


@given(timestamps)
@example(datetime(2026, 5, 24, 18, 41, 0, 120000))
def test_json_time_renders_the_documented_format(value):
    assert json_response([json_time(value)]).body == orjson.dumps([documented_time(value)])
    aware = value.replace(tzinfo=UTC).astimezone(timezone(timedelta(hours=-5))) if value.year > 1 else value
    assert json_response([json_time(aware)]).body == orjson.dumps([documented_time(value)])


@given(st.none() | timestamps, timestamps, timestamps)
def test_a_process_renders_the_same_from_naive_utc_and_aware_timestamps(last_sample_at, created_at, updated_at):
    """The hot reads select naive UTC; the unit-of-work routes get aware values from SQLAlchemy."""
    row = {**SETTING_DEFAULTS, "id": 1, "server_id": 2, "user_id": 3, "process_name": "nginx", "enabled": True, "alert_on_down": True,
           "alert_on_restart": False, "alert_on_cpu": True, "alert_on_memory": False, "cpu_threshold_pct": 80.0,
           "memory_threshold_pct": 25.5, "last_count": 2, "last_cpu_pct": 1.0, "last_memory_pct": 0.5,
           "alerted_state": None, "last_sample_at": last_sample_at, "created_at": created_at, "updated_at": updated_at}
    paris = timezone(timedelta(hours=2))
    aware = {k: v.replace(tzinfo=UTC).astimezone(paris) if isinstance(v, datetime) and v.year < 9999 else v
             for k, v in row.items()}
    assert json_response(present_process(row)).body == json_response(present_process(aware)).body
    assert orjson.loads(json_response(present_process(row)).body)["created_at"] == documented_time(created_at)

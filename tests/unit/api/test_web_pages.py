"""The dashboard's pure parts (procwatch_api.web.pages): form -> body, counts, chart ranges and series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from procwatch_api.web.pages import (
    CHART_POINTS,
    chart_range,
    chart_series,
    fleet_counts,
    issues_by_field,
    parse_time,
    process_body,
    when,
)
from procwatch_api.web.repository import Bucket
from procwatch_api.web.sessions import csrf_token
from procwatch_domain.rules import SETTING_DEFAULTS

pytestmark = pytest.mark.unit
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_process_body_sends_every_box_and_parses_numbers():
    body = process_body({"process_name": " nginx ", "enabled": "1", "alert_on_down": "1", "cpu_threshold_pct": "80",
                         "memory_threshold_pct": ""})
    assert body["process_name"] == "nginx" and body["enabled"] is True and body["alert_on_down"] is True
    assert body["alert_on_cpu"] is False and body["alert_on_restart"] is False  # unticked boxes are false
    assert body["cpu_threshold_pct"] == 80.0
    assert "memory_threshold_pct" not in body  # left empty: the default (create) or unchanged


def test_an_empty_nullable_setting_is_null_not_left_out():
    body = process_body({"process_name": "nginx", "min_count": "", "max_count": "4"})
    assert body["min_count"] is None and body["max_count"] == 4.0  # an emptied bound is cleared on edit


def test_process_body_passes_text_that_is_not_a_number_to_the_validation():
    assert process_body({"cpu_threshold_pct": "lots"})["cpu_threshold_pct"] == "lots"
    assert process_body({"cpu_threshold_pct": "nan"})["cpu_threshold_pct"] == "nan"


def test_every_alert_setting_of_the_registry_is_a_form_field():
    body = process_body({f: "1" for f in SETTING_DEFAULTS})
    assert set(SETTING_DEFAULTS) <= set(body)


def test_issues_by_field_keeps_the_first_message_per_field():
    assert issues_by_field([{"field": "a", "message": "x"}, {"field": "a", "message": "y"}]) == {"a": "x"}


def row(server_id: int, *, enabled=True, sampled=True, count=1, alerted=None) -> dict:
    return {"server_id": server_id, "enabled": enabled, "last_sample_at": NOW if sampled else None,
            "last_count": count, "alerted_state": alerted}


def test_fleet_counts_use_the_domain_status():
    counts = fleet_counts([row(1), row(1, count=0), row(1, alerted="cpu"), row(1, enabled=False),
                           row(1, sampled=False), row(2)])
    assert counts == {1: {"down": 1, "alerting": 1, "up": 1}, 2: {"down": 0, "alerting": 0, "up": 1}}


def test_chart_range_defaults_to_everything_retained_and_caps_the_points():
    created = NOW - timedelta(days=7)
    span = chart_range(None, None, created, NOW)
    assert (span.start, span.end) == (created, NOW)
    assert (span.end - span.start).total_seconds() / span.step_s <= CHART_POINTS
    clipped = chart_range(created - timedelta(days=30), NOW + timedelta(days=1), created, NOW)
    assert (clipped.start, clipped.end) == (created, NOW)
    tiny = chart_range(NOW, NOW, created, NOW)
    assert tiny.start < tiny.end and tiny.step_s == 1


def test_parse_time_takes_unix_seconds_only():
    assert parse_time("1764590400") == datetime(2025, 12, 1, 12, 0, tzinfo=UTC)
    assert parse_time("soon") is None and parse_time("inf") is None and parse_time("-5") is None


def test_chart_series_marks_a_bucket_where_the_oldest_start_went_up():
    def bucket(minute: int, low: int | None, high: int | None) -> Bucket:
        return Bucket(NOW + timedelta(minutes=minute), 1.234, 2.0, 1, 2, low, high)

    series = chart_series([bucket(0, 100, 100), bucket(1, 100, 100), bucket(2, 200, 200), bucket(3, 200, 300),
                           bucket(4, None, None), bucket(5, 300, 300)])
    assert series["cpu"][0] == 1.23 and series["count"] == [1] * 6
    restarts = [(NOW + timedelta(minutes=m)).timestamp() for m in (2, 3)]
    assert series["restarts"] == restarts


def test_when_renders_both_timestamp_forms():
    assert when(None) == "—"
    assert when(datetime(2026, 12, 1, 12, 0, 5)) == "2026-12-01 12:00:05 UTC"
    assert when("2026-12-01T12:00:05.5Z") == "2026-12-01 12:00:05 UTC"


def test_csrf_token_is_bound_to_the_session():
    assert csrf_token("a") == csrf_token("a") != csrf_token("b")


def test_acknowledgement_and_maintenance_templates_render():
    """Issue 18's parts of the pages (mounted only where its services exist) render from the
    documented shapes of GET /maintenance-windows and the alerts' acknowledgement fields."""
    from procwatch_api.web.rendering import templates
    from procwatch_api.web.sessions import WebUser

    env = templates.env
    user = WebUser(1, "tok")
    base = {"csrf_field": "csrf", "user": user, "has_ack_and_windows": True}
    alert = {"id": 7, "type": "process_down", "state": "firing", "value": 0, "threshold": None,
             "started_at": "2026-12-01T12:00:00Z", "resolved_at": None, "resolve_reason": None,
             "acknowledged_at": "2026-12-01T12:01:00Z", "ack_note": "on it", "server_id": 1, "process_id": 2,
             "process_name": "nginx", "hostname": "web-01"}
    html = env.get_template("alerts.html").render(**base, nav="alerts", firing=[alert],
                                                   recent=[{**alert, "acknowledged_at": None}])
    assert 'action="/ui/alerts/7/unack"' in html and 'action="/ui/alerts/7/ack"' in html and "on it" in html
    window = {"id": 3, "name": "deploy", "kind": "recurring", "starts_at": "2026-12-01T02:00:00Z", "ends_at": None,
              "rrule": "FREQ=DAILY", "duration_s": 3600, "timezone": "Europe/Berlin", "servers": [1],
              "processes": None, "active": 1, "current_end_at": "2026-12-01T03:00:00Z", "next_start_at": None}
    html = env.get_template("maintenance.html").render(**base, nav="maintenance", windows=[window], form=None,
                                                        issues={"rrule": "not a rule"})
    assert 'action="/ui/maintenance/3/end"' in html and "servers 1" in html and 'id="w-rrule-error"' in html

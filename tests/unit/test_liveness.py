"""Server liveness as pure functions (procwatch_domain.liveness), the API's server validation and
ingest's last_seen throttle (issue 15)."""

from __future__ import annotations

import typing
from datetime import UTC, datetime, timedelta

import pytest

from procwatch_api.errors import ValidationFailed
from procwatch_api.service import present_server, validate_server_fields
from procwatch_contracts import subjects
from procwatch_contracts.messages import AlertEvent, AlertServer
from procwatch_domain.alerts import alert_id
from procwatch_domain.liveness import (
    LivenessGate,
    PipelineState,
    default_offline_after_s,
    pipeline_caught_up,
    server_alert_id,
    server_status,
    should_stamp,
)
from procwatch_ingest.service import IngestService

T0 = datetime(2026, 5, 24, 18, 41, tzinfo=UTC)


def test_default_offline_after_is_three_pushes_and_at_least_30_s():
    assert default_offline_after_s(10.0) == 30
    assert default_offline_after_s(1.0) == 30
    assert default_offline_after_s(20.0) == 60
    assert default_offline_after_s(10.5) == 32  # rounded up: never shorter than three pushes
    assert default_offline_after_s(100_000.0) == 86_400


def test_status_pending_online_offline():
    deadline = T0 + timedelta(seconds=30)
    assert server_status(None, None, False, T0) == "pending"
    assert server_status(T0, deadline, False, T0 + timedelta(seconds=29)) == "online"
    assert server_status(T0, deadline, False, deadline) == "offline"  # the deadline passed: stale data
    assert server_status(T0, deadline, True, T0 + timedelta(seconds=1)) == "offline"  # declared by the alerter


def test_server_alert_id_is_deterministic_and_shares_the_process_stamp():
    at = datetime(2026, 5, 24, 18, 41, 0, 500, tzinfo=UTC)
    assert server_alert_id(7, "server_offline", "firing", at) == \
        "alert-server-7-server_offline-firing-20260524T184100.000500Z"
    assert alert_id(7, "process_down", "firing", at).endswith(server_alert_id(7, "x", "y", at).rsplit("-", 1)[1])
    with pytest.raises(ValueError):
        server_alert_id(7, "server_offline", "firing", at.replace(tzinfo=None))


def test_stamp_only_when_moved_forward_by_the_step():
    assert should_stamp(None, T0, 1.0)
    assert not should_stamp(T0, T0 + timedelta(milliseconds=999), 1.0)
    assert should_stamp(T0, T0 + timedelta(seconds=1), 1.0)
    assert not should_stamp(T0, T0 - timedelta(seconds=5), 1.0)  # an older message never moves it back
    assert should_stamp(T0, T0 + timedelta(microseconds=1), 0.0)


def test_caught_up_needs_reachable_small_backlog_and_small_lag():
    assert pipeline_caught_up(PipelineState(reachable=True), 100, 5.0)
    assert not pipeline_caught_up(PipelineState(reachable=False), 100, 5.0)
    assert not pipeline_caught_up(PipelineState(True, backlog=101), 100, 5.0)
    # A small fleet behind a stopped ingest: few messages, but old ones.
    assert not pipeline_caught_up(PipelineState(True, backlog=3, oldest_unacked_age_s=6.0), 100, 5.0)
    assert pipeline_caught_up(PipelineState(True, backlog=3, oldest_unacked_age_s=0.2), 100, 5.0)


def test_gate_judges_a_server_only_once_its_whole_window_was_healthy():
    gate = LivenessGate()
    assert gate.judgeable_after_s(0.0) is None  # never observed: nobody
    gate.observe(True, 100.0)  # the first check after the start opens the window
    assert gate.judgeable_after_s(100.0) == 0.0
    assert gate.judgeable_after_s(130.0) == 30.0  # a 30 s server may be judged now, a 60 s one not
    gate.observe(True, 130.0)
    assert gate.judgeable_after_s(131.0) == 31.0  # staying healthy keeps the start
    gate.observe(False, 140.0)  # ingest behind or unreachable
    assert gate.judgeable_after_s(141.0) is None
    gate.observe(True, 150.0)
    assert gate.judgeable_after_s(170.0) == 20.0  # counted again from the recovery
    gappy = LivenessGate(max_gap_s=5.0)
    gappy.observe(True, 0.0)
    gappy.observe(True, 4.0)
    assert gappy.judgeable_after_s(4.0) == 4.0
    gappy.observe(True, 20.0)  # not checked for 16 s (another replica ran the job): start again
    assert gappy.judgeable_after_s(20.0) == 0.0
    graced = LivenessGate(extra_grace_s=5.0)
    graced.observe(True, 0.0)
    assert graced.judgeable_after_s(30.0) == 25.0


def test_server_alert_event_has_no_process_and_its_own_subject():
    event = AlertEvent(id="alert-server-7-server_offline-firing-x", type="server_offline", state="firing",
                       occurred_at=T0, user_id=1, server=AlertServer(id=7, hostname="web-1"),
                       value=31.5, threshold=30.0)
    assert event.process is None
    assert AlertEvent.model_validate_json(event.model_dump_json()) == event
    assert "server_offline" in typing.get_args(AlertEvent.model_fields["type"].annotation)
    assert subjects.server_alerts(7) == "alerts.7.server"
    assert subjects.server_alerts(7).split(".")[:2] == ["alerts", "7"]  # matched by ALERTS_SUBJECTS (alerts.*.*)


def test_server_fields_validation_bounds_and_booleans():
    assert validate_server_fields({"hostname": "web-1"}) == {"hostname": "web-1"}
    assert validate_server_fields({"offline_after_s": 30, "alert_on_offline": 0}, for_update=True) == \
        {"offline_after_s": 30, "alert_on_offline": False}
    assert validate_server_fields({"offline_after_s": 86_400.0}, for_update=True) == {"offline_after_s": 86_400}
    # Echoed read-only fields are ignored.
    assert validate_server_fields({"hostname": "a", "status": "online", "last_seen_at": None, "id": 3}) == {"hostname": "a"}
    for bad in (29, 86_401, 30.5, True, "60", None):
        with pytest.raises(ValidationFailed) as err:
            validate_server_fields({"offline_after_s": bad}, for_update=True)
        assert err.value.extra["issues"] == [{"field": "offline_after_s", "message": "must be an integer from 30 to 86400"}]
    with pytest.raises(ValidationFailed) as err:
        validate_server_fields({"alert_on_offline": 2, "colour": "red"}, for_update=True)
    assert {i["field"] for i in err.value.extra["issues"]} == {"alert_on_offline", "colour"}
    with pytest.raises(ValidationFailed):
        validate_server_fields({}, for_update=True)  # nothing to update
    with pytest.raises(ValidationFailed):
        validate_server_fields({"offline_after_s": 60})  # create needs a hostname


def test_present_server_renders_liveness():
    row = {"id": 1, "hostname": "h", "last_agent_version": None, "created_at": T0, "last_seen_at": T0,
           "offline_deadline_at": T0 + timedelta(seconds=30), "offline_since": None, "offline_after_s": 30,
           "alert_on_offline": True}
    shown = present_server(row, now=T0 + timedelta(seconds=1))
    assert (shown["status"], shown["offline_after_s"], shown["alert_on_offline"]) == ("online", 30, 1)
    assert present_server({**row, "last_seen_at": None}, now=T0)["status"] == "pending"
    assert present_server(row, now=T0 + timedelta(seconds=31))["status"] == "offline"


def test_ingest_stamps_a_server_once_per_step_and_only_after_commit():
    service = IngestService(last_seen_step_s=1.0)
    first = service.liveness_stamps({1: T0, 2: T0})
    assert first == {1: T0, 2: T0}
    # Not committed yet (a rolled-back batch): the redelivery stamps again.
    assert service.liveness_stamps({1: T0}) == {1: T0}
    service.last_seen_committed(first)
    assert service.liveness_stamps({1: T0 + timedelta(milliseconds=500), 2: T0 + timedelta(seconds=1)}) == \
        {2: T0 + timedelta(seconds=1)}

"""Issue #18's per-process settings through HTTP: min_count / max_count (nullable: no bound) and
alert_after_samples / resolve_after_samples, on POST, PUT and GET, with the seed's error body."""

from __future__ import annotations

import pytest

from tests.integration.api.conftest import sql
from tests.integration.api.test_validation_api import assert_validation_failed
from tests.support.factories import make_process

pytestmark = pytest.mark.integration

NEW_FIELDS = ("alert_on_count_range", "min_count", "max_count", "alert_after_samples", "resolve_after_samples")


def url(server_id, process_id=None) -> str:
    base = f"/servers/{server_id}/processes"
    return base if process_id is None else f"{base}/{process_id}"


async def test_defaults_are_no_bounds_and_no_flap_protection(client, user, server):
    r = await client.post(url(server.id), json={"process_name": "nginx"}, headers=user.headers)
    assert r.status_code == 201, r.text
    p = r.json()["process"]
    assert [p[f] for f in NEW_FIELDS] == [1, None, None, 1, 1]


async def test_create_update_and_get_carry_the_new_fields(client, database_url, user, server):
    body = {"process_name": "worker", "min_count": 2, "max_count": 8, "alert_after_samples": 3,
            "resolve_after_samples": 2, "alert_on_count_range": 1}
    r = await client.post(url(server.id), json=body, headers=user.headers)
    assert r.status_code == 201, r.text
    pid = r.json()["process"]["id"]
    for got in (r.json()["process"], (await client.get(url(server.id, pid), headers=user.headers)).json()["process"],
                (await client.get(url(server.id), headers=user.headers)).json()["processes"][0]):
        assert [got[f] for f in NEW_FIELDS] == [1, 2, 8, 3, 2]
    r = await client.put(url(server.id, pid), json={"max_count": None, "alert_after_samples": 1}, headers=user.headers)
    assert r.status_code == 200, r.text
    assert [r.json()["process"][f] for f in NEW_FIELDS] == [1, 2, None, 1, 2]
    assert sql(database_url, "select min_count, max_count, alert_after_samples from watched_processes where id = %s",
               (pid,)) == [(2, None, 1)]


@pytest.mark.parametrize(("field", "value"), [
    ("min_count", 0), ("min_count", 100_001), ("min_count", 1.5), ("min_count", "2"), ("min_count", True),
    ("max_count", -1), ("max_count", 100_001),
    ("alert_after_samples", 0), ("alert_after_samples", 101), ("alert_after_samples", None),
    ("resolve_after_samples", 0), ("resolve_after_samples", 101), ("resolve_after_samples", 2.5),
    ("alert_on_count_range", 2),
])
async def test_out_of_bounds_values_are_400_and_nothing_is_written(client, database_url, user, server, field, value):
    r = await client.post(url(server.id), json={"process_name": "nginx", field: value}, headers=user.headers)
    assert_validation_failed(r, field)
    assert sql(database_url, "select count(*) from watched_processes where server_id = %s", (server.id,)) == [(0,)]


async def test_min_count_above_max_count_is_400_on_create(client, database_url, user, server):
    r = await client.post(url(server.id), json={"process_name": "nginx", "min_count": 5, "max_count": 4},
                          headers=user.headers)
    assert_validation_failed(r, "min_count")
    assert sql(database_url, "select count(*) from watched_processes where server_id = %s", (server.id,)) == [(0,)]
    ok = await client.post(url(server.id), json={"process_name": "nginx", "min_count": 4, "max_count": 4},
                           headers=user.headers)
    assert ok.status_code == 201, ok.text


async def test_an_update_is_checked_against_the_stored_other_bound_and_changes_nothing(client, database_url, user,
                                                                                      server):
    pid = make_process(database_url, server, "worker", min_count=3, max_count=6)
    r = await client.put(url(server.id, pid), json={"max_count": 2, "alert_on_cpu": True}, headers=user.headers)
    assert_validation_failed(r, "min_count")
    assert sql(database_url, "select min_count, max_count, alert_on_cpu from watched_processes where id = %s",
               (pid,)) == [(3, 6, False)]
    assert sql(database_url, "select count(*) from outbox_events where payload like %s",
               (f'%"process_id":{pid},%',)) == [(0,)], "no lifecycle event for a refused update"
    r = await client.put(url(server.id, pid), json={"min_count": None, "max_count": 2}, headers=user.headers)
    assert r.status_code == 200, r.text
    assert (r.json()["process"]["min_count"], r.json()["process"]["max_count"]) == (None, 2)
    assert sql(database_url, "select count(*) from outbox_events where payload like %s",
               (f'%"process_id":{pid},%',)) == [(1,)], "the accepted update's lifecycle event"


async def test_an_out_of_range_count_shows_as_alerting_and_a_count_of_0_as_down(client, database_url, user, server):
    short = make_process(database_url, server, "short", min_count=3, last_count=1, alerted_state="count_range",
                         last_sample_at="2026-05-24T18:00:00Z")
    gone = make_process(database_url, server, "gone", min_count=3, last_count=0, alerted_state="down,count_range",
                        last_sample_at="2026-05-24T18:00:00Z")
    shown = {p["id"]: p for p in (await client.get(url(server.id), headers=user.headers)).json()["processes"]}
    assert (shown[short]["status"], shown[short]["alerted_state"]) == ("alerting", "count_range")
    assert (shown[gone]["status"], shown[gone]["alerted_state"]) == ("down", "down,count_range")

"""Every validation rule of the seed through HTTP: 400 validation_failed with issues, nothing written."""

from __future__ import annotations

import pytest

from tests.integration.api.conftest import sql
from tests.support.factories import make_process

pytestmark = pytest.mark.integration

METACHARACTERS = list(";&$`\\\"'<>(){}|")
WHITESPACE = [" ", "\t", "\n", "\r", "\u00a0", "\u2003", "\u2028", "\x0b", "\x0c"]
CONTROL = ["\x00", "\x01", "\x1b", "\x7f", "\u200b", "\ufeff"]


async def create(client, user, server, body):
    return await client.post(f"/servers/{server.id}/processes", json=body, headers=user.headers)


def assert_validation_failed(r, field: str):
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "validation_failed" and body["message"]
    assert field in [i["field"] for i in body["issues"]], body
    assert all(set(i) == {"field", "message"} and i["message"] for i in body["issues"])


@pytest.mark.parametrize("ch", METACHARACTERS + WHITESPACE + CONTROL, ids=repr)
async def test_process_name_rejects_metacharacters_whitespace_and_control_chars(client, database_url, user, server, ch):
    for name in (f"ngi{ch}nx", ch, f"{ch}nginx", f"nginx{ch}"):
        assert_validation_failed(await create(client, user, server, {"process_name": name}), "process_name")
    assert sql(database_url, "select count(*) from watched_processes where server_id = %s", (server.id,)) == [(0,)]


@pytest.mark.parametrize(("length", "ok"), [(0, False), (1, True), (100, True), (101, False)])
async def test_process_name_length(client, user, server, length, ok):
    r = await create(client, user, server, {"process_name": "n" * length})
    if ok:
        assert r.status_code == 201 and r.json()["process"]["process_name"] == "n" * length
    else:
        assert_validation_failed(r, "process_name")


@pytest.mark.parametrize("name", ["php-fpm8.2", "java_app", "nginx:worker", "postgres@14", "émoji-🚀", "名前", "a/b", "x+y", "[kworker]"])
async def test_ordinary_and_unicode_names_are_accepted(client, user, server, name):
    r = await create(client, user, server, {"process_name": name})
    assert r.status_code == 201 and r.json()["process"]["process_name"] == name


@pytest.mark.parametrize("name", [None, 5, True, ["nginx"], {"n": 1}])
async def test_process_name_must_be_a_string(client, user, server, name):
    assert_validation_failed(await create(client, user, server, {"process_name": name}), "process_name")


async def test_process_name_is_required_on_create(client, user, server):
    assert_validation_failed(await create(client, user, server, {"enabled": True}), "process_name")


@pytest.mark.parametrize(
    ("value", "ok"),
    [(0.009, False), (0.01, True), (50, True), (100, True), (100.01, False), (0, False), (-5, False),
     ("50", False), (True, False), (False, False), (None, False), ([50], False), (1e308, False)],
)
@pytest.mark.parametrize("field", ["cpu_threshold_pct", "memory_threshold_pct"])
async def test_threshold_range_and_type(client, user, server, field, value, ok):
    r = await create(client, user, server, {"process_name": "nginx", field: value})
    if ok:
        assert r.status_code == 201, r.text
        assert r.json()["process"][field] == value
    else:
        assert_validation_failed(r, field)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
async def test_nan_and_infinity_literals_are_rejected(client, user, server, literal):
    raw = b'{"process_name": "nginx", "cpu_threshold_pct": ' + literal + b"}"
    r = await client.post(f"/servers/{server.id}/processes", content=raw,
                          headers={**user.headers, "Content-Type": "application/json"})
    assert_validation_failed(r, "body")


@pytest.mark.parametrize(
    ("value", "stored"), [(True, 1), (False, 0), (1, 1), (0, 0), (2, None), ("true", None), (None, None), (1.0, None), (-1, None)]
)
@pytest.mark.parametrize("field", ["enabled", "alert_on_down", "alert_on_restart", "alert_on_cpu", "alert_on_memory"])
async def test_booleans_accept_json_booleans_and_0_1_only(client, user, server, field, value, stored):
    r = await create(client, user, server, {"process_name": "nginx", field: value})
    if stored is None:
        assert_validation_failed(r, field)
    else:
        assert r.status_code == 201, r.text
        assert r.json()["process"][field] == stored


async def test_unknown_fields_are_rejected(client, user, server):
    assert_validation_failed(await create(client, user, server, {"process_name": "nginx", "colour": "red"}), "colour")


async def test_every_problem_is_reported_at_once(client, user, server):
    r = await create(client, user, server, {"process_name": "a b", "enabled": "yes", "cpu_threshold_pct": 0})
    assert r.status_code == 400
    assert {i["field"] for i in r.json()["issues"]} == {"process_name", "enabled", "cpu_threshold_pct"}


async def test_update_runs_the_same_validation(client, database_url, user, server):
    pid = make_process(database_url, server, "nginx")
    for body, field in [({"process_name": "a;b"}, "process_name"), ({"cpu_threshold_pct": 100.01}, "cpu_threshold_pct"),
                        ({"enabled": 2}, "enabled"), ({"nope": 1}, "nope")]:
        r = await client.put(f"/servers/{server.id}/processes/{pid}", json=body, headers=user.headers)
        assert_validation_failed(r, field)
    assert sql(database_url, "select process_name, enabled from watched_processes where id = %s", (pid,)) == [("nginx", True)]


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b"", "application/json"),
        (b"{", "application/json"),
        (b'{"process_name": "nginx",}', "application/json"),
        (b"[]", "application/json"),
        (b'[{"process_name": "nginx"}]', "application/json"),
        (b'"nginx"', "application/json"),
        (b"null", "application/json"),
        (b"42", "application/json"),
        (b"\xff\xfe{}", "application/json"),
        (b'{"process_name": "\xc3\x28"}', "application/json"),
        (b'{"process_name": "\\ud800"}', "application/json"),
        (b"[" * 100_00 + b"]" * 100_00, "application/json"),
        (b"process_name=nginx", "application/x-www-form-urlencoded"),
        (b'{"process_name": "nginx"}', "text/plain"),
    ],
    ids=lambda v: repr(v)[:40],
)
async def test_malformed_or_non_object_bodies_are_400(client, database_url, user, server, raw, content_type):
    headers = {**user.headers, "Content-Type": content_type}
    for method, path in [("POST", f"/servers/{server.id}/processes"), ("POST", "/servers")]:
        r = await client.request(method, path, content=raw, headers=headers)
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"] == "validation_failed" and r.json()["issues"]
    pid = make_process(database_url, server, "nginx")
    r = await client.put(f"/servers/{server.id}/processes/{pid}", content=raw, headers=headers)
    assert r.status_code == 400 and r.json()["error"] == "validation_failed"


async def test_a_huge_body_is_413_not_500(client, user, server):
    raw = b'{"process_name": "' + b"a" * 200_000 + b'"}'
    r = await client.post(f"/servers/{server.id}/processes", content=raw,
                          headers={**user.headers, "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"


async def test_a_missing_content_type_with_a_json_body_is_accepted(client, user, server):
    r = await client.post(f"/servers/{server.id}/processes", content=b'{"process_name": "nginx"}', headers=user.headers)
    assert r.status_code == 201

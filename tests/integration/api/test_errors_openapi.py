"""Framework-level errors keep the error shape; OpenAPI documents every route; health endpoints."""

from __future__ import annotations

import pytest

from tests.integration.api.conftest import api_settings, closed_port_url, running_api

pytestmark = pytest.mark.integration


async def test_unknown_route_is_404_json(client, user):
    for headers in ({}, user.headers):
        r = await client.get("/nope", headers=headers)
        assert r.status_code == 404 and r.json()["error"] == "not_found"


async def test_wrong_method_is_405_json(client, user, server):
    r = await client.patch(f"/servers/{server.id}/processes/1", json={}, headers=user.headers)
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
    assert "PUT" in r.headers["allow"]


async def test_bad_query_values_are_400(client, user, server, database_url):
    from tests.support.factories import make_process

    pid = make_process(database_url, server, "nginx")
    base = f"/servers/{server.id}/processes/{pid}/alerts"
    for query in ("?limit=0", "?limit=201", "?limit=abc", "?cursor=!!!", "?cursor=YTox" + "x" * 40):
        r = await client.get(base + query, headers=user.headers)
        assert r.status_code == 400, query
        assert r.json()["error"] == "validation_failed"


async def test_an_unexpected_exception_is_a_json_500(database_url, redis_url, nats_url, user, caplog):
    async with running_api(api_settings(database_url, redis_url, nats_url)) as c:

        async def boom():
            raise RuntimeError("secret detail")

        c.app.add_api_route("/boom", boom)
        r = await c.get("/boom")
    assert r.status_code == 500
    assert r.json() == {"error": "internal_error", "message": "internal error"}
    assert "secret detail" not in r.text
    assert any("unhandled error" in rec.getMessage() for rec in caplog.records)


async def test_openapi_describes_every_route_body_and_error(client):
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    paths = spec["paths"]
    expected = {
        ("/servers", "get"), ("/servers", "post"), ("/servers/{server_id}", "get"), ("/servers/{server_id}", "delete"),
        ("/servers/{server_id}/processes", "get"), ("/servers/{server_id}/processes", "post"),
        ("/servers/{server_id}/processes/{process_id}", "get"), ("/servers/{server_id}/processes/{process_id}", "put"),
        ("/servers/{server_id}/processes/{process_id}", "delete"),
        ("/servers/{server_id}/processes/{process_id}/alerts", "get"),
    }
    assert expected <= {(p, m) for p, ops in paths.items() for m in ops}
    for path, method in expected:
        responses = paths[path][method]["responses"]
        assert {"401", "429"} <= set(responses), (path, method)
        assert "422" not in responses
        for code, resp in responses.items():
            if code.startswith(("4", "5")):
                assert resp["content"]["application/json"]["schema"]["$ref"].startswith("#/components/schemas/")
    post = paths["/servers/{server_id}/processes"]["post"]
    assert {"400", "402", "404", "409"} <= set(post["responses"])
    assert set(paths["/servers/{server_id}/processes/{process_id}"]["put"]["responses"]) >= {"400", "404", "409"}
    schemas = spec["components"]["schemas"]
    create_ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    create = schemas[create_ref.rsplit("/", 1)[1]]
    assert create["required"] == ["process_name"]
    assert create["properties"]["cpu_threshold_pct"]["default"] == 50
    assert create["properties"]["cpu_threshold_pct"]["minimum"] == 0.01
    assert "requestBody" in paths["/servers/{server_id}/processes/{process_id}"]["put"]
    assert "requestBody" in paths["/servers"]["post"]
    plan_limit = schemas["PlanLimitError"]["properties"]
    assert {"error", "message", "scope", "plan", "limit", "current_count"} <= set(plan_limit)


async def test_healthz_and_readyz_need_no_auth(client):
    r = await client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"postgres": "ok", "redis": "ok", "nats": "ok"}}


async def test_readyz_names_what_is_down(database_url, nats_url):
    settings = api_settings(database_url, closed_port_url("redis"), nats_url)
    async with running_api(settings) as c:
        r = await c.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "not_ready" and body["checks"]["postgres"] == "ok"
    assert body["checks"]["redis"].startswith("error")

"""Issue 14, finding 9: the OpenAPI document must say exactly what the server enforces. The PUT schema
allowed null (refused by the server) and the name rules (invisible characters) were not expressed, so
a client generating requests from the document was refused. As such a client: take the document's
schemas and check them against the server's answers. (tests/integration/fuzz/test_api_schemathesis.py
fuzzes every operation with the same claim.)"""

from __future__ import annotations

import re

import pytest

from procwatch_domain.rules import SETTINGS
from tests.integration.api.conftest import api_settings, running_api
from tests.support.factories import make_process, make_server, make_user

pytestmark = pytest.mark.integration


async def test_put_schema_allows_null_exactly_where_the_server_accepts_it(database_url, redis_url, nats_url):
    """No field is nullable but the nullable settings (min_count / max_count: null clears the bound)."""
    user = make_user(database_url)
    server = make_server(database_url, user)
    pid = make_process(database_url, server, "nginx")
    nullable = {s.name for s in SETTINGS if s.nullable}
    assert nullable == {"min_count", "max_count"}
    async with running_api(api_settings(database_url, redis_url, nats_url)) as client:
        doc = (await client.get("/openapi.json")).json()
        update = doc["components"]["schemas"]["ProcessUpdate"]
        for name, prop in update["properties"].items():
            if "type" in prop or "anyOf" in prop:  # the updatable fields (read-only ones are ignored, any value)
                kinds = [prop.get("type")] + [alt.get("type") for alt in prop.get("anyOf", ())]
                assert ("null" in kinds) == (name in nullable), name
                answer = await client.put(f"/servers/{server.id}/processes/{pid}", json={name: None},
                                          headers=user.headers)
                assert answer.status_code == (200 if name in nullable else 400), (name, answer.text)
        assert {"required": ["process_name"]} in update["anyOf"]  # at least one field


@pytest.mark.parametrize("name", ["zero\u200bwidth", "bidi\u202eevil", "soft\u00adhyphen", "nul\x00", "tab\tname",
                                  "semi;colon", "line\nbreak", "private\ue000use"])
async def test_names_the_document_forbids_are_refused_and_the_document_forbids_them(
        database_url, redis_url, nats_url, name):
    user = make_user(database_url)
    server = make_server(database_url, user)
    async with running_api(api_settings(database_url, redis_url, nats_url)) as client:
        doc = (await client.get("/openapi.json")).json()
        pattern = re.compile(doc["components"]["schemas"]["ProcessCreate"]["properties"]["process_name"]["pattern"])
        answer = await client.post(f"/servers/{server.id}/processes", json={"process_name": name},
                                   headers=user.headers)
    assert answer.status_code == 400
    assert not pattern.fullmatch(name)


async def test_names_the_document_allows_are_accepted(database_url, redis_url, nats_url):
    user = make_user(database_url)
    server = make_server(database_url, user)
    async with running_api(api_settings(database_url, redis_url, nats_url)) as client:
        doc = (await client.get("/openapi.json")).json()
        pattern = re.compile(doc["components"]["schemas"]["ProcessCreate"]["properties"]["process_name"]["pattern"])
        for name in ("nginx", "redis-server", "php-fpm8.2", "java_app", "ünïcode-名前"):
            assert pattern.fullmatch(name), name
            answer = await client.post(f"/servers/{server.id}/processes", json={"process_name": name},
                                       headers=user.headers)
            assert answer.status_code == 201, (name, answer.text)

"""The dashboard's acknowledgement buttons and maintenance page (web/ack_windows_routes.py) on
issue 18's services. Skipped where those services are not in the tree (the pages hide them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.integration.api.conftest import sql
from tests.integration.api.test_web_pages import csrf_of, sign_in
from tests.support.factories import make_process

pytest.importorskip("procwatch_api.alerts_service", reason="acknowledgement (issue 18) is not in this tree")
pytest.importorskip("procwatch_api.maintenance_service", reason="maintenance windows (issue 18) are not in this tree")
pytestmark = pytest.mark.integration


@pytest.fixture
async def web(client) -> httpx.AsyncClient:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(client.app), base_url="http://api.test") as c:
        yield c


async def test_acknowledge_and_unacknowledge_a_firing_alert(web, user, server, database_url):
    pid = make_process(database_url, server, "ackme")
    (alert_id,), = sql(
        database_url,
        "insert into alerts (watched_process_id, server_id, user_id, type, state, value, started_at, event_id)"
        " values (%s, %s, %s, 'process_down', 'firing', 0, now(), %s) returning id",
        (pid, server.id, user.id, f"web-ack-{pid}"))
    await sign_in(web, user.token)
    page = (await web.get("/ui/alerts")).text
    assert f'action="/ui/alerts/{alert_id}/ack"' in page and 'href="/ui/maintenance"' in page
    token = csrf_of(page)
    acked = await web.post(f"/ui/alerts/{alert_id}/ack", data={"csrf": token, "note": "on it", "back": "/ui/alerts"})
    assert acked.status_code == 303
    assert sql(database_url, "select acknowledged_by, ack_note from alerts where id = %s", (alert_id,)) == [
        (user.id, "on it")]
    assert f'action="/ui/alerts/{alert_id}/unack"' in (await web.get("/ui/alerts")).text
    unacked = await web.post(f"/ui/alerts/{alert_id}/unack", data={"csrf": token})
    assert unacked.status_code == 303
    assert sql(database_url, "select acknowledged_at from alerts where id = %s", (alert_id,)) == [(None,)]


async def test_add_end_and_delete_a_maintenance_window(web, user):
    await sign_in(web, user.token)
    token = csrf_of((await web.get("/ui/maintenance")).text)
    refused = await web.post("/ui/maintenance", data={"csrf": token, "name": "bad", "starts_at": "soon"})
    assert refused.status_code == 400 and 'id="w-starts_at-error"' in refused.text
    start = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M")
    end = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    added = await web.post("/ui/maintenance", data={"csrf": token, "name": "deploy", "starts_at": start,
                                                    "ends_at": end, "timezone": "UTC"})
    assert added.status_code == 303
    page = (await web.get("/ui/maintenance")).text
    assert "deploy" in page and "active" in page
    window_id = page.split('action="/ui/maintenance/')[1].split("/")[0]
    assert (await web.post(f"/ui/maintenance/{window_id}/end", data={"csrf": token})).status_code == 303
    assert (await web.post(f"/ui/maintenance/{window_id}/delete", data={"csrf": token})).status_code == 303
    assert "deploy" not in (await web.get("/ui/maintenance")).text

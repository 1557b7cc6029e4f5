"""An in-process API and ingest over the session's real servers (the same helpers their own suites use)."""

from __future__ import annotations

import pytest
from procwatch_ingest.app import IngestApp

from tests.integration.api.conftest import api_settings, running_api
from tests.integration.ingest.conftest import ingest_settings


@pytest.fixture(scope="module")
async def client(database_url, redis_url, nats_url):
    async with running_api(api_settings(database_url, redis_url, nats_url)) as c:
        yield c


@pytest.fixture(scope="module")
async def ingest(database_url, nats_url):
    app = IngestApp(ingest_settings(database_url, nats_url))
    await app.start()
    yield app
    await app.stop()

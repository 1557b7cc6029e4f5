"""GET /metrics of the workers (on their health port) after a real pipeline run: ingest, the
alerter and the notifier in-process on the session's NATS and PostgreSQL, a real webhook
receiver. One sample that brings a process down, one malformed message: the counters of every
stage move, the lag gauges are read from JetStream, nothing is labelled with an id.

The three apps share this process's registry, so each stage's counters are read from its own
service's endpoint and compared before / after (other tests may have moved them earlier)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx
import nats
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from procwatch_alerter.app import AlerterApp
from procwatch_contracts import subjects
from procwatch_ingest.app import IngestApp
from procwatch_messaging.jobs import PeriodicJob
from procwatch_notifier.app import NotifierApp
from procwatch_notifier.settings import NotifierSettings
from tests.integration.alerter.conftest import alerter_settings
from tests.integration.ingest.conftest import ingest_settings, publish, publish_sample, reading
from tests.integration.notifier.conftest import insert_channel
from tests.support.factories import make_process, make_server, make_user
from tests.support.receiver import Receiver

pytestmark = pytest.mark.integration

Sample = tuple[str, dict[str, str], float]


async def scrape(app) -> list[Sample]:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"http://127.0.0.1:{app.health.port}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(response.text)
            for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of `name`'s series whose labels include `labels` (0 when there is none)."""
    return sum(v for n, ls, v in samples if n == name and all(ls.get(k) == x for k, x in labels.items()))


async def until_moved(app, name: str, above: float, what: str, timeout: float = 20.0, **labels: str) -> list[Sample]:
    deadline = time.monotonic() + timeout
    while True:
        samples = await scrape(app)
        if value(samples, name, **labels) > above:
            return samples
        assert time.monotonic() < deadline, f"{what}: {name}{labels} stayed at {value(samples, name, **labels)}"
        await asyncio.sleep(0.1)


@pytest.fixture
async def nc(nats_url):
    client = await nats.connect(nats_url)
    yield client
    await client.drain()


async def test_every_stage_counts_what_it_did_on_its_metrics_endpoint(database_url, nats_url, nc):
    user = make_user(database_url)
    server = make_server(database_url, user)
    make_process(database_url, server, "nginx")
    receiver = Receiver()
    await receiver.start()
    insert_channel(database_url, user.id, "webhook", receiver.url("/hook"), secret="whsec_" + "A" * 32)
    ingest = IngestApp(ingest_settings(database_url, nats_url, health_port=0))
    alerter = AlerterApp(alerter_settings(database_url, nats_url, server.id, health_port=0))
    notifier = NotifierApp(_notifier_settings(database_url, nats_url, server.id))
    apps = [ingest, alerter, notifier]
    try:
        for app in apps:
            await app.start()
        before = {name: await scrape(app) for name, app in zip(("ingest", "alerter", "notifier"), apps, strict=True)}

        await publish_sample(nc, server, datetime.now(UTC), [reading("nginx", count=0)])
        await publish(nc, server, b"{not json")

        got = await until_moved(ingest, "procwatch_ingest_samples_total",
                                value(before["ingest"], "procwatch_ingest_samples_total", outcome="inserted"),
                                "a sample stored", outcome="inserted")
        got = await until_moved(ingest, "procwatch_deadletter_messages_total",
                                value(before["ingest"], "procwatch_deadletter_messages_total",
                                      subject=subjects.DEADLETTER_AGENT_SAMPLES, reason="malformed_json"),
                                "the malformed message dead-lettered",
                                subject=subjects.DEADLETTER_AGENT_SAMPLES, reason="malformed_json")
        for name in ("procwatch_consumer_messages_total", "procwatch_consumer_batch_size_messages_count",
                     "procwatch_consumer_batch_duration_seconds_count"):
            assert value(got, name, consumer="ingest-pull-loop") >= \
                value(before["ingest"], name, consumer="ingest-pull-loop") + 1, name
        assert value(got, "procwatch_ingest_messages_stored_total") >= \
            value(before["ingest"], "procwatch_ingest_messages_stored_total") + 1
        # Read from JetStream on the scrape: present for the consumer, caught up.
        assert [v for n, ls, v in got if n == "procwatch_consumer_pending_messages"
                and ls == {"consumer": "ingest-pull-loop"}] == [0.0]

        got = await until_moved(alerter, "procwatch_alerter_alerts_total",
                                value(before["alerter"], "procwatch_alerter_alerts_total",
                                      type="process_down", state="firing"),
                                "process_down fired", type="process_down", state="firing")
        assert value(got, "procwatch_alerter_sample_to_alert_seconds_count") == \
            value(before["alerter"], "procwatch_alerter_sample_to_alert_seconds_count") + 1
        assert value(got, "procwatch_alerter_samples_evaluated_total") >= \
            value(before["alerter"], "procwatch_alerter_samples_evaluated_total") + 1
        assert value(got, "procwatch_consumer_messages_total", consumer="alerter-sample-loop") >= \
            value(before["alerter"], "procwatch_consumer_messages_total", consumer="alerter-sample-loop") + 1
        # The lifecycle consumer (a FastStream subscriber) has its lag read too, under its durable name.
        lifecycle = f"{alerter.settings.durable}-lifecycle"
        assert [v for n, ls, v in got if n == "procwatch_consumer_pending_messages"
                and ls == {"consumer": lifecycle}] == [0.0]

        got = await until_moved(notifier, "procwatch_notifier_deliveries_total",
                                value(before["notifier"], "procwatch_notifier_deliveries_total", outcome="delivered"),
                                "the webhook delivered", outcome="delivered")
        assert receiver.at("/hook")
        assert value(got, "procwatch_notifier_deliveries_queued_total") >= \
            value(before["notifier"], "procwatch_notifier_deliveries_queued_total") + 1
        assert value(got, "procwatch_notifier_attempt_duration_seconds_count", channel_type="webhook",
                     result="ok") >= 1

        # No series carries an id: the label values are names, outcomes, reasons, never numbers.
        ids = {str(server.id), str(user.id)}
        assert not [(n, ls) for n, ls, _ in got if n.startswith("procwatch_") and ids & set(ls.values())]
    finally:
        for app in reversed(apps):
            await app.stop()
        await receiver.stop()


def _notifier_settings(database_url: str, nats_url: str, server_id: int) -> NotifierSettings:
    return NotifierSettings(
        database_url=database_url, nats_url=nats_url, durable=f"notifier-metrics-{server_id}",
        subject=f"alerts.{server_id}.*", allow_private_targets=True, fetch_timeout_s=0.5, poll_interval_s=0.2,
        request_timeout_s=3.0, health_port=0, deliver_policy="all")


def job_runs(job: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("procwatch_job_runs_total", {"job": job, "outcome": outcome}) or 0.0


async def test_a_periodic_job_counts_its_runs_and_stamps_its_last_success(database_url):
    name = f"metrics-test-job-{time.time_ns()}"
    calls = []

    async def work() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("second run fails")

    job = PeriodicJob(name, work, every_s=60, database_url=database_url)
    started = time.time()
    assert await job.run_once() is True
    assert await job.run_once() is False
    assert (job_runs(name, "ran"), job_runs(name, "failed")) == (1, 1)
    stamped = REGISTRY.get_sample_value("procwatch_job_last_success_timestamp_seconds", {"job": name})
    assert stamped is not None and started - 1 <= stamped <= time.time() + 1

"""procwatch_runtime.metrics: names and labels follow the rules (bounded labels, never an id), the
dead-letter reasons are a fixed set, and deploy/'s alert rules and dashboard name only metrics that
exist (plus promtool's own checks where it is installed)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from procwatch_api import hot_reads, routes
from procwatch_api.health import metrics_allowed
from procwatch_api.settings import ApiSettings
from procwatch_ingest import inbound
from procwatch_runtime import metrics
from procwatch_runtime.health import HealthServer

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
PROMETHEUS = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "procwatch-dashboard.json"
STAGES = ("consumer", "deadletter", "ingest", "alerter", "job", "notifier", "api")
UNITS = ("total", "seconds", "messages")
# Every label of every metric; each takes values from the code, its settings or a fixed set.
BOUNDED_LABELS = {"consumer", "subject", "reason", "outcome", "type", "state", "job", "channel_type", "result",
                  "route", "method", "status"}
METRIC_NAME = re.compile(r"\bprocwatch_[a-z_]+\b")


def test_every_metric_is_named_procwatch_stage_what_unit():
    assert len(metrics.ALL) == len(metrics.LABEL_NAMES) >= 20
    for metric in metrics.ALL:
        (family,) = metric.describe()
        exposed = family.name + ("_total" if family.type == "counter" else "")
        stage = exposed.split("_")[1]
        assert stage in STAGES, exposed
        assert exposed.endswith(tuple(f"_{unit}" for unit in UNITS)), exposed


def test_labels_are_bounded_and_never_an_id():
    for name, labels in metrics.LABEL_NAMES.items():
        assert set(labels) <= BOUNDED_LABELS, (name, labels)
        assert not [label for label in labels if label == "id" or label.endswith("_id")], name


def test_every_module_level_metric_is_in_ALL():
    defined = {value for value in vars(metrics).values()
               if isinstance(value, (metrics.Counter, metrics.Gauge, metrics.Histogram))}
    assert defined == set(metrics.ALL)


@pytest.mark.parametrize(("reason", "label"), [
    ("malformed_json: not valid JSON: expected value", "malformed_json"),
    ("unauthorized: agent key does not match the server", "unauthorized"),
    ("processing_failed: KeyError", "processing_failed"),
    ("invalid AlertEvent: Field required", "invalid"),
    ("invalid SampleRecorded: Input should be a valid integer", "invalid"),
    ("poison", "poison"),
    ("server 42 said something odd", "other"),
    ("", "other"),
])
def test_dead_letter_reasons_map_to_a_fixed_set(reason, label):
    assert metrics.deadletter_reason(reason) == label


def test_every_ingest_refusal_code_is_a_dead_letter_reason_label():
    assert set(inbound.REASON_CODES) <= metrics.DEADLETTER_REASONS


def test_the_hot_reads_name_the_route_templates_of_their_fastapi_routes():
    assert (hot_reads.PROCESSES_ROUTE, hot_reads.PROCESS_ROUTE) == (routes.PROCESSES, routes.PROCESS)


def test_api_metrics_are_answered_to_private_networks_only_by_default():
    networks = ApiSettings().metrics_allowed_networks
    for client in ("127.0.0.1", "::1", "10.1.2.3", "172.18.0.5", "192.168.1.10"):
        assert metrics_allowed(client, networks), client
    for client in ("203.0.113.7", "8.8.8.8", "2001:db8::1", None, "not-an-address"):
        assert not metrics_allowed(client, networks), client
    assert metrics_allowed("203.0.113.7", ["0.0.0.0/0"])


# --- deploy/ ------------------------------------------------------------------------------


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())]


@pytest.mark.parametrize("source", ["alert rules", "dashboard"])
def test_deploy_files_reference_only_metrics_that_exist(source):
    expressions = rule_expressions() if source == "alert rules" else dashboard_expressions()
    referenced = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
    assert referenced, source
    assert referenced <= metrics.exposed_names(), sorted(referenced - metrics.exposed_names())


def test_the_alert_rules_cover_what_the_issue_asks_for():
    expressions = " ".join(rule_expressions())
    for needed in ("procwatch_consumer_pending_messages", "procwatch_deadletter_messages_total",
                   "procwatch_notifier_deliveries_total", "procwatch_job_last_success_timestamp_seconds"):
        assert needed in expressions, needed


def test_the_dashboard_has_a_panel_per_stage():
    expressions = " ".join(dashboard_expressions())
    for stage in STAGES:
        assert f"procwatch_{stage}_" in expressions, stage


def test_the_scrape_config_scrapes_every_service_and_loads_the_rules():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"procwatch-api", "procwatch-ingest", "procwatch-alerter", "procwatch-notifier"}
    for name, job in jobs.items():
        (sd,) = job["dns_sd_configs"]
        assert sd["names"] == [name.removeprefix("procwatch-")]  # the compose service name
        assert job["metrics_path"] == "/metrics"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (apt-get install prometheus)")
@pytest.mark.parametrize("args", [["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"],
                                  ["test", "rules", "alerts_test.yml"]])
def test_promtool_accepts_the_config_and_the_rules_and_their_tests(args):
    out = subprocess.run(["promtool", *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_network_that_does_not_parse_fails_the_settings_at_start():
    with pytest.raises(ValueError, match="metrics_allowed_networks"):
        ApiSettings(metrics_allowed_networks=["10.0.0.0/33"])


async def test_the_health_endpoint_serves_metrics_after_its_refresh_hooks():
    server = HealthServer({}, port=0, timeout_s=0.5)
    refreshed = []

    async def refresh() -> None:
        metrics.CONSUMER_PENDING.labels("unit-test-loop").set(7)
        refreshed.append(True)

    async def broken() -> None:
        raise RuntimeError("JetStream away")

    server.on_scrape += [broken, refresh]
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        response = (await reader.read()).decode()
        writer.close()
    finally:
        await server.stop()
    head, body = response.split("\r\n\r\n", 1)
    assert head.startswith("HTTP/1.1 200 ") and "Content-Type: text/plain" in head
    assert refreshed == [True]  # a failing hook does not stop the others or the scrape
    assert 'procwatch_consumer_pending_messages{consumer="unit-test-loop"} 7.0' in body

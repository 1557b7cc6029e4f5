"""Every Prometheus metric of procwatch, defined once here; the services import and observe.

Names: `procwatch_<stage>_<what>_<unit>`. Labels are bounded: stage / consumer / job / route
names from the code and its settings, outcomes and reasons from the fixed sets below, never a
server, process, user, channel or alert id (docs/metrics.md lists every metric and what to alert
on). Hot paths observe once per batch (`inc(n)`, one histogram observation), never per sample.

Served by the workers' health endpoint (procwatch_runtime.health, `GET /metrics`) and by the API
(`GET /metrics`, procwatch_api.health; requests measured by procwatch_api.request_metrics). The
API's worker processes write to one directory (prometheus_client's multiprocess mode,
`PROMETHEUS_MULTIPROC_DIR`, set by the API's supervisor before it spawns them); `render()`
aggregates it when set.
"""

from __future__ import annotations

import os
import re
from typing import TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
Metric = TypeVar("Metric", Counter, Gauge, Histogram)

# --- fixed label values -------------------------------------------------------------------

# Dead-letter reasons: the ingest refusal codes (procwatch_ingest.inbound.REASON_CODES, checked
# by tests/unit/runtime/test_metrics.py), then the consumers' generic ones. Anything else is "other".
DEADLETTER_REASONS = frozenset({
    "too_large", "bad_subject", "malformed_json", "invalid_message", "too_many_processes",
    "server_mismatch", "sampled_at_in_future", "sampled_at_too_old", "missing_credentials",
    "unknown_server", "unauthorized",
    "invalid", "processing_failed", "poison", "other",
})
INGEST_SAMPLE_OUTCOMES = ("inserted", "duplicate", "dropped")
JOB_OUTCOMES = ("ran", "skipped", "failed")
# The notifier's settlements of a delivery (procwatch_notifier.service.Sender).
DELIVERY_OUTCOMES = ("delivered", "retry", "failed", "dead", "skipped", "disabled")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_REASON_WORD = re.compile(r"[a-z_]+")


def deadletter_reason(reason: str) -> str:
    """The label of a free-text `Procwatch-Reason`: its leading code word if it is a known one
    ("processing_failed: KeyError" -> processing_failed, "invalid AlertEvent: ..." -> invalid)."""
    match = _REASON_WORD.match(reason)
    word = match.group(0) if match else ""
    return word if word in DEADLETTER_REASONS else "other"


# --- buckets ------------------------------------------------------------------------------

BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ALERT_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
REQUEST_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
API_SECONDS_BUCKETS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
JOB_SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)

# --- definitions -------------------------------------------------------------------------

ALL: list[Counter | Gauge | Histogram] = []  # in definition order
LABEL_NAMES: dict[str, tuple[str, ...]] = {}  # metric name (as exposed, counters without _total) -> labels


def _defined(metric: Metric, name: str, labels: tuple[str, ...]) -> Metric:
    ALL.append(metric)
    LABEL_NAMES[name.removesuffix("_total")] = labels
    return metric


def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
    return _defined(Counter(name, doc, labels), name, labels)


def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
    # "max" across the API's processes (multiprocess mode); one process elsewhere.
    return _defined(Gauge(name, doc, labels, multiprocess_mode="max"), name, labels)


def histogram(name: str, doc: str, labels: tuple[str, ...] = (), *, buckets: tuple[float, ...]) -> Histogram:
    return _defined(Histogram(name, doc, labels, buckets=buckets), name, labels)


# --- consumers (every batch pull loop: ingest, alerter, notifier) ----------------------------

CONSUMER_MESSAGES = counter(
    "procwatch_consumer_messages_total", "Messages handed to the consumer's handler.", ("consumer",))
CONSUMER_BATCH_SIZE = histogram(
    "procwatch_consumer_batch_size_messages", "Messages per batch handed to the handler.", ("consumer",),
    buckets=BATCH_SIZE_BUCKETS)
CONSUMER_BATCH_DURATION = histogram(
    "procwatch_consumer_batch_duration_seconds", "Time the handler took for one batch (commit, publish, ack).",
    ("consumer",), buckets=BATCH_SECONDS_BUCKETS)
# Read from JetStream's consumer info on scrape (procwatch_messaging.worker), not per message.
CONSUMER_PENDING = gauge(
    "procwatch_consumer_pending_messages", "Messages in the stream not yet delivered to the consumer (lag).",
    ("consumer",))
CONSUMER_ACK_PENDING = gauge(
    "procwatch_consumer_ack_pending_messages", "Messages delivered and not yet acked.",
    ("consumer",))
CONSUMER_REDELIVERED = gauge(
    "procwatch_consumer_redelivered_messages", "Messages delivered more than once and not yet acked.",
    ("consumer",))

DEADLETTERS = counter(
    "procwatch_deadletter_messages_total", "Messages parked on a dead-letter subject, by reason.",
    ("subject", "reason"))

# --- ingest -----------------------------------------------------------------------------

INGEST_SAMPLES = counter(
    "procwatch_ingest_samples_total", "Process samples of committed messages, by outcome "
    "(inserted; duplicate of a stored one; dropped: unknown or paused process name).", ("outcome",))
INGEST_MESSAGES_STORED = counter(
    "procwatch_ingest_messages_stored_total", "Agent messages committed (their samples stored).")
INGEST_EVENTS_PUBLISHED = counter(
    "procwatch_ingest_events_published_total", "SampleRecorded events published after commit.")
INGEST_BATCHES_RETRIED = counter(
    "procwatch_ingest_batches_retried_total", "Batches handed back for redelivery (database or broker trouble).")

# --- alerter ----------------------------------------------------------------------------

ALERTER_SAMPLES_EVALUATED = counter(
    "procwatch_alerter_samples_evaluated_total", "Process samples evaluated against the alert rules.")
ALERTER_ALERTS = counter(
    "procwatch_alerter_alerts_total", "Alert events written (outbox), by type and state.", ("type", "state"))
ALERTER_SAMPLE_TO_ALERT = histogram(
    "procwatch_alerter_sample_to_alert_seconds", "From a sample's sampled_at (agent clock) to the alert it "
    "raised, committed and handed to the publisher (observed per alert: alerts are rare).", buckets=ALERT_LATENCY_BUCKETS)

# --- periodic jobs (procwatch_messaging.jobs: offline-servers, ingest-stats, ...) ------------

JOB_RUNS = counter(
    "procwatch_job_runs_total", "Periodic job turns, by outcome (skipped: another replica holds the lock).",
    ("job", "outcome"))
JOB_DURATION = histogram(
    "procwatch_job_duration_seconds", "Duration of a periodic job's run.", ("job",), buckets=JOB_SECONDS_BUCKETS)
JOB_LAST_SUCCESS = gauge(
    "procwatch_job_last_success_timestamp_seconds", "Unix time of the job's last successful run on this replica.",
    ("job",))

# --- notifier ---------------------------------------------------------------------------

NOTIFIER_DELIVERIES_QUEUED = counter(
    "procwatch_notifier_deliveries_queued_total", "Delivery rows queued from alert events (one per matching channel).")
NOTIFIER_DELIVERIES = counter(
    "procwatch_notifier_deliveries_total", "Deliveries settled, by outcome.", ("outcome",))
NOTIFIER_ATTEMPT_DURATION = histogram(
    "procwatch_notifier_attempt_duration_seconds", "One send attempt to a channel, by channel type and result.",
    ("channel_type", "result"), buckets=REQUEST_SECONDS_BUCKETS)

# --- api --------------------------------------------------------------------------------

# One histogram, no separate counter: its `_count` is the request count by route, method and status,
# and each request costs one observation (two writes in the API's multiprocess mode, not three).
API_REQUEST_DURATION = histogram(
    "procwatch_api_request_duration_seconds", "HTTP requests answered and their latency, by route template, "
    "method and status (`_count`: the number of requests).", ("route", "method", "status"),
    buckets=API_SECONDS_BUCKETS)


def exposed_names() -> frozenset[str]:
    """Every series name a scrape can show (counters' `_total`, histograms' `_bucket` / `_sum` /
    `_count`): what deploy/'s rules and dashboard may reference."""
    names: set[str] = set()
    for metric in ALL:
        for family in metric.describe():
            base = family.name
            if family.type == "counter":
                names |= {f"{base}_total", f"{base}_created"}
            elif family.type == "histogram":
                names |= {f"{base}_bucket", f"{base}_sum", f"{base}_count", f"{base}_created"}
            else:
                names.add(base)
    return frozenset(names)


def render() -> tuple[bytes, str]:
    """The exposition text of this process (or, in multiprocess mode, of every process writing to
    PROMETHEUS_MULTIPROC_DIR) and its content type."""
    if os.environ.get(MULTIPROC_DIR_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST

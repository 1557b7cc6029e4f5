"""Standard Webhooks signing, checked with the reference receiver library (standardwebhooks)."""

from __future__ import annotations

import base64
import time

import orjson
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from procwatch_domain.crypto import new_webhook_secret
from procwatch_notify import webhooks
from procwatch_notify.render import render

pytestmark = pytest.mark.unit


def test_a_signed_webhook_verifies_with_the_standard_library(make_alert):
    secret = new_webhook_secret()
    event = make_alert()
    request = render("webhook", "standard", event)
    now = int(time.time())
    headers = webhooks.headers(secret, event.id, now, request.body)
    payload = Webhook(secret).verify(request.body, headers)
    assert payload["type"] == "process.down"
    assert payload["data"]["id"] == event.id
    assert payload["timestamp"] == event.occurred_at.isoformat()
    assert headers["webhook-id"] == event.id and headers["webhook-timestamp"] == str(now)


def test_a_tampered_body_or_another_secret_does_not_verify(make_alert):
    secret = new_webhook_secret()
    event = make_alert()
    body = render("webhook", "standard", event).body
    headers = webhooks.headers(secret, event.id, int(time.time()), body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"nginx", b"nginy"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_webhook_secret()).verify(body, headers)


def test_signature_is_hmac_of_id_timestamp_body_with_the_decoded_secret():
    key = b"0123456789abcdef0123456789abcdef"
    secret = "whsec_" + base64.b64encode(key).decode()
    import hashlib
    import hmac
    expected = base64.b64encode(hmac.new(key, b"msg_1.1700000000.{}", hashlib.sha256).digest()).decode()
    assert webhooks.sign(secret, "msg_1", 1700000000, b"{}") == f"v1,{expected}"


@pytest.mark.parametrize(("alert_type", "state", "name"), [
    ("process_down", "firing", "process.down"),
    ("process_down", "resolved", "process.down.resolved"),
    ("process_restarted", "firing", "process.restarted"),
    ("process_cpu_high", "firing", "process.cpu_high"),
    ("process_memory_high", "resolved", "process.memory_high.resolved"),
    ("server_offline", "firing", "server.offline"),
    ("process_count_out_of_range", "firing", "process.count_out_of_range"),
    ("process_count_out_of_range", "resolved", "process.count_out_of_range.resolved"),
])
def test_event_type_names(alert_type, state, name):
    assert webhooks.event_type(alert_type, state) == name


def test_alertmanager_format_is_version_4(make_alert):
    event = make_alert("process_cpu_high", "firing", value=93.5, threshold=50.0)
    body = orjson.loads(render("webhook", "alertmanager", event).body)
    assert body["version"] == "4" and body["status"] == "firing" and body["truncatedAlerts"] == 0
    assert set(body) >= {"groupKey", "receiver", "groupLabels", "commonLabels", "commonAnnotations",
                         "externalURL", "alerts"}
    (one,) = body["alerts"]
    assert one["labels"]["alertname"] == "process_cpu_high" and one["labels"]["process"] == "nginx"
    assert one["endsAt"] == "0001-01-01T00:00:00Z" and one["startsAt"].endswith("Z")
    assert len(one["fingerprint"]) == 16
    resolved = orjson.loads(render("webhook", "alertmanager", make_alert("process_cpu_high", "resolved")).body)
    assert resolved["status"] == "resolved" and resolved["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
    assert resolved["alerts"][0]["fingerprint"] == one["fingerprint"]  # same alert, same fingerprint

"""Standard Webhooks 1.0 (https://www.standardwebhooks.com): signing and the event body.

Headers of every webhook:
    webhook-id         the alert event's id (the same on every retry: receivers dedupe by it)
    webhook-timestamp  Unix seconds of this attempt
    webhook-signature  "v1,<base64 HMAC-SHA256 of '{id}.{timestamp}.{body}'>" keyed with the
                       channel's secret: the bytes of the base64 after "whsec_"
Body: {"type": "process.down", "timestamp": "<the event's occurred_at>", "data": <AlertEvent>}.

Event types: the alert type with its first "_" made a dot (process_down -> process.down,
server_offline -> server.offline), and ".resolved" appended when the alert resolves
(process.down.resolved). One-shot alerts (process.restarted) never resolve.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import orjson

from procwatch_contracts.messages import AlertEvent

# New secrets: procwatch_domain.crypto.new_webhook_secret (the API creates them).
SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"


def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret (base64, padding optional)."""
    encoded = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    if not key:
        raise ValueError("empty webhook secret")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for one attempt."""
    signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def event_type(alert_type: str, state: str) -> str:
    """process_down + firing -> process.down; + resolved -> process.down.resolved."""
    subject, _, what = alert_type.partition("_")
    name = f"{subject}.{what}" if what else subject
    return f"{name}.resolved" if state == "resolved" else name


def body(event: AlertEvent) -> bytes:
    """The Standard Webhooks JSON body for one alert event."""
    return orjson.dumps({
        "type": event_type(event.type, event.state),
        "timestamp": event.occurred_at.isoformat(),
        "data": event.model_dump(mode="json"),
    })


def headers(secret: str, msg_id: str, timestamp: int, payload: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, payload),
    }

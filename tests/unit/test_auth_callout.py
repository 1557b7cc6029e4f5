"""The auth callout's pure parts: NATS's NKey and JWT encodings, and the admission decision."""

from __future__ import annotations

import asyncio

import pytest

from procwatch.stack import Backoff
from procwatch_domain.secrets import hash_secret
from procwatch_ingest.auth_callout import Signer, account_public_key, decode_claims, new_account_seed, respond

pytestmark = pytest.mark.unit

# nats-server's own test pair (server/auth_callout_test.go): our encoding must give the same public key.
NATS_TEST_SEED = "SAANDLKMXL6CUS3CP52WIXBEDN6YJ545GDKC65U5JZPPV6WH6ESWUA6YAI"
NATS_TEST_ISSUER = "ABJHLOVMPA4CI6R5KLNGOB4GSLNIY7IOUPAJC4YFNDLQVIOBYQGUWVLA"


def test_nkey_encoding_matches_nats():
    assert account_public_key(NATS_TEST_SEED) == NATS_TEST_ISSUER
    seed = new_account_seed()
    assert seed.startswith("SA") and account_public_key(seed).startswith("A")
    with pytest.raises(ValueError):
        # One character changed mid-seed (the last one also carries base32 padding bits, which
        # decoding ignores): CRC-16 catches every error burst of up to 16 bits.
        account_public_key(seed[:10] + ("A" if seed[10] != "A" else "B") + seed[11:])


def _request(user: str, password: str) -> str:
    return Signer(new_account_seed()).encode({"nats": {
        "user_nkey": "UUSER", "server_id": {"id": "NSERVER"},
        "connect_opts": {"user": user, "pass": password}, "type": "authorization_request", "version": 2}})


def _decide(user: str, password: str, stored: dict[int, str]) -> dict:
    async def key_hash_of(server_id: int) -> str | None:
        return stored.get(server_id)

    signer = Signer(NATS_TEST_SEED)
    token = asyncio.run(respond(_request(user, password), signer, key_hash_of))
    claims = decode_claims(token)
    assert (claims["iss"], claims["sub"], claims["aud"]) == (NATS_TEST_ISSUER, "UUSER", "NSERVER")
    return claims["nats"]


def test_an_agent_with_its_key_gets_a_user_limited_to_its_subjects():
    granted = _decide("agent-12", "pwa_key", {12: hash_secret("pwa_key")})
    assert "error" not in granted
    user = decode_claims(granted["jwt"])
    assert user["aud"] == "$G" and user["sub"] == "UUSER" and user["iss"] == NATS_TEST_ISSUER
    assert user["nats"]["pub"]["allow"] == ["agent.samples.12", "agent.config.12"]
    assert user["nats"]["sub"]["allow"] == ["_INBOX.agent.12.>", "processes.changed.12"]


@pytest.mark.parametrize("user,password", [
    ("agent-12", "pwa_wrong"), ("agent-13", "pwa_key"), ("agent-12", ""), ("services", "pwa_key"),
    ("agent-012", "pwa_key"), ("agent-12 ", "pwa_key"), ("", ""),
])
def test_anything_else_is_refused(user, password):
    refused = _decide(user, password, {12: hash_secret("pwa_key")})
    assert refused["error"] and "jwt" not in refused


def test_backoff_doubles_to_a_ceiling_and_fires_once_per_death():
    b = Backoff()
    assert b.noticed(100.0) == 1.0 and b.noticed(100.1) is None
    assert not b.due(100.5) and b.due(101.0) and not b.due(101.0)
    delays = []
    for death in range(8):
        now = 200.0 + death * 100
        delays.append(b.noticed(now))
        assert b.due(now + 30)
    assert delays == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]

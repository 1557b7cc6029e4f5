"""NATS auth callout: per-agent broker identities checked against the database.

nats-server (2.10+) hands every connection that is not one of its configured users to this
responder on `$SYS.REQ.USER.AUTH`. An agent connects with user `agent-<server_id>` and its agent
key as the password; the responder compares sha256(key) with `servers.agent_key_hash` and answers
with a user JWT, signed by the callout issuer's account key, that allows exactly what
deploy/nats/render_agents.py allows a configured agent user:

- publish `agent.samples.<id>` and `agent.config.<id>` (its samples, its watch-list request),
- subscribe `_INBOX.agent.<id>.>` (its replies) and `processes.changed.<id>`.

Anything else (another name, a wrong key, a deleted server) is refused. So a server created
through the API can connect at once, with no broker config per agent (docs/decisions.md).

The JWT and NKey encodings are NATS's (nats-io/jwt v2, nats-io/nkeys): a JWT is
`base64url(header).base64url(claims).base64url(ed25519 signature)` with header alg
`ed25519-nkey`; an NKey is base32 of prefix byte(s) + key + CRC16 (XMODEM), little endian.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import secrets
import signal
import struct
import time
from collections.abc import Awaitable, Callable

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from procwatch_contracts import subjects
from procwatch_domain.secrets import secret_matches
from procwatch_runtime.settings import ConnectionSettings

log = logging.getLogger("procwatch.nats_auth")

AUTH_CALLOUT_SUBJECT = "$SYS.REQ.USER.AUTH"
GLOBAL_ACCOUNT = "$G"  # config-mode users without an `accounts` block live here
AGENT_USER = re.compile(r"^agent-([1-9][0-9]{0,18})$")

_PREFIX_SEED = 18 << 3
_PREFIX_ACCOUNT = 0


class NatsAuthSettings(ConnectionSettings):
    model_config = SettingsConfigDict(env_prefix="PROCWATCH_NATS_AUTH_", extra="ignore")

    # PROCWATCH_NATS_AUTH_ISSUER_SEED: the account NKey seed ("SA…") whose public key is the
    # broker's `auth_callout { issuer }`; it signs the users this responder admits.
    issuer_seed: SecretStr = SecretStr("")
    # The queue group, so several responders can share the work.
    queue: str = "procwatch-nats-auth"


# --- NKeys ---------------------------------------------------------------------------


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw + struct.pack("<H", _crc16(raw))).decode().rstrip("=")


def _unb32(text: str) -> bytes:
    raw = base64.b32decode(text + "=" * (-len(text) % 8))
    body, (crc,) = raw[:-2], struct.unpack("<H", raw[-2:])
    if _crc16(body) != crc:
        raise ValueError("NKey checksum mismatch")
    return body


def new_account_seed() -> str:
    """A fresh account NKey seed ("SA…")."""
    return encode_account_seed(secrets.token_bytes(32))


def encode_account_seed(raw: bytes) -> str:
    return _b32(bytes([_PREFIX_SEED | (_PREFIX_ACCOUNT >> 5), (_PREFIX_ACCOUNT & 31) << 3]) + raw)


def _seed_bytes(seed: str) -> bytes:
    body = _unb32(seed)
    if body[0] & 0xF8 != _PREFIX_SEED or ((body[0] & 7) << 5 | (body[1] & 0xF8) >> 3) != _PREFIX_ACCOUNT:
        raise ValueError("not an account NKey seed")
    return body[2:]


def account_public_key(seed: str) -> str:
    """The account public NKey ("A…") of `seed`: what the broker's `auth_callout.issuer` names."""
    from nacl.signing import SigningKey

    return _b32(bytes([_PREFIX_ACCOUNT]) + bytes(SigningKey(_seed_bytes(seed)).verify_key))


# --- JWTs --------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def decode_claims(token: str) -> dict:
    """The claims of a JWT, unverified: the request comes from the broker on a subject only the
    broker and the services user can publish to."""
    return json.loads(_unb64(token.split(".")[1]))


class Signer:
    def __init__(self, seed: str) -> None:
        from nacl.signing import SigningKey

        self._key = SigningKey(_seed_bytes(seed))
        self.public_key = _b32(bytes([_PREFIX_ACCOUNT]) + bytes(self._key.verify_key))

    def encode(self, claims: dict) -> str:
        claims = {"iat": int(time.time()), "iss": self.public_key, **claims}
        claims["jti"] = base64.b32encode(hashlib.sha512(json.dumps(claims, sort_keys=True).encode()).digest()[:32]
                                         ).decode().rstrip("=")
        head = _b64(b'{"typ":"JWT","alg":"ed25519-nkey"}') + "." + _b64(json.dumps(claims).encode())
        return head + "." + _b64(self._key.sign(head.encode()).signature)


def agent_permissions(server_id: int) -> dict:
    """The same grants as deploy/nats/render_agents.py's `agent_permissions`."""
    return {
        "pub": {"allow": [subjects.agent_samples(server_id), subjects.agent_config(server_id)]},
        "sub": {"allow": [f"_INBOX.agent.{server_id}.>", subjects.processes_changed(server_id)]},
        "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2,
    }


KeyHashLookup = Callable[[int], Awaitable[str | None]]


async def respond(request_jwt: str, signer: Signer, key_hash_of: KeyHashLookup) -> str:
    """The signed authorization response to one request: a user JWT for a known agent with its
    key, else an error (the broker then refuses the connection)."""
    request = decode_claims(request_jwt)["nats"]
    user_nkey = request["user_nkey"]
    server_nkey = request["server_id"]["id"]
    opts = request.get("connect_opts") or {}
    user, password = opts.get("user") or "", opts.get("pass") or ""
    match = AGENT_USER.match(user)
    server_id = int(match.group(1)) if match else None
    stored = await key_hash_of(server_id) if server_id is not None and password else None
    response: dict = {"type": "authorization_response", "version": 2}
    if stored is not None and secret_matches(password, stored):
        response["jwt"] = signer.encode({"sub": user_nkey, "name": user, "aud": GLOBAL_ACCOUNT,
                                         "nats": agent_permissions(server_id)})
        log.info("agent admitted", extra={"server_id": server_id})
    else:
        response["error"] = "not authorized"
        # The user name only: never the password.
        log.warning("broker connection refused", extra={"user": user[:64]})
    return signer.encode({"sub": user_nkey, "aud": server_nkey, "nats": response})


# --- the responder -----------------------------------------------------------------------


async def serve(settings: NatsAuthSettings, stop: asyncio.Event) -> None:
    import nats
    import psycopg

    from procwatch_db.urls import libpq_url

    signer = Signer(settings.issuer_seed.get_secret_value())
    db_url = libpq_url(str(settings.database_url))
    conn: psycopg.AsyncConnection | None = None
    lock = asyncio.Lock()

    async def key_hash_of(server_id: int) -> str | None:
        nonlocal conn
        async with lock:  # one connection, one query at a time: connects are rare
            for attempt in (1, 2):
                try:
                    if conn is None or conn.closed:
                        conn = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
                    row = await (await conn.execute(
                        "select agent_key_hash from servers where id = %s", (server_id,))).fetchone()
                    return row[0] if row else None
                except psycopg.OperationalError:
                    conn = None
                    if attempt == 2:
                        raise
        return None

    async def handle(msg) -> None:
        try:
            await msg.respond((await respond(msg.data.decode(), signer, key_hash_of)).encode())
        except Exception as exc:  # the broker times the connection out; never the responder down
            log.warning("auth request not answered", extra={"error": type(exc).__name__})

    nc = await nats.connect(settings.nats_servers, max_reconnect_attempts=-1, reconnect_time_wait=1,
                            name="procwatch-nats-auth")
    await nc.subscribe(AUTH_CALLOUT_SUBJECT, queue=settings.queue, cb=handle)
    await nc.flush()
    log.info("nats auth callout responder ready", extra={"issuer": signer.public_key})
    try:
        await stop.wait()
    finally:
        await nc.drain()
        if conn is not None:
            await conn.close()


def main() -> None:
    settings = NatsAuthSettings()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    asyncio.run(run())

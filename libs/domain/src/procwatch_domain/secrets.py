"""Bearer tokens and agent keys: generated here, stored only as hashes.

Both are 256-bit random values, so a fast hash (sha256) is enough: there is no
low-entropy password to protect against guessing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as _secrets

API_TOKEN_PREFIX = "pwt_"
AGENT_KEY_PREFIX = "pwa_"


def new_api_token() -> str:
    return API_TOKEN_PREFIX + _secrets.token_urlsafe(32)


def new_agent_key() -> str:
    return AGENT_KEY_PREFIX + _secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)

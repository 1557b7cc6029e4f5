"""Secrets that must be read back (a channel's URL, its webhook signing secret): encrypted at rest.

Unlike API tokens and agent keys (stored as hashes, `procwatch_domain.secrets`),
the notifier needs these in clear to send, so they are stored as Fernet tokens
(AES-128-CBC + HMAC-SHA256, with a timestamp). The key(s) come from the
environment variable PROCWATCH_SECRETS_KEY: comma-separated Fernet keys, newest
first. The newest key encrypts; every key decrypts (MultiFernet), so a key can be
rotated without downtime: put the new key first, re-encrypt (`procwatch admin
rotate-secrets-key`), then drop the old one. See docs/notifications.md.
"""

from __future__ import annotations

import base64
import functools
import os
import secrets as _secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

SECRETS_KEY_ENV = "PROCWATCH_SECRETS_KEY"
# `procwatch up`: the key file under the data directory.
SECRETS_KEY_FILE = "secrets.key"
WEBHOOK_SECRET_PREFIX = "whsec_"


# The keys in use, newest first: the newest encrypts, any decrypts.
Keyring = MultiFernet


class SecretsKeyError(RuntimeError):
    """PROCWATCH_SECRETS_KEY is missing or not a list of Fernet keys."""


class SecretUnreadable(ValueError):
    """A stored token that none of the configured keys decrypts (wrong or dropped key)."""


def new_key() -> str:
    """A fresh Fernet key (url-safe base64 of 32 random bytes)."""
    return Fernet.generate_key().decode("ascii")


def new_webhook_secret() -> str:
    """A Standard Webhooks signing secret: `whsec_` + base64 of 24 random bytes."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(24)).decode("ascii")


def keys_of(value: str | None) -> list[str]:
    """The keys of a PROCWATCH_SECRETS_KEY value (comma-separated, newest first)."""
    return [k.strip() for k in (value or "").split(",") if k.strip()]


def keyring(value: str | None) -> MultiFernet:
    """The keys of a PROCWATCH_SECRETS_KEY value, newest first, as one MultiFernet."""
    keys = keys_of(value)
    if not keys:
        raise SecretsKeyError(
            f"{SECRETS_KEY_ENV} is not set: channel secrets are encrypted with it. Create one with "
            "`procwatch admin new-secrets-key` (`procwatch up` generates one under its data dir)."
        )
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key))
        except ValueError:
            # Never echo the key itself: it is a secret.
            raise SecretsKeyError(
                f"{SECRETS_KEY_ENV}: key #{position} is not a Fernet key (url-safe base64 of 32 bytes)"
            ) from None
    return MultiFernet(fernets)


@functools.lru_cache(maxsize=4)
def _keyring_cached(value: str | None) -> MultiFernet:
    return keyring(value)


def _env_keyring() -> MultiFernet:
    # Cached per value of the variable: a changed environment (tests, a rotation) takes effect.
    return _keyring_cached(os.environ.get(SECRETS_KEY_ENV))


def check_key() -> None:
    """Raise SecretsKeyError now if the key is missing or malformed (a service checks at startup)."""
    _env_keyring()


def encrypt(text: str) -> str:
    return _env_keyring().encrypt(text.encode("utf-8")).decode("ascii")


def _unreadable() -> SecretUnreadable:
    return SecretUnreadable(f"no key in {SECRETS_KEY_ENV} decrypts this secret (was a key dropped?)")


def decrypt(token: str) -> str:
    try:
        return _env_keyring().decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise _unreadable() from None


def reencrypt(token: str, keys: MultiFernet | None = None) -> str:
    """The same plaintext, encrypted with the newest key (for a key rotation); `keys`: the
    keyring to use instead of PROCWATCH_SECRETS_KEY's."""
    try:
        return (keys or _env_keyring()).rotate(token.encode("ascii")).decode("ascii")
    except InvalidToken:
        raise _unreadable() from None


def ensure_key_file(path: Path) -> str:
    """The key(s) stored in `path`, created (a new key, mode 0600) when the file does not exist.
    `procwatch up` keeps its key here, under the data directory."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created 0600 from the start: the key is never readable by others, even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new_key() + "\n")
    return path.read_text().strip()

"""procwatch_domain.crypto (secrets encrypted at rest) and how channel targets are shown masked."""

from __future__ import annotations

import base64

import pytest
from cryptography.fernet import Fernet

from procwatch_domain import crypto
from procwatch_domain.channels import email_hint, email_problem, mask_url


@pytest.fixture
def key(monkeypatch) -> str:
    value = crypto.new_key()
    monkeypatch.setenv(crypto.SECRETS_KEY_ENV, value)
    return value


def test_round_trip_and_no_plaintext_in_the_token(key):
    url = "https://hooks.slack.com/services/T000/B000/XXXXsecretXXXX"
    token = crypto.encrypt(url)
    assert "XXXXsecretXXXX" not in token and "slack" not in token
    assert crypto.decrypt(token) == url
    assert crypto.encrypt(url) != token  # a fresh IV each time


def test_rotation_new_key_first_old_tokens_still_read_then_reencrypted(monkeypatch, key):
    old_token = crypto.encrypt("whsec_abc")
    new = crypto.new_key()
    monkeypatch.setenv(crypto.SECRETS_KEY_ENV, f"{new}, {key}")
    assert crypto.decrypt(old_token) == "whsec_abc"
    rotated = crypto.reencrypt(old_token)
    assert Fernet(new.encode()).decrypt(rotated.encode()) == b"whsec_abc"
    # New tokens use the newest key; once the old key is dropped, rotated tokens still read.
    fresh = crypto.encrypt("x")
    monkeypatch.setenv(crypto.SECRETS_KEY_ENV, new)
    assert crypto.decrypt(rotated) == "whsec_abc" and crypto.decrypt(fresh) == "x"
    with pytest.raises(crypto.SecretUnreadable):
        crypto.decrypt(old_token)


@pytest.mark.parametrize("value", [None, "", " , "])
def test_missing_key_is_a_clear_error(monkeypatch, value):
    if value is None:
        monkeypatch.delenv(crypto.SECRETS_KEY_ENV, raising=False)
    else:
        monkeypatch.setenv(crypto.SECRETS_KEY_ENV, value)
    with pytest.raises(crypto.SecretsKeyError, match="PROCWATCH_SECRETS_KEY is not set"):
        crypto.encrypt("x")
    with pytest.raises(crypto.SecretsKeyError):
        crypto.check_key()


def test_malformed_key_names_its_position_never_its_value(monkeypatch, key):
    monkeypatch.setenv(crypto.SECRETS_KEY_ENV, f"{key},not-a-key-s3cr3t")
    with pytest.raises(crypto.SecretsKeyError) as info:
        crypto.encrypt("x")
    assert "#2" in str(info.value) and "s3cr3t" not in str(info.value)


def test_webhook_secret_is_whsec_and_24_random_bytes():
    first, second = crypto.new_webhook_secret(), crypto.new_webhook_secret()
    assert first.startswith("whsec_") and first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 24


def test_key_file_is_created_once_with_mode_0600(tmp_path):
    path = tmp_path / "secrets.key"
    value = crypto.ensure_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert crypto.ensure_key_file(path) == value
    crypto.keyring(value)  # a valid key


@pytest.mark.parametrize(("url", "hint"), [
    ("https://hooks.slack.com/services/T000AAAA/B000BBBB/XXXXXXXXXXXXXXXXXXXXXXXX",
     "https://hooks.slack.com/services/T0…***"),
    ("https://discord.com/api/webhooks/123456789012345678/abcDEF-token",
     "https://discord.com/api/webhooks/12…***"),
    ("https://example.com/hook?token=s3cr3t", "https://example.com/ho…***"),
    ("https://example.com:8443/a1b2c3", "https://example.com:8443/a1…***"),
    ("https://example.com", "https://example.com"),
    ("http://[::1]:9000/notify", "http://[::1]:9000/notify"),
])
def test_mask_url_keeps_host_and_plain_words_hides_the_rest(url, hint):
    assert mask_url(url) == hint


def test_mask_url_never_shows_a_long_token_and_fits_the_column():
    token = "Zx9" * 50
    hint = mask_url(f"https://example.com/{token}/{'p' * 300}")
    assert token[:10] not in hint and len(hint) <= 200


def test_email_hint_and_validation():
    assert email_hint(["a@example.com", "b@example.org"]) == "a@example.com, b@example.org"
    assert len(email_hint([f"user{i}@{'d' * 60}.example" for i in range(10)])) == 200
    assert email_problem("ops@example.com") is None
    for bad in ("", "ops", "ops@example", "a b@example.com", "a@@example.com"):
        assert email_problem(bad) is not None


def test_up_passes_the_data_dirs_key_to_the_services_unless_one_is_set(tmp_path, monkeypatch):
    from procwatch.stack import Stack

    monkeypatch.delenv(crypto.SECRETS_KEY_ENV, raising=False)
    stack = Stack(tmp_path, 8000, urls={"database_url": "postgresql://x/y", "redis_url": "redis://x",
                                        "nats_url": "nats://x"})
    env = stack.service_env()
    key_file = tmp_path / crypto.SECRETS_KEY_FILE
    assert env[crypto.SECRETS_KEY_ENV] == key_file.read_text().strip()
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert stack.service_env()[crypto.SECRETS_KEY_ENV] == env[crypto.SECRETS_KEY_ENV]  # same key next run
    monkeypatch.setenv(crypto.SECRETS_KEY_ENV, "operator-key")
    assert stack.service_env()[crypto.SECRETS_KEY_ENV] == "operator-key"

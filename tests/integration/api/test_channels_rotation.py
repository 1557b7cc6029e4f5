"""`procwatch admin rotate-secrets-key`: every channel secret re-encrypted with the newest key.

Runs on a database of its own: the rotation touches every channel, and other tests' channels
are encrypted with keys this test does not hold.
"""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet, InvalidToken

from procwatch.cli import main
from procwatch_domain import crypto
from tests.integration.api.conftest import sql
from tests.support.factories import make_user
from tests.support.servers import create_fresh_database

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_database(servers) -> str:
    return create_fresh_database(servers.postgres_url)


@pytest.fixture
def admin(own_database, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", own_database)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["admin", *argv])
        out, err = capsys.readouterr()
        return code, out.strip(), err.strip()

    return run


def channel_rows(database_url: str, key: str) -> list[int]:
    """Two channels (a webhook with a secret, an email channel) encrypted with `key`."""
    user = make_user(database_url)
    multi = crypto.keyring(key)
    rows = []
    for kind, target, secret in (("webhook", "https://1.1.1.1/h", "whsec_abc"), ("email", '["a@example.com"]', None)):
        [(channel_id,)] = sql(
            database_url,
            "insert into channels (user_id, type, name, target_encrypted, target_hint, secret_encrypted)"
            " values (%s, %s, 'n', %s, 'h', %s) returning id",
            (user.id, kind, multi.encrypt(target.encode()).decode(),
             multi.encrypt(secret.encode()).decode() if secret else None))
        rows.append(channel_id)
    return rows


def decrypted_with(database_url: str, key: str) -> set[tuple[str, str | None]]:
    fernet = Fernet(key.encode())
    return {
        (fernet.decrypt(t.encode()).decode(), fernet.decrypt(s.encode()).decode() if s else None)
        for t, s in sql(database_url, "select target_encrypted, secret_encrypted from channels")
    }


def test_rotation_with_the_variable(admin, own_database, monkeypatch):
    sql(own_database, "delete from channels")
    old, new = crypto.new_key(), crypto.new_key()
    channel_rows(own_database, old)
    monkeypatch.setenv(crypto.SECRETS_KEY_ENV, f"{new},{old}")
    code, out, _ = admin("rotate-secrets-key")
    assert code == 0 and "2 channel(s)" in out
    assert decrypted_with(own_database, new) == {("https://1.1.1.1/h", "whsec_abc"), ('["a@example.com"]', None)}
    with pytest.raises(InvalidToken):
        decrypted_with(own_database, old)


def test_a_secret_no_key_reads_changes_nothing(admin, own_database, monkeypatch):
    sql(own_database, "delete from channels")
    lost, current = crypto.new_key(), crypto.new_key()
    channel_rows(own_database, lost)
    before = sql(own_database, "select target_encrypted, secret_encrypted from channels order by id")
    monkeypatch.setenv(crypto.SECRETS_KEY_ENV, current)
    code, _, err = admin("rotate-secrets-key")
    assert code == 1 and "nothing was changed" in err
    assert sql(own_database, "select target_encrypted, secret_encrypted from channels order by id") == before


def test_rotation_of_the_up_key_file(admin, own_database, monkeypatch, tmp_path):
    sql(own_database, "delete from channels")
    monkeypatch.delenv(crypto.SECRETS_KEY_ENV, raising=False)
    key_file = tmp_path / crypto.SECRETS_KEY_FILE
    old = crypto.ensure_key_file(key_file)
    channel_rows(own_database, old)
    code, out, _ = admin("rotate-secrets-key", "--data-dir", str(tmp_path), "--add-new-key")
    assert code == 0, out
    new, kept = crypto.keys_of(key_file.read_text())
    assert kept == old and key_file.stat().st_mode & 0o777 == 0o600
    assert len(decrypted_with(own_database, new)) == 2
    code, out, _ = admin("rotate-secrets-key", "--data-dir", str(tmp_path), "--drop-old-keys")
    assert code == 0 and crypto.keys_of(key_file.read_text()) == [new]
    assert len(decrypted_with(own_database, new)) == 2


def test_without_any_key_it_says_where_it_looked(admin, monkeypatch, tmp_path):
    monkeypatch.delenv(crypto.SECRETS_KEY_ENV, raising=False)
    code, _, err = admin("rotate-secrets-key", "--data-dir", str(tmp_path))
    assert code == 1 and "PROCWATCH_SECRETS_KEY is not set" in err and "secrets.key" in err


def test_new_secrets_key_prints_a_fernet_key(admin):
    code, out, _ = admin("new-secrets-key")
    assert code == 0
    Fernet(out.encode())

import json
import uuid

import psycopg
import pytest

from procwatch.cli import main
from procwatch_db.urls import libpq_url
from procwatch_domain.secrets import hash_secret

pytestmark = pytest.mark.integration


@pytest.fixture
def admin(database_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", database_url)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["admin", *argv])
        out, err = capsys.readouterr()
        return code, out.strip(), err.strip()

    return run


def _email() -> str:
    return f"admin-{uuid.uuid4().hex[:8]}@example.test"


def _token_row(database_url: str, token: str):
    with psycopg.connect(libpq_url(database_url)) as conn:
        return conn.execute(
            "select u.email, u.plan, t.revoked_at from api_tokens t join users u on u.id = t.user_id "
            "where t.token_hash = %s",
            (hash_secret(token),),
        ).fetchone()


def test_create_user_prints_a_token_that_is_stored_hashed(admin, database_url):
    email = _email()
    code, out, _ = admin("create-user", "--email", email, "--plan", "team", "--json")
    assert code == 0
    body = json.loads(out)
    assert set(body) == {"user_id", "token"}
    assert _token_row(database_url, body["token"]) == (email, "team", None)


def test_set_plan_create_and_revoke_token(admin, database_url):
    email = _email()
    assert admin("create-user", "--email", email)[0] == 0
    assert admin("set-plan", "--email", email, "--plan", "scale")[0] == 0
    code, token, _ = admin("create-token", "--email", email)
    assert code == 0 and token.startswith("pwt_")
    assert _token_row(database_url, token)[1] == "scale"
    assert admin("revoke-token", "--token", token)[0] == 0
    assert _token_row(database_url, token)[2] is not None
    # revoking twice is an error, not a silent success
    assert admin("revoke-token", "--token", token)[0] == 1


def test_clear_errors_for_unknown_plan_duplicate_email_and_missing_user(admin):
    email = _email()
    code, _, err = admin("create-user", "--email", email, "--plan", "platinum")
    assert code == 1 and "unknown plan" in err and "hobby" in err
    assert admin("create-user", "--email", email)[0] == 0
    code, _, err = admin("create-user", "--email", email)
    assert code == 1 and "already exists" in err
    with pytest.raises(SystemExit, match="no user"):
        admin("create-token", "--email", _email())


def test_signin_link_prints_a_one_time_link_stored_hashed(admin, database_url):
    email = _email()
    assert admin("create-user", "--email", email)[0] == 0
    code, link, _ = admin("signin-link", "--email", email, "--url", "https://monitor.example/")
    assert code == 0 and link.startswith("https://monitor.example/ui/signin/link?token=")
    token = link.split("token=", 1)[1]
    with psycopg.connect(libpq_url(database_url)) as conn:
        row = conn.execute("select u.email, l.expires_at > now() + interval '14 minutes' from web_signin_links l"
                           " join users u on u.id = l.user_id where l.token_hash = %s", (hash_secret(token),)).fetchone()
    assert row == (email, True)

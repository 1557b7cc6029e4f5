import psycopg
import pytest

from procwatch_db.urls import libpq_url
from procwatch_domain.secrets import hash_secret
from tests.support.factories import make_server, make_user

pytestmark = pytest.mark.integration


def test_tokens_and_agent_keys_are_stored_only_as_hashes(database_url):
    user = make_user(database_url)
    server = make_server(database_url, user)
    with psycopg.connect(libpq_url(database_url)) as conn:
        token_rows = conn.execute("select token_hash from api_tokens where user_id = %s", (user.id,)).fetchall()
        key_hash = conn.execute("select agent_key_hash from servers where id = %s", (server.id,)).fetchone()[0]
        dump = str(conn.execute("select * from api_tokens").fetchall()) + str(conn.execute("select * from servers").fetchall())
    assert token_rows == [(hash_secret(user.token),)]
    assert key_hash == hash_secret(server.agent_key)
    assert user.token not in dump and server.agent_key not in dump

"""Users and API tokens: the SQL shared by `procwatch admin` and the test factories.

Every function takes an open psycopg connection and never commits: the caller
owns the transaction.
"""

from __future__ import annotations

import secrets

import psycopg

from procwatch_domain.secrets import hash_secret, new_api_token


class UnknownPlan(ValueError):
    pass


def create_user(conn: psycopg.Connection, email: str, plan: str = "pro") -> int:
    _check_plan(conn, plan)
    row = conn.execute("insert into users (email, plan) values (%s, %s) returning id", (email, plan)).fetchone()
    return row[0]


def find_user_id(conn: psycopg.Connection, email: str) -> int | None:
    row = conn.execute("select id from users where email = %s", (email,)).fetchone()
    return row[0] if row else None


def set_plan(conn: psycopg.Connection, user_id: int, plan: str) -> None:
    _check_plan(conn, plan)
    conn.execute("update users set plan = %s where id = %s", (plan, user_id))


def create_api_token(conn: psycopg.Connection, user_id: int, name: str = "") -> str:
    """A new bearer token for the user; only its hash is stored, so show it now or never."""
    token = new_api_token()
    conn.execute(
        "insert into api_tokens (user_id, token_hash, name) values (%s, %s, %s)",
        (user_id, hash_secret(token), name),
    )
    return token


# How long a one-time dashboard sign-in link stays usable.
SIGNIN_LINK_TTL_S = 15 * 60


def create_signin_link_token(conn: psycopg.Connection, user_id: int, ttl_s: int = SIGNIN_LINK_TTL_S) -> str:
    """A one-time dashboard sign-in token (GET /ui/signin/link?token=...), valid for ttl_s seconds
    and deleted when used (procwatch_api.web); only its hash is stored."""
    token = secrets.token_urlsafe(32)
    conn.execute(
        "insert into web_signin_links (user_id, token_hash, expires_at)"
        " values (%s, %s, now() + make_interval(secs => %s))",
        (user_id, hash_secret(token), ttl_s),
    )
    return token


def revoke_api_token(conn: psycopg.Connection, token: str) -> bool:
    cur = conn.execute(
        "update api_tokens set revoked_at = now() where token_hash = %s and revoked_at is null",
        (hash_secret(token),),
    )
    return cur.rowcount == 1


def _check_plan(conn: psycopg.Connection, plan: str) -> None:
    if conn.execute("select 1 from plans where name = %s", (plan,)).fetchone() is None:
        names = [r[0] for r in conn.execute("select name from plans order by max_processes_per_server")]
        raise UnknownPlan(f"unknown plan {plan!r}; plans: {', '.join(names)}")

"""Rows the tests need, written straight to the database (users, servers, processes).

Users and tokens go through `procwatch_db.accounts`, the same code `procwatch
admin` runs; servers and processes are plain inserts with hashed agent keys.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg

from procwatch_db import accounts
from procwatch_db.urls import libpq_url
from procwatch_domain.secrets import hash_secret, new_agent_key


@dataclass(frozen=True)
class TestUser:
    id: int
    token: str
    email: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True)
class TestServer:
    id: int
    user_id: int
    hostname: str
    agent_key: str


def make_user(database_url: str, plan: str = "pro") -> TestUser:
    email = f"user-{uuid.uuid4().hex[:10]}@example.test"
    with psycopg.connect(libpq_url(database_url)) as conn:
        user_id = accounts.create_user(conn, email, plan)
        token = accounts.create_api_token(conn, user_id, "tests")
    return TestUser(user_id, token, email)


def make_server(database_url: str, user: TestUser, hostname: str | None = None) -> TestServer:
    hostname = hostname or f"host-{uuid.uuid4().hex[:8]}"
    key = new_agent_key()
    with psycopg.connect(libpq_url(database_url)) as conn:
        (server_id,) = conn.execute(
            "insert into servers (user_id, hostname, agent_key_hash) values (%s, %s, %s) returning id",
            (user.id, hostname, hash_secret(key)),
        ).fetchone()
    return TestServer(server_id, user.id, hostname, key)


def make_process(database_url: str, server: TestServer, process_name: str, **fields) -> int:
    columns = {"server_id": server.id, "user_id": server.user_id, "process_name": process_name, **fields}
    names = ", ".join(columns)
    placeholders = ", ".join(["%s"] * len(columns))
    with psycopg.connect(libpq_url(database_url)) as conn:
        (process_id,) = conn.execute(
            f"insert into watched_processes ({names}) values ({placeholders}) returning id",  # names are ours
            tuple(columns.values()),
        ).fetchone()
    return process_id

import psycopg
import pytest

from procwatch_db.urls import libpq_url

pytestmark = pytest.mark.integration


def test_migrations_create_every_table_and_seed_plans(database_url):
    with psycopg.connect(libpq_url(database_url)) as conn:
        tables = {r[0] for r in conn.execute("select tablename from pg_tables where schemaname = 'public'")}
        plans = dict(conn.execute("select name, max_processes_per_server from plans").fetchall())
    assert {"plans", "users", "api_tokens", "servers", "watched_processes", "process_samples",
            "outbox_events", "alerts", "alembic_version"} <= tables
    assert plans == {"hobby": 3, "pro": 10, "team": 25, "scale": 50}


def test_migrations_match_the_sqlmodel_tables(database_url):
    """Alembic's autogenerate finds nothing to add: tables.py and the migrations agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    from procwatch_db.partitions import include_name
    from procwatch_db.tables import metadata
    from procwatch_db.urls import sqlalchemy_url

    engine = create_engine(sqlalchemy_url(database_url))
    with engine.connect() as conn:
        # include_name: the daily partitions of process_samples are not model tables.
        opts = {"compare_type": True, "include_name": include_name}
        diff = compare_metadata(MigrationContext.configure(conn, opts=opts), metadata)
    engine.dispose()
    assert diff == []

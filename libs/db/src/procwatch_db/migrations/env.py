from alembic import context
from sqlalchemy import create_engine, pool

from procwatch_db.partitions import include_name
from procwatch_db.tables import metadata

config = context.config


def run_migrations_online() -> None:
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as connection:
        # Concurrent `migrate` runs (replicas starting together) take turns.
        connection.exec_driver_sql("select pg_advisory_lock(727274)")
        context.configure(connection=connection, target_metadata=metadata, compare_type=True,
                          include_name=include_name)  # partitions of process_samples are not model tables
        with context.begin_transaction():
            context.run_migrations()
        connection.exec_driver_sql("select pg_advisory_unlock(727274)")
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `procwatch migrate`")
run_migrations_online()

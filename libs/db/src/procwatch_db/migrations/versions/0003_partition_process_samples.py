"""process_samples: native RANGE partitioning by day on recorded_at (see docs/retention.md)

The old heap is renamed, a partitioned parent with the same columns, constraints
and id sequence takes its name, daily partitions are created for the days that
hold rows (bounded to the last MAX_BACKFILL_DAYS days) and for the next
AHEAD_DAYS days, plus a DEFAULT partition for anything else, and the rows are
copied over in this one transaction. The primary key becomes (id, recorded_at):
a primary key of a partitioned table must include the partition key. Nothing
looks a sample up by id alone except ingest's `delete_samples` (which stays
correct: ids still come from the one sequence and are never reused).

This copy holds an ACCESS EXCLUSIVE lock on process_samples for its duration:
run it in a maintenance window on a large database (docs/retention.md).

Revision ID: 0003_partition_process_samples
Revises: 0002_alert_evaluated_at
Create Date: 2026-11-28 08:30:00
"""
from datetime import date, datetime, timedelta, timezone

from alembic import op

revision = "0003_partition_process_samples"
down_revision = "0002_alert_evaluated_at"
branch_labels = None
depends_on = None

# Frozen copies of procwatch_db.partitions' conventions (a migration must not change
# when the library does).
AHEAD_DAYS = 7
MAX_BACKFILL_DAYS = 100

COLUMNS = "id, watched_process_id, count, cpu_pct, memory_pct, oldest_start_unix, recorded_at"


def _bound(day: date) -> str:
    return f"{day.isoformat()} 00:00:00+00"


# The column definitions of process_samples, the same before and after partitioning.
COLUMN_DEFINITIONS = (
    " id bigint not null default nextval('process_samples_id_seq'),"
    " watched_process_id bigint not null,"
    " count integer not null,"
    " cpu_pct double precision not null,"
    " memory_pct double precision not null,"
    " oldest_start_unix bigint,"
    " recorded_at timestamp with time zone not null,"
)

def upgrade() -> None:
    bind = op.get_bind()
    op.execute("alter table process_samples rename to process_samples_unpartitioned")
    op.execute("alter table process_samples_unpartitioned rename constraint process_samples_pkey"
               " to process_samples_unpartitioned_pkey")
    op.execute("alter table process_samples_unpartitioned rename constraint uq_process_samples_process_time"
               " to uq_process_samples_unpartitioned_process_time")
    op.execute("alter table process_samples_unpartitioned rename constraint process_samples_watched_process_id_fkey"
               " to process_samples_unpartitioned_watched_process_id_fkey")
    # The sequence (ingest allocates ids from it by name) moves to the new table.
    op.execute("alter sequence process_samples_id_seq owned by none")
    op.execute(
        "create table process_samples (" + COLUMN_DEFINITIONS +
        " constraint process_samples_pkey primary key (id, recorded_at),"
        " constraint uq_process_samples_process_time unique (watched_process_id, recorded_at),"
        " constraint process_samples_watched_process_id_fkey foreign key (watched_process_id)"
        "   references watched_processes (id) on delete cascade"
        ") partition by range (recorded_at)"
    )
    op.execute("alter sequence process_samples_id_seq owned by process_samples.id")

    today = datetime.now(timezone.utc).date()
    first, last = today - timedelta(days=1), today + timedelta(days=AHEAD_DAYS)
    lo, hi = bind.exec_driver_sql(
        "select (min(recorded_at) at time zone 'UTC')::date, (max(recorded_at) at time zone 'UTC')::date"
        " from process_samples_unpartitioned"
    ).one()
    if lo is not None:
        first = min(first, max(lo, today - timedelta(days=MAX_BACKFILL_DAYS)))
        last = max(last, min(hi, today + timedelta(days=AHEAD_DAYS)))
    day = first
    while day <= last:
        op.execute(
            f"create table process_samples_p{day:%Y%m%d} partition of process_samples"
            f" for values from ('{_bound(day)}') to ('{_bound(day + timedelta(days=1))}')"
        )
        day += timedelta(days=1)
    op.execute("create table process_samples_default partition of process_samples default")

    op.execute(f"insert into process_samples ({COLUMNS}) select {COLUMNS} from process_samples_unpartitioned")
    op.execute("drop table process_samples_unpartitioned")


def downgrade() -> None:
    op.execute("alter table process_samples rename to process_samples_partitioned")
    op.execute("alter table process_samples_partitioned rename constraint process_samples_pkey"
               " to process_samples_partitioned_pkey")
    op.execute("alter table process_samples_partitioned rename constraint uq_process_samples_process_time"
               " to uq_process_samples_partitioned_process_time")
    op.execute("alter sequence process_samples_id_seq owned by none")
    op.execute(
        "create table process_samples (" + COLUMN_DEFINITIONS +
        " constraint process_samples_pkey primary key (id),"
        " constraint uq_process_samples_process_time unique (watched_process_id, recorded_at)"
        ")"
    )
    op.execute("alter sequence process_samples_id_seq owned by process_samples.id")
    op.execute(f"insert into process_samples ({COLUMNS}) select {COLUMNS} from process_samples_partitioned")
    op.execute("drop table process_samples_partitioned")  # drops its partitions and its foreign key
    op.execute(
        "alter table process_samples add constraint process_samples_watched_process_id_fkey"
        " foreign key (watched_process_id) references watched_processes (id) on delete cascade"
    )

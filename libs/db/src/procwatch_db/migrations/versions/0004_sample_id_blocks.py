"""process_samples_id_seq hands out blocks of 1,000 ids: one nextval per 1,000 samples

Ingest pre-allocates the ids of a batch before its COPY (the SampleRecorded events
carry them). With INCREMENT BY 1 that was one nextval per sample: ~10,000 per batch,
a measurable share of the database's CPU at tens of thousands of samples/s. Now a
nextval returns the first id of a block of SAMPLE_ID_BLOCK ids that belongs to the
caller alone (the hi/lo pattern): ingest takes ceil(n / block) values per batch.
A plain INSERT that leaves `id` to its default still gets a unique id (the block's
first); ids simply have gaps, which nothing relies on.

Revision ID: 0004_sample_id_blocks
Revises: 0003_partition_process_samples
Create Date: 2026-11-28 10:30:00
"""
from alembic import op

revision = "0004_sample_id_blocks"
down_revision = "0003_partition_process_samples"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # 1000: a frozen copy of procwatch_db.tables.SAMPLE_ID_BLOCK at the time of this migration.
    op.execute("alter sequence process_samples_id_seq increment by 1000")
    # Start the first block past every id in use (blocks are [v, v + block)).
    op.execute(
        "select setval('process_samples_id_seq',"
        " greatest((select coalesce(max(id), 0) from process_samples), "
        "(select last_value from process_samples_id_seq)) + 1, false)"
    )


def downgrade() -> None:
    op.execute("alter sequence process_samples_id_seq increment by 1")
    op.execute(
        "select setval('process_samples_id_seq', (select coalesce(max(id), 0) from process_samples) + 1, false)"
    )

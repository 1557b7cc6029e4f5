"""flap protection and count ranges (issue #18): the count-range rule's settings, the flap
settings and the alerter's flap streaks on watched_processes

Defaults are the rule registry's (procwatch_domain.rules): alert_on_count_range on, no bounds
(min_count / max_count NULL: the rule is off), alert_after_samples = resolve_after_samples = 1
(every existing process keeps today's behaviour).

Revision ID: 0008_flap_count_ranges
Revises: 0007_channels
Create Date: 2026-12-01 14:50:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0008_flap_count_ranges"
down_revision = "0007_channels"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("watched_processes",
                  sa.Column("alert_on_count_range", sa.Boolean(), server_default="true", nullable=False))
    op.add_column("watched_processes", sa.Column("min_count", sa.Integer(), nullable=True))
    op.add_column("watched_processes", sa.Column("max_count", sa.Integer(), nullable=True))
    op.add_column("watched_processes",
                  sa.Column("alert_after_samples", sa.Integer(), server_default="1", nullable=False))
    op.add_column("watched_processes",
                  sa.Column("resolve_after_samples", sa.Integer(), server_default="1", nullable=False))
    op.add_column("watched_processes", sa.Column("alert_streaks", sa.String(length=64), nullable=True))


def downgrade() -> None:
    for column in ("alert_streaks", "resolve_after_samples", "alert_after_samples", "max_count", "min_count",
                   "alert_on_count_range"):
        op.drop_column("watched_processes", column)

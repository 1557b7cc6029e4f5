"""watched_processes.alert_evaluated_at: the alerter's high-water mark per process

Revision ID: 0002_alert_evaluated_at
Revises: 0001
Create Date: 2026-11-28 08:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = "0002_alert_evaluated_at"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("watched_processes", sa.Column("alert_evaluated_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("watched_processes", "alert_evaluated_at")

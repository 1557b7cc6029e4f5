"""maintenance windows; alerts: suppressed, acknowledgement; deliveries: episode and reminder number

Issue 18 (parts 1, 4, 5).
- maintenance_windows: a user's windows, one-off (starts_at .. ends_at) or recurring (rrule +
  duration_s from starts_at, wall-clock in `timezone`), scoped to the account, servers or processes
  (procwatch_domain.maintenance). `effective_until`: end of the last occurrence (NULL: unbounded),
  so the alerter loads only windows that can still be in effect.
- alerts: `suppressed` (the episode started inside a window: nobody was notified), `unsuppressed_at`
  (when its one notification after the window was written; ix_alerts_suppressed_open holds the
  episodes still waiting for it), the acknowledgement (`acknowledged_at`, `acknowledged_by`,
  `ack_note`), and ix_alerts_open (the reminders job reads open episodes only).
- deliveries: `episode_id` (the firing event id of the episode a firing delivery is about) and
  `reminder` (0: the first notification; n: the n-th reminder), found per channel by
  ix_deliveries_channel_episode.

Revision ID: 0009_maintenance_ack_reminders
Revises: 0008_flap_count_ranges
Create Date: 2026-12-01 15:00:00
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009_maintenance_ack_reminders"
down_revision = "0008_flap_count_ranges"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "maintenance_windows",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rrule", sa.String(length=500), nullable=True),
        sa.Column("duration_s", sa.Integer(), nullable=True),
        sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False),
        sa.Column("server_ids", postgresql.ARRAY(sa.BigInteger()), nullable=True),
        sa.Column("process_ids", postgresql.ARRAY(sa.BigInteger()), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("effective_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "(rrule is null and ends_at is not null and duration_s is null)"
            " or (rrule is not null and ends_at is null and duration_s is not null)",
            name="ck_maintenance_windows_kind",
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_maintenance_windows_user_id"), "maintenance_windows", ["user_id"], unique=False)

    op.add_column("alerts", sa.Column("suppressed", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    op.add_column("alerts", sa.Column("unsuppressed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("alerts", sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("alerts", sa.Column("acknowledged_by", sa.BigInteger(), nullable=True))
    op.add_column("alerts", sa.Column("ack_note", sa.String(length=500), nullable=True))
    op.create_index("ix_alerts_suppressed_open", "alerts", ["id"], unique=False,
                    postgresql_where=sa.text("suppressed AND resolved_at IS NULL AND unsuppressed_at IS NULL"))
    op.create_index("ix_alerts_open", "alerts", ["user_id"], unique=False,
                    postgresql_where=sa.text("resolved_at IS NULL AND type <> 'process_restarted'"))

    op.add_column("deliveries", sa.Column("episode_id", sa.String(length=200), nullable=True))
    op.add_column("deliveries", sa.Column("reminder", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.create_index("ix_deliveries_channel_episode", "deliveries", ["channel_id", "episode_id"], unique=False,
                    postgresql_where=sa.text("episode_id IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_deliveries_channel_episode", table_name="deliveries")
    op.drop_column("deliveries", "reminder")
    op.drop_column("deliveries", "episode_id")
    op.drop_index("ix_alerts_open", table_name="alerts")
    op.drop_index("ix_alerts_suppressed_open", table_name="alerts")
    for column in ("ack_note", "acknowledged_by", "acknowledged_at", "unsuppressed_at", "suppressed"):
        op.drop_column("alerts", column)
    op.drop_index(op.f("ix_maintenance_windows_user_id"), table_name="maintenance_windows")
    op.drop_table("maintenance_windows")

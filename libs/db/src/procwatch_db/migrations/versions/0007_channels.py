"""channels and deliveries: notification channels per user, and each alert's delivery to them

`channels.target_encrypted` / `secret_encrypted` hold Fernet tokens
(procwatch_domain.crypto, key from PROCWATCH_SECRETS_KEY), never plaintext.

Revision ID: 0007_channels
Revises: 0006_server_liveness
Create Date: 2026-12-01 12:05:00
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007_channels"
down_revision = "0006_server_liveness"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("format", sa.String(length=16), server_default="standard", nullable=False),
        sa.Column("target_encrypted", sa.Text(), nullable=False),
        sa.Column("target_hint", sa.String(length=200), nullable=False),
        sa.Column("secret_encrypted", sa.Text(), nullable=True),
        sa.Column("alert_types", postgresql.ARRAY(sa.Text()), nullable=True),
        sa.Column("server_ids", postgresql.ARRAY(sa.BigInteger()), nullable=True),
        sa.Column("send_resolved", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("disabled_reason", sa.String(length=200), nullable=True),
        sa.Column("repeat_every_s", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_channels_user_id"), "channels", ["user_id"], unique=False)
    op.create_table(
        "deliveries",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("channel_id", sa.BigInteger(), nullable=False),
        sa.Column("alert_id", sa.String(length=200), nullable=False),
        sa.Column("alert_type", sa.String(length=32), nullable=False),
        sa.Column("alert_state", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["channel_id"], ["channels.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("channel_id", "alert_id", name="uq_deliveries_channel_alert"),
    )
    op.create_index(
        "ix_deliveries_pending_due", "deliveries", ["next_attempt_at"], unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index("ix_deliveries_channel_newest", "deliveries", ["channel_id", sa.text("id DESC")], unique=False)


def downgrade() -> None:
    op.drop_index("ix_deliveries_channel_newest", table_name="deliveries")
    op.drop_index("ix_deliveries_pending_due", table_name="deliveries")
    op.drop_table("deliveries")
    op.drop_index(op.f("ix_channels_user_id"), table_name="channels")
    op.drop_table("channels")
